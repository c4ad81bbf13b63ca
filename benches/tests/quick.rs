//! Runs `rpc-bench --quick` as CI does: every transport and every side (raw, ours, tarpc,
//! tarpc-on-ours) must work end to end and produce figures, the streaming rows included.
//! Nothing is asserted about speed (nor whether a goal is met).

#![cfg(unix)]

use std::process::{Command, Stdio};

#[test]
fn quick_mode_measures_every_path() {
    let dir = std::env::temp_dir().join(format!("rpc-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("results.json");
    let svg_path = dir.join("latency.svg");
    let child = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json_path)
        .arg("--svg")
        .arg(&svg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Socket and FIFO files are named after the harness's pid (our fifo:// connection pairs as
    // `.<name>.<token>.c2s|s2c`, hence the hidden form too).
    let prefix = format!("rpc-bench-{}-", child.id());
    let hidden = format!(".{prefix}");
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rpc-bench --quick failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ours/tarpc"), "no tables printed:\n{stdout}");

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let transports: Vec<&str> = json["transports"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for expected in ["tcp", "local", "unix", "fifo", "spawn"] {
        assert!(transports.contains(&expected), "{expected} missing from {transports:?}");
    }
    let rows = json["rows"].as_array().unwrap();
    let positive = |cell: &serde_json::Value| cell["median"].as_f64().is_some_and(|v| v > 0.0);
    for transport in &transports {
        let mine: Vec<_> = rows.iter().filter(|r| r["transport"] == *transport).collect();
        assert!(!mine.is_empty(), "no rows for {transport}");
        for row in mine {
            // Every transport has our figures for every metric.
            assert!(positive(&row["ours"]), "{transport}: no figure for ours in {row}");
            // Raw figures exist for the round trip and bulk metrics.
            if !row["raw"].is_null() {
                assert!(positive(&row["raw"]), "{transport}: zero raw figure in {row}");
            }
            for side in ["tarpc", "tarpc_on_ours"] {
                if !row[side].is_null() {
                    assert!(positive(&row[side]), "{transport}: zero {side} figure in {row}");
                }
            }
        }
        let raw_rows = rows.iter().filter(|r| r["transport"] == *transport && !r["raw"].is_null()).count();
        assert!(raw_rows >= 3, "{transport}: raw measured only {raw_rows} metrics");
    }
    // The streaming rows: ours on every transport, raw for the chunk stream (one-way bulk), no
    // tarpc side (tarpc has no streams), and every goal listed.
    let streaming = [
        "stream_16b_items_m_items_s",
        "stream_64kib_chunks_mb_s",
        "add_beside_saturating_stream_median_us",
        "add_beside_saturating_stream_p99_us",
    ];
    for transport in &transports {
        for metric in streaming {
            let row = rows
                .iter()
                .find(|r| r["transport"] == *transport && r["metric"] == metric)
                .unwrap_or_else(|| panic!("{transport}: no {metric} row"));
            assert!(positive(&row["ours"]), "{transport}: no streaming figure for ours in {row}");
            assert!(row["tarpc"].is_null() && row["tarpc_on_ours"].is_null(), "{transport}: tarpc streamed? {row}");
            assert_eq!(positive(&row["raw"]), metric == "stream_64kib_chunks_mb_s", "{transport}: raw side of {row}");
        }
    }
    let goals = json["goals"].as_array().unwrap();
    assert!(goals.iter().any(|g| g["transport"] == "unix" && g["met"].is_boolean()), "no unix goal in {goals:?}");
    assert!(stdout.contains("goals (reported, not enforced"), "no goals printed:\n{stdout}");
    // tarpc runs over TCP and Unix socket files.
    for transport in ["tcp", "unix"] {
        assert!(
            rows.iter().any(|r| r["transport"] == transport && positive(&r["tarpc"])),
            "{transport}: no tarpc figures"
        );
    }
    // tarpc's engine runs over our transports for these rows.
    for transport in ["tcp", "local", "unix"] {
        assert!(
            rows.iter().any(|r| r["transport"] == transport && positive(&r["tarpc_on_ours"])),
            "{transport}: no tarpc-on-ours figures"
        );
    }
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    // Every socket file the servers of this run created is gone.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) || name.starts_with(&hidden)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(leftovers.is_empty(), "socket or FIFO files left behind: {leftovers:?}");
}

//! Runs `rpc-bench --quick` as CI does: every transport and every side (raw, ring, ours, tarpc,
//! tarpc-on-ours) must work end to end and produce figures, the streaming rows, the payload
//! sweep and the memcpy rate included. Nothing is asserted about speed (nor whether a goal is
//! met).

#![cfg(unix)]

use std::process::{Command, Stdio};

/// Whether a figure of the results (a cell with a `median`) was measured.
fn positive(cell: &serde_json::Value) -> bool {
    cell["median"].as_f64().is_some_and(|v| v > 0.0)
}

#[test]
fn quick_mode_measures_every_path() {
    let dir = std::env::temp_dir().join(format!("rpc-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("results.json");
    let svg_path = dir.join("latency.svg");
    let sweep_svg_path = dir.join("sweep.svg");
    let child = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json_path)
        .arg("--svg")
        .arg(&svg_path)
        .arg("--sweep-svg")
        .arg(&sweep_svg_path)
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
            for side in ["ring", "tarpc", "tarpc_on_ours"] {
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
    // The payload sweep: every side at every size up to 1 MiB (--quick leaves out 16 MiB) on
    // every transport, the ring on the shm row.
    let sizes: Vec<u64> =
        json["sweep"]["sizes_bytes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(sizes, [64, 4 << 10, 64 << 10, 1 << 20, 16 << 20]);
    let points = json["sweep"]["points"].as_array().unwrap();
    let point = |transport: &str, side: &str, size: u64| {
        points.iter().find(|p| p["transport"] == transport && p["side"] == side && p["payload_bytes"] == size)
    };
    for transport in &transports {
        for &size in sizes.iter().filter(|&&size| size <= 1 << 20) {
            for side in ["raw", "ours"] {
                let p =
                    point(transport, side, size).unwrap_or_else(|| panic!("{transport}: no {side} sweep at {size} B"));
                for stat in ["median_us", "p99_us", "mb_s"] {
                    assert!(positive(&p[stat]), "{transport}: {stat} of {p}");
                }
            }
        }
    }
    if transports.contains(&"shm") {
        assert!(point("shm", "ring", 64).is_some_and(|p| positive(&p["median_us"])), "no ring sweep on shm");
        let shm_latency = rows.iter().find(|r| r["transport"] == "shm" && r["metric"] == "latency_median_us").unwrap();
        assert!(positive(&shm_latency["raw"]) && positive(&shm_latency["ring"]), "shm raw/ring: {shm_latency}");
        assert!(
            goals.iter().any(|g| g["transport"] == "shm" && g["goal"].as_str().unwrap().contains("memcpy")),
            "no memcpy goal in {goals:?}"
        );
    }
    assert!(positive(&json["memcpy"]["mb_s"]), "no memcpy rate: {}", json["memcpy"]);
    // Unpinned, the probe is not run (its two threads could share a CPU): it says so.
    assert!(json["cross_cpu_round_trip_ns"].is_null(), "{}", json["cross_cpu_round_trip_ns"]);
    assert!(stdout.contains("cross-CPU: not measured"), "no word on the cross-CPU probe:\n{stdout}");
    assert!(stdout.contains("Payload sweep"), "no sweep tables printed:\n{stdout}");
    for path in [&svg_path, &sweep_svg_path] {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{}", path.display());
    }
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

/// `--multi-thread` gives every process a multi-thread runtime, the spawned children included
/// (a child that did not understand the flag would exit and fail its row).
#[test]
fn quick_mode_runs_on_multi_thread_runtimes() {
    let dir = std::env::temp_dir().join(format!("rpc-bench-test-mt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_path = dir.join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .args(["--quick", "--multi-thread", "--only", "tcp,unix,spawn", "--json"])
        .arg(&json_path)
        .arg("--svg")
        .arg(dir.join("latency.svg"))
        .arg("--sweep-svg")
        .arg(dir.join("sweep.svg"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rpc-bench --quick --multi-thread failed\nstderr:\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(json.to_string().contains("both frameworks on multi-thread"), "the run does not say its runtime: {json}");
    let rows = json["rows"].as_array().unwrap();
    for (transport, side) in [("tcp", "ours"), ("tcp", "tarpc"), ("unix", "tarpc_on_ours"), ("spawn", "ours")] {
        let measured = rows.iter().filter(|r| r["transport"] == transport && positive(&r[side])).count();
        assert!(measured >= 5, "{transport}: {side} measured only {measured} metrics");
    }
}

/// `--alternate` runs two builds in turn (here the same binary as both) and compares them: the
/// runs land in `--out`, the pairs alternate which build goes first, and the comparison has
/// every pair.
#[test]
fn alternate_runs_two_builds_in_turn_and_compares_them() {
    let dir = std::env::temp_dir().join(format!("rpc-bench-test-alternate-{}", std::process::id()));
    let bench = env!("CARGO_BIN_EXE_rpc-bench");
    let output = Command::new(bench)
        .args(["--alternate", bench, "--pairs", "2", "--quick", "--only", "unix", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "rpc-bench --alternate failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let runs: Vec<_> = stderr.lines().filter_map(|l| l.split(" ... ").next()).collect();
    assert_eq!(runs, ["pair 1/2: before", "pair 1/2: after", "pair 2/2: after", "pair 2/2: before"], "{stderr}");
    for name in ["before-1", "before-2", "after-1", "after-2"] {
        let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["reps"], 1, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let line =
        stdout.lines().find(|l| l.starts_with("unix") && l.contains("latency_median_us") && l.contains(" ours "));
    let line = line.unwrap_or_else(|| panic!("no row for ours' unix latency:\n{stdout}"));
    assert!(line.trim_end().ends_with("/2"), "both pairs compared: {line}");
}

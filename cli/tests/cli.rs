//! The `rpc` command against real `rpc-demo-server` processes, over every transport the
//! registry says this build has: listing, calls of nested types, streams, application errors,
//! readable argument errors and exit codes, and the endpoint scan.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use rpc::transports::{registry, Address};
use serde_json::{json, Value};

/// A unique name for this test process and call.
fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("rpccli-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A running `rpc-demo-server`, killed (and its endpoint removed) on drop.
struct Demo {
    addr: String,
    child: Option<Child>,
}

impl Demo {
    fn start(addr: &str) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpc-demo-server"))
            .arg(addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("its first line");
        let bound = line.trim().rsplit(' ').next().expect("an address").to_owned();
        assert!(line.starts_with("serving"), "unexpected first line {line:?}");
        Demo { addr: bound, child: Some(child) }
    }

    /// Kills the server with SIGKILL, leaving whatever it had on disk.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill();
        if let Ok(addr) = Address::parse(&self.addr) {
            registry::remove_endpoint(&addr);
        }
    }
}

/// Runs `rpc` with `args` (and `stdin`): exit code, stdout, stderr.
fn rpc(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpc"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rpc starts");
    child.stdin.take().expect("piped").write_all(stdin.as_bytes()).expect("stdin written");
    let out = child.wait_with_output().expect("rpc finishes");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8(out.stdout).expect("UTF-8"),
        String::from_utf8(out.stderr).expect("UTF-8"),
    )
}

fn ok_json(args: &[&str], stdin: &str) -> Vec<Value> {
    let (code, out, err) = rpc(args, stdin);
    assert_eq!(code, 0, "rpc {args:?} failed: {out}{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

/// The addresses to serve the demo on: every transport of this build that one can listen on
/// from another process, and `spawn:` (the demo server started by each connection).
fn addresses(tag: &str) -> Vec<String> {
    let mut addrs: Vec<String> = registry::available()
        .filter(|s| s.listens() && s.reach != registry::Reach::SameProcess)
        .filter_map(|s| s.fresh_address(&unique(tag)))
        .collect();
    if registry::lookup("spawn").is_some_and(|s| s.is_available()) {
        addrs.push(format!("spawn:{}?--stdio", env!("CARGO_BIN_EXE_rpc-demo-server")));
    }
    addrs
}

/// A server for `addr`, or none for `spawn:` (each connection starts its own).
fn serve(addr: &str) -> (Option<Demo>, String) {
    if addr.starts_with("spawn:") {
        (None, addr.to_owned())
    } else {
        let demo = Demo::start(addr);
        let bound = demo.addr.clone();
        (Some(demo), bound)
    }
}

#[test]
fn list_prints_every_method_with_its_docs() {
    let (_demo, addr) = serve(&registry::lookup("tcp").unwrap().fresh_address("x").unwrap());
    let (code, out, err) = rpc(&["list", &addr, "--types"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("server rpc-demo-server"), "{out}");
    for schema in [rpc_cli::demo::CalculatorClient::schema(), rpc_cli::demo::InventoryClient::schema()] {
        assert!(out.contains(&format!("service {}", schema.name)), "{out}");
        for method in &schema.methods {
            let line = format!("  {}", rpc_cli::render::signature(&schema.name, method));
            assert!(out.contains(&line), "no {line:?} in\n{out}");
            assert!(!method.docs.is_empty(), "{} has docs", method.name);
            for doc in method.docs.lines() {
                assert!(out.contains(doc.trim()), "no doc {doc:?} in\n{out}");
            }
        }
    }
    assert!(out.contains("Inventory.find(shape: Shape) -> Stream<String>"), "{out}");
    assert!(out.contains("Inventory.put_all(items: Stream<Item>) -> u64"), "{out}");
    assert!(out.contains("enum Shape { Circle { r: f64 }, Rect(u32, u32), Point }"), "{out}");

    // The whole description as JSON carries the schemas themselves.
    let (code, out, _) = rpc(&["list", &addr, "--json"], "");
    assert_eq!(code, 0);
    let description: rpc::reflection::ServerDescription = serde_json::from_str(&out).unwrap();
    let inventory = description.services.iter().find(|s| s.name == "Inventory").unwrap();
    assert_eq!(inventory, rpc_cli::demo::InventoryClient::schema());
}

#[test]
fn calls_round_trip_nested_types_streams_and_errors_over_every_transport() {
    let addrs = addresses("call");
    assert!(addrs.len() >= 3, "{addrs:?}");
    for addr in addrs {
        eprintln!("calling over {addr}");
        let (_demo, addr) = serve(&addr);
        let addr = addr.as_str();
        assert_eq!(ok_json(&["call", addr, "Calculator.add", "1", "2"], ""), [json!(3)], "{addr}");
        assert_eq!(ok_json(&["call", addr, "Calculator.add", r#"{"a":1,"b":2}"#], ""), [json!(3)], "{addr}");

        let item = json!({
            "name": "widget",
            "shape": {"Circle": {"r": 1.5}},
            "location": {"aisle": 3, "shelf": "b"},
            "labels": {"x": 1, "y": -2},
        });
        let other = json!({"name": "box", "shape": {"Rect": [2, 3]}, "location": null, "labels": {}});
        if addr.starts_with("spawn:") {
            // Each connection has a server of its own: no state carries over between calls.
            assert_eq!(ok_json(&["call", addr, "Inventory.put", &item.to_string()], ""), [json!(1)]);
        } else {
            assert_eq!(ok_json(&["call", addr, "Inventory.put", &item.to_string()], ""), [json!(1)], "{addr}");
            assert_eq!(ok_json(&["call", addr, "Inventory.get", "widget"], ""), std::slice::from_ref(&item), "{addr}");
            let stdin = format!("{other}\n{item}\n");
            assert_eq!(ok_json(&["call", addr, "Inventory.put_all"], &stdin), [json!(1)], "{addr}");
            assert_eq!(
                ok_json(&["call", addr, "Inventory.list"], ""),
                [json!({"box": null, "widget": {"aisle": 3, "shelf": "b"}})],
                "{addr}"
            );
            assert_eq!(ok_json(&["call", addr, "Inventory.find", r#"{"Rect":[0,0]}"#], ""), [json!("box")], "{addr}");
            // An application error: typed JSON, exit code 1.
            let (code, out, _) = rpc(&["call", addr, "Inventory.put", &item.to_string()], "");
            assert_eq!((code, out.trim()), (1, r#"{"app_error":{"Exists":"widget"}}"#), "{addr}");
        }
        let (code, out, _) = rpc(&["call", addr, "Inventory.get", "nothing"], "");
        assert_eq!((code, out.trim()), (1, r#"{"app_error":{"NotFound":{"name":"nothing"}}}"#), "{addr}");
        let (code, out, _) = rpc(&["call", addr, "Calculator.div", "1", "0"], "");
        assert_eq!((code, out.trim()), (1, r#"{"app_error":"DivisionByZero"}"#), "{addr}");
    }
}

#[test]
fn wrong_arguments_methods_and_addresses_get_readable_errors() {
    let (_demo, addr) = serve(&registry::lookup("tcp").unwrap().fresh_address("x").unwrap());
    let addr = addr.as_str();
    let cases: [(&[&str], i32, &str); 7] = [
        (&["call", addr, "Calculator.add", "1", "x"], 2, "expected i64 for argument `b`, got \"x\""),
        (&["call", addr, "Calculator.add", "1"], 2, "`add` takes 2 arguments (a: i64, b: i64), got 1"),
        (&["call", addr, "Calculator.mul", "1", "2"], 2, "`Calculator` has no method `mul`; it has add, div"),
        (&["call", addr, "Nope.add"], 2, "the server has no service `Nope`"),
        (
            &["call", addr, "Inventory.put", r#"{"name":"a","shape":"Square","location":null,"labels":{}}"#],
            2,
            "`Shape` has no variant `Square` (for argument `item`.shape); it has Circle, Rect, Point",
        ),
        (&["call", "tcp://127.0.0.1:1", "Calculator.add", "1", "2"], 3, "connection refused"),
        (&["call", "bogus://x", "Calculator.add", "1", "2"], 3, "unknown scheme `bogus`"),
    ];
    for (args, want_code, want_message) in cases {
        let (code, out, err) = rpc(args, "");
        assert_eq!(code, want_code, "{args:?}: {out}{err}");
        assert!(err.contains(want_message), "{args:?}: {err:?} lacks {want_message:?}");
    }
    // An RPC failure is typed JSON on stdout too.
    let (_, out, _) = rpc(&["call", "tcp://127.0.0.1:1", "Calculator.add", "1", "2"], "");
    let error: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(error["rpc_error"]["kind"], "Io", "{out}");
}

#[test]
fn ping_and_bench_report_percentiles() {
    let (_demo, addr) = serve(&registry::lookup("tcp").unwrap().fresh_address("x").unwrap());
    let (code, out, err) = rpc(&["ping", &addr, "-n", "20"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("20 pings") && out.contains("p50") && out.contains("p99") && out.contains("max"), "{out}");
    let (code, out, err) = rpc(&["bench", &addr, "Calculator.add", "1", "2", "--calls", "300", "--in-flight", "4"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("300 calls of add") && out.contains("calls/s") && out.contains("p99"), "{out}");
}

#[cfg(unix)]
#[test]
fn endpoints_tells_live_from_stale_and_removes_the_stale() {
    let dir = std::env::temp_dir().join(unique("endpoints"));
    std::fs::create_dir_all(&dir).unwrap();
    let live_path = dir.join("live.sock");
    let stale_path = dir.join("stale.sock");
    let live = Demo::start(&format!("unix://{}", live_path.display()));
    let mut stale = Demo::start(&format!("unix://{}", stale_path.display()));
    stale.kill();
    assert!(stale_path.exists(), "a killed server leaves its socket file");

    let (code, out, err) = rpc(&["endpoints", dir.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    let line = |path: &std::path::Path| {
        out.lines()
            .find(|l| l.contains(&format!("unix://{}", path.display())))
            .unwrap_or_else(|| panic!("{out}"))
            .to_owned()
    };
    assert!(line(&live_path).starts_with("live") && line(&live_path).contains("rpc-demo-server"), "{out}");
    assert!(line(&stale_path).starts_with("stale"), "{out}");

    let (code, out, _) = rpc(&["endpoints", dir.to_str().unwrap(), "--remove-stale"], "");
    assert_eq!(code, 0);
    assert!(out.contains(&format!("removed {}", stale_path.display())), "{out}");
    assert!(!stale_path.exists());
    assert!(live_path.exists(), "a live endpoint is never removed");
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_are_generated() {
    let (code, out, _) = rpc(&["completions", "bash"], "");
    assert_eq!(code, 0);
    assert!(out.contains("_rpc") && out.contains("endpoints"), "{}", &out[..out.len().min(200)]);
}

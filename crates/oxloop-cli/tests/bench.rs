//! `oxloop bench --quick --json FILE`, with very short cases: valid JSON, every
//! scenario present, every byte verified.

use std::process::Command;

const SCENARIOS: [&str; 17] = [
    "timers",
    "call-soon",
    "cross-thread",
    "echo-c1-64",
    "echo-c1-1k",
    "echo-c1-16k",
    "echo-c100-64",
    "echo-c100-1k",
    "echo-c100-16k",
    "pipeline-c1-64",
    "pipeline-c100-64",
    "syscalls",
    "instructions",
    "http",
    "http-pipelined",
    "idle",
    "scaling",
];

#[test]
fn quick_bench_writes_every_scenario_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("bench.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args([
            "bench",
            "--quick",
            "--duration",
            "50ms",
            "--idle-connections",
            "200",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON");
    assert_eq!(v["verification_errors"], 0);
    assert!(v["verified_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        v["machine"]["cpus"].as_u64().unwrap() as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    let scenarios = v["scenarios"].as_array().unwrap();
    let ids: Vec<&str> = scenarios
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for id in SCENARIOS {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    // The Python loops: run when the interpreter has oxloop, one skipped scenario
    // otherwise.
    assert!(
        ids.contains(&"python") || ids.contains(&"python-protocol-c1-64"),
        "python missing from {ids:?}"
    );
    // Python web serving: run when .venv/bench has oxloop, skipped otherwise.
    assert!(ids.contains(&"web"), "web missing from {ids:?}");
    for s in scenarios {
        if s.get("skipped").is_some() {
            assert!(
                [
                    "http",
                    "http-pipelined",
                    "syscalls",
                    "instructions",
                    "python",
                    "web"
                ]
                .contains(&s["id"].as_str().unwrap()),
                "{s}"
            );
            continue;
        }
        if s["id"] == "web" {
            // The applications' own cost, measured beside the servers.
            let notes = s["notes"].to_string();
            assert!(notes.contains("The applications alone"), "{notes}");
        }
        if let Some(rows) = s.get("throughput").and_then(|r| r.as_array()) {
            let servers: Vec<&str> = rows.iter().map(|r| r["server"].as_str().unwrap()).collect();
            let expected: &[&str] = if s["id"].as_str().unwrap().starts_with("http") {
                &["raw-epoll", "oxloop-http", "hyper (tokio)"]
            } else if s["id"] == "web" {
                // --quick runs oxloop's own servers only.
                &[
                    "oxloop-wsgi, hello, keep-alive",
                    "oxloop-asgi, json, keep-alive",
                ]
            } else if s["id"] == "scaling" {
                // At least 1 and 2 loops, whatever the CPU count; wrk's pipelined rows
                // need cases of a second or more.
                &[
                    "http-oxloop, 1 loop, keep-alive",
                    "http-oxloop, 2 loops, keep-alive",
                ]
            } else if s["id"].as_str().unwrap().starts_with("python-") {
                // uvloop is left out (with a note) where it is not installed.
                &["oxloop", "asyncio"]
            } else {
                &["raw-epoll", "oxloop", "async", "tokio", "smol"]
            };
            for &name in expected {
                assert!(servers.contains(&name), "{name} missing in {s}");
            }
            for r in rows {
                assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
                assert!(r["messages_per_s"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
        if let Some(rows) = s.get("instructions").and_then(|r| r.as_array()) {
            let servers: Vec<&str> = rows.iter().map(|r| r["server"].as_str().unwrap()).collect();
            // smol spins before it sleeps: its count depends on timing, it is not counted.
            for name in ["raw-epoll", "oxloop", "async", "tokio"] {
                assert!(servers.contains(&name), "{name} missing in {s}");
            }
            for r in rows {
                assert!(r["per_message"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
        if let Some(p) = s.get("in_process") {
            assert!(p["speedup_vs_tokio"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("echo-c1-64"),
        "{svg}"
    );
    assert!(stdout.contains("every one verified; 0 errors"), "{stdout}");
}

#[test]
fn scenario_filter_and_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args([
            "bench",
            "--quick",
            "--scenarios",
            "call-soon,echo",
            "--duration",
            "0.05",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ids: Vec<&str> = v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(ids.contains(&"call-soon") && ids.contains(&"echo-c100-16k"));

    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args(["bench", "--scenarios", "nginx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}

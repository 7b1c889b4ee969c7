//! The python target of `oxloop soak`: `python/bench/soak_server.py` (an asyncio
//! echo protocol on oxloop's loop, guarded like the Rust protocol server) in a child
//! process, under the same load generator. No storms and no fd exhaustion: those
//! act on a process's own loop, and here the loop is in another process.

use super::load::{self, LoadResult, Mode};
use super::servers::ServerCounts;
use super::{check, load_checks, Check, LoadChild, Scale, Target, TargetReport};
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The interpreter: `$OXLOOP_SOAK_PYTHON`, else the repository's
/// `.venv/py3.11/bin/python` (made by `./test.sh`).
fn interpreter() -> PathBuf {
    std::env::var_os("OXLOOP_SOAK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::bench::repository_root().join(".venv/py3.11/bin/python"))
}

/// Runs the python target; `Ok(Err(why))` when it cannot run here.
pub fn soak(
    scale: &Scale,
    share: Duration,
    seed: u64,
    checks: &mut Vec<Check>,
) -> io::Result<Result<TargetReport, String>> {
    let python = interpreter();
    let script = crate::bench::repository_root().join("python/bench/soak_server.py");
    if !script.exists() {
        return Ok(Err(format!("{} is missing", script.display())));
    }
    if !crate::bench::python_imports(&python, "oxloop") {
        return Ok(Err(format!(
            "{} is missing or cannot import oxloop (run ./test.sh, or set OXLOOP_SOAK_PYTHON to an interpreter with oxloop installed)",
            python.display()
        )));
    }
    println!(
        "[python] soak: load for up to {:.1} s on {}",
        share.as_secs_f64(),
        python.display()
    );
    let start = Instant::now();
    let mut server = Command::new(&python)
        .arg(&script)
        .arg(scale.server_timeout_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = io::BufReader::new(server.stdout.take().expect("piped")).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let Some(addr) = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
    else {
        let _ = server.kill();
        let _ = server.wait();
        return Err(io::Error::other(format!(
            "the Python server printed {first:?}, not its address"
        )));
    };
    let child = LoadChild::spawn(
        Target::Python,
        addr,
        Mode::Soak,
        &super::load_args(scale, seed, Mode::Soak, share),
    )?;
    let mut result: Option<LoadResult> = None;
    let limit = super::phase_limit(scale, share);
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(json) = line.strip_prefix("result ") {
                    result = serde_json::from_str(json).ok();
                } else if line == "eof" {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let status = child.finish()?;
    // SAFETY: kill(2) on the pid of our own child, not yet reaped.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    let mut counts: Option<ServerCounts> = None;
    let mut panics_reported = 0;
    for line in lines.map_while(Result::ok) {
        if let Some(json) = line.strip_prefix("counts ") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                panics_reported = v["panics_reported"].as_u64().unwrap_or(0);
            }
            counts = serde_json::from_str(json).ok();
        }
    }
    let server_status = server.wait()?;
    let load = result.clone().unwrap_or_default();
    let server_counts = counts.clone().unwrap_or_default();
    let c = |what: &str, ok: bool, detail: String| check(format!("python: {what}"), ok, detail);
    checks.push(c(
        "load generator and server finished and reported",
        result.is_some() && status.success() && counts.is_some() && server_status.success(),
        format!("load generator {status}, server {server_status}"),
    ));
    checks.extend(load_checks("python", &load));
    let count_of = |b: load::Behaviour| -> u64 {
        load.sessions.get(&b).map(|m| m.values().sum()).unwrap_or(0)
    };
    let s = &server_counts;
    checks.push(c(
        "every client connection accepted and accounted for",
        s.accepted == load.connections_made
            && s.open == 0
            && s.accepted == s.closed_clean + s.closed_with_error,
        format!(
            "client made {}, server accepted {}, closed {} cleanly and {} with an error, {} open",
            load.connections_made, s.accepted, s.closed_clean, s.closed_with_error, s.open
        ),
    ));
    checks.push(c(
        "idle and stalled clients cut by the server's timeouts",
        s.idle_cuts == count_of(load::Behaviour::Idle)
            && s.stall_cuts == count_of(load::Behaviour::StopReading),
        format!(
            "idle: {} sessions, {} cut; stopped reading: {} sessions, {} cut",
            count_of(load::Behaviour::Idle),
            s.idle_cuts,
            count_of(load::Behaviour::StopReading),
            s.stall_cuts
        ),
    ));
    let bound = (super::servers::HIGH_WATER + super::servers::READ_CHUNK) as u64;
    checks.push(c(
        "write buffers bounded by the high-water mark (plus one read)",
        s.max_write_buffer <= bound,
        format!("largest {} B, bound {} B", s.max_write_buffer, bound),
    ));
    checks.push(c(
        "every exception raised in data_received reported, the loop going on",
        panics_reported == s.panics_raised && s.panics_raised == count_of(load::Behaviour::Panic),
        format!(
            "{} panic sessions, {} raised, {} reported",
            count_of(load::Behaviour::Panic),
            s.panics_raised,
            panics_reported
        ),
    ));
    Ok(Ok(TargetReport {
        target: "python".to_string(),
        load,
        server: server_counts,
        panics_reported,
        soak_s: start.elapsed().as_secs_f64(),
        ..TargetReport::default()
    }))
}

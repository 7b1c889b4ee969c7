//! The python target of `oxloop soak`: `python/bench/soak_server.py` (an asyncio
//! echo protocol on oxloop's loop, guarded like the Rust protocol server) in a child
//! process, under the same load generator. The storms and the fd phase run inside
//! that process, on its loop, as the Rust targets' run in this one: the server script
//! keeps the books and prints them as JSON lines, and the parent cues its phases on
//! its standard input (see the script's docstring for the conversation).

use super::load::{self, LoadResult, Mode};
use super::servers::ServerCounts;
use super::storms::StormCounts;
use super::{
    check, emfile_checks, load_checks, storm_checks, Check, EmfileReport, LoadChild,
    ProcessResources, Scale, Target, TargetReport,
};
use serde::Deserialize;
use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The interpreter: `$OXLOOP_SOAK_PYTHON`, else the repository's
/// `.venv/py3.11/bin/python` (made by `./test.sh`).
fn interpreter() -> PathBuf {
    std::env::var_os("OXLOOP_SOAK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::bench::repository_root().join(".venv/py3.11/bin/python"))
}

fn script() -> PathBuf {
    crate::bench::repository_root().join("python/bench/soak_server.py")
}

/// Why the python target cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let python = interpreter();
    let script = script();
    if !script.exists() {
        return Some(format!("{} is missing", script.display()));
    }
    if !crate::bench::python_imports(&python, "oxloop") {
        return Some(format!(
            "{} is missing or cannot import oxloop (run ./test.sh, or set OXLOOP_SOAK_PYTHON to an interpreter with oxloop installed)",
            python.display()
        ));
    }
    None
}

/// What the server prints at the end of the soak phase.
#[derive(Deserialize, Default)]
struct SoakLine {
    #[serde(flatten)]
    counts: ServerCounts,
    drained: bool,
    panics_reported: u64,
    storms: StormCounts,
}

/// What the server's exception handler received besides protocol exceptions.
#[derive(Deserialize, Default, Clone, Copy)]
struct Reported {
    callback_exceptions: u64,
    accept_out_of_fds: u64,
    other: u64,
}

/// The server's lines of the fd phase.
#[derive(Deserialize, Default)]
struct Exhausted {
    filler_fds: u64,
    exhausted_limit: u64,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct Freed {
    loop_cpu_s: f64,
    wall_s: f64,
    served_while_exhausted: u64,
    accepted_while_exhausted: u64,
}

#[derive(Deserialize, Default)]
struct EmfileLine {
    #[serde(flatten)]
    counts: ServerCounts,
    drained: bool,
}

/// Everything collected from the two processes, as far as the run got.
#[derive(Default)]
struct Collected {
    load: Option<LoadResult>,
    load_status: Option<std::process::ExitStatus>,
    soak: Option<SoakLine>,
    exhausted: Option<Exhausted>,
    freed: Option<Freed>,
    emfile_load: Option<LoadResult>,
    emfile_load_status: Option<std::process::ExitStatus>,
    emfile: Option<EmfileLine>,
    reported: Option<Reported>,
    process: Option<ProcessResources>,
    server_status: Option<std::process::ExitStatus>,
}

fn parse<T: for<'a> Deserialize<'a>>(what: &str, json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("bad {what} line: {e}"))
}

/// Waits for the load generator's `result` line, then for it to end.
fn load_result(
    child: LoadChild,
    limit: Duration,
) -> (Result<LoadResult, String>, Option<std::process::ExitStatus>) {
    let result = child
        .wait_for("result ", limit)
        .and_then(|json| parse("result", &json));
    let status = if result.is_ok() {
        child.finish()
    } else {
        child.kill()
    };
    (result, status.ok())
}

/// Waits for the server to say the address it listens on (at the start of each phase),
/// then starts a load generator in `mode` against it.
fn spawn_load(server: &LoadChild, mode: Mode, args: &[String]) -> Result<LoadChild, String> {
    let addr = server
        .wait_for("listening on ", Duration::from_secs(60))?
        .parse()
        .map_err(|e| format!("bad address: {e}"))?;
    LoadChild::spawn(Target::Python, addr, mode, args)
        .map_err(|e| format!("could not start the load generator: {e}"))
}

/// The conversation with the server and the two load generators; stops at the
/// first thing that goes wrong and says what.
fn converse(
    server: &LoadChild,
    scale: &Scale,
    share: Duration,
    seed: u64,
    got: &mut Collected,
) -> Result<(), String> {
    let minute = Duration::from_secs(60);
    let child = spawn_load(
        server,
        Mode::Soak,
        &super::load_args(scale, seed, Mode::Soak, share),
    )?;
    let (result, status) = load_result(child, super::soak_limit(scale));
    got.load_status = status;
    got.load = Some(result?);
    server.send("end").map_err(|e| e.to_string())?;
    // The storms may still run (on a slow machine past the load); then every
    // connection must close.
    let storms_limit = Duration::from_millis(scale.storms.spread_ms) * 4 + Duration::from_secs(300);
    got.soak = Some(parse("soak", &server.wait_for("soak ", storms_limit)?)?);

    println!(
        "[python] fds exhausted for {:.1} s while {} connections ping and {} wait",
        scale.emfile_window_ms as f64 / 1000.0,
        scale.emfile_pinging,
        scale.emfile_flood
    );
    let child = spawn_load(
        server,
        Mode::Emfile,
        &super::load_args(scale, seed, Mode::Emfile, Duration::ZERO),
    )?;
    let cued = (|| {
        child.wait_for("ready", minute * 5)?;
        server.send("exhaust").map_err(|e| e.to_string())?;
        got.exhausted = Some(parse("exhausted", &server.wait_for("exhausted ", minute)?)?);
        child.send("flood").map_err(|e| e.to_string())
    })();
    if let Err(e) = cued {
        let _ = child.kill();
        return Err(e);
    }
    let window = Duration::from_millis(scale.emfile_window_ms);
    let (result, status) = load_result(child, super::phase_limit(scale, window));
    got.emfile_load_status = status;
    got.emfile_load = Some(result?);
    got.freed = Some(parse("freed", &server.wait_for("freed ", minute)?)?);
    server.send("end").map_err(|e| e.to_string())?;
    got.emfile = Some(parse("emfile", &server.wait_for("emfile ", minute)?)?);
    got.reported = Some(parse("reported", &server.wait_for("reported ", minute)?)?);
    got.process = Some(parse("resources", &server.wait_for("resources ", minute)?)?);
    Ok(())
}

/// Runs the python target (the caller has checked that it can run).
pub fn soak(
    scale: &Scale,
    share: Duration,
    seed: u64,
    checks: &mut Vec<Check>,
) -> io::Result<TargetReport> {
    let python = interpreter();
    println!(
        "[python] soak: load for {:.1} s or more, until {} messages are verified (at most {:.1} s), with storms, on {}",
        share.as_secs_f64(),
        scale.messages_per_target,
        scale.target_max_s,
        python.display()
    );
    let start = Instant::now();
    let overflows_before = super::listen_overflows();
    let tcp_watch = super::tcp::TcpWatch::start();
    let plan = serde_json::json!({
        "timers": scale.storms.timers,
        "signals": scale.storms.signals,
        "calls_per_thread": scale.storms.calls_per_thread,
        "spread_ms": scale.storms.spread_ms,
        "emfile_window_ms": scale.emfile_window_ms,
        "seed": seed,
    });
    let mut command = Command::new(&python);
    command
        .arg(script())
        .arg(scale.server_timeout_ms.to_string())
        .arg(plan.to_string());
    let server = LoadChild::start(command)?;
    let mut got = Collected::default();
    let outcome = converse(&server, scale, share, seed, &mut got);
    got.server_status = if outcome.is_ok() {
        server.finish()
    } else {
        server.kill()
    }
    .ok();
    let soak_s = start.elapsed().as_secs_f64();
    let kernel_listen_overflows = super::listen_overflows().saturating_sub(overflows_before);
    let kernel_tcp = tcp_watch.finish();
    let load = got.load.clone().unwrap_or_default();
    let soak_line = got.soak.take().unwrap_or_default();
    let reported = got.reported.unwrap_or_default();
    let server_counts = soak_line.counts.clone();
    let c = |what: &str, ok: bool, detail: String| check(format!("python: {what}"), ok, detail);
    let ok = |s: Option<std::process::ExitStatus>| s.is_some_and(|s| s.success());
    let status_text = |s: Option<std::process::ExitStatus>| {
        s.map(|s| s.to_string())
            .unwrap_or_else(|| "not run".to_string())
    };
    checks.push(c(
        "load generator and server finished and reported",
        outcome.is_ok() && ok(got.load_status) && ok(got.server_status),
        format!(
            "load generator {}, server {}{}",
            status_text(got.load_status),
            status_text(got.server_status),
            outcome
                .as_ref()
                .err()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ),
    ));
    checks.extend(load_checks("python", &load, scale));
    let count_of = |b: load::Behaviour| -> u64 {
        load.sessions.get(&b).map(|m| m.values().sum()).unwrap_or(0)
    };
    let s = &server_counts;
    checks.push(c(
        "every client connection accepted and accounted for",
        soak_line.drained
            && s.accepted == load.connections_made
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
    let storms = soak_line.storms.clone();
    checks.push(c(
        "every exception raised in data_received or a callback reported, the loop going on",
        soak_line.panics_reported == s.panics_raised
            && s.panics_raised == count_of(load::Behaviour::Panic)
            && reported.callback_exceptions == storms.callback_panics_scheduled
            && storms.callback_panics_scheduled > 0
            && reported.other == 0,
        format!(
            "{} panic sessions, {} raised in data_received, {} reported; {} raising callbacks, {} reported; {} other exceptions",
            count_of(load::Behaviour::Panic),
            s.panics_raised,
            soak_line.panics_reported,
            storms.callback_panics_scheduled,
            reported.callback_exceptions,
            reported.other
        ),
    ));
    checks.extend(storm_checks("python", scale, &storms));

    let freed_seen = got.freed.is_some();
    let exhausted = got.exhausted.take().unwrap_or_default();
    let freed = got.freed.take().unwrap_or_default();
    let emfile_line = got.emfile.take().unwrap_or_default();
    let emfile = EmfileReport {
        filler_fds: exhausted.filler_fds,
        exhausted_limit: exhausted.exhausted_limit,
        wall_s: freed.wall_s,
        loop_cpu_s: freed.loop_cpu_s,
        loop_iterations: 0,
        served_while_exhausted: freed.served_while_exhausted,
        accepted_while_exhausted: freed.accepted_while_exhausted,
        load: got.emfile_load.clone().unwrap_or_default(),
        server: emfile_line.counts.clone(),
    };
    let e = |what: &str, ok: bool, detail: String| {
        check(format!("python: out of fds: {what}"), ok, detail)
    };
    checks.push(e(
        "fds exhausted (EMFILE), load generator finished and reported",
        exhausted.error.is_none()
            && exhausted.filler_fds > 0
            && freed_seen
            && freed.wall_s > 0.0
            && got.emfile_load.is_some()
            && ok(got.emfile_load_status),
        format!(
            "{} filler fds under a soft limit of {}; load generator {}; asyncio's accept reported EMFILE {} times{}",
            exhausted.filler_fds,
            exhausted.exhausted_limit,
            status_text(got.emfile_load_status),
            reported.accept_out_of_fds,
            exhausted
                .error
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ),
    ));
    checks.extend(emfile_checks("python", Target::Python, scale, &emfile));
    checks.push(e(
        "every connection closed on the server",
        emfile_line.drained && emfile_line.counts.open == 0,
        format!("{} open at the end", emfile_line.counts.open),
    ));

    let process = got.process.take();
    let p = process.clone().unwrap_or_default();
    let (b, end) = (p.baseline, p.end);
    let r =
        |what: &str, ok: bool, detail: String| check(format!("python process: {what}"), ok, detail);
    let reported_resources = process.is_some();
    checks.push(r(
        "fds back to baseline",
        reported_resources && end.fds == b.fds,
        format!("{} at the start, {} at the end", b.fds, end.fds),
    ));
    checks.push(r(
        "threads back to baseline",
        reported_resources && end.threads == b.threads,
        format!("{} at the start, {} at the end", b.threads, end.threads),
    ));
    checks.push(r(
        "child processes back to baseline",
        reported_resources && end.children == b.children,
        format!("{} at the start, {} at the end", b.children, end.children),
    ));
    checks.push(r(
        "RSS back near baseline (within 64 MiB)",
        reported_resources && end.rss_bytes <= b.rss_bytes + super::RSS_SLACK,
        format!(
            "{:.1} MiB at the start, {:.1} MiB peak, {:.1} MiB at the end",
            super::mib(b.rss_bytes),
            super::mib(p.peak_rss_bytes),
            super::mib(end.rss_bytes)
        ),
    ));
    Ok(TargetReport {
        target: "python".to_string(),
        load,
        server: server_counts,
        storms,
        panics_reported: soak_line.panics_reported + reported.callback_exceptions,
        other_panics: reported.other,
        soak_s,
        kernel_listen_overflows,
        kernel_tcp,
        emfile,
        process,
    })
}

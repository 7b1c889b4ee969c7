//! The comparisons: each server in a child process pinned to one CPU, the load
//! generator (the echo load generator or wrk) on another, the server's CPU time read
//! from `/proc/<pid>/stat`.

use crate::http::{http_load, run_wrk, WrkResult};
use crate::loadgen::{self, LoadConfig, LoadResult};
use crate::servers::ServerKind;
use crate::sys;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One load shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// Connections.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
}

impl Case {
    /// The standard matrix: 1 and 100 connections; 64 B, 1 KiB, 16 KiB; 1 and 16
    /// messages in flight.
    pub fn matrix() -> Vec<Case> {
        let mut cases = Vec::new();
        for depth in [1, 16] {
            for connections in [1, 100] {
                for size in [64, 1024, 16 * 1024] {
                    cases.push(Case {
                        connections,
                        size,
                        depth,
                    });
                }
            }
        }
        cases
    }
}

/// One server under one load.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The server.
    pub kind: ServerKind,
    /// The load.
    pub case: Case,
    /// What the load generator saw.
    pub load: LoadResult,
    /// The server process's user-space CPU time during the run.
    pub server_user: Duration,
    /// Its kernel CPU time.
    pub server_system: Duration,
}

impl Measurement {
    /// Server user CPU per echoed message, in nanoseconds.
    pub fn user_ns_per_message(&self) -> f64 {
        self.server_user.as_nanos() as f64 / self.load.messages.max(1) as f64
    }

    /// Server user + system CPU per echoed message, in nanoseconds.
    pub fn total_ns_per_message(&self) -> f64 {
        (self.server_user + self.server_system).as_nanos() as f64 / self.load.messages.max(1) as f64
    }
}

/// A server child process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `exe serve <kind> 127.0.0.1:0 --cpu <cpu>` and waits for its address.
    /// The libuv server runs its own program instead of `exe`.
    pub fn start(exe: &Path, kind: ServerKind, cpu: Option<usize>) -> io::Result<ServerProcess> {
        let program = match kind {
            ServerKind::Libuv => crate::servers::libuv_program().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "the libuv server was not built (no /usr/include/uv.h at build time)",
                )
            })?,
            _ => exe,
        };
        let mut cmd = Command::new(program);
        cmd.args(["serve", kind.name(), "127.0.0.1:0"]);
        if let Some(cpu) = cpu {
            cmd.args(["--cpu", &cpu.to_string()]);
        }
        ServerProcess::spawn(cmd)
    }

    /// Starts any server command pinned to `cpu` (the pinning is set in the child
    /// before it runs the program, so the program need not know about it) and waits
    /// for the `listening on IP:PORT` line it prints first.
    pub fn start_command(mut cmd: Command, cpu: Option<usize>) -> io::Result<ServerProcess> {
        if let Some(cpu) = cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // sched_setaffinity on a stack value (no allocation, no locks), which is
            // async-signal-safe.
            unsafe {
                cmd.pre_exec(move || sys::pin_to_cpu(cpu));
            }
        }
        ServerProcess::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> io::Result<ServerProcess> {
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let addr = read.ok().and_then(|_| {
            line.trim()
                .strip_prefix("listening on ")
                .and_then(|a| a.parse().ok())
        });
        match addr {
            Some(addr) => Ok(ServerProcess { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("server printed {line:?}"),
                ))
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the child to exit by itself (a server started with
    /// `--exit-after`); kills it if it does not.
    pub fn wait_exit(mut self, timeout: Duration) -> io::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server did not exit after its connections closed",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs every case against every server for `duration` each.
pub fn run_echo(
    exe: &Path,
    kinds: &[ServerKind],
    cases: &[Case],
    duration: Duration,
    mut progress: impl FnMut(&Measurement),
) -> io::Result<Vec<Measurement>> {
    let pin = sys::cpu_count() >= 2;
    if pin {
        sys::pin_to_cpu(1)?;
    }
    let mut out = Vec::new();
    for &kind in kinds {
        let server = ServerProcess::start(exe, kind, pin.then_some(0))?;
        for &case in cases {
            let m = measure(&server, kind, case, duration)?;
            progress(&m);
            out.push(m);
        }
    }
    Ok(out)
}

/// Runs one case for `duration` against a running server (`kind` only labels the
/// result) and reads the server's CPU time around it.
pub fn measure(
    server: &ServerProcess,
    kind: ServerKind,
    case: Case,
    duration: Duration,
) -> io::Result<Measurement> {
    let run = run_load(server, case, duration)?;
    Ok(Measurement {
        kind,
        case,
        load: run.load,
        server_user: run.server_user,
        server_system: run.server_system,
    })
}

/// What the load generator saw and the server's CPU time while it ran.
#[derive(Clone, Debug)]
pub struct ServerLoad {
    /// What the load generator saw.
    pub load: LoadResult,
    /// The server process's user-space CPU time during the run.
    pub server_user: Duration,
    /// Its kernel CPU time.
    pub server_system: Duration,
}

/// Runs one case for `duration` against any running server process and reads its
/// CPU time around the run.
pub fn run_load(server: &ServerProcess, case: Case, duration: Duration) -> io::Result<ServerLoad> {
    let cfg = LoadConfig {
        addr: server.addr,
        connections: case.connections,
        size: case.size,
        depth: case.depth,
        duration: Some(duration),
        messages_per_connection: None,
    };
    let (u0, s0) = sys::process_cpu(server.pid())?;
    let load = loadgen::run(&cfg)?;
    // Let the server see the connections close before reading its time.
    std::thread::sleep(Duration::from_millis(50));
    let (u1, s1) = sys::process_cpu(server.pid())?;
    Ok(ServerLoad {
        load,
        server_user: u1.saturating_sub(u0),
        server_system: s1.saturating_sub(s0),
    })
}

/// One HTTP server under one wrk load.
#[derive(Clone, Debug)]
pub struct HttpMeasurement {
    /// The round (from 1).
    pub round: usize,
    /// The server.
    pub kind: ServerKind,
    /// Requests sent per write on each connection (1: plain keep-alive).
    pub pipeline: usize,
    /// What wrk reported.
    pub wrk: WrkResult,
    /// The server process's user-space CPU time during the run.
    pub server_user: Duration,
    /// Its kernel CPU time.
    pub server_system: Duration,
}

impl HttpMeasurement {
    /// Server user CPU per response, in nanoseconds.
    pub fn user_ns_per_request(&self) -> f64 {
        self.server_user.as_nanos() as f64 / self.wrk.requests.max(1) as f64
    }

    /// Server kernel CPU per response, in nanoseconds.
    pub fn system_ns_per_request(&self) -> f64 {
        self.server_system.as_nanos() as f64 / self.wrk.requests.max(1) as f64
    }
}

/// What [`run_http`] runs.
#[derive(Clone, Debug)]
pub struct HttpPlan {
    /// The HTTP servers, in turn.
    pub kinds: Vec<ServerKind>,
    /// wrk's connections.
    pub connections: usize,
    /// Length of each measured wrk run (after a one-second warm-up run).
    pub duration: Duration,
    /// Requests sent per write, one load each (1: plain keep-alive).
    pub pipelines: Vec<usize>,
    /// How often the servers take turns.
    pub rounds: usize,
    /// The CPU the servers are pinned to.
    pub server_cpu: usize,
    /// wrk's CPU (this process pins itself there; wrk inherits it).
    pub client_cpu: usize,
}

/// The HTTP comparison: for each round, server and load, a fresh server process
/// pinned to `server_cpu`, its answers checked by [`http_load`], a one-second wrk
/// warm-up, then the measured wrk run (pinned to `client_cpu`) with the server's CPU
/// time read around it.
pub fn run_http(
    exe: &Path,
    plan: &HttpPlan,
    mut progress: impl FnMut(&HttpMeasurement),
) -> io::Result<Vec<HttpMeasurement>> {
    sys::pin_to_cpu(plan.client_cpu)?;
    let mut out = Vec::new();
    for round in 1..=plan.rounds {
        for &kind in &plan.kinds {
            for &pipeline in &plan.pipelines {
                let fail =
                    |e: io::Error| io::Error::new(e.kind(), format!("http against {kind}: {e}"));
                let server = ServerProcess::start(exe, kind, Some(plan.server_cpu))?;
                http_load(server.addr, 10, Duration::from_millis(100)).map_err(fail)?;
                run_wrk(
                    server.addr,
                    plan.connections,
                    Duration::from_secs(1),
                    pipeline,
                )
                .map_err(fail)?;
                let (u0, s0) = sys::process_cpu(server.pid())?;
                let wrk = run_wrk(server.addr, plan.connections, plan.duration, pipeline)
                    .map_err(fail)?;
                let (u1, s1) = sys::process_cpu(server.pid())?;
                let m = HttpMeasurement {
                    round,
                    kind,
                    pipeline,
                    wrk,
                    server_user: u1.saturating_sub(u0),
                    server_system: s1.saturating_sub(s0),
                };
                progress(&m);
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// System calls a server made while echoing a fixed number of messages, counted by
/// `strace -c -f -p <pid>`.
#[derive(Clone, Debug)]
pub struct SyscallCount {
    /// Messages echoed (and verified) while strace was attached.
    pub messages: u64,
    /// System calls counted in that time, all threads.
    pub calls: u64,
    /// The busiest system calls, most frequent first: `(name, calls)`.
    pub top: Vec<(String, u64)>,
}

impl SyscallCount {
    /// System calls per echoed message.
    pub fn per_message(&self) -> f64 {
        self.calls as f64 / self.messages.max(1) as f64
    }
}

/// Whether `program arg` runs and succeeds (`tool_runs("strace", "-V")`): how the
/// benchmarks learn that a tool they need is installed.
pub fn tool_runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Attaches `strace -c -f` to the server, echoes `messages` messages of `case` per
/// connection (verified), detaches, and returns the count.
pub fn count_syscalls(
    server: &ServerProcess,
    case: Case,
    messages: u64,
) -> io::Result<SyscallCount> {
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-p", &server.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = strace.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    // strace prints "Process N attached" for each thread it attaches to.
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                let attached = line.contains("attached");
                lines.push(line);
                if attached {
                    break;
                }
            }
            Err(_) => {
                let _ = strace.kill();
                return Err(io::Error::other(format!(
                    "strace did not attach: {}",
                    lines.join("; ")
                )));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let cfg = LoadConfig {
        addr: server.addr,
        connections: case.connections,
        size: case.size,
        depth: case.depth,
        duration: None,
        messages_per_connection: Some(messages),
    };
    let load = loadgen::run(&cfg);
    std::thread::sleep(Duration::from_millis(50));
    // strace prints its summary when interrupted.
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    let _ = reader.join();
    lines.extend(rx.try_iter());
    let load = load?;
    parse_strace_summary(&lines)
        .map(|(calls, top)| SyscallCount {
            messages: load.messages,
            calls,
            top,
        })
        .ok_or_else(|| io::Error::other(format!("no strace summary in: {}", lines.join("\n"))))
}

/// Reads the total and per-call counts out of `strace -c`'s table.
fn parse_strace_summary(lines: &[String]) -> Option<(u64, Vec<(String, u64)>)> {
    let mut top = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // "% time  seconds  usecs/call  calls  [errors]  syscall"
        if cols.len() < 5 || cols[0].parse::<f64>().is_err() {
            continue;
        }
        let Ok(calls) = cols[3].parse::<u64>() else {
            continue;
        };
        let name = cols[cols.len() - 1].to_string();
        if name == "total" {
            top.sort_by_key(|t: &(String, u64)| std::cmp::Reverse(t.1));
            top.truncate(5);
            return Some((calls, top));
        }
        top.push((name, calls));
    }
    None
}

/// User-space instructions a server executed while echoing, counted by valgrind's
/// callgrind in two runs of different lengths.
#[derive(Clone, Copy, Debug)]
pub struct InstructionCount {
    /// Messages echoed (all connections) in the short run.
    pub short_messages: u64,
    /// Instructions of the whole short run, start-up and shutdown included.
    pub short_instructions: u64,
    /// Messages echoed in the long run.
    pub long_messages: u64,
    /// Instructions of the whole long run.
    pub long_instructions: u64,
}

impl InstructionCount {
    /// Instructions per echoed message: the difference between the runs over the
    /// difference in messages, so start-up and shutdown cancel out.
    pub fn per_message(&self) -> f64 {
        let messages = self
            .long_messages
            .saturating_sub(self.short_messages)
            .max(1);
        self.long_instructions
            .saturating_sub(self.short_instructions) as f64
            / messages as f64
    }
}

/// Counts the user-space instructions `kind` executes per echoed message of `case`:
/// the server runs under `valgrind --tool=callgrind` with `--exit-after` (so callgrind
/// writes its totals when the connections close), once for `short` and once for
/// `long` messages per connection (see [`InstructionCount::per_message`]). What
/// `crates/oxloop-bench/callgrind.sh` does, from Rust. `exe` is a program with the
/// `serve` command (this crate's or `oxloop`'s); `cpu` pins the server.
pub fn count_instructions(
    exe: &Path,
    kind: ServerKind,
    case: Case,
    (short, long): (u64, u64),
    cpu: Option<usize>,
) -> io::Result<InstructionCount> {
    let dir = std::env::temp_dir().join(format!("oxloop-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let (short_messages, short_instructions) =
            callgrind_run(exe, kind, case, short, &dir, cpu)?;
        let (long_messages, long_instructions) = callgrind_run(exe, kind, case, long, &dir, cpu)?;
        Ok(InstructionCount {
            short_messages,
            short_instructions,
            long_messages,
            long_instructions,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One server run under callgrind: messages echoed and instructions counted.
fn callgrind_run(
    exe: &Path,
    kind: ServerKind,
    case: Case,
    messages: u64,
    dir: &Path,
    cpu: Option<usize>,
) -> io::Result<(u64, u64)> {
    let program = match kind {
        ServerKind::Libuv => crate::servers::libuv_program().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the libuv server was not built")
        })?,
        _ => exe,
    };
    let out = dir.join(format!("callgrind.{}.{messages}", kind.name()));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(program)
        .args(["serve", kind.name(), "127.0.0.1:0", "--exit-after"])
        .arg(case.connections.to_string())
        .stderr(Stdio::null());
    let server = ServerProcess::start_command(cmd, cpu)?;
    let cfg = LoadConfig {
        addr: server.addr,
        connections: case.connections,
        size: case.size,
        depth: case.depth,
        duration: None,
        messages_per_connection: Some(messages),
    };
    let load = loadgen::run(&cfg)?;
    let status = server.wait_exit(Duration::from_secs(60))?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "{kind} under callgrind: {status}"
        )));
    }
    let text = std::fs::read_to_string(&out)?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no totals in {}", out.display())))?;
    Ok((load.messages, total))
}

/// Resident memory of a server before and after `count` idle connections (each
/// checked with a one-byte echo first). Returns `(before, after)` in bytes.
pub fn idle_memory(exe: &Path, kind: ServerKind, count: usize) -> io::Result<(u64, u64)> {
    sys::raise_fd_limit()?;
    let server = ServerProcess::start(exe, kind, None)?;
    // Warm up: one connection, so lazily created parts (the read buffer) count in
    // the baseline rather than per connection.
    let warm = loadgen::open_idle(server.addr, 1)?;
    std::thread::sleep(Duration::from_millis(100));
    let before = sys::process_rss(server.pid())?;
    let conns = loadgen::open_idle(server.addr, count)?;
    std::thread::sleep(Duration::from_millis(300));
    let after = sys::process_rss(server.pid())?;
    drop(conns);
    drop(warm);
    Ok((before, after))
}

//! `oxloop soak`: a soak and fault run of oxloop's servers.
//!
//! For each target (the protocol API, the async API, oxloop-http) an echo server runs
//! on a fresh loop on this process's main thread while a load generator in a child
//! process (`oxloop soak-load`, see [`load`]) drives it with many connections of
//! random behaviour, verifying every echoed byte; meanwhile storms of timers, signals,
//! cross-thread calls and panicking callbacks hit the same loop ([`storms`]). Then
//! the process runs out of fds while a few connections are served and new ones wait
//! in the backlog: the loop's CPU time is measured while the limit lasts, and the
//! waiting connections must be served once fds are free. At the end the process's
//! fds, threads and children must be back to what they were at the start, and its
//! resident memory near it. Every check is a correctness check; the one comparison
//! with time (the loop's CPU while out of fds) has a bound a spinning loop cannot
//! meet and a sleeping one cannot miss.

pub mod load;
mod python;
mod servers;
mod storms;
pub mod tcp;

use load::{LoadResult, Mode};
use oxloop::EventLoop;
use serde::{Deserialize, Serialize};
use servers::{Counters, ServerCounts};
use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use storms::{StormCounts, StormScale, Storms};

/// A server under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The protocol/transport API (`oxloop::protocol`).
    Protocol,
    /// Tasks and async sockets (`oxloop::net`, `Async<T>`).
    Async,
    /// oxloop-http.
    Http,
    /// oxloop's asyncio loop in Python: `python/bench/soak_server.py` in a child
    /// process, with the storms and the fd phase run inside it.
    Python,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Protocol => "protocol",
            Target::Async => "async",
            Target::Http => "http",
            Target::Python => "python",
        }
    }
}

/// Options of `oxloop soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long the load runs at least, over all targets together: `120s`, `500ms` or
    /// plain seconds (default 60 s; 2 s with --short), split evenly. A target's load
    /// goes on past its share until its share of --messages is verified, up to four
    /// times its share plus 60 s.
    #[arg(long, value_name = "D", value_parser = crate::bench::parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent client connections per target (default 10,000; 100 with --short).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Messages echoed and verified at least, over all targets together, split evenly
    /// (default 1,000,000; 2,000 with --short).
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// A small, quick run (what `./test.sh` runs): the same scenarios at small scale.
    #[arg(long)]
    pub short: bool,
    /// Also write the report to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run only these targets (comma list): protocol, async, http, python (default:
    /// all; without --short, python is skipped with a note when no interpreter with
    /// oxloop is found: `$OXLOOP_SOAK_PYTHON`, else the repository's
    /// `.venv/py3.11/bin/python`; --short leaves python out unless named here).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub targets: Option<Vec<Target>>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The scale of a run, after defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Least load time over all targets, seconds.
    pub duration_s: f64,
    /// Least load time per target, seconds.
    pub target_min_s: f64,
    /// Most load time per target, seconds: the load stops then even if its messages
    /// are not all verified.
    pub target_max_s: f64,
    /// Concurrent client connections per target.
    pub connections: usize,
    /// Messages verified at least, over all targets together.
    pub messages: u64,
    /// Messages verified at least per target.
    pub messages_per_target: u64,
    /// Whether `--short` was given.
    pub short: bool,
    /// The seed.
    pub seed: u64,
    /// The servers' idle and stall timeout, milliseconds.
    pub server_timeout_ms: u64,
    /// The storms per target.
    pub storms: StormScale,
    /// Connections kept pinging while fds are exhausted.
    pub emfile_pinging: usize,
    /// Connections opened while fds are exhausted.
    pub emfile_flood: usize,
    /// How long fds stay exhausted, milliseconds.
    pub emfile_window_ms: u64,
}

/// One check and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, and where.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The figures behind it.
    pub detail: String,
}

/// The fd-exhaustion phase of one target.
#[derive(Debug, Default, Clone, Serialize)]
pub struct EmfileReport {
    /// fds opened to use up the limit.
    pub filler_fds: u64,
    /// The soft limit while exhausted.
    pub exhausted_limit: u64,
    /// How long the limit lasted, seconds.
    pub wall_s: f64,
    /// The loop thread's CPU time meanwhile (getrusage RUSAGE_THREAD), seconds.
    pub loop_cpu_s: f64,
    /// Loop iterations meanwhile.
    pub loop_iterations: u64,
    /// Bytes (HTTP: requests) echoed on the open connections meanwhile.
    pub served_while_exhausted: u64,
    /// Connections accepted meanwhile (none can be).
    pub accepted_while_exhausted: u64,
    /// The load generator's figures.
    pub load: LoadResult,
    /// The server's counts.
    pub server: ServerCounts,
}

/// Everything one target went through.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TargetReport {
    /// Which target.
    pub target: String,
    /// The load generator's figures for the soak.
    pub load: LoadResult,
    /// The server's counts after the soak.
    pub server: ServerCounts,
    /// The storms' counts.
    pub storms: StormCounts,
    /// Panics the loop's exception handler received.
    pub panics_reported: u64,
    /// Panics it received that the soak did not raise (must be 0).
    pub other_panics: u64,
    /// Seconds the soak phase took (python: with its fd phase, which runs in the same
    /// server process).
    pub soak_s: f64,
    /// Connections the kernel dropped from a full accept queue during the soak phase
    /// (`ListenOverflows` in /proc/net/netstat: machine-wide, so other programs'
    /// listeners count too).
    pub kernel_listen_overflows: u64,
    /// The machine's TCP during the soak phase (memory pressure, drops, retransmission
    /// timeouts): what tells a session stopped by TCP itself from one a server stopped.
    pub kernel_tcp: tcp::KernelTcp,
    /// The fd-exhaustion phase.
    pub emfile: EmfileReport,
    /// The python target: what its own process held at its start and end (the Rust
    /// targets run in this process, whose figures are the run's `baseline` and `end`).
    pub process: Option<ProcessResources>,
}

/// What a server process held at its start and at its end.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProcessResources {
    /// At the start.
    pub baseline: Resources,
    /// At the end.
    pub end: Resources,
    /// The peak resident memory (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// What the process holds.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Resources {
    /// Open fds (/proc/self/fd).
    pub fds: u64,
    /// Threads (/proc/self/task).
    pub threads: u64,
    /// Child processes alive.
    pub children: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// The whole run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// When it started (UTC).
    pub date: String,
    /// The command line.
    pub command: String,
    /// CPUs, kernel and load average at the start.
    pub machine: String,
    /// The soft fd limit: before raising it, after, and the hard limit.
    pub fd_limit: [u64; 3],
    /// The scale.
    pub scale: Option<Scale>,
    /// Per target.
    pub targets: Vec<TargetReport>,
    /// Targets not run, and why.
    pub skipped: Vec<String>,
    /// At the start.
    pub baseline: Resources,
    /// At the end.
    pub end: Resources,
    /// The peak resident memory (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Every check.
    pub checks: Vec<Check>,
    /// Whether every check held.
    pub passed: bool,
    /// Seconds in all.
    pub elapsed_s: f64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (new soft, old soft,
/// hard).
pub fn raise_fd_limit() -> io::Result<(u64, u64, u64)> {
    let (old, hard) = fd_limit()?;
    set_soft_fd_limit(hard)?;
    Ok((hard, old, hard))
}

fn fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the local struct only.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

fn set_soft_fd_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = fd_limit()?;
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the local struct only.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The machine's `TcpExt ListenOverflows` counter.
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let overflows = tcp::tcp_ext(&netstat)
        .find(|(name, _)| *name == "ListenOverflows")
        .map_or(0, |(_, value)| value);
    overflows
}

fn count_dir(path: &str) -> u64 {
    std::fs::read_dir(path)
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Child processes of this process, from /proc/*/stat.
fn children() -> u64 {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|p| p == me))
                .unwrap_or(false)
        })
        .count() as u64
}

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn resources() -> Resources {
    Resources {
        fds: count_dir("/proc/self/fd"),
        threads: count_dir("/proc/self/task"),
        children: children(),
        rss_bytes: status_field("VmRSS:"),
    }
}

fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full `rusage` into the pointer we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Hands freed heap back to the system, so that RSS shows what is still in use.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A child process (the load generator, or the Python server) and the lines it
/// prints.
struct LoadChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LoadChild {
    fn spawn(
        target: Target,
        addr: std::net::SocketAddr,
        mode: Mode,
        args: &[String],
    ) -> io::Result<LoadChild> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("soak-load")
            .args(["--target", target.name()])
            .args(["--addr", &addr.to_string()])
            .args([
                "--mode",
                match mode {
                    Mode::Soak => "soak",
                    Mode::Emfile => "emfile",
                },
            ])
            .args(args);
        LoadChild::start(command)
    }

    /// Starts `command` with its standard input and output piped, and a thread that
    /// hands on each line it prints (then `eof`).
    fn start(mut command: Command) -> io::Result<LoadChild> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("soak-load-output".into())
            .spawn(move || {
                for line in io::BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(l).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send("eof".to_string());
            })?;
        Ok(LoadChild {
            stdin: child.stdin.take(),
            child,
            lines,
            reader: Some(reader),
        })
    }

    /// Writes one line to the child's standard input.
    fn send(&self, line: &str) -> io::Result<()> {
        let mut stdin = self
            .stdin
            .as_ref()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }

    /// Waits up to `limit` for a line starting with `prefix` (other lines are
    /// skipped) and returns the rest of it.
    fn wait_for(&self, prefix: &str, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "eof" => {
                    return Err(format!("it ended before printing {prefix:?}"))
                }
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim_start().to_string());
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no {prefix:?} line within {:.0} s",
                        limit.as_secs_f64()
                    ))
                }
            }
        }
    }

    /// Kills the child (when a phase went wrong) and waits for it.
    fn kill(mut self) -> io::Result<std::process::ExitStatus> {
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for the child and its reader thread.
    fn finish(mut self) -> io::Result<std::process::ExitStatus> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(status)
    }
}

/// What the poll timer learned from the child.
#[derive(Default)]
struct ChildNews {
    result: Option<LoadResult>,
    ended: bool,
    ready: bool,
    error: Option<String>,
}

fn take_lines(child: &LoadChild, news: &mut ChildNews) {
    while let Ok(line) = child.lines.try_recv() {
        if let Some(json) = line.strip_prefix("result ") {
            match serde_json::from_str(json) {
                Ok(r) => news.result = Some(r),
                Err(e) => news.error = Some(format!("bad result line: {e}")),
            }
        } else if line == "ready" {
            news.ready = true;
        } else if line == "eof" {
            news.ended = true;
        }
    }
}

/// Panics the exception handler received: raised by the soak, and others.
#[derive(Default)]
struct PanicBook {
    soak: Cell<u64>,
    other: Cell<u64>,
}

fn new_loop() -> io::Result<(EventLoop, Rc<PanicBook>)> {
    let ev = EventLoop::new()?;
    let book = Rc::new(PanicBook::default());
    let b = book.clone();
    ev.set_exception_handler(move |p| {
        if p.message().starts_with("soak:") {
            b.soak.set(b.soak.get() + 1);
        } else {
            b.other.set(b.other.get() + 1);
            eprintln!("oxloop soak: unexpected panic: {p}");
        }
    });
    Ok((ev, book))
}

/// Runs the loop until `done` says so, polling every 10 ms; gives up after `limit`.
fn run_until(
    ev: &EventLoop,
    limit: Duration,
    done: impl FnMut() -> bool + 'static,
) -> io::Result<bool> {
    let finished = Rc::new(Cell::new(false));
    let deadline = Instant::now() + limit;
    fn poll(
        ev: EventLoop,
        deadline: Instant,
        finished: Rc<Cell<bool>>,
        mut done: Box<dyn FnMut() -> bool>,
    ) {
        if done() {
            finished.set(true);
            ev.stop();
        } else if Instant::now() > deadline {
            ev.stop();
        } else {
            let ev2 = ev.clone();
            ev.call_later(Duration::from_millis(10), move || {
                poll(ev2, deadline, finished, done)
            });
        }
    }
    let (ev2, f2) = (ev.clone(), finished.clone());
    ev.call_soon(move || poll(ev2, deadline, f2, Box::new(done)));
    ev.run_forever()?;
    Ok(finished.get())
}

/// Runs `oxloop soak`; the exit status is non-zero if any check failed.
pub fn run(args: SoakArgs) -> io::Result<bool> {
    let started = Instant::now();
    let mut report = Report {
        date: crate::bench::utc_now(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        ..Report::default()
    };
    // SIGUSR1 is the signal storm's; ignored outside it, so a straggler after its
    // handler is gone cannot end the process.
    // SAFETY: setting a signal's disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    quiet_soak_panics();
    let (soft, old_soft, hard) = raise_fd_limit()?;
    report.fd_limit = [old_soft, soft, hard];
    let short = args.short;
    let duration = args.duration.unwrap_or(if short {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(60)
    });
    let connections = args.connections.unwrap_or(if short { 100 } else { 10_000 });
    let messages = args
        .messages
        .unwrap_or(if short { 2_000 } else { 1_000_000 });
    let mut targets = args.targets.clone().unwrap_or_else(|| {
        let mut all = vec![Target::Protocol, Target::Async, Target::Http];
        if !short {
            all.push(Target::Python);
        }
        all
    });
    // A target that cannot run is left out before the time and messages are split.
    if targets.contains(&Target::Python) {
        if let Some(why) = python::unavailable() {
            println!("[python] skipped: {why}");
            report.skipped.push(format!("python: {why}"));
            targets.retain(|&t| t != Target::Python);
        }
    }
    let share = duration / targets.len().max(1) as u32;
    let scale = Scale {
        duration_s: duration.as_secs_f64(),
        target_min_s: share.as_secs_f64(),
        target_max_s: (share * 4 + Duration::from_secs(60)).as_secs_f64(),
        connections,
        messages,
        messages_per_target: messages / targets.len().max(1) as u64,
        short,
        seed: args.seed,
        server_timeout_ms: if short { 3_000 } else { 10_000 },
        storms: StormScale {
            timers: if short { 20_000 } else { 1_000_000 },
            signals: if short { 1_000 } else { 5_000 },
            calls_per_thread: if short { 2_500 } else { 125_000 },
            spread_ms: share.as_millis() as u64,
        },
        emfile_pinging: if short { 10 } else { 100 },
        emfile_flood: if short { 50 } else { 500 },
        emfile_window_ms: if short { 1_000 } else { 5_000 },
    };
    report.scale = Some(scale.clone());
    // Connections over the limit cannot be opened: say so rather than fail later.
    let needed = connections as u64 + 200;
    if needed > soft {
        eprintln!(
            "oxloop soak: {connections} connections need about {needed} fds; the limit is {soft}"
        );
    }
    report.baseline = resources();
    println!(
        "oxloop soak: {} s of load or more over {} target(s), {} connections and at least {} messages verified per target; fd limit {} (was {}, hard {})",
        scale.duration_s,
        targets.len(),
        connections,
        scale.messages_per_target,
        soft,
        old_soft,
        hard
    );
    let mut checks = Vec::new();
    for (i, &target) in targets.iter().enumerate() {
        let seed = args.seed.wrapping_add(i as u64 * 1000);
        if target == Target::Python {
            let tr = python::soak(&scale, share, seed, &mut checks)?;
            print_target(&tr);
            report.targets.push(tr);
            continue;
        }
        let mut tr = soak_target(target, &scale, share, seed, &mut checks)?;
        tr.emfile = emfile_target(target, &scale, seed, &mut checks)?;
        print_target(&tr);
        report.targets.push(tr);
    }
    trim_heap();
    // The load children are reaped; give the kernel a moment to tear down their
    // /proc entries and our exited threads.
    std::thread::sleep(Duration::from_millis(200));
    report.end = resources();
    report.peak_rss_bytes = status_field("VmHWM:");
    let verified: u64 = report.targets.iter().map(|t| t.load.messages).sum();
    checks.push(check(
        "at least --messages verified over all targets",
        verified >= messages,
        format!(
            "{verified} verified over {} target(s), {messages} asked for",
            report.targets.len()
        ),
    ));
    let (b, e) = (report.baseline, report.end);
    checks.push(check(
        "fds back to baseline",
        e.fds == b.fds,
        format!("{} at the start, {} at the end", b.fds, e.fds),
    ));
    checks.push(check(
        "threads back to baseline",
        e.threads == b.threads,
        format!("{} at the start, {} at the end", b.threads, e.threads),
    ));
    checks.push(check(
        "child processes back to baseline",
        e.children == b.children,
        format!("{} at the start, {} at the end", b.children, e.children),
    ));
    checks.push(check(
        "RSS back near baseline (within 64 MiB)",
        e.rss_bytes <= b.rss_bytes + RSS_SLACK,
        format!(
            "{:.1} MiB at the start, {:.1} MiB peak, {:.1} MiB at the end",
            mib(b.rss_bytes),
            mib(report.peak_rss_bytes),
            mib(e.rss_bytes)
        ),
    ));
    report.passed = checks.iter().all(|c| c.passed);
    report.checks = checks;
    report.elapsed_s = started.elapsed().as_secs_f64();
    print_checks(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
        std::fs::write(path, json + "\n")?;
        println!("JSON written to {}", path.display());
    }
    Ok(report.passed)
}

/// How far above its start a process's resident memory may end.
const RSS_SLACK: u64 = 64 * 1024 * 1024;

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// What the load generator verified of one target: no byte wrong, every session
/// ended as its behaviour expects, its share of the messages verified, and all its
/// connections open at once.
fn load_checks(target: &str, load: &LoadResult, scale: &Scale) -> [Check; 4] {
    let c = |what: &str, ok: bool, detail: String| check(format!("{target}: {what}"), ok, detail);
    let (soft, _) = fd_limit().unwrap_or((0, 0));
    [
        c(
            "its share of the messages verified",
            load.messages >= scale.messages_per_target,
            format!(
                "{} verified, {} asked for, in {:.1} s (at least {:.1} s, at most {:.1} s): stopped by {}",
                load.messages,
                scale.messages_per_target,
                load.elapsed_s,
                scale.target_min_s,
                scale.target_max_s,
                load.stopped_by
            ),
        ),
        c(
            "every connection asked for open at once",
            load.peak_connections >= scale.connections as u64,
            format!(
                "{} open at once ({:.1} s in), {} asked for; fd limits: {} here, {} in the load generator",
                load.peak_connections, load.peak_reached_s, scale.connections, soft, load.fd_limit
            ),
        ),
        c(
            "zero verification errors",
            load.verification_errors == 0,
            format!(
                "{} messages, {} bytes verified, {} errors",
                load.messages, load.bytes_verified, load.verification_errors
            ),
        ),
        c(
            "every session ended as its behaviour expects",
            load.unexpected_outcomes == 0 && load.connections_made > 0,
            format!(
                "{} sessions, {} unexpected{}",
                load.sessions.values().flat_map(|m| m.values()).sum::<u64>(),
                load.unexpected_outcomes,
                if load.first_failures.is_empty() {
                    String::new()
                } else {
                    format!(": {}", load.first_failures.join("; "))
                }
            ),
        ),
    ]
}

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

/// The default panic hook prints every panic; the soak's own are counted instead.
fn quiet_soak_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(|s| s.as_str()))
            .unwrap_or("");
        if !msg.starts_with("soak:") {
            default(info);
        }
    }));
}

fn load_args(scale: &Scale, seed: u64, mode: Mode, share: Duration) -> Vec<String> {
    let mut a = vec![
        "--seed".to_string(),
        seed.to_string(),
        "--server-timeout-ms".to_string(),
        scale.server_timeout_ms.to_string(),
    ];
    match mode {
        Mode::Soak => a.extend([
            "--connections".to_string(),
            scale.connections.to_string(),
            "--messages".to_string(),
            scale.messages_per_target.to_string(),
            "--duration-ms".to_string(),
            share.as_millis().to_string(),
            "--max-duration-ms".to_string(),
            ((scale.target_max_s * 1000.0) as u64).to_string(),
        ]),
        Mode::Emfile => a.extend([
            "--connections".to_string(),
            scale.emfile_pinging.to_string(),
            "--flood".to_string(),
            scale.emfile_flood.to_string(),
        ]),
    }
    a
}

/// The most connections a server takes at once (oxloop-http answers 503 past it): a
/// worker has two open for a moment (the one it kept and its next), and a busy
/// server learns of closes late, so twice `--connections` and more.
fn server_max_connections(scale: &Scale) -> usize {
    scale.connections * 2 + 1000
}

/// Generous: the longest a phase may take before it counts as hung.
fn phase_limit(scale: &Scale, share: Duration) -> Duration {
    share * 3 + Duration::from_millis(scale.server_timeout_ms * 10) + Duration::from_secs(300)
}

/// The longest a soak phase may take before it counts as hung: the load's most time,
/// then every session's end (a session waiting for a cut waits longest).
fn soak_limit(scale: &Scale) -> Duration {
    Duration::from_secs_f64(scale.target_max_s)
        + Duration::from_millis(scale.server_timeout_ms * 10)
        + Duration::from_secs(300)
}

fn soak_target(
    target: Target,
    scale: &Scale,
    share: Duration,
    seed: u64,
    checks: &mut Vec<Check>,
) -> io::Result<TargetReport> {
    let name = target.name();
    println!(
        "[{name}] soak: load for {:.1} s or more, until {} messages are verified (at most {:.1} s), with storms",
        share.as_secs_f64(),
        scale.messages_per_target,
        scale.target_max_s
    );
    let start = Instant::now();
    let overflows_before = listen_overflows();
    let tcp_watch = tcp::TcpWatch::start();
    let (ev, book) = new_loop()?;
    let counters = Rc::new(Counters::default());
    let timeout = Duration::from_millis(scale.server_timeout_ms);
    let (server, addr) = servers::start(
        &ev,
        target,
        counters.clone(),
        timeout,
        server_max_connections(scale),
    )?;
    let storms = Rc::new(RefCell::new(Some(Storms::start(&ev, scale.storms, seed)?)));
    let child = Rc::new(LoadChild::spawn(
        target,
        addr,
        Mode::Soak,
        &load_args(scale, seed, Mode::Soak, share),
    )?);
    let news = Rc::new(RefCell::new(ChildNews::default()));
    let (c2, n2, s2) = (child.clone(), news.clone(), storms.clone());
    let finished = run_until(&ev, soak_limit(scale), move || {
        let mut news = n2.borrow_mut();
        take_lines(&c2, &mut news);
        let storms = s2.borrow();
        let storms = storms.as_ref().expect("storms run");
        if news.result.is_some() || news.ended {
            storms.wind_down();
            return storms.finished();
        }
        false
    })?;
    let storm_counts = storms.borrow_mut().take().expect("storms run").finish();
    // Every connection ends on the server too; then the listener closes.
    let c3 = counters.clone();
    let drained = run_until(&ev, Duration::from_secs(30), move || {
        c3.snapshot().open == 0
    })?;
    let open_at_end = server.open(&counters);
    server.close();
    run_until(&ev, Duration::from_millis(100), || false)?;
    ev.destroy();
    drop(ev);
    let child = Rc::try_unwrap(child).map_err(|_| io::Error::other("child still shared"))?;
    let status = child.finish()?;
    let news = news.take();
    let load = news.result.clone().unwrap_or_default();
    let server_counts = counters.snapshot();
    let tr = TargetReport {
        target: name.to_string(),
        load: load.clone(),
        server: server_counts.clone(),
        storms: storm_counts.clone(),
        panics_reported: book.soak.get(),
        other_panics: book.other.get(),
        soak_s: start.elapsed().as_secs_f64(),
        kernel_listen_overflows: listen_overflows().saturating_sub(overflows_before),
        kernel_tcp: tcp_watch.finish(),
        emfile: EmfileReport::default(),
        process: None,
    };
    let c = |what: &str, ok: bool, detail: String| check(format!("{name}: {what}"), ok, detail);
    checks.push(c(
        "load generator finished and reported",
        finished && news.result.is_some() && status.success(),
        format!(
            "{status}{}",
            news.error.map(|e| format!("; {e}")).unwrap_or_default()
        ),
    ));
    checks.extend(load_checks(name, &load, scale));
    checks.push(c(
        "every connection closed on the server",
        drained && open_at_end == 0,
        format!("{open_at_end} open at the end"),
    ));
    let count_of = |b: load::Behaviour| -> u64 {
        load.sessions.get(&b).map(|m| m.values().sum()).unwrap_or(0)
    };
    let survived_panics = load
        .sessions
        .get(&load::Behaviour::Panic)
        .and_then(|m| m.get(&load::Outcome::SurvivedPanic))
        .copied()
        .unwrap_or(0);
    if target != Target::Http {
        checks.push(c(
            "every client connection accepted and accounted for",
            server_counts.accepted == load.connections_made
                && server_counts.accepted
                    == server_counts.closed_clean + server_counts.closed_with_error,
            format!(
                "client made {}, server accepted {}, closed {} cleanly and {} with an error; kernel listen overflows meanwhile {}",
                load.connections_made,
                server_counts.accepted,
                server_counts.closed_clean,
                server_counts.closed_with_error,
                tr.kernel_listen_overflows
            ),
        ));
        checks.push(c(
            "idle and stalled clients cut by the server's timeouts",
            server_counts.idle_cuts == count_of(load::Behaviour::Idle)
                && server_counts.stall_cuts == count_of(load::Behaviour::StopReading),
            format!(
                "idle: {} sessions, {} cut; stopped reading: {} sessions, {} cut",
                count_of(load::Behaviour::Idle),
                server_counts.idle_cuts,
                count_of(load::Behaviour::StopReading),
                server_counts.stall_cuts
            ),
        ));
    }
    if target == Target::Protocol {
        let bound = (servers::HIGH_WATER + servers::READ_CHUNK) as u64;
        checks.push(c(
            "write buffers bounded by the high-water mark (plus one read)",
            server_counts.max_write_buffer <= bound,
            format!(
                "largest {} B, bound {} B",
                server_counts.max_write_buffer, bound
            ),
        ));
    }
    let expected_panics = server_counts.panics_raised + storm_counts.callback_panics_scheduled;
    // oxloop-http answers a panicking handler with a 500 itself; the loop sees none.
    let reported_expected = if target == Target::Http {
        storm_counts.callback_panics_scheduled
    } else {
        expected_panics
    };
    checks.push(c(
        "every panic reported to the exception handler, the loop going on",
        book.soak.get() == reported_expected && book.other.get() == 0 && server_counts.panics_raised >= survived_panics,
        format!(
            "{} raised by the server, {} by callbacks, {} reported, {} unexpected; {} panic sessions served to the end",
            server_counts.panics_raised,
            storm_counts.callback_panics_scheduled,
            book.soak.get(),
            book.other.get(),
            survived_panics
        ),
    ));
    checks.extend(storm_checks(name, scale, &storm_counts));
    Ok(tr)
}

/// The storms' books: every timer fired or cancelled, every signal burst seen, every
/// cross-thread call run once and in order.
fn storm_checks(name: &str, scale: &Scale, s: &StormCounts) -> [Check; 3] {
    let c = |what: &str, ok: bool, detail: String| check(format!("{name}: {what}"), ok, detail);
    [
        c(
            "timer storm: every timer fired or cancelled, none after its cancel",
            s.timers_set == scale.storms.timers
                && s.timers_fired + s.timers_cancelled == s.timers_set
                && s.timer_misfires == 0,
            format!(
                "{} set, {} fired, {} cancelled, {} misfires",
                s.timers_set, s.timers_fired, s.timers_cancelled, s.timer_misfires
            ),
        ),
        c(
            "signal storm: the handler ran after every burst",
            s.signal_bursts_missed == 0 && s.signals_sent > 0,
            format!(
                "{} signals sent, handler ran {} times, {} bursts missed",
                s.signals_sent, s.signal_handler_runs, s.signal_bursts_missed
            ),
        ),
        c(
            "cross-thread storm: every call ran once, in its thread's order",
            s.calls_sent == s.calls_planned
                && s.calls_run == s.calls_sent
                && s.calls_out_of_order == 0,
            format!(
                "{} threads, {} calls made, {} run, {} out of order",
                storms::CALLING_THREADS,
                s.calls_sent,
                s.calls_run,
                s.calls_out_of_order
            ),
        ),
    ]
}

/// The largest loop CPU time, as a share of wall time, that counts as not spinning
/// while fds are exhausted. A spinning accept loop retries without sleeping and uses
/// a whole core (or all the share of one it can get: on a machine loaded with other
/// work it may get less, which is why the bound is not lower); a loop that backs off
/// wakes every 100 ms plus once per ping, and uses a few percent.
const EMFILE_CPU_SHARE: f64 = 0.5;

fn emfile_target(
    target: Target,
    scale: &Scale,
    seed: u64,
    checks: &mut Vec<Check>,
) -> io::Result<EmfileReport> {
    let name = target.name();
    println!(
        "[{name}] fds exhausted for {:.1} s while {} connections ping and {} wait",
        scale.emfile_window_ms as f64 / 1000.0,
        scale.emfile_pinging,
        scale.emfile_flood
    );
    let (ev, book) = new_loop()?;
    let counters = Rc::new(Counters::default());
    let timeout = Duration::from_millis(scale.server_timeout_ms);
    let (server, addr) = servers::start(
        &ev,
        target,
        counters.clone(),
        timeout,
        server_max_connections(scale),
    )?;
    let server = Rc::new(server);
    let child = Rc::new(LoadChild::spawn(
        target,
        addr,
        Mode::Emfile,
        &load_args(scale, seed, Mode::Emfile, Duration::ZERO),
    )?);
    let news = Rc::new(RefCell::new(ChildNews::default()));
    let out = Rc::new(RefCell::new(EmfileReport::default()));
    let phase = Rc::new(Cell::new(0u8)); // 0 waiting for ready, 1 exhausted, 2 freed
    let failure: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let window = Duration::from_millis(scale.emfile_window_ms);
    let (c2, n2, o2, p2, f2, ev2, k2, s2) = (
        child.clone(),
        news.clone(),
        out.clone(),
        phase.clone(),
        failure.clone(),
        ev.clone(),
        counters.clone(),
        server.clone(),
    );
    let finished = run_until(&ev, phase_limit(scale, window), move || {
        let mut news = n2.borrow_mut();
        take_lines(&c2, &mut news);
        if news.ready && p2.get() == 0 {
            p2.set(1);
            match exhaust_fds() {
                Err(e) => {
                    *f2.borrow_mut() = Some(format!("could not exhaust fds: {e}"));
                    return true;
                }
                Ok((fillers, limit, restore)) => {
                    let (cpu0, wall0, it0) = (thread_cpu(), Instant::now(), ev2.stats().iterations);
                    let (served0, accepted0) = (served(target, &k2), accepted(&k2, &s2));
                    {
                        let mut o = o2.borrow_mut();
                        o.filler_fds = fillers.len() as u64;
                        o.exhausted_limit = limit;
                    }
                    let flood_cue = c2
                        .stdin
                        .as_ref()
                        .map(|mut s| s.write_all(b"flood\n").and_then(|_| s.flush()));
                    if let Some(Err(e)) = flood_cue {
                        *f2.borrow_mut() = Some(format!("could not cue the flood: {e}"));
                    }
                    let (o3, p3, k3, s3, ev3) =
                        (o2.clone(), p2.clone(), k2.clone(), s2.clone(), ev2.clone());
                    ev2.call_later(window, move || {
                        let mut o = o3.borrow_mut();
                        o.loop_cpu_s = (thread_cpu() - cpu0).as_secs_f64();
                        o.wall_s = wall0.elapsed().as_secs_f64();
                        o.loop_iterations = ev3.stats().iterations - it0;
                        o.served_while_exhausted = served(target, &k3) - served0;
                        o.accepted_while_exhausted = accepted(&k3, &s3).saturating_sub(accepted0);
                        drop(fillers);
                        let _ = set_soft_fd_limit(restore);
                        p3.set(2);
                    });
                }
            }
        }
        (news.result.is_some() || news.ended) && p2.get() != 1
    })?;
    let c3 = counters.clone();
    let s3 = server.clone();
    let drained = run_until(&ev, Duration::from_secs(30), move || s3.open(&c3) == 0)?;
    let open_at_end = server.open(&counters);
    Rc::try_unwrap(server)
        .map_err(|_| io::Error::other("server still shared"))?
        .close();
    run_until(&ev, Duration::from_millis(100), || false)?;
    ev.destroy();
    drop(ev);
    let child = Rc::try_unwrap(child).map_err(|_| io::Error::other("child still shared"))?;
    let status = child.finish()?;
    let news = news.take();
    let mut report = out.take();
    report.load = news.result.clone().unwrap_or_default();
    report.server = counters.snapshot();
    let c = |what: &str, ok: bool, detail: String| {
        check(format!("{name}: out of fds: {what}"), ok, detail)
    };
    let failure = failure.take();
    checks.push(c(
        "fds exhausted (EMFILE), load generator finished and reported",
        finished
            && failure.is_none()
            && phase.get() == 2
            && news.result.is_some()
            && status.success(),
        format!(
            "{} filler fds under a soft limit of {}; load generator {status}{}",
            report.filler_fds,
            report.exhausted_limit,
            failure.map(|f| format!("; {f}")).unwrap_or_default()
        ),
    ));
    checks.extend(emfile_checks(name, target, scale, &report));
    checks.push(c(
        "every connection closed on the server, no panic",
        drained && open_at_end == 0 && book.other.get() == 0,
        format!(
            "{open_at_end} open at the end, {} unexpected panics",
            book.other.get()
        ),
    ));
    Ok(report)
}

/// The fd phase's books: the loop slept while out of fds, served its open
/// connections and accepted none, then accepted and served every waiting one.
fn emfile_checks(name: &str, target: Target, scale: &Scale, report: &EmfileReport) -> [Check; 3] {
    let c = |what: &str, ok: bool, detail: String| {
        check(format!("{name}: out of fds: {what}"), ok, detail)
    };
    let load = &report.load;
    let share = if report.wall_s > 0.0 {
        report.loop_cpu_s / report.wall_s
    } else {
        0.0
    };
    [
        c(
            "the loop did not spin",
            report.wall_s > 0.0 && share <= EMFILE_CPU_SHARE,
            format!(
                "loop CPU {:.3} s in {:.2} s ({:.1} %, bound {:.0} %), {}",
                report.loop_cpu_s,
                report.wall_s,
                share * 100.0,
                EMFILE_CPU_SHARE * 100.0,
                if target == Target::Python {
                    "iterations not counted".to_string()
                } else {
                    format!("{} iterations", report.loop_iterations)
                }
            ),
        ),
        c(
            "open connections served meanwhile, none accepted",
            report.served_while_exhausted > 0 && report.accepted_while_exhausted == 0,
            format!(
                "{} {} echoed, {} accepted",
                report.served_while_exhausted,
                if target == Target::Http {
                    "requests"
                } else {
                    "bytes"
                },
                report.accepted_while_exhausted
            ),
        ),
        c(
            "waiting connections served once fds were free; zero verification errors",
            load.flood_echoed == scale.emfile_flood as u64
                && load.verification_errors == 0
                && load.unexpected_outcomes == 0,
            format!(
                "{} of {} echoed, {} pings, {} verification errors, {} unexpected outcomes{}",
                load.flood_echoed,
                scale.emfile_flood,
                load.pings,
                load.verification_errors,
                load.unexpected_outcomes,
                if load.first_failures.is_empty() {
                    String::new()
                } else {
                    format!(": {}", load.first_failures.join("; "))
                }
            ),
        ),
    ]
}

/// What the open connections got served: bytes echoed (HTTP: requests answered).
fn served(target: Target, counters: &Counters) -> u64 {
    let s = counters.snapshot();
    if target == Target::Http {
        s.requests
    } else {
        s.bytes_echoed
    }
}

/// Connections accepted so far (HTTP: open now, as oxloop-http counts no more).
fn accepted(counters: &Counters, server: &servers::RunningServer) -> u64 {
    match server {
        servers::RunningServer::Http(h) => h.connections() as u64,
        _ => counters.snapshot().accepted,
    }
}

/// Opens /dev/null until `EMFILE`, under a soft limit lowered to a little above the
/// fds open now. Returns the fillers, the limit, and the limit to restore.
fn exhaust_fds() -> io::Result<(Vec<std::fs::File>, u64, u64)> {
    let (soft, _) = fd_limit()?;
    let open = count_dir("/proc/self/fd");
    let limit = open + 64;
    set_soft_fd_limit(limit)?;
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => {
                set_soft_fd_limit(soft)?;
                return Err(e);
            }
        }
    }
    Ok((fillers, limit, soft))
}

fn print_target(t: &TargetReport) {
    let l = &t.load;
    println!(
        "[{}] {} connections (peak {} open, {:.1} s in), {} messages, {:.1} MB verified in {:.1} s of load (stopped by {}; {:.1} s with the rest of the phase); kernel listen overflows {}; HTTP requests sent again after a keep-alive close {}",
        t.target,
        l.connections_made,
        l.peak_connections,
        l.peak_reached_s,
        l.messages,
        l.bytes_verified as f64 / 1e6,
        l.elapsed_s,
        l.stopped_by,
        t.soak_s,
        t.kernel_listen_overflows,
        l.keep_alive_retries
    );
    for (behaviour, outcomes) in &l.sessions {
        let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o:?} {n}")).collect();
        println!("    {behaviour:?}: {}", parts.join(", "));
    }
    let s = &t.server;
    println!(
        "    server: accepted {}, closed {} cleanly / {} with an error, cut {} idle / {} stalled, {} panics raised, largest write buffer {} B, {} requests",
        s.accepted, s.closed_clean, s.closed_with_error, s.idle_cuts, s.stall_cuts, s.panics_raised, s.max_write_buffer, s.requests
    );
    println!("    kernel TCP meanwhile: {}", t.kernel_tcp.describe());
    let st = &t.storms;
    println!(
        "    storms: {} timers ({} fired, {} cancelled), {} signals ({} handler runs), {} cross-thread calls, {} panicking callbacks",
        st.timers_set, st.timers_fired, st.timers_cancelled, st.signals_sent, st.signal_handler_runs, st.calls_run, st.callback_panics_scheduled
    );
    let e = &t.emfile;
    println!(
        "    out of fds: {:.2} s, loop CPU {:.3} s, {} iterations, {} served meanwhile; {} of the waiting connections echoed after",
        e.wall_s, e.loop_cpu_s, e.loop_iterations, e.served_while_exhausted, e.load.flood_echoed
    );
    if let Some(p) = &t.process {
        println!(
            "    its process: fds {} -> {}, threads {} -> {}, children {} -> {}, RSS {:.1} MiB -> {:.1} MiB (peak {:.1} MiB)",
            p.baseline.fds,
            p.end.fds,
            p.baseline.threads,
            p.end.threads,
            p.baseline.children,
            p.end.children,
            mib(p.baseline.rss_bytes),
            mib(p.end.rss_bytes),
            mib(p.peak_rss_bytes)
        );
    }
}

fn print_checks(r: &Report) {
    // The process's resources at the start and end are in the details of their
    // checks (fds, threads, children, RSS), so they are not printed apart.
    println!();
    println!("checks:");
    for c in &r.checks {
        println!(
            "  {} {}: {}",
            if c.passed { "pass" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    println!(
        "{} of {} checks passed in {:.1} s{}",
        r.checks.len() - failed,
        r.checks.len(),
        r.elapsed_s,
        if failed == 0 { "" } else { " -- FAILED" }
    );
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} CPUs, Linux {}, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

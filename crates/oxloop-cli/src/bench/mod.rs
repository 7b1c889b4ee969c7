//! `oxloop bench`: oxloop against its peers, on this machine, in one run.
//!
//! Echo servers (oxloop's protocol API and its async tasks, tokio `current_thread`,
//! smol, libuv in C when it was built, and a hand-written raw epoll server as the
//! limit) and HTTP servers (oxloop-http, hyper, a raw responder) run as child
//! processes of this program (`oxloop serve`, hidden) pinned to CPU 0; the verifying
//! load generator runs here, pinned to CPU 1. For every load, the raw server is
//! measured before and after each peer, so drift shows and each peer is compared
//! with the raw runs next to it. In-process workloads (timers, `call_soon`,
//! cross-thread calls) compare the core loop with tokio directly. The Python group runs
//! the Python echo server on oxloop's extension, uvloop and asyncio when an interpreter
//! with oxloop is found.

mod chart;
mod report;

use indicatif::{ProgressBar, ProgressStyle};
use oxloop_bench::latency::Histogram;
use oxloop_bench::servers::{self, ServerKind};
use oxloop_bench::suite::{self, Case, Measurement, ServerProcess};
use oxloop_bench::{inproc, sys};
use report::{
    IdleRow, InProcessRow, InstructionRow, Machine, PhaseRow, RatioRow, Report, Scenario,
    SyscallRow, ThroughputRow,
};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The scenario groups `--scenarios` accepts.
pub const GROUPS: [&str; 12] = [
    "timers",
    "call-soon",
    "cross-thread",
    "echo",
    "pipeline",
    "syscalls",
    "instructions",
    "http",
    "idle",
    "python",
    "web",
    "scaling",
];

/// Options of `oxloop bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Short cases and smaller workloads: the whole run takes under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Time per case and server: `2s`, `200ms` or plain seconds (default 2 s; 0.15 s
    /// with --quick).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also write every figure to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the ratios to the raw epoll limit and to tokio as an SVG chart.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Run only these scenario groups (comma list): timers, call-soon, cross-thread,
    /// echo, pipeline, syscalls, instructions, http, idle, python, web, scaling.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub scenarios: Option<Vec<String>>,
    /// Idle connections per server for the memory scenario (default 10,000; 1,000
    /// with --quick).
    #[arg(long, hide = true)]
    pub idle_connections: Option<usize>,
}

/// One in-process workload, run on both sides.
type InProcessRun = Box<dyn Fn() -> io::Result<inproc::Comparison>>;

/// The echo loads: ping-pong at 1 and 100 connections and three sizes, then 16
/// messages in flight.
fn echo_cases(group: &str) -> Vec<Case> {
    let mut out = Vec::new();
    match group {
        "echo" => {
            for connections in [1, 100] {
                for size in [64, 1024, 16 * 1024] {
                    out.push(Case {
                        connections,
                        size,
                        depth: 1,
                    });
                }
            }
        }
        _ => {
            for connections in [1, 100] {
                out.push(Case {
                    connections,
                    size: 64,
                    depth: 16,
                });
            }
        }
    }
    out
}

fn case_id(group: &str, c: &Case) -> String {
    let size = match c.size {
        s if s >= 1024 => format!("{}k", s / 1024),
        s => s.to_string(),
    };
    format!("{group}-c{}-{size}", c.connections)
}

fn case_title(c: &Case) -> String {
    let size = match c.size {
        s if s >= 1024 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    };
    let conns = if c.connections == 1 {
        "1 connection".to_string()
    } else {
        format!("{} connections", c.connections)
    };
    if c.depth == 1 {
        format!("Echo ping-pong, {conns}, {size}")
    } else {
        format!("Echo, {} in flight, {conns}, {size}", c.depth)
    }
}

/// The peers measured against the raw server, in run order.
fn peers() -> Vec<ServerKind> {
    let mut v = vec![ServerKind::Oxloop];
    if servers::uring_loop().is_ok() {
        v.push(ServerKind::OxloopUring);
    }
    v.extend([ServerKind::Async, ServerKind::Tokio, ServerKind::Smol]);
    if servers::libuv_program().is_some() {
        v.push(ServerKind::Libuv);
    }
    v
}

/// Why the io_uring rows are missing, when they are.
fn uring_note() -> Option<String> {
    servers::uring_loop()
        .err()
        .map(|e| format!("oxloop-uring: not run (this kernel gives no io_uring: {e})"))
}

fn libuv_note() -> Option<String> {
    servers::libuv_program().is_none().then(|| {
        "libuv: not run (its headers, /usr/include/uv.h, were not installed when oxloop was built)"
            .to_string()
    })
}

/// Runs the benchmark and prints its tables; fails on any verification error.
pub fn run(args: BenchArgs) -> io::Result<()> {
    let selected: Vec<&str> = match &args.scenarios {
        None => GROUPS.to_vec(),
        Some(list) => {
            for s in list {
                if !GROUPS.contains(&s.as_str()) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("unknown scenario {s:?} (one of {})", GROUPS.join(", ")),
                    ));
                }
            }
            GROUPS
                .into_iter()
                .filter(|g| list.iter().any(|s| s == g))
                .collect()
        }
    };
    let quick = args.quick;
    let duration = args
        .duration
        .unwrap_or(Duration::from_millis(if quick { 150 } else { 2000 }))
        .max(Duration::from_millis(10));
    let idle_count = args
        .idle_connections
        .unwrap_or(if quick { 1_000 } else { 10_000 });
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let pin = sys::cpu_count() >= 2;
    let mut rep = Report {
        date: utc_now(),
        machine: Machine {
            cpus: sys::cpu_count(),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            cpu_model: cpu_model(),
            load_average_start: load_average(),
            load_average_end: [0.0; 3],
            pinned: pin,
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        profile: build_profile(),
        duration_per_case_s: duration.as_secs_f64(),
        quick,
        ..Report::default()
    };
    let peers = peers();
    let mut all = vec![ServerKind::RawEpoll];
    all.extend(&peers);

    // Steps for the progress bar.
    let has = |g: &str| selected.contains(&g);
    let mut steps = 0u64;
    for g in ["timers", "call-soon", "cross-thread"] {
        steps += has(g) as u64;
    }
    for g in ["echo", "pipeline"] {
        if has(g) {
            steps += (echo_cases(g).len() * (2 * peers.len() + 1)) as u64;
        }
    }
    if has("syscalls") {
        steps += all.len() as u64;
    }
    if has("instructions") {
        steps += all.len() as u64;
    }
    if has("http") {
        steps += 2 * (2 * http_peers().len() + 1) as u64;
    }
    if has("idle") {
        steps += all.len() as u64;
    }
    if has("python") {
        steps += (PYTHON_APIS.len() * PYTHON_LOOPS.len()) as u64;
    }
    steps += has("web") as u64;
    if has("scaling") {
        steps += 2 * loop_counts(sys::cpu_count()).len() as u64;
    }
    let pb = ProgressBar::new(steps);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );

    // In-process comparisons first, before this thread is pinned.
    let scale = if quick { 10 } else { 1 };
    let inproc_runs: [(&str, String, InProcessRun); 3] = [
        (
            "timers",
            format!("Timers: {} set (1–10 ms), every other one cancelled, the rest fired; vs tokio sleep tasks, every other one aborted", count(1_000_000 / scale)),
            Box::new(move || inproc::timers(1_000_000 / scale)),
        ),
        (
            "call-soon",
            format!("call_soon: {} callbacks queued and run; vs tokio spawn of empty tasks", count(1_000_000 / scale)),
            Box::new(move || inproc::call_soon(1_000_000 / scale)),
        ),
        (
            "cross-thread",
            format!("Cross-thread calls: 4 threads × {} call_from_thread; vs tokio Handle::spawn", count(100_000 / scale)),
            Box::new(move || inproc::cross_thread(4, 100_000 / scale)),
        ),
    ];
    for (id, title, f) in inproc_runs {
        if !has(id) {
            continue;
        }
        pb.set_message(id.to_string());
        let c = f()?;
        rep.scenarios.push(Scenario {
            id: id.to_string(),
            title,
            notes: vec![if id == "timers" {
                "In one process, one thread each. Phases: insert = call_later / tokio::spawn of a sleeping task (tokio registers the timer when the task first runs, so in the fire phase); cancel = Handle::cancel / JoinHandle::abort of every other one; fire = running until the rest fired.".to_string()
            } else {
                "In one process, one thread each (plus the sender threads for cross-thread calls).".to_string()
            }],
            in_process: Some(InProcessRow {
                operations: c.operations,
                oxloop_ms: c.oxloop.as_secs_f64() * 1e3,
                tokio_ms: c.tokio.as_secs_f64() * 1e3,
                oxloop_per_s: c.operations as f64 / c.oxloop.as_secs_f64().max(1e-12),
                tokio_per_s: c.operations as f64 / c.tokio.as_secs_f64().max(1e-12),
                speedup_vs_tokio: c.speedup(),
                phases: c
                    .phases
                    .iter()
                    .map(|&(name, ox, tk)| PhaseRow {
                        phase: name.to_string(),
                        oxloop_ms: ox.as_secs_f64() * 1e3,
                        tokio_ms: tk.as_secs_f64() * 1e3,
                    })
                    .collect(),
            }),
            ..Scenario::default()
        });
        pb.inc(1);
    }

    let needs_servers = ["echo", "pipeline", "syscalls"].iter().any(|g| has(g));
    if needs_servers {
        let mut procs = Vec::new();
        for &kind in &all {
            procs.push((kind, ServerProcess::start(&exe, kind, pin.then_some(0))?));
        }
        if pin {
            sys::pin_to_cpu(1)?;
        }
        for group in ["echo", "pipeline"] {
            if !has(group) {
                continue;
            }
            for case in echo_cases(group) {
                let s = echo_scenario(group, case, &procs, duration, &pb, &mut rep.verified_bytes)?;
                rep.scenarios.push(s);
            }
        }
        if has("syscalls") {
            rep.scenarios.push(syscall_scenario(
                &procs,
                quick,
                &pb,
                &mut rep.verified_bytes,
            )?);
        }
    }
    if has("instructions") {
        if pin {
            sys::pin_to_cpu(1)?;
        }
        // smol's executor spins before it sleeps, so what it executes depends on timing
        // (its long run has counted fewer instructions than its short one): the
        // difference method gives it no count.
        let counted: Vec<ServerKind> = all
            .iter()
            .copied()
            .filter(|&k| k != ServerKind::Smol)
            .collect();
        rep.scenarios.push(instruction_scenario(
            &exe,
            &counted,
            quick,
            pin,
            &pb,
            &mut rep.verified_bytes,
        )?);
    }
    if has("http") {
        if pin {
            sys::pin_to_cpu(1)?;
        }
        for depth in [1, HTTP_PIPELINE] {
            rep.scenarios.push(http_scenario(
                &exe,
                pin,
                duration,
                depth,
                &pb,
                &mut rep.verified_bytes,
            )?);
        }
    }
    if has("idle") {
        let mut rows = Vec::new();
        for &kind in &all {
            pb.set_message(format!("idle: {idle_count} connections to {kind}"));
            let (before, after) = suite::idle_memory(&exe, kind, idle_count)?;
            rep.verified_bytes += idle_count as u64 + 1;
            rows.push(IdleRow {
                server: kind.name().into(),
                connections: idle_count,
                rss_before_mib: before as f64 / (1 << 20) as f64,
                rss_after_mib: after as f64 / (1 << 20) as f64,
                bytes_per_connection: after.saturating_sub(before) as f64 / idle_count as f64,
                ..IdleRow::default()
            });
            pb.inc(1);
        }
        let base = |name: &str| {
            rows.iter()
                .find(|r| r.server == name)
                .map(|r| r.bytes_per_connection)
        };
        let (raw, tokio) = (base("raw-epoll"), base("tokio"));
        for r in rows.iter_mut() {
            r.vs_raw = raw.filter(|&b| b > 0.0).map(|b| r.bytes_per_connection / b);
            r.vs_tokio = tokio
                .filter(|&b| b > 0.0)
                .map(|b| r.bytes_per_connection / b);
        }
        let mut notes = vec![format!(
            "Resident memory (VmRSS) of the server after one warm-up connection, then with {idle_count} more connections open and idle, each checked with a 1-byte echo. Kernel socket buffers are not in RSS."
        )];
        notes.extend(libuv_note());
        rep.scenarios.push(Scenario {
            id: "idle".into(),
            title: format!("Idle connections: memory per connection ({idle_count})"),
            notes,
            idle: rows,
            ..Scenario::default()
        });
    }
    if has("python") {
        if pin {
            sys::pin_to_cpu(1)?;
        }
        rep.scenarios.extend(python_scenarios(
            pin,
            duration,
            &pb,
            &mut rep.verified_bytes,
        )?);
    }
    if has("web") {
        pb.set_message("web: python/bench/web_bench.py");
        rep.scenarios.push(web_scenario(quick, duration)?);
        pb.inc(1);
    }
    if has("scaling") {
        rep.scenarios.push(scaling_scenario(
            &exe,
            rep.machine.cpus,
            duration,
            &pb,
            &mut rep.verified_bytes,
        )?);
    }
    pb.finish_and_clear();
    rep.machine.load_average_end = load_average();
    rep.elapsed_s = started.elapsed().as_secs_f64();

    println!(
        "oxloop bench — {} — {} CPUs, Linux {}, {}; load average {:.2} {:.2} {:.2} at the start, {:.2} {:.2} {:.2} at the end; {:.2} s per case; {:.0} s in all; Cargo profile `{}`\n",
        rep.date,
        rep.machine.cpus,
        rep.machine.kernel,
        rep.machine.cpu_model,
        rep.machine.load_average_start[0],
        rep.machine.load_average_start[1],
        rep.machine.load_average_start[2],
        rep.machine.load_average_end[0],
        rep.machine.load_average_end[1],
        rep.machine.load_average_end[2],
        rep.duration_per_case_s,
        rep.elapsed_s,
        rep.profile
    );
    for s in &rep.scenarios {
        println!("{}", s.markdown());
    }
    println!(
        "{} bytes echoed or received, every one verified; 0 errors.",
        rep.verified_bytes
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rep).map_err(io::Error::other)?;
        std::fs::write(path, text + "\n")?;
        println!("JSON: {}", path.display());
    }
    if let Some(path) = &args.chart {
        chart::draw(&rep, path)?;
        println!("chart: {}", path.display());
    }
    Ok(())
}

/// One echo load against every server, raw epoll before and after each peer.
fn echo_scenario(
    group: &str,
    case: Case,
    procs: &[(ServerKind, ServerProcess)],
    duration: Duration,
    pb: &ProgressBar,
    verified: &mut u64,
) -> io::Result<Scenario> {
    let (raw_proc, peers) = procs.split_first().expect("raw server first");
    let id = case_id(group, &case);
    let mut run = |kind: ServerKind, p: &ServerProcess| -> io::Result<Measurement> {
        pb.set_message(format!("{id}: {kind}"));
        let m = suite::measure(p, kind, case, duration)
            .map_err(|e| io::Error::new(e.kind(), format!("{id} against {kind}: {e}")))?;
        if m.load.messages == 0 {
            return Err(io::Error::other(format!(
                "{id} against {kind}: no message echoed"
            )));
        }
        *verified += m.load.bytes;
        pb.inc(1);
        Ok(m)
    };
    let mut raws = vec![run(raw_proc.0, &raw_proc.1)?];
    let mut measured = Vec::new();
    for (kind, p) in peers {
        measured.push(run(*kind, p)?);
        raws.push(run(raw_proc.0, &raw_proc.1)?);
    }
    let rate = |m: &Measurement| m.load.rate();
    // The raw row: all its runs together.
    let mut lat = Histogram::new();
    let (mut msgs, mut bytes, mut secs, mut user, mut total) = (0u64, 0u64, 0.0, 0.0, 0.0);
    for m in &raws {
        lat.merge(&m.load.latency);
        msgs += m.load.messages;
        bytes += m.load.bytes;
        secs += m.load.elapsed.as_secs_f64();
        user += m.server_user.as_nanos() as f64;
        total += (m.server_user + m.server_system).as_nanos() as f64;
    }
    let raw_row = ThroughputRow {
        server: "raw-epoll".into(),
        messages_per_s: msgs as f64 / secs,
        mib_per_s: bytes as f64 / secs / (1 << 20) as f64,
        p50_us: lat.quantile(0.5).as_secs_f64() * 1e6,
        p99_us: lat.quantile(0.99).as_secs_f64() * 1e6,
        user_ns_per_msg: user / msgs.max(1) as f64,
        total_ns_per_msg: total / msgs.max(1) as f64,
        messages: msgs,
        runs: raws.iter().map(rate).collect(),
        ..ThroughputRow::default()
    };
    let mut rows: Vec<ThroughputRow> = measured
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let around = (rate(&raws[i]) + rate(&raws[i + 1])) / 2.0;
            ThroughputRow {
                server: m.kind.name().into(),
                messages_per_s: rate(m),
                mib_per_s: m.load.bytes as f64 / m.load.elapsed.as_secs_f64() / (1 << 20) as f64,
                p50_us: m.load.latency.quantile(0.5).as_secs_f64() * 1e6,
                p99_us: m.load.latency.quantile(0.99).as_secs_f64() * 1e6,
                user_ns_per_msg: m.user_ns_per_message(),
                total_ns_per_msg: m.total_ns_per_message(),
                throughput_vs_raw: Some(rate(m) / around),
                cpu_vs_raw: (raw_row.total_ns_per_msg > 0.0)
                    .then(|| m.total_ns_per_message() / raw_row.total_ns_per_msg),
                messages: m.load.messages,
                ..ThroughputRow::default()
            }
        })
        .collect();
    rows.insert(0, raw_row);
    if let Some(t) = rows.iter().find(|r| r.server == "tokio").cloned() {
        for r in rows.iter_mut() {
            r.throughput_vs_tokio = Some(r.messages_per_s / t.messages_per_s);
            r.cpu_vs_tokio =
                (t.total_ns_per_msg > 0.0).then(|| r.total_ns_per_msg / t.total_ns_per_msg);
        }
    }
    let mut notes = vec![format!(
        "Order: raw-epoll, then each peer followed by raw-epoll again; raw-epoll runs (msg/s): {}. A peer's throughput ÷ raw uses the raw runs just before and after it. CPU is the server process's user+system time from /proc (10 ms ticks), per message.",
        rows[0]
            .runs
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    notes.extend(uring_note());
    notes.extend(libuv_note());
    Ok(Scenario {
        id,
        title: case_title(&case),
        notes,
        throughput: rows,
        ..Scenario::default()
    })
}

/// The HTTP servers compared with the raw responder (oxloop-http on io_uring where
/// the kernel gives it).
fn http_peers() -> Vec<(ServerKind, &'static str)> {
    let mut v = vec![(ServerKind::HttpOxloop, "oxloop-http")];
    if servers::uring_loop().is_ok() {
        v.push((ServerKind::HttpOxloopUring, "oxloop-http (io_uring)"));
    }
    v.push((ServerKind::HttpHyper, "hyper (tokio)"));
    v
}

/// Requests in flight per connection in the pipelined HTTP case.
const HTTP_PIPELINE: usize = 16;

/// One HTTP server run: what the client saw and the server's CPU time.
struct HttpRun {
    requests: u64,
    bytes: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_user_ns: f64,
    cpu_total_ns: f64,
}

impl HttpRun {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }
}

/// Checks that `server` answers correctly (the built-in client, briefly), then loads
/// it with `connections` connections for `duration`: wrk with `depth` requests per
/// write when `use_wrk`, else the built-in client (one request at a time, every
/// response checked); with the server's CPU time meanwhile.
fn load_http(
    server: &ServerProcess,
    connections: usize,
    duration: Duration,
    depth: usize,
    use_wrk: bool,
    verified: &mut u64,
) -> io::Result<HttpRun> {
    use oxloop_bench::http;
    let check = http::http_load(server.addr, 10, Duration::from_millis(100))?;
    *verified += check.bytes;
    let (u0, s0) = sys::process_cpu(server.pid())?;
    let r = if use_wrk {
        let w = http::run_wrk(server.addr, connections, duration, depth)?;
        HttpRun {
            requests: w.requests,
            bytes: (w.bytes_per_s * w.elapsed.as_secs_f64()) as u64,
            secs: w.elapsed.as_secs_f64(),
            p50_us: w.p50.as_secs_f64() * 1e6,
            p99_us: w.p99.as_secs_f64() * 1e6,
            cpu_user_ns: 0.0,
            cpu_total_ns: 0.0,
        }
    } else {
        let l = http::http_load(server.addr, connections, duration)?;
        *verified += l.bytes;
        HttpRun {
            requests: l.messages,
            bytes: l.bytes,
            secs: l.elapsed.as_secs_f64(),
            p50_us: l.latency.quantile(0.5).as_secs_f64() * 1e6,
            p99_us: l.latency.quantile(0.99).as_secs_f64() * 1e6,
            cpu_user_ns: 0.0,
            cpu_total_ns: 0.0,
        }
    };
    std::thread::sleep(Duration::from_millis(50));
    let (u1, s1) = sys::process_cpu(server.pid())?;
    Ok(HttpRun {
        cpu_user_ns: u1.saturating_sub(u0).as_nanos() as f64,
        cpu_total_ns: (u1 + s1).saturating_sub(u0 + s0).as_nanos() as f64,
        ..r
    })
}

/// HTTP plaintext: `GET /` on 100 connections, keep-alive (`depth` 1) or `depth`
/// requests pipelined per connection; wrk when installed and the case lasts at least
/// a second, the built-in checking client otherwise (which also checks every server
/// briefly before wrk runs, and cannot pipeline: the pipelined case is then skipped).
fn http_scenario(
    exe: &std::path::Path,
    pin: bool,
    duration: Duration,
    depth: usize,
    pb: &ProgressBar,
    verified: &mut u64,
) -> io::Result<Scenario> {
    use oxloop_bench::http;
    let use_wrk = http::wrk_available() && duration >= Duration::from_secs(1);
    let connections = 100;
    let id = if depth == 1 {
        "http".to_string()
    } else {
        "http-pipelined".to_string()
    };
    let title = if depth == 1 {
        "HTTP plaintext (keep-alive GET /, \"Hello, World!\", 100 connections)".to_string()
    } else {
        format!("HTTP plaintext, {depth} requests pipelined per connection (GET /, \"Hello, World!\", 100 connections)")
    };
    if depth > 1 && !use_wrk {
        pb.inc((2 * http_peers().len() + 1) as u64);
        return Ok(Scenario {
            id,
            title,
            skipped: Some(
                "pipelining needs wrk and cases of at least 1 s (the built-in client sends one request at a time)"
                    .into(),
            ),
            ..Scenario::default()
        });
    }
    let mut run = |kind: ServerKind| -> io::Result<HttpRun> {
        pb.set_message(format!("{id}: {kind}"));
        let server = ServerProcess::start(exe, kind, pin.then_some(0))?;
        let r = load_http(&server, connections, duration, depth, use_wrk, verified)
            .map_err(|e| io::Error::new(e.kind(), format!("http against {kind}: {e}")))?;
        pb.inc(1);
        Ok(r)
    };
    let mut raws = vec![run(ServerKind::HttpRaw)?];
    let mut peers = Vec::new();
    for (kind, name) in http_peers() {
        peers.push((name, run(kind)?));
        raws.push(run(ServerKind::HttpRaw)?);
    }
    let n = raws.len() as f64;
    let (req, secs) = (
        raws.iter().map(|r| r.requests).sum::<u64>(),
        raws.iter().map(|r| r.secs).sum::<f64>(),
    );
    let raw_total = raws.iter().map(|r| r.cpu_total_ns).sum::<f64>() / req.max(1) as f64;
    let mut rows = vec![ThroughputRow {
        server: "raw-epoll".into(),
        messages_per_s: req as f64 / secs,
        mib_per_s: raws.iter().map(|r| r.bytes).sum::<u64>() as f64 / secs / (1 << 20) as f64,
        p50_us: raws.iter().map(|r| r.p50_us).sum::<f64>() / n,
        p99_us: raws.iter().map(|r| r.p99_us).sum::<f64>() / n,
        user_ns_per_msg: raws.iter().map(|r| r.cpu_user_ns).sum::<f64>() / req.max(1) as f64,
        total_ns_per_msg: raw_total,
        messages: req,
        runs: raws.iter().map(HttpRun::rate).collect(),
        ..ThroughputRow::default()
    }];
    for (i, (name, r)) in peers.iter().enumerate() {
        let around = (raws[i].rate() + raws[i + 1].rate()) / 2.0;
        let total = r.cpu_total_ns / r.requests.max(1) as f64;
        rows.push(ThroughputRow {
            server: name.to_string(),
            messages_per_s: r.rate(),
            mib_per_s: r.bytes as f64 / r.secs / (1 << 20) as f64,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            user_ns_per_msg: r.cpu_user_ns / r.requests.max(1) as f64,
            total_ns_per_msg: total,
            throughput_vs_raw: Some(r.rate() / around),
            cpu_vs_raw: (raw_total > 0.0).then(|| total / raw_total),
            messages: r.requests,
            ..ThroughputRow::default()
        });
    }
    if let Some(t) = rows.iter().find(|r| r.server.contains("tokio")).cloned() {
        for r in rows.iter_mut() {
            r.throughput_vs_tokio = Some(r.messages_per_s / t.messages_per_s);
            r.cpu_vs_tokio =
                (t.total_ns_per_msg > 0.0).then(|| r.total_ns_per_msg / t.total_ns_per_msg);
        }
    }
    let tool = if use_wrk && depth > 1 {
        format!(
            "wrk -t1 -c{connections} -d{}s --latency with a script that sends {depth} requests per write",
            duration.as_secs().max(1)
        )
    } else if use_wrk {
        format!(
            "wrk -t1 -c{connections} -d{}s --latency",
            duration.as_secs().max(1)
        )
    } else if http::wrk_available() {
        format!("the built-in client ({connections} connections; wrk needs cases of at least 1 s)")
    } else {
        format!("the built-in client ({connections} connections; wrk is not installed)")
    };
    let mut notes = vec![format!(
                "Load: {tool}, pinned to CPU 1; each server pinned to CPU 0, its responses first checked (status, Content-Length, body) by the built-in client. Order: raw, then each server followed by raw again; raw runs (req/s): {}. raw-epoll here is a hand-written responder that answers each request head with a canned response; MiB/s counts response bytes.",
                rows[0].runs.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
            )];
    notes.extend(uring_note());
    Ok(Scenario {
        id,
        title,
        notes,
        throughput: rows,
        ..Scenario::default()
    })
}

/// Python web serving: `python/bench/web_bench.py` (oxloop's WSGI and ASGI servers
/// against granian, bjoern and uvicorn under wrk, each server pinned to CPU 0 and wrk
/// to CPU 1) run by the interpreter `$OXLOOP_BENCH_WEB_PYTHON` or the repository's
/// `.venv/bench/bin/python`, which holds the peers (see the script's header); a peer
/// missing there is skipped with a note, and the whole group is skipped when the
/// interpreter, oxloop in it, or wrk is missing. With `--quick`: oxloop's own servers
/// only, one round of keep-alive.
fn web_scenario(quick: bool, duration: Duration) -> io::Result<Scenario> {
    let root = repository_root();
    let python = std::env::var_os("OXLOOP_BENCH_WEB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bench/bin/python"));
    let script = root.join("python/bench/web_bench.py");
    let title = "Python web serving: oxloop WSGI and ASGI vs granian, bjoern and uvicorn (wrk, 100 connections)";
    let skipped = |why: String| Scenario {
        id: "web".into(),
        title: title.into(),
        skipped: Some(why),
        ..Scenario::default()
    };
    if !oxloop_bench::http::wrk_available() {
        return Ok(skipped("wrk is not installed".into()));
    }
    if !python_imports(&python, "oxloop") {
        return Ok(skipped(format!(
            "{} is missing or cannot import oxloop (make it as python/bench/web_bench.py's header says, or set OXLOOP_BENCH_WEB_PYTHON)",
            python.display()
        )));
    }
    let json = std::env::temp_dir().join(format!("oxloop-bench-web-{}.json", std::process::id()));
    let secs = duration.as_secs().max(1).to_string();
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script)
        .args(["--duration", &secs, "--json"])
        .arg(&json);
    if quick {
        cmd.args([
            "--rounds",
            "1",
            "--pipeline",
            "1",
            "--servers",
            "oxloop-wsgi",
            "oxloop-asgi",
        ]);
    }
    let out = cmd.output()?;
    let text = std::fs::read_to_string(&json);
    let _ = std::fs::remove_file(&json);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "web_bench.py failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: serde_json::Value = serde_json::from_str(&text?).map_err(io::Error::other)?;
    let mut rows = Vec::new();
    for r in v["rates"].as_array().into_iter().flatten() {
        let rounds: Vec<f64> = r["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .collect();
        rows.push(ThroughputRow {
            server: format!(
                "{}, {}, {}",
                r["server"].as_str().unwrap_or("?"),
                r["app"].as_str().unwrap_or("?"),
                r["mode"].as_str().unwrap_or("?")
            ),
            messages_per_s: r["requests_per_s"].as_f64().unwrap_or(0.0),
            // wrk's count over every round (each ran `secs` seconds).
            messages: (rounds.iter().sum::<f64>() * duration.as_secs().max(1) as f64) as u64,
            runs: rounds,
            ..ThroughputRow::default()
        });
    }
    if rows.is_empty() {
        return Err(io::Error::other(format!(
            "web_bench.py measured no server: {}",
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    let ratios: Vec<String> = v["ratios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {}: {} {:.2}x {} ({:.2}x per CPU-second of the server; ceiling {:.2}x)",
                r["app"].as_str().unwrap_or("?"),
                r["mode"].as_str().unwrap_or("?"),
                r["server"].as_str().unwrap_or("?"),
                r["ratio"].as_f64().unwrap_or(0.0),
                r["peer"].as_str().unwrap_or("?"),
                r["per_cpu_second_ratio"].as_f64().unwrap_or(0.0),
                r["ceiling"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let mut notes = vec![format!(
        "{} --duration {secs}{}: a 13-byte hello and a 4 KiB JSON document, keep-alive{}; each server alone, pinned to CPU 0, wrk -t1 -c100 on CPU 1; requests/s, the median of the rounds (each round's figure in the last column of the JSON). Requests per second of one server core, since the server has one.",
        script.display(),
        if quick { " --rounds 1 --pipeline 1 --servers oxloop-wsgi oxloop-asgi" } else { "" },
        if quick { "" } else { " and 16 pipelined" }
    )];
    if !ratios.is_empty() {
        notes.push(format!(
            "Ratios (the ceiling: what a server costing nothing, using its whole core, would reach against the peer, from the application's own calls per CPU-second): {}.",
            ratios.join("; ")
        ));
    }
    let alone: Vec<String> = v["app_alone"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} {} {:.0}",
                a["interface"].as_str().unwrap_or("?"),
                a["app"].as_str().unwrap_or("?"),
                a["calls_per_cpu_second"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    if !alone.is_empty() {
        notes.push(format!(
            "The applications alone, called directly on CPU 0, in calls per CPU-second: {}.",
            alone.join(", ")
        ));
    }
    let missing: Vec<&str> = v["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "Not run (not installed for {}): {}.",
            python.display(),
            missing.join(", ")
        ));
    }
    Ok(Scenario {
        id: "web".into(),
        title: title.into(),
        notes,
        throughput: rows,
        ..Scenario::default()
    })
}

/// The loop counts the scaling scenario runs: 1, 2, 4, … up to the CPU count (at
/// least up to 2, so that a small machine still shows what two loops do on it).
fn loop_counts(cpus: usize) -> Vec<usize> {
    (0..8)
        .map(|i| 1usize << i)
        .take_while(|&n| n <= cpus.max(2))
        .collect()
}

/// Loop per core: oxloop-http (`GET /`, "Hello, World!") on 1, 2, 4, … loops of a
/// cluster sharing the port with `SO_REUSEPORT`, under wrk's keep-alive load and 16
/// pipelined requests per connection (100 connections); nothing pinned, so the loops
/// and the load generator share every CPU.
fn scaling_scenario(
    exe: &std::path::Path,
    cpus: usize,
    duration: Duration,
    pb: &ProgressBar,
    verified: &mut u64,
) -> io::Result<Scenario> {
    use oxloop_bench::http;
    // Earlier groups pinned this thread, and wrk would inherit that.
    sys::unpin()?;
    let use_wrk = http::wrk_available() && duration >= Duration::from_secs(1);
    let depths: &[usize] = if use_wrk { &[1, 16] } else { &[1] };
    let counts = loop_counts(cpus);
    let connections = 100;
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for &depth in depths {
        let mut one_loop: Option<(f64, f64)> = None;
        for &loops in &counts {
            let load = if depth == 1 {
                "keep-alive".to_string()
            } else {
                format!("{depth} pipelined")
            };
            pb.set_message(format!("scaling: {loops} loops, {load}"));
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["serve", "http-oxloop", "127.0.0.1:0", "--loops"])
                .arg(loops.to_string());
            let server = ServerProcess::start_command(cmd, None)?;
            let r = load_http(&server, connections, duration, depth, use_wrk, verified).map_err(
                |e| io::Error::new(e.kind(), format!("scaling with {loops} loops: {e}")),
            )?;
            let per = |ns: f64| ns / r.requests.max(1) as f64;
            let plural = if loops == 1 { "" } else { "s" };
            let row = ThroughputRow {
                server: format!("http-oxloop, {loops} loop{plural}, {load}"),
                messages_per_s: r.rate(),
                mib_per_s: r.bytes as f64 / r.secs.max(1e-9) / (1 << 20) as f64,
                p50_us: r.p50_us,
                p99_us: r.p99_us,
                user_ns_per_msg: per(r.cpu_user_ns),
                total_ns_per_msg: per(r.cpu_total_ns),
                messages: r.requests,
                ..ThroughputRow::default()
            };
            match one_loop {
                None => one_loop = Some((row.messages_per_s, row.total_ns_per_msg)),
                Some((rate, cpu)) => ratios.push(format!(
                    "{load}, {loops} loops over 1: {:.2}x the requests/s, {:.2}x the server CPU per request",
                    row.messages_per_s / rate,
                    row.total_ns_per_msg / cpu.max(1e-9)
                )),
            }
            rows.push(row);
            pb.inc(1);
        }
    }
    let most = counts.last().copied().unwrap_or(1);
    let tool = if use_wrk {
        format!("wrk -t1 -c{connections} (one load thread)")
    } else {
        format!("the built-in client ({connections} connections; wrk missing or cases under 1 s)")
    };
    let mut notes = vec![format!(
        "oxloop-http on N loops of `oxloop::cluster` (`oxloop serve-http --threads N` serves the same way), each listening with SO_REUSEPORT; load: {tool}; nothing pinned. {}",
        ratios.join("; ")
    )];
    notes.push(if cpus < most + 1 {
        format!(
            "This machine has {cpus} CPUs: {most} loops and the load generator need at least {} to run side by side, so here the loops share CPUs with the load and with each other. The ratios above measure that sharing, not how the loops scale; scaling shows on a machine with a core per loop plus cores for the load.",
            most + 1
        )
    } else {
        format!("{cpus} CPUs: every loop and the load thread can have a core of its own.")
    });
    Ok(Scenario {
        id: "scaling".into(),
        title: format!(
            "Loop per core: oxloop-http on {} loops (100 connections)",
            counts
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        notes,
        throughput: rows,
        ..Scenario::default()
    })
}

/// System calls per echoed message (1 connection, 64 B ping-pong) under strace.
fn syscall_scenario(
    procs: &[(ServerKind, ServerProcess)],
    quick: bool,
    pb: &ProgressBar,
    verified: &mut u64,
) -> io::Result<Scenario> {
    let mut s = Scenario {
        id: "syscalls".into(),
        title: "System calls per echoed message (1 connection, 64 B ping-pong)".into(),
        ..Scenario::default()
    };
    if !suite::tool_runs("strace", "-V") {
        s.skipped = Some("strace is not installed (apt-get install strace)".into());
        pb.inc(procs.len() as u64);
        return Ok(s);
    }
    let messages = if quick { 500 } else { 10_000 };
    let case = Case {
        connections: 1,
        size: 64,
        depth: 1,
    };
    for (kind, p) in procs {
        pb.set_message(format!("syscalls: {kind} under strace"));
        let c = suite::count_syscalls(p, case, messages)
            .map_err(|e| io::Error::new(e.kind(), format!("syscalls of {kind}: {e}")))?;
        *verified += c.messages * case.size as u64;
        s.syscalls.push(SyscallRow {
            server: kind.name().into(),
            messages: c.messages,
            calls: c.calls,
            per_message: c.per_message(),
            top: c
                .top
                .iter()
                .map(|(n, k)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            ..SyscallRow::default()
        });
        pb.inc(1);
    }
    let base = |name: &str| {
        s.syscalls
            .iter()
            .find(|r| r.server == name)
            .map(|r| r.per_message)
    };
    let (raw, tokio) = (base("raw-epoll"), base("tokio"));
    for r in s.syscalls.iter_mut() {
        r.vs_raw = raw.filter(|&b| b > 0.0).map(|b| r.per_message / b);
        r.vs_tokio = tokio.filter(|&b| b > 0.0).map(|b| r.per_message / b);
    }
    s.notes.push(format!(
        "`strace -c -f -p PID` attached to each running server while {messages} messages were echoed; every thread counted, including the idle wait at either end."
    ));
    s.notes.extend(libuv_note());
    Ok(s)
}

/// User-space instructions per echoed message (1 connection, 64 B ping-pong) of every
/// echo server, each run under callgrind: the figure that tells the loops apart, since
/// the kernel's TCP work (the same for all) dominates their CPU time.
fn instruction_scenario(
    exe: &std::path::Path,
    kinds: &[ServerKind],
    quick: bool,
    pin: bool,
    pb: &ProgressBar,
    verified: &mut u64,
) -> io::Result<Scenario> {
    let case = Case {
        connections: 1,
        size: 64,
        depth: 1,
    };
    let mut s = Scenario {
        id: "instructions".into(),
        title:
            "User-space instructions per echoed message (callgrind; 1 connection, 64 B ping-pong)"
                .into(),
        ..Scenario::default()
    };
    if !suite::tool_runs("valgrind", "--version") {
        s.skipped = Some("valgrind is not installed (apt-get install valgrind)".into());
        pb.inc(kinds.len() as u64);
        return Ok(s);
    }
    let runs = if quick { (200, 1_200) } else { (2_000, 12_000) };
    for &kind in kinds {
        pb.set_message(format!("instructions: {kind} under callgrind"));
        let c = suite::count_instructions(exe, kind, case, runs, pin.then_some(0))
            .map_err(|e| io::Error::new(e.kind(), format!("instructions of {kind}: {e}")))?;
        *verified += (c.short_messages + c.long_messages) * case.size as u64;
        s.instructions.push(InstructionRow {
            server: kind.name().into(),
            per_message: c.per_message(),
            messages: [c.short_messages, c.long_messages],
            instructions: [c.short_instructions, c.long_instructions],
            ..InstructionRow::default()
        });
        pb.inc(1);
    }
    let base = |name: &str| {
        s.instructions
            .iter()
            .find(|r| r.server == name)
            .map(|r| r.per_message)
    };
    let (raw, tokio) = (base("raw-epoll"), base("tokio"));
    for r in s.instructions.iter_mut() {
        r.vs_raw = raw.filter(|&b| b > 0.0).map(|b| r.per_message / b);
        r.vs_tokio = tokio.filter(|&b| b > 0.0).map(|b| r.per_message / b);
    }
    s.notes.push(format!(
        "Each server runs under `valgrind --tool=callgrind` twice, for {} and {} messages, and exits when its connection closes; instructions per message = (long run − short run) ÷ (difference in messages), so start-up and shutdown cancel out. Counts are exact and do not depend on the machine's load; the kernel's work is not counted. Every server is built with this program's Cargo profile (`{}`).",
        runs.0,
        runs.1,
        build_profile()
    ));
    s.notes.extend(libuv_note());
    Ok(s)
}

/// The Cargo profile this program was built with, from its own path
/// (`target/<profile>/oxloop`).
fn build_profile() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The Python event loops, in run order; oxloop is compared with the others.
const PYTHON_LOOPS: [&str; 3] = ["oxloop", "uvloop", "asyncio"];

/// The asyncio APIs the Python echo server is run with.
const PYTHON_APIS: [&str; 2] = ["protocol", "streams"];

/// The Python echo loads: 64 B ping-pong at 1 and 100 connections.
fn python_cases() -> [Case; 2] {
    [1, 100].map(|connections| Case {
        connections,
        size: 64,
        depth: 1,
    })
}

/// The repository this program was built from (where the Python sources and the
/// virtual environment made by `./test.sh` are).
pub(crate) fn repository_root() -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .unwrap_or(crate_dir)
        .to_path_buf()
}

/// Whether `python` runs and can import `module`.
pub(crate) fn python_imports(python: &std::path::Path, module: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Python event loops (oxloop's extension, uvloop, asyncio's own loop) running
/// `python/bench/echo_server.py`, one server process at a time pinned like the
/// others, under the echo load generator. The interpreter is `$OXLOOP_BENCH_PYTHON`
/// or the repository's `.venv/py3.11/bin/python`; without it (or without the
/// `oxloop` module in it) the group is one skipped scenario.
fn python_scenarios(
    pin: bool,
    duration: Duration,
    pb: &ProgressBar,
    verified: &mut u64,
) -> io::Result<Vec<Scenario>> {
    let root = repository_root();
    let python = std::env::var_os("OXLOOP_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/py3.11/bin/python"));
    let script = root.join("python/bench/echo_server.py");
    let steps = (PYTHON_APIS.len() * PYTHON_LOOPS.len()) as u64;
    let skipped = |why: String| {
        pb.inc(steps);
        Ok(vec![Scenario {
            id: "python".into(),
            title: "Python event loops: echo ping-pong, oxloop vs uvloop and asyncio".into(),
            skipped: Some(why),
            ..Scenario::default()
        }])
    };
    if !script.exists() {
        return skipped(format!("{} is missing", script.display()));
    }
    if !python_imports(&python, "oxloop") {
        return skipped(format!(
            "{} is missing or cannot import oxloop (run ./test.sh, or set OXLOOP_BENCH_PYTHON to an interpreter with oxloop installed)",
            python.display()
        ));
    }
    let has_uvloop = python_imports(&python, "uvloop");
    let mut out = Vec::new();
    for api in PYTHON_APIS {
        // measured[loop][case]
        let mut measured: Vec<(&str, Vec<suite::ServerLoad>)> = Vec::new();
        for event_loop in PYTHON_LOOPS {
            if event_loop == "uvloop" && !has_uvloop {
                pb.inc(1);
                continue;
            }
            pb.set_message(format!("python {api}: {event_loop}"));
            let mut cmd = std::process::Command::new(&python);
            cmd.arg(&script).args([event_loop, api]);
            let server = ServerProcess::start_command(cmd, pin.then_some(0))?;
            let mut runs = Vec::new();
            for case in python_cases() {
                let id = python_case_id(api, &case);
                let r = suite::run_load(&server, case, duration).map_err(|e| {
                    io::Error::new(e.kind(), format!("{id} against {event_loop}: {e}"))
                })?;
                if r.load.messages == 0 {
                    return Err(io::Error::other(format!(
                        "{id} against {event_loop}: no message echoed"
                    )));
                }
                *verified += r.load.bytes;
                runs.push(r);
            }
            measured.push((event_loop, runs));
            pb.inc(1);
        }
        for (i, case) in python_cases().into_iter().enumerate() {
            let rows: Vec<ThroughputRow> = measured
                .iter()
                .map(|(name, runs)| python_row(name, &runs[i]))
                .collect();
            let oxloop = rows[0].clone();
            let ratios = rows[1..]
                .iter()
                .map(|b| RatioRow {
                    server: oxloop.server.clone(),
                    baseline: b.server.clone(),
                    throughput: oxloop.messages_per_s / b.messages_per_s.max(1e-9),
                    cpu: if b.total_ns_per_msg > 0.0 {
                        oxloop.total_ns_per_msg / b.total_ns_per_msg
                    } else {
                        f64::NAN
                    },
                })
                .collect();
            let mut notes = vec![format!(
                "`{} python/bench/echo_server.py LOOP {api}`, one server process at a time pinned to CPU 0, the load generator on CPU 1. CPU is the server process's user+system time from /proc (10 ms ticks), per message; a ratio below 1 in CPU/msg means oxloop is cheaper.",
                python.display()
            )];
            if !has_uvloop {
                notes.push(format!(
                    "uvloop: not run ({} cannot import it; pip install uvloop into that venv)",
                    python.display()
                ));
            }
            out.push(Scenario {
                id: python_case_id(api, &case),
                title: format!(
                    "Python, asyncio {api} API: echo ping-pong, {}, 64 B",
                    if case.connections == 1 {
                        "1 connection".to_string()
                    } else {
                        format!("{} connections", case.connections)
                    }
                ),
                notes,
                throughput: rows,
                ratios,
                ..Scenario::default()
            });
        }
    }
    Ok(out)
}

fn python_case_id(api: &str, c: &Case) -> String {
    format!("python-{api}-c{}-{}", c.connections, c.size)
}

fn python_row(name: &str, r: &suite::ServerLoad) -> ThroughputRow {
    let messages = r.load.messages.max(1) as f64;
    let secs = r.load.elapsed.as_secs_f64();
    ThroughputRow {
        server: name.to_string(),
        messages_per_s: r.load.rate(),
        mib_per_s: r.load.bytes as f64 / secs / (1 << 20) as f64,
        p50_us: r.load.latency.quantile(0.5).as_secs_f64() * 1e6,
        p99_us: r.load.latency.quantile(0.99).as_secs_f64() * 1e6,
        user_ns_per_msg: r.server_user.as_nanos() as f64 / messages,
        total_ns_per_msg: (r.server_user + r.server_system).as_nanos() as f64 / messages,
        messages: r.load.messages,
        ..ThroughputRow::default()
    }
}

/// `2s`, `200ms`, `1.5` (seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 2s, 200ms)"))
}

/// 1000000 as "1,000,000".
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn load_average() -> [f64; 3] {
    let s = read_trim("/proc/loadavg");
    let mut it = s.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// The current time in UTC, `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

//! `oxloop-bench`: echo benchmarks of oxloop's protocol layer.
//!
//! ```text
//! oxloop-bench echo [--duration SECS] [--servers oxloop,raw-epoll,tokio,async] [--quick]
//!                   [--connections 1,100] [--sizes 64,1024,16384] [--depths 1,16]
//! oxloop-bench idle [--connections N] [--servers ...]
//! oxloop-bench http [--duration SECS] [--connections N] [--rounds N]
//!                   [--servers http-oxloop,http-hyper,http-raw] [--server-cpu C] [--client-cpu C]
//! oxloop-bench syscalls [--servers oxloop,oxloop-uring,raw-epoll] [--messages N]
//!                       [--connections 1,100] [--sizes 64,1024] [--depths 1,16]
//! oxloop-bench serve <KIND> <ip:port> [--cpu N] [--exit-after N]
//! oxloop-bench load <ip:port> [--connections N] [--size N] [--depth N]
//!                             [--duration SECS | --messages N] [--cpu N]
//! ```
//!
//! `http` runs oxloop-http, hyper and the raw epoll responder (all answering
//! `Hello, World!`) in turn under wrk, plain keep-alive and with 16 requests pipelined
//! per connection, and reports the server's CPU time per request; `--rounds N` repeats
//! the turns and reports medians (a shared machine's kernel time varies by ±20 % from
//! run to run). It needs wrk.

use oxloop_bench::loadgen::{self, LoadConfig};
use oxloop_bench::servers::{self, ServerKind};
use oxloop_bench::suite::{self, Case};
use oxloop_bench::sys;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage:\n  oxloop-bench echo [--duration SECS] [--servers oxloop,raw-epoll,tokio,async] [--quick] [--connections 1,100] [--sizes 64,1024,16384] [--depths 1,16]\n  \
         oxloop-bench idle [--connections N] [--servers ...]\n  \
         oxloop-bench http [--duration SECS] [--connections N] [--rounds N] [--servers http-oxloop,http-hyper,http-raw] [--server-cpu C] [--client-cpu C]\n  \
         oxloop-bench syscalls [--servers oxloop,oxloop-uring,raw-epoll] [--messages N] [--connections 1,100] [--sizes 64,1024] [--depths 1,16]\n  \
         oxloop-bench serve <KIND> <ip:port> [--cpu N] [--exit-after N]\n  \
         oxloop-bench load <ip:port> [--connections N] [--size N] [--depth N] [--duration SECS | --messages N] [--cpu N]"
    );
    std::process::exit(2)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("oxloop-bench: {msg}");
    std::process::exit(1)
}

/// Positional arguments and `--flag value` options.
struct Args {
    positional: Vec<String>,
    options: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>, valued: &[&str]) -> Args {
        let mut out = Args {
            positional: Vec::new(),
            options: HashMap::new(),
            flags: Vec::new(),
        };
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            if let Some(name) = a.strip_prefix("--") {
                if valued.contains(&name) {
                    let v = args
                        .next()
                        .unwrap_or_else(|| fail(format!("--{name} needs a value")));
                    out.options.insert(name.to_string(), v);
                } else {
                    out.flags.push(name.to_string());
                }
            } else {
                out.positional.push(a);
            }
        }
        out
    }

    fn get<T: std::str::FromStr>(&self, name: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        self.options.get(name).map(|v| {
            v.parse()
                .unwrap_or_else(|e| fail(format!("bad --{name} {v:?}: {e}")))
        })
    }

    fn servers(&self) -> Vec<ServerKind> {
        match self.options.get("servers") {
            None => ServerKind::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(|s| s.parse().unwrap_or_else(|e| fail(e)))
                .collect(),
        }
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let Some(command) = argv.next() else { usage() };
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
    match command.as_str() {
        "serve" => {
            let args = Args::parse(argv, &["cpu", "exit-after"]);
            let [kind, addr] = &args.positional[..] else {
                usage()
            };
            let kind: ServerKind = kind.parse().unwrap_or_else(|e| fail(e));
            let addr: SocketAddr = addr.parse().unwrap_or_else(|e| fail(e));
            if let Some(cpu) = args.get::<usize>("cpu") {
                sys::pin_to_cpu(cpu).unwrap_or_else(|e| fail(e));
            }
            let _ = sys::raise_fd_limit();
            let (bound, serve) =
                servers::bind(kind, addr, args.get("exit-after")).unwrap_or_else(|e| fail(e));
            println!("listening on {bound}");
            let _ = std::io::stdout().flush();
            serve().unwrap_or_else(|e| fail(e));
        }
        "load" => {
            let args = Args::parse(
                argv,
                &[
                    "connections",
                    "size",
                    "depth",
                    "duration",
                    "messages",
                    "cpu",
                ],
            );
            let [addr] = &args.positional[..] else {
                usage()
            };
            if let Some(cpu) = args.get::<usize>("cpu") {
                sys::pin_to_cpu(cpu).unwrap_or_else(|e| fail(e));
            }
            let messages: Option<u64> = args.get("messages");
            let duration = args.get::<f64>("duration").map(Duration::from_secs_f64).or(
                if messages.is_none() {
                    Some(Duration::from_secs(2))
                } else {
                    None
                },
            );
            let cfg = LoadConfig {
                addr: addr.parse().unwrap_or_else(|e| fail(e)),
                connections: args.get("connections").unwrap_or(1),
                size: args.get("size").unwrap_or(64),
                depth: args.get("depth").unwrap_or(1),
                duration,
                messages_per_connection: messages,
            };
            let r = loadgen::run(&cfg).unwrap_or_else(|e| fail(e));
            println!(
                "messages={} bytes={} elapsed={:.3}s rate={:.0}/s (all bytes verified)",
                r.messages,
                r.bytes,
                r.elapsed.as_secs_f64(),
                r.rate()
            );
        }
        "echo" => {
            let args = Args::parse(
                argv,
                &["duration", "servers", "connections", "sizes", "depths"],
            );
            let quick = args.flags.iter().any(|f| f == "quick");
            let list = |name: &str| -> Option<Vec<usize>> {
                args.options.get(name).map(|v| {
                    v.split(',')
                        .map(|x| {
                            x.parse()
                                .unwrap_or_else(|e| fail(format!("bad --{name}: {e}")))
                        })
                        .collect()
                })
            };
            let (conns, sizes, depths) = (list("connections"), list("sizes"), list("depths"));
            let duration = Duration::from_secs_f64(args.get("duration").unwrap_or(if quick {
                0.5
            } else {
                2.0
            }));
            let mut cases = Case::matrix();
            if quick {
                cases.retain(|c| c.size == 64);
            }
            cases.retain(|c| {
                conns.as_ref().is_none_or(|l| l.contains(&c.connections))
                    && sizes.as_ref().is_none_or(|l| l.contains(&c.size))
                    && depths.as_ref().is_none_or(|l| l.contains(&c.depth))
            });
            println!(
                "| server | conns | size | in flight | messages/s | server user CPU ns/msg | server sys CPU ns/msg |"
            );
            println!("|---|---|---|---|---|---|---|");
            let results = suite::run_echo(&exe, &args.servers(), &cases, duration, |m| {
                println!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
                    m.kind,
                    m.case.connections,
                    m.case.size,
                    m.case.depth,
                    m.load.rate(),
                    m.user_ns_per_message(),
                    m.server_system.as_nanos() as f64 / m.load.messages.max(1) as f64
                );
                let _ = std::io::stdout().flush();
            })
            .unwrap_or_else(|e| fail(e));
            // Ratios against the other servers, per case.
            println!(
                "\n| conns | size | in flight | user CPU oxloop/raw | user CPU oxloop/tokio | user CPU async/tokio |"
            );
            println!("|---|---|---|---|---|---|");
            for case in &cases {
                let find = |k: ServerKind| {
                    results
                        .iter()
                        .find(|m| m.kind == k && m.case == *case)
                        .map(|m| m.user_ns_per_message())
                };
                let ratio = |a, b| match (find(a), find(b)) {
                    (Some(a), Some(b)) => format!("{:.2}", a / b),
                    _ => "-".to_string(),
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} |",
                    case.connections,
                    case.size,
                    case.depth,
                    ratio(ServerKind::Oxloop, ServerKind::RawEpoll),
                    ratio(ServerKind::Oxloop, ServerKind::Tokio),
                    ratio(ServerKind::Async, ServerKind::Tokio)
                );
            }
        }
        "syscalls" => syscalls(argv),
        "idle" => {
            let args = Args::parse(argv, &["connections", "servers"]);
            let count: usize = args.get("connections").unwrap_or(10_000);
            println!("| server | idle connections | RSS before | RSS after | per connection |");
            println!("|---|---|---|---|---|");
            for kind in args.servers() {
                let (before, after) =
                    suite::idle_memory(&exe, kind, count).unwrap_or_else(|e| fail(e));
                println!(
                    "| {kind} | {count} | {:.1} MiB | {:.1} MiB | {:.0} B |",
                    before as f64 / (1 << 20) as f64,
                    after as f64 / (1 << 20) as f64,
                    after.saturating_sub(before) as f64 / count as f64
                );
                let _ = std::io::stdout().flush();
            }
        }
        "http" => {
            let args = Args::parse(
                argv,
                &[
                    "duration",
                    "connections",
                    "rounds",
                    "servers",
                    "server-cpu",
                    "client-cpu",
                ],
            );
            http(&exe, &args);
        }
        _ => usage(),
    }
}

/// `oxloop-bench http`: the servers' CPU time per request under wrk, per round and as
/// medians over the rounds.
fn http(exe: &std::path::Path, args: &Args) {
    let plan = suite::HttpPlan {
        kinds: match args.options.get("servers") {
            None => vec![
                ServerKind::HttpOxloop,
                ServerKind::HttpHyper,
                ServerKind::HttpRaw,
            ],
            Some(_) => args.servers(),
        },
        connections: args.get("connections").unwrap_or(100),
        duration: Duration::from_secs(args.get("duration").unwrap_or(10)),
        pipelines: vec![1, PIPELINED],
        rounds: args.get::<usize>("rounds").unwrap_or(1).max(1),
        server_cpu: args.get("server-cpu").unwrap_or(0),
        client_cpu: args.get("client-cpu").unwrap_or(1),
    };
    if !oxloop_bench::http::wrk_available() {
        fail("wrk is not installed");
    }
    let load = |pipeline: usize| match pipeline {
        1 => "plain".to_string(),
        n => format!("pipelined x{n}"),
    };
    println!(
        "wrk -t1 -c{} -d{}s, servers on CPU {}, wrk on CPU {}, {} round(s)\n",
        plan.connections,
        plan.duration.as_secs(),
        plan.server_cpu,
        plan.client_cpu,
        plan.rounds
    );
    println!("| round | server | load | requests/s | server CPU per request (user + system) |");
    println!("|---|---|---|---|---|");
    let results = suite::run_http(exe, &plan, |m| {
        let (user, system) = (m.user_ns_per_request(), m.system_ns_per_request());
        println!(
            "| {} | {} | {} | {:.0} | {:.0} ns ({user:.0} + {system:.0}) |",
            m.round,
            m.kind,
            load(m.pipeline),
            m.wrk.requests_per_s,
            user + system,
        );
        let _ = std::io::stdout().flush();
    })
    .unwrap_or_else(|e| fail(e));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // (total, user) medians per server and load.
    let medians = |kind: ServerKind, pipeline: usize| {
        let runs: Vec<_> = results
            .iter()
            .filter(|m| m.kind == kind && m.pipeline == pipeline)
            .collect();
        (!runs.is_empty()).then(|| {
            let get = |f: &dyn Fn(&suite::HttpMeasurement) -> f64| {
                median(runs.iter().map(|m| f(m)).collect())
            };
            (
                get(&|m| m.wrk.requests_per_s),
                get(&|m| m.user_ns_per_request() + m.system_ns_per_request()),
                get(&|m| m.user_ns_per_request()),
                get(&|m| m.system_ns_per_request()),
            )
        })
    };
    println!("\nMedians over the rounds:\n");
    println!("| server | load | requests/s | CPU per request | user | system |");
    println!("|---|---|---|---|---|---|");
    for &kind in &plan.kinds {
        for &pipeline in &plan.pipelines {
            if let Some((rps, total, user, system)) = medians(kind, pipeline) {
                println!(
                    "| {kind} | {} | {rps:.0} | {total:.0} ns | {user:.0} ns | {system:.0} ns |",
                    load(pipeline)
                );
            }
        }
    }
    println!();
    for &pipeline in &plan.pipelines {
        let ours = medians(ServerKind::HttpOxloop, pipeline);
        for (peer, target) in [(ServerKind::HttpHyper, 0.75), (ServerKind::HttpRaw, 1.10)] {
            if let (Some(ox), Some(p)) = (ours, medians(peer, pipeline)) {
                // CPU time comes in 10 ms ticks: a short run may show none.
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.2}", a / b)
                    } else {
                        "-".to_string()
                    }
                };
                println!(
                    "{}: {} / {peer} CPU per request = {} (target <= {target:.2}); user space only {}",
                    load(pipeline),
                    ServerKind::HttpOxloop,
                    ratio(ox.1, p.1),
                    ratio(ox.2, p.2)
                );
            }
        }
    }
}

/// Requests per write in `oxloop-bench http`'s pipelined load.
const PIPELINED: usize = 16;

/// `oxloop-bench syscalls`: system calls per echoed message of each server under
/// `strace -c -f`, a fixed number of messages per connection (short runs: strace slows
/// the server down, so only the counts mean anything).
fn syscalls(argv: impl Iterator<Item = String>) {
    let args = Args::parse(
        argv,
        &["servers", "messages", "connections", "sizes", "depths"],
    );
    if !suite::tool_runs("strace", "-V") {
        fail("strace is not installed (apt-get install strace)");
    }
    let list = |name: &str, default: &[usize]| -> Vec<usize> {
        match args.options.get(name) {
            None => default.to_vec(),
            Some(v) => v
                .split(',')
                .map(|x| {
                    x.parse()
                        .unwrap_or_else(|e| fail(format!("bad --{name}: {e}")))
                })
                .collect(),
        }
    };
    let servers = match args.options.get("servers") {
        None => vec![
            ServerKind::Oxloop,
            ServerKind::OxloopUring,
            ServerKind::RawEpoll,
        ],
        Some(_) => args.servers(),
    };
    let messages: u64 = args.get("messages").unwrap_or(200);
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
    println!(
        "| server | conns | size | in flight | messages | system calls | per message | busiest |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for connections in list("connections", &[100]) {
        for size in list("sizes", &[1024]) {
            for depth in list("depths", &[1, 16]) {
                let case = Case {
                    connections,
                    size,
                    depth,
                };
                for &kind in &servers {
                    let server = suite::ServerProcess::start(&exe, kind, None)
                        .unwrap_or_else(|e| fail(format!("{kind}: {e}")));
                    let count = suite::count_syscalls(&server, case, messages)
                        .unwrap_or_else(|e| fail(format!("{kind}: {e}")));
                    let top: Vec<String> =
                        count.top.iter().map(|(n, k)| format!("{n} {k}")).collect();
                    println!(
                        "| {kind} | {connections} | {size} | {depth} | {} | {} | {:.3} | {} |",
                        count.messages,
                        count.calls,
                        count.per_message(),
                        top.join(", ")
                    );
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
}

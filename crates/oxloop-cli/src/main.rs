//! The `oxloop` command.
//!
//! ```text
//! oxloop demo                                      # every part of oxloop, working
//! oxloop serve-http --dir DIR [--port N] [--bind ADDR] [--threads N]  # serve a directory over HTTP
//! oxloop bench [--quick] [--json FILE] [--chart FILE.svg]  # oxloop against its peers
//! oxloop soak [--short] [--duration D] [--connections N] [--messages N] [--json FILE]  # soak and fault run
//! ```

mod bench;
mod demo;
mod soak;

use clap::{Parser, Subcommand};

/// oxloop: a small, fast, embeddable event loop.
#[derive(Parser)]
#[command(name = "oxloop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a short tour in one process and prints what happens: timers, a signal, a
    /// cross-thread call, TCP and UDP echo, tasks, a wire program and an HTTP request.
    Demo,
    /// Serves a directory over HTTP (one log line per request on standard error) until
    /// Ctrl-C or SIGTERM, which finish the requests in progress first.
    ServeHttp {
        /// The directory to serve.
        #[arg(long)]
        dir: String,
        /// The port to listen on.
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// How many loops (threads) serve the port, with SO_REUSEPORT.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Measures oxloop against its peers on this machine: echo servers (oxloop's
    /// protocol and async APIs against raw epoll, tokio, smol, libuv), HTTP
    /// (oxloop-http against hyper), idle memory, system calls, and in-process timers,
    /// call_soon and cross-thread calls against tokio.
    Bench(bench::BenchArgs),
    /// Soak and fault run: echo servers on the protocol API, the async API and
    /// oxloop-http under thousands of connections with random client behaviour, every
    /// byte verified, with timer, signal, cross-thread and panic storms and an fd
    /// exhaustion; checks that everything is accounted for and released at the end.
    /// The exit status is non-zero if any check fails.
    Soak(soak::SoakArgs),
    /// The load generator of `oxloop soak` (run by it as a child process).
    #[command(hide = true)]
    SoakLoad(soak::load::LoadArgs),
    /// Serves one benchmark echo server (used by `oxloop bench`).
    #[command(hide = true)]
    Serve {
        /// oxloop, raw-epoll, tokio, smol.
        kind: String,
        /// Address to listen on.
        addr: std::net::SocketAddr,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
        /// Exit after this many connections closed.
        #[arg(long)]
        exit_after: Option<u64>,
        /// Serve on this many loops (threads) sharing the port (oxloop, http-oxloop).
        #[arg(long, default_value_t = 1)]
        loops: usize,
    },
}

fn serve(
    kind: &str,
    addr: std::net::SocketAddr,
    cpu: Option<usize>,
    exit_after: Option<u64>,
    loops: usize,
) -> std::io::Result<()> {
    use std::io::Write;
    let kind: oxloop_bench::servers::ServerKind = kind
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if let Some(cpu) = cpu {
        oxloop_bench::sys::pin_to_cpu(cpu)?;
    }
    let _ = oxloop_bench::sys::raise_fd_limit();
    let (bound, serve) = if loops > 1 {
        oxloop_bench::servers::bind_loops(kind, addr, loops)?
    } else {
        oxloop_bench::servers::bind(kind, addr, exit_after)?
    };
    println!("listening on {bound}");
    std::io::stdout().flush()?;
    serve()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
        Command::ServeHttp {
            dir,
            port,
            bind,
            threads,
        } => oxloop_http::serve_dir_forever(&dir, &bind, port, threads)
            .map_err(std::io::Error::other),
        Command::Bench(args) => bench::run(args),
        Command::Soak(args) => match soak::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::SoakLoad(args) => soak::load::run(args),
        Command::Serve {
            kind,
            addr,
            cpu,
            exit_after,
            loops,
        } => serve(&kind, addr, cpu, exit_after, loops),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxloop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

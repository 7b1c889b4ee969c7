//! The `oxloop` command.
//!
//! ```text
//! oxloop demo                                      # every part of oxloop, working
//! oxloop serve-http --dir DIR [--port N] [--bind ADDR]  # serve a directory over HTTP
//! ```

mod demo;

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
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
        Command::ServeHttp { dir, port, bind } => {
            oxloop_http::serve_dir_forever(&dir, &bind, port).map_err(std::io::Error::other)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxloop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

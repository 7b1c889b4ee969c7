//! The `oxloop` command.
//!
//! ```text
//! oxloop demo     # a ten-second tour that shows every part of oxloop working
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
    /// cross-thread call, TCP and UDP echo, tasks.
    Demo,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxloop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

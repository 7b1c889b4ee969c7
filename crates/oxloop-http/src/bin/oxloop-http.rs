//! `oxloop-http serve-http --dir DIR [--port N] [--bind ADDR]`: serves a directory
//! over HTTP on 127.0.0.1 (by default port 8000), one log line per request on
//! standard error. Ctrl-C or SIGTERM shuts down gracefully (a second one exits at
//! once).

use oxloop::EventLoop;
use oxloop_http::{serve_dir, Config};
use std::process::ExitCode;

const USAGE: &str = "usage: oxloop-http serve-http --dir DIR [--port N] [--bind ADDR]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxloop-http: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("serve-http") {
        return Err(USAGE.to_string());
    }
    let (mut dir, mut port, mut bind) = (None, 8000u16, "127.0.0.1".to_string());
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--dir" => dir = Some(value()?),
            "--port" => {
                port = value()?
                    .parse()
                    .map_err(|_| format!("--port wants a number\n{USAGE}"))?
            }
            "--bind" => bind = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let dir = dir.ok_or_else(|| format!("--dir is required\n{USAGE}"))?;
    let ev = EventLoop::new().map_err(|e| e.to_string())?;
    let addr = if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    };
    let server = serve_dir(
        &ev,
        addr.as_str(),
        &dir,
        Config::default().log_requests(true),
    )
    .map_err(|e| format!("cannot serve {dir} on {addr}: {e}"))?;
    println!("serving {dir} on http://{}", server.local_addr());
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let server = server.clone();
        let ev2 = ev.clone();
        ev.add_signal_handler(signal, move || {
            if server.is_shutting_down() {
                std::process::exit(130);
            }
            eprintln!("shutting down after the requests in progress");
            let ev3 = ev2.clone();
            server.shutdown(move || ev3.stop());
        })
        .map_err(|e| e.to_string())?;
    }
    ev.run_forever().map_err(|e| e.to_string())
}

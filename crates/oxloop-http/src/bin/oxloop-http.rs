//! `oxloop-http serve-http --dir DIR [--port N] [--bind ADDR]`: serves a directory
//! over HTTP on 127.0.0.1 (by default port 8000), one log line per request on
//! standard error. Ctrl-C or SIGTERM shuts down gracefully (a second one exits at
//! once).

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
    oxloop_http::serve_dir_forever(&dir, &bind, port)
}

//! Timer lateness on an oxloop loop with and without heavy logging to a file.
//!
//! ```text
//! cargo run --release -p oxloop-log --example lateness -- [seconds] [lines-per-second]
//! ```
//!
//! For each mode a fresh loop runs for `seconds` (default 5): a producer timer fires every
//! millisecond and logs `lines-per-second / 1000` lines (default 100,000 lines/s) with
//! `tracing::info!`; a probe timer, also every millisecond and half a millisecond out of
//! phase, records how late it fires. Modes: `off` (no subscriber: the same calls cost
//! almost nothing), `file` (oxloop-log file output, size-rotated at 64 MiB) and `email`
//! (the same, plus one `tracing::error!` per tick mailed over SMTP to a sink on
//! 127.0.0.1, gathered for 10 ms and at most one mail per 50 ms, so the loop is sending
//! mail most of the time). The run checks that every logged line reached the file.

use oxloop::EventLoop;
use oxloop_log::{EmailOptions, FileOptions, Log};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    File,
    Email,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::File => "file",
            Mode::Email => "email",
        }
    }
}

struct Report {
    samples: Vec<u64>,
    /// Time the producer spent in each tick, nanoseconds.
    costs: Vec<u64>,
    lines_logged: u64,
    lines_in_files: u64,
    elapsed: Duration,
    mails: u64,
}

/// An SMTP server that accepts every mail and counts them.
fn sink() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(AtomicU64::new(0));
    let count = mails.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut lines = BufReader::new(conn.try_clone().unwrap());
            let mut reply = |text: &str| conn.write_all(text.as_bytes()).is_ok();
            reply("220 sink\r\n");
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                let go_on = match line.trim_end() {
                    "DATA" => {
                        reply("354 go\r\n");
                        let mut data = String::new();
                        while lines.read_line(&mut data).unwrap_or(0) > 0 && data != ".\r\n" {
                            data.clear();
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        reply("250 queued\r\n")
                    }
                    "QUIT" => {
                        reply("221 bye\r\n");
                        false
                    }
                    _ => reply("250 ok\r\n"),
                };
                if !go_on {
                    break;
                }
                line.clear();
            }
        }
    });
    (port, mails)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("seconds"));
    let per_second: u64 = args
        .next()
        .map_or(100_000, |s| s.parse().expect("lines per second"));
    let per_tick = (per_second / 1000).max(1);
    println!(
        "{seconds} s per mode, {} lines/s logged from the loop thread, probe timer every 1 ms",
        per_tick * 1000
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>16} {:>16}",
        "mode", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "tick p50/p99 µs", "lines written/s"
    );
    for mode in [Mode::Off, Mode::File, Mode::Email] {
        let r = std::thread::spawn(move || run(mode, Duration::from_secs(seconds), per_tick))
            .join()
            .unwrap();
        let mut s = r.samples;
        s.sort_unstable();
        let mut c = r.costs;
        c.sort_unstable();
        let cost = |p: f64| c[((c.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        let q = |p: f64| s[((s.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        let written = if mode == Mode::Off {
            "-".to_string()
        } else {
            assert_eq!(
                r.lines_in_files, r.lines_logged,
                "every logged line reached the file"
            );
            format!("{:.0}", r.lines_in_files as f64 / r.elapsed.as_secs_f64())
        };
        println!(
            "{:<8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>16} {:>16}",
            mode.name(),
            q(0.5),
            q(0.99),
            q(0.999),
            *s.last().unwrap() as f64 / 1000.0,
            format!("{:.1}/{:.1}", cost(0.5), cost(0.99)),
            written
        );
        if mode == Mode::Email {
            println!("(email: {} mails sent in the run)", r.mails);
        }
    }
}

fn run(mode: Mode, duration: Duration, per_tick: u64) -> Report {
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sink_mails = None;
    let logging = match mode {
        Mode::Off => None,
        Mode::File | Mode::Email => {
            let mut builder = Log::builder().filter("info").file(FileOptions::size(
                dir.path(),
                "bench",
                64 << 20,
            ));
            if mode == Mode::Email {
                let (port, mails) = sink();
                let email =
                    EmailOptions::new("127.0.0.1", port, "bench@example.com", ["ops@example.com"])
                        .gather(Duration::from_millis(10))
                        .interval(Duration::from_millis(50));
                builder = builder.email(email);
                sink_mails = Some(mails);
            }
            let (dispatch, guard) = builder.build(&ev).unwrap();
            Some((dispatch, guard))
        }
    };
    let _default = logging
        .as_ref()
        .map(|(d, _)| tracing::dispatcher::set_default(d));

    let start = Instant::now();
    let end = start + duration;
    let samples = Rc::new(RefCell::new(Vec::with_capacity(
        duration.as_millis() as usize + 16,
    )));
    let logged = Rc::new(RefCell::new(0u64));
    let costs = Rc::new(RefCell::new(Vec::with_capacity(
        duration.as_millis() as usize + 16,
    )));

    type Shared<T> = Rc<RefCell<T>>;
    fn produce(
        ev: EventLoop,
        at: Instant,
        end: Instant,
        per_tick: u64,
        mail: bool,
        logged: Shared<u64>,
        costs: Shared<Vec<u64>>,
    ) {
        let e = ev.clone();
        ev.call_at(at, move || {
            let t0 = Instant::now();
            let mut n = logged.borrow_mut();
            for _ in 0..per_tick {
                *n += 1;
                tracing::info!(seq = *n, "benchmark line with a little payload to format");
            }
            if mail {
                *n += 1;
                tracing::error!(seq = *n, "benchmark error to mail");
            }
            drop(n);
            costs.borrow_mut().push(t0.elapsed().as_nanos() as u64);
            if at < end {
                produce(
                    e,
                    at + Duration::from_millis(1),
                    end,
                    per_tick,
                    mail,
                    logged,
                    costs,
                );
            }
        });
    }

    fn probe(ev: EventLoop, at: Instant, end: Instant, samples: Rc<RefCell<Vec<u64>>>) {
        let e = ev.clone();
        ev.call_at(at, move || {
            let late = Instant::now().saturating_duration_since(at);
            samples.borrow_mut().push(late.as_nanos() as u64);
            if at < end {
                probe(e, at + Duration::from_millis(1), end, samples);
            } else {
                e.stop();
            }
        });
    }

    produce(
        ev.clone(),
        start + Duration::from_millis(1),
        end,
        per_tick,
        mode == Mode::Email,
        logged.clone(),
        costs.clone(),
    );
    probe(
        ev.clone(),
        start + Duration::from_micros(1500),
        end,
        samples.clone(),
    );
    ev.run_forever().unwrap();
    let elapsed = start.elapsed();
    if let Some((_, guard)) = &logging {
        // Let the mail in flight finish, so the sink's count is complete.
        while guard.mail_pending() > 0 && start.elapsed() < duration + Duration::from_secs(5) {
            ev.run_once(Some(Duration::from_millis(10))).unwrap();
        }
    }
    drop(_default);
    drop(logging); // flushes the file
    let mut lines_in_files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap();
        lines_in_files += text.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let lines_logged = *logged.borrow();
    let samples = samples.take();
    Report {
        samples,
        costs: costs.take(),
        lines_logged,
        lines_in_files,
        elapsed,
        mails: sink_mails.map_or(0, |m| m.load(Ordering::Relaxed)),
    }
}

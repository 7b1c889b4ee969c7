//! The core loop against tokio's `current_thread` runtime doing the equivalent work in
//! the same process (the workloads of `cargo bench -p oxloop --bench core`, timed
//! once each instead of sampled).

use oxloop::EventLoop;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One workload timed on both sides.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Operations in the workload (timers set, callbacks run, calls made).
    pub operations: u64,
    /// oxloop's wall time.
    pub oxloop: Duration,
    /// tokio's wall time.
    pub tokio: Duration,
    /// The same times split into phases: `(name, oxloop, tokio)`.
    pub phases: Vec<(&'static str, Duration, Duration)>,
}

impl Comparison {
    /// tokio's time over oxloop's (above 1: oxloop is faster).
    pub fn speedup(&self) -> f64 {
        self.tokio.as_secs_f64() / self.oxloop.as_secs_f64().max(1e-12)
    }
}

fn event_loop() -> io::Result<EventLoop> {
    EventLoop::current().or_else(|_| EventLoop::new())
}

fn tokio_rt() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn delay(i: usize) -> Duration {
    Duration::from_millis(1 + (i % 10) as u64)
}

fn check(ok: bool, what: &str) -> io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(format!("{what}: wrong count")))
    }
}

/// `n` timers of 1–10 ms set, every other one cancelled, the rest fired; against `n`
/// tokio tasks sleeping, every other one aborted.
pub fn timers(n: usize) -> io::Result<Comparison> {
    let ev = event_loop()?;
    let fired = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let fired = fired.clone();
        handles.push(ev.call_later(delay(i), move || fired.set(fired.get() + 1)));
    }
    let inserted = start.elapsed();
    for h in handles.iter().step_by(2) {
        h.cancel();
    }
    let cancelled = start.elapsed();
    ev.run()?;
    let oxloop = start.elapsed();
    let ox_phases = [inserted, cancelled - inserted, oxloop - cancelled];
    check(fired.get() == n / 2, "oxloop timers")?;
    drop(handles);

    let rt = tokio_rt()?;
    let fired = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let (inserted, cancelled) = rt.block_on(async {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let fired = fired.clone();
            handles.push(tokio::spawn(async move {
                tokio::time::sleep(delay(i)).await;
                fired.fetch_add(1, Ordering::Relaxed);
            }));
        }
        let inserted = start.elapsed();
        for h in handles.iter().step_by(2) {
            h.abort();
        }
        let cancelled = start.elapsed();
        for h in handles.into_iter().skip(1).step_by(2) {
            let _ = h.await;
        }
        (inserted, cancelled)
    });
    let tokio = start.elapsed();
    check(fired.load(Ordering::Relaxed) == n / 2, "tokio timers")?;
    let tk_phases = [inserted, cancelled - inserted, tokio - cancelled];
    let names = ["insert", "cancel", "fire"];
    Ok(Comparison {
        operations: n as u64,
        oxloop,
        tokio,
        phases: (0..3)
            .map(|i| (names[i], ox_phases[i], tk_phases[i]))
            .collect(),
    })
}

/// `n` callbacks queued with `call_soon` then run, against `n` empty tokio tasks
/// spawned then run.
pub fn call_soon(n: usize) -> io::Result<Comparison> {
    let ev = event_loop()?;
    let count = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    for _ in 0..n {
        let count = count.clone();
        ev.call_soon(move || count.set(count.get() + 1));
    }
    ev.run()?;
    let oxloop = start.elapsed();
    check(count.get() == n, "call_soon")?;

    let rt = tokio_rt()?;
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            let count = count.clone();
            tokio::spawn(async move {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        while count.load(Ordering::Relaxed) < n {
            tokio::task::yield_now().await;
        }
    });
    let tokio = start.elapsed();
    Ok(Comparison {
        operations: n as u64,
        oxloop,
        tokio,
        phases: Vec::new(),
    })
}

/// `threads` threads each making `per_thread` calls into the loop with
/// `call_from_thread`, against the same number of tokio `Handle::spawn`.
pub fn cross_thread(threads: usize, per_thread: usize) -> io::Result<Comparison> {
    let total = threads * per_thread;
    let ev = event_loop()?;
    let received = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let senders: Vec<_> = (0..threads)
        .map(|_| {
            let remote = ev.remote();
            let received = received.clone();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let received = received.clone();
                    let _ = remote.call_from_thread(move || {
                        if received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                            if let Ok(ev) = EventLoop::current() {
                                ev.stop();
                            }
                        }
                    });
                }
            })
        })
        .collect();
    ev.run_forever()?;
    let oxloop = start.elapsed();
    for s in senders {
        let _ = s.join();
    }
    check(
        received.load(Ordering::Relaxed) == total,
        "call_from_thread",
    )?;

    let rt = tokio_rt()?;
    let done = Arc::new(tokio::sync::Notify::new());
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handle = rt.handle().clone();
    let senders: Vec<_> = (0..threads)
        .map(|_| {
            let (handle, done, count) = (handle.clone(), done.clone(), count.clone());
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let (done, count) = (done.clone(), count.clone());
                    handle.spawn(async move {
                        if count.fetch_add(1, Ordering::Relaxed) + 1 == total {
                            done.notify_one();
                        }
                    });
                }
            })
        })
        .collect();
    rt.block_on(done.notified());
    let tokio = start.elapsed();
    for s in senders {
        let _ = s.join();
    }
    check(count.load(Ordering::Relaxed) == total, "Handle::spawn")?;
    Ok(Comparison {
        operations: total as u64,
        oxloop,
        tokio,
        phases: Vec::new(),
    })
}

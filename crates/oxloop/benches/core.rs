//! The core loop against tokio's current_thread runtime doing the equivalent work, in
//! one process. Prints the ratio of tokio's time to oxloop's at the end.
//!
//! ```text
//! cargo bench -p oxloop --bench core
//! ```
//!
//! - `call_soon`: 1,000,000 callbacks queued then run, vs 1,000,000 empty tasks spawned
//!   then run;
//! - `timers`: 1,000,000 timers (1–10 ms) set, every other one cancelled, the rest run,
//!   vs 1,000,000 tasks awaiting `tokio::time::sleep`, every other one aborted;
//! - `cross_thread`: 4 threads × 100,000 calls to `call_from_thread`, vs 4 threads ×
//!   100,000 `Handle::spawn`.

#[path = "ratio.rs"]
mod ratio;

use criterion::{criterion_group, Criterion};
use oxloop::EventLoop;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLBACKS: usize = 1_000_000;
const TIMERS: usize = 1_000_000;
const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 100_000;

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn call_soon(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_soon_1M");
    group.sample_size(10);
    let ev = EventLoop::current().or_else(|_| EventLoop::new()).unwrap();
    group.bench_function("oxloop", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let count = Rc::new(Cell::new(0usize));
                let start = Instant::now();
                for _ in 0..CALLBACKS {
                    let count = count.clone();
                    ev.call_soon(move || count.set(count.get() + 1));
                }
                ev.run().unwrap();
                total += start.elapsed();
                assert_eq!(count.get(), CALLBACKS);
            }
            ratio::record("call_soon_1M", "oxloop", total, iters);
            total
        })
    });
    let rt = tokio_rt();
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let count = Arc::new(AtomicUsize::new(0));
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..CALLBACKS {
                        let count = count.clone();
                        tokio::spawn(async move {
                            count.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    while count.load(Ordering::Relaxed) < CALLBACKS {
                        tokio::task::yield_now().await;
                    }
                });
                total += start.elapsed();
            }
            ratio::record("call_soon_1M", "tokio", total, iters);
            total
        })
    });
    group.finish();
}

fn delay(i: usize) -> Duration {
    Duration::from_millis(1 + (i % 10) as u64)
}

fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers_1M_half_cancelled");
    group.sample_size(10);
    let ev = EventLoop::current().or_else(|_| EventLoop::new()).unwrap();
    group.bench_function("oxloop", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut handles = Vec::with_capacity(TIMERS);
            for _ in 0..iters {
                let fired = Rc::new(Cell::new(0usize));
                let start = Instant::now();
                for i in 0..TIMERS {
                    let fired = fired.clone();
                    handles.push(ev.call_later(delay(i), move || fired.set(fired.get() + 1)));
                }
                for h in handles.iter().step_by(2) {
                    h.cancel();
                }
                ev.run().unwrap();
                total += start.elapsed();
                assert_eq!(fired.get(), TIMERS / 2);
                handles.clear();
            }
            ratio::record("timers_1M_half_cancelled", "oxloop", total, iters);
            total
        })
    });
    let rt = tokio_rt();
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let fired = Arc::new(AtomicUsize::new(0));
                let start = Instant::now();
                rt.block_on(async {
                    let mut handles = Vec::with_capacity(TIMERS);
                    for i in 0..TIMERS {
                        let fired = fired.clone();
                        handles.push(tokio::spawn(async move {
                            tokio::time::sleep(delay(i)).await;
                            fired.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                    for h in handles.iter().step_by(2) {
                        h.abort();
                    }
                    for h in handles.into_iter().skip(1).step_by(2) {
                        h.await.unwrap();
                    }
                });
                total += start.elapsed();
                assert_eq!(fired.load(Ordering::Relaxed), TIMERS / 2);
            }
            ratio::record("timers_1M_half_cancelled", "tokio", total, iters);
            total
        })
    });
    group.finish();
}

thread_local! {
    static RECEIVED: Cell<usize> = const { Cell::new(0) };
}

fn cross_thread(c: &mut Criterion) {
    let total_calls = THREADS * CALLS_PER_THREAD;
    let mut group = c.benchmark_group("cross_thread_4x100k");
    group.sample_size(10);
    let ev = EventLoop::current().or_else(|_| EventLoop::new()).unwrap();
    group.bench_function("oxloop", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                RECEIVED.set(0);
                let start = Instant::now();
                let senders: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let remote = ev.remote();
                        std::thread::spawn(move || {
                            for _ in 0..CALLS_PER_THREAD {
                                remote
                                    .call_from_thread(move || {
                                        let n = RECEIVED.get() + 1;
                                        RECEIVED.set(n);
                                        if n == total_calls {
                                            EventLoop::current().unwrap().stop();
                                        }
                                    })
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                ev.run_forever().unwrap();
                total += start.elapsed();
                for s in senders {
                    s.join().unwrap();
                }
                assert_eq!(RECEIVED.get(), total_calls);
            }
            ratio::record("cross_thread_4x100k", "oxloop", total, iters);
            total
        })
    });
    let rt = tokio_rt();
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let done = Arc::new(tokio::sync::Notify::new());
                let count = Arc::new(AtomicUsize::new(0));
                let start = Instant::now();
                let handle = rt.handle().clone();
                let senders: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let (handle, done, count) = (handle.clone(), done.clone(), count.clone());
                        std::thread::spawn(move || {
                            for _ in 0..CALLS_PER_THREAD {
                                let (done, count) = (done.clone(), count.clone());
                                handle.spawn(async move {
                                    if count.fetch_add(1, Ordering::Relaxed) + 1 == total_calls {
                                        done.notify_one();
                                    }
                                });
                            }
                        })
                    })
                    .collect();
                rt.block_on(done.notified());
                total += start.elapsed();
                for s in senders {
                    s.join().unwrap();
                }
            }
            ratio::record("cross_thread_4x100k", "tokio", total, iters);
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    targets = call_soon, timers, cross_thread
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio::print_ratios(
        "oxloop",
        "tokio",
        &[
            ("call_soon_1M", 2.0),
            ("timers_1M_half_cancelled", 2.0),
            ("cross_thread_4x100k", 1.0),
        ],
    );
}

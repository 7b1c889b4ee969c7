//! The storms `oxloop soak` raises on the serving loop: timers set and cancelled,
//! signals sent to the process, calls from other threads, and callbacks that panic.
//! Each one checks its own books exactly (no timing thresholds).

use oxloop::{EventLoop, Handle};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads making cross-thread calls.
pub const CALLING_THREADS: usize = 8;
/// Signals sent per burst; a burst counts as seen when the handler ran after it.
const SIGNAL_BURST: u64 = 10;
/// How often the timer storm takes a step.
const TIMER_STEP: Duration = Duration::from_millis(2);

/// How big the storms are.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StormScale {
    /// Timers set (and cancelled, unless they fire first).
    pub timers: u64,
    /// Signals sent to the process.
    pub signals: u64,
    /// Cross-thread calls per calling thread.
    pub calls_per_thread: u64,
    /// Over about how long to spread them.
    pub spread_ms: u64,
}

/// What the storms counted.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StormCounts {
    /// Timers set.
    pub timers_set: u64,
    /// Timers that fired before their cancel came.
    pub timers_fired: u64,
    /// Timers cancelled before firing.
    pub timers_cancelled: u64,
    /// Timers that fired after a successful cancel, or were neither fired nor
    /// cancellable: must be 0.
    pub timer_misfires: u64,
    /// Signals sent.
    pub signals_sent: u64,
    /// Times the signal handler ran (signals of one burst may coalesce).
    pub signal_handler_runs: u64,
    /// Bursts after which the handler did not run within 30 s: must be 0.
    pub signal_bursts_missed: u64,
    /// Cross-thread calls planned.
    pub calls_planned: u64,
    /// Cross-thread calls made.
    pub calls_sent: u64,
    /// Cross-thread calls run.
    pub calls_run: u64,
    /// Calls that ran out of their thread's order: must be 0.
    pub calls_out_of_order: u64,
    /// Callbacks scheduled to panic.
    pub callback_panics_scheduled: u64,
}

/// The running storms of one loop.
pub struct Storms {
    timers: Rc<TimerStorm>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    signals_sent: Arc<AtomicU64>,
    signal_runs: Arc<AtomicU64>,
    bursts_missed: Arc<AtomicU64>,
    calls_sent: Arc<AtomicU64>,
    calls_run: Arc<AtomicU64>,
    out_of_order: Arc<AtomicU64>,
    expected_calls: u64,
    signal_handler: Handle,
}

struct TimerStorm {
    ev: EventLoop,
    target: u64,
    batch: u64,
    set: Cell<u64>,
    fired: Rc<Cell<u64>>,
    cancelled: Cell<u64>,
    misfires: Rc<Cell<u64>>,
    pending: RefCell<Vec<(Handle, Rc<Cell<u8>>)>>,
    panics_scheduled: Cell<u64>,
    rng: RefCell<fastrand::Rng>,
    done: Cell<bool>,
}

const PENDING: u8 = 0;
const FIRED: u8 = 1;
const CANCELLED: u8 = 2;

impl TimerStorm {
    /// Cancels the previous batch, sets the next one and schedules a panicking
    /// callback now and then.
    fn step(self: &Rc<Self>) {
        for (handle, state) in self.pending.borrow_mut().drain(..) {
            if handle.cancel() {
                if state.get() != PENDING {
                    self.misfires.set(self.misfires.get() + 1);
                }
                state.set(CANCELLED);
                self.cancelled.set(self.cancelled.get() + 1);
            } else if state.get() != FIRED {
                self.misfires.set(self.misfires.get() + 1);
            }
        }
        let left = self.target - self.set.get();
        if left == 0 {
            self.done.set(true);
            return;
        }
        let n = left.min(self.batch);
        let mut rng = self.rng.borrow_mut();
        let mut pending = self.pending.borrow_mut();
        for _ in 0..n {
            let state = Rc::new(Cell::new(PENDING));
            let (st, fired, misfires) = (state.clone(), self.fired.clone(), self.misfires.clone());
            let delay = Duration::from_micros(rng.u64(0..8_000));
            let handle = self.ev.call_later(delay, move || {
                if st.get() != PENDING {
                    misfires.set(misfires.get() + 1);
                }
                st.set(FIRED);
                fired.set(fired.get() + 1);
            });
            pending.push((handle, state));
        }
        self.set.set(self.set.get() + n);
        if rng.u32(0..4) == 0 {
            self.panics_scheduled.set(self.panics_scheduled.get() + 1);
            self.ev.call_soon(|| panic!("soak: callback panic"));
        }
        drop((rng, pending));
        let me = self.clone();
        self.ev.call_later(TIMER_STEP, move || me.step());
    }
}

impl Storms {
    /// Starts every storm on `ev` (on the loop's thread).
    pub fn start(ev: &EventLoop, scale: StormScale, seed: u64) -> io::Result<Storms> {
        let steps = (scale.spread_ms / TIMER_STEP.as_millis() as u64).max(1);
        let timers = Rc::new(TimerStorm {
            ev: ev.clone(),
            target: scale.timers,
            batch: scale.timers.div_ceil(steps).max(1),
            set: Cell::new(0),
            fired: Rc::new(Cell::new(0)),
            cancelled: Cell::new(0),
            misfires: Rc::new(Cell::new(0)),
            pending: RefCell::new(Vec::new()),
            panics_scheduled: Cell::new(0),
            rng: RefCell::new(fastrand::Rng::with_seed(seed)),
            done: Cell::new(false),
        });
        let first = timers.clone();
        ev.call_soon(move || first.step());

        let stop = Arc::new(AtomicBool::new(false));
        let signal_runs = Arc::new(AtomicU64::new(0));
        let runs = signal_runs.clone();
        let signal_handler = ev.add_signal_handler(libc::SIGUSR1, move || {
            runs.fetch_add(1, Ordering::SeqCst);
        })?;
        let mut threads = Vec::new();

        let signals_sent = Arc::new(AtomicU64::new(0));
        let bursts_missed = Arc::new(AtomicU64::new(0));
        {
            let (stop, sent, runs, missed) = (
                stop.clone(),
                signals_sent.clone(),
                signal_runs.clone(),
                bursts_missed.clone(),
            );
            let bursts = scale.signals.div_ceil(SIGNAL_BURST);
            let pause = Duration::from_millis(scale.spread_ms / bursts.max(1))
                .min(Duration::from_millis(20));
            threads.push(
                std::thread::Builder::new()
                    .name("soak-signals".into())
                    .spawn(move || {
                        for _ in 0..bursts {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            let before = runs.load(Ordering::SeqCst);
                            for _ in 0..SIGNAL_BURST {
                                // SAFETY: kill(2) with our own pid and a signal the loop
                                // handles.
                                unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                                sent.fetch_add(1, Ordering::SeqCst);
                            }
                            let deadline = Instant::now() + Duration::from_secs(30);
                            while runs.load(Ordering::SeqCst) == before {
                                if Instant::now() > deadline {
                                    missed.fetch_add(1, Ordering::SeqCst);
                                    break;
                                }
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            std::thread::sleep(pause);
                        }
                    })?,
            );
        }

        let calls_sent = Arc::new(AtomicU64::new(0));
        let calls_run = Arc::new(AtomicU64::new(0));
        let out_of_order = Arc::new(AtomicU64::new(0));
        let per_thread = scale.calls_per_thread;
        let batches = per_thread.div_ceil(100).max(1);
        let pause =
            Duration::from_micros(scale.spread_ms * 1000 / batches).min(Duration::from_millis(20));
        for t in 0..CALLING_THREADS {
            let remote = ev.remote();
            let (sent, run, disorder) =
                (calls_sent.clone(), calls_run.clone(), out_of_order.clone());
            let next = Arc::new(AtomicU64::new(0));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("soak-calls-{t}"))
                    .spawn(move || {
                        for i in 0..per_thread {
                            let (run, disorder, next) =
                                (run.clone(), disorder.clone(), next.clone());
                            let call = move || {
                                if next.swap(i + 1, Ordering::SeqCst) != i {
                                    disorder.fetch_add(1, Ordering::SeqCst);
                                }
                                run.fetch_add(1, Ordering::SeqCst);
                            };
                            if remote.call_from_thread(call).is_err() {
                                return;
                            }
                            sent.fetch_add(1, Ordering::SeqCst);
                            if i % 100 == 99 {
                                std::thread::sleep(pause);
                            }
                        }
                    })?,
            );
        }
        Ok(Storms {
            timers,
            stop,
            threads,
            signals_sent,
            signal_runs,
            bursts_missed,
            calls_sent,
            calls_run,
            out_of_order,
            expected_calls: per_thread * CALLING_THREADS as u64,
            signal_handler,
        })
    }

    /// Asks the signal storm to stop after its current burst (the timer storm and the
    /// calls run to their planned counts).
    pub fn wind_down(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether every storm has finished and every call made has run.
    pub fn finished(&self) -> bool {
        self.timers.done.get()
            && self.threads.iter().all(|t| t.is_finished())
            && self.calls_run.load(Ordering::SeqCst) == self.calls_sent.load(Ordering::SeqCst)
    }

    /// Joins the threads, removes the signal handler and returns the counts.
    pub fn finish(self) -> StormCounts {
        for t in self.threads {
            let _ = t.join();
        }
        self.signal_handler.cancel();
        StormCounts {
            timers_set: self.timers.set.get(),
            timers_fired: self.timers.fired.get(),
            timers_cancelled: self.timers.cancelled.get(),
            timer_misfires: self.timers.misfires.get(),
            signals_sent: self.signals_sent.load(Ordering::SeqCst),
            signal_handler_runs: self.signal_runs.load(Ordering::SeqCst),
            signal_bursts_missed: self.bursts_missed.load(Ordering::SeqCst),
            calls_planned: self.expected_calls,
            calls_sent: self.calls_sent.load(Ordering::SeqCst),
            calls_run: self.calls_run.load(Ordering::SeqCst),
            calls_out_of_order: self.out_of_order.load(Ordering::SeqCst),
            callback_panics_scheduled: self.timers.panics_scheduled.get(),
        }
    }
}

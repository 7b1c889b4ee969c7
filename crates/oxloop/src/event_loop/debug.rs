//! Debug mode and statistics: the introspection users of asyncio and libuv rely on.
//!
//! In debug mode ([`EventLoop::set_debug`]) every callback, watcher, signal handler and
//! task is wrapped when it is scheduled: the wrapper remembers where it was scheduled
//! (through `#[track_caller]`, a pointer to a static location, no allocation), times
//! each run, and logs a `tracing` warning naming that place when a run takes longer
//! than the threshold (100 ms by default). A panic caught while such a wrapper runs
//! carries the place too ([`crate::CallbackPanic::origin`]). Outside debug mode nothing
//! is wrapped and nothing is timed.

use super::{EventLoop, FdCallback};
use crate::event_loop::ready::Callback;
use std::cell::Cell;
use std::panic::Location;
use std::time::{Duration, Instant};

/// The default threshold above which debug mode reports a slow callback.
pub const DEFAULT_SLOW_CALLBACK: Duration = Duration::from_millis(100);

thread_local! {
    /// Where the callback running now was scheduled (debug mode only).
    static ORIGIN: Cell<Option<&'static Location<'static>>> = const { Cell::new(None) };
}

pub(crate) fn current_origin() -> Option<&'static Location<'static>> {
    ORIGIN.with(Cell::get)
}

pub(crate) fn clear_origin() {
    ORIGIN.with(|o| o.set(None));
}

/// Runs `f` as scheduled at `origin`, warning if it takes longer than `threshold`.
pub(crate) fn timed<R>(
    what: &str,
    origin: &'static Location<'static>,
    threshold: Duration,
    f: impl FnOnce() -> R,
) -> R {
    let outer = ORIGIN.with(|o| o.replace(Some(origin)));
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    ORIGIN.with(|o| o.set(outer));
    if took > threshold {
        tracing::warn!(
            target: "oxloop::debug",
            "slow {what}: took {:.1} ms (threshold {} ms), scheduled at {origin}",
            took.as_secs_f64() * 1e3,
            threshold.as_millis()
        );
    }
    result
}

/// A snapshot of what a loop has done and holds. See [`EventLoop::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Iterations run.
    pub iterations: u64,
    /// Callbacks (soon, timers, fd watchers, signal handlers, cross-thread calls) and
    /// task steps run.
    pub callbacks_run: u64,
    /// Callbacks queued for the next iteration.
    pub ready: usize,
    /// Timers pending.
    pub timers_pending: usize,
    /// fds with a callback watcher.
    pub fds_watched: usize,
    /// Tasks alive.
    pub tasks_alive: usize,
    /// Time spent blocked in the poller (zero unless
    /// [`EventLoop::track_wait_time`] is on).
    pub time_waiting: Duration,
    /// Time spent running: the loop's age at its last wake-up minus the time waiting
    /// (so everything, unless [`EventLoop::track_wait_time`] is on).
    pub time_running: Duration,
}

impl EventLoop {
    /// Turns debug mode on or off (asyncio's `set_debug`); see the module docs.
    /// Work scheduled while it is on keeps being traced after it is turned off.
    pub fn set_debug(&self, on: bool) {
        self.inner
            .debug
            .set(on.then_some(self.inner.debug.get().unwrap_or(DEFAULT_SLOW_CALLBACK)));
    }

    /// Turns debug mode on with a slow-callback threshold other than 100 ms.
    pub fn set_slow_callback_threshold(&self, threshold: Duration) {
        self.inner.debug.set(Some(threshold));
    }

    /// Whether debug mode is on.
    pub fn is_debug(&self) -> bool {
        self.inner.debug.get().is_some()
    }

    /// Starts (or stops) measuring the time spent waiting in the poller, reported by
    /// [`stats`](Self::stats). Off by default, like libuv's idle-time metric: it costs
    /// a clock read per blocking wait.
    pub fn track_wait_time(&self, on: bool) {
        self.inner.track_wait_time.set(on);
        self.inner.update_plain_wait();
    }

    /// What the loop has done so far and holds now.
    pub fn stats(&self) -> LoopStats {
        let mut state = self.inner.state.borrow_mut();
        let now = self.inner.now(&mut state);
        LoopStats {
            iterations: self.inner.iterations.get(),
            callbacks_run: self.inner.callbacks_run.get(),
            ready: state.ready.live(),
            timers_pending: state.timers.len(),
            fds_watched: state.watchers.len(),
            tasks_alive: state.tasks.len(),
            time_waiting: state.time_waiting,
            time_running: now
                .saturating_duration_since(self.inner_epoch())
                .saturating_sub(state.time_waiting),
        }
    }

    /// Boxes a one-shot callback, wrapped for tracing in debug mode.
    #[track_caller]
    pub(crate) fn traced_once(&self, f: impl FnOnce() + 'static) -> Callback {
        match self.inner.debug.get() {
            None => Box::new(f),
            Some(threshold) => {
                let origin = Location::caller();
                Box::new(move || timed("callback", origin, threshold, f))
            }
        }
    }

    /// Boxes a repeating callback, wrapped for tracing in debug mode.
    #[track_caller]
    pub(crate) fn traced_mut(&self, mut f: impl FnMut() + 'static) -> FdCallback {
        match self.inner.debug.get() {
            None => Box::new(f),
            Some(threshold) => {
                let origin = Location::caller();
                Box::new(move || timed("watcher", origin, threshold, &mut f))
            }
        }
    }

    fn inner_epoch(&self) -> Instant {
        self.inner.epoch
    }

    /// The debug threshold, if debug mode is on (for task wrappers).
    pub(crate) fn debug_threshold(&self) -> Option<Duration> {
        self.inner.debug.get()
    }
}

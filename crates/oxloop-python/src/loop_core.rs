//! `LoopCore`: the native half of `oxloop.Loop`. Callbacks, timers, fd watchers,
//! signal handlers and the run loop live here, on the oxloop core; the Python half
//! (`python/oxloop/_loop.py`) adds asyncio's bookkeeping and network layer on top.

use crate::handle::{Handle, TimerHandle};
use crate::running::{self, thread_token, GilCell, LoopCell, LoopShared};
use crate::task_reader::TaskReader;
use oxloop::{EventLoop, LoopRemote};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyClassInitializer;
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reader and writer handles of one fd.
type FdHandles = (Option<Py<Handle>>, Option<Py<Handle>>);

/// The core's state that only the loop's thread (see `running`) may touch.
struct Core {
    ev: EventLoop,
    readers: RefCell<HashMap<RawFd, Py<Handle>>>,
    writers: RefCell<HashMap<RawFd, Py<Handle>>>,
    signals: RefCell<HashMap<i32, oxloop::Handle>>,
}

/// The native base class of `oxloop.Loop`: an oxloop event loop with asyncio's
/// scheduling methods.
#[pyclass(subclass, frozen, module = "oxloop._oxloop")]
pub struct LoopCore {
    /// The core; `None` once closed (dropping it closes the core's fds).
    core: LoopCell<RefCell<Option<Core>>>,
    shared: Arc<LoopShared>,
    /// The core's remote, for other threads; `None` once closed.
    remote: GilCell<Option<LoopRemote>>,
    /// Callbacks scheduled through the remote (`call_soon_threadsafe`, or `call_soon`
    /// from another thread) and not yet in the core's ready queue, oldest first. A
    /// `call_soon` on the loop's thread moves them there before queueing its own, so
    /// the two kinds keep the one FIFO order asyncio's single deque gives them.
    from_threads: GilCell<Vec<Py<Handle>>>,
    /// A reading of `time.monotonic()` and an `Instant` read just after it (both are
    /// `CLOCK_MONOTONIC`): converts deadlines between the two. The instant is a few
    /// nanoseconds later than the seconds say, so timers are never early.
    clock_base: (f64, Instant),
}

/// An `OSError` (or the subclass Python picks for its errno) from an I/O error.
pub(crate) fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, err.to_string())),
        None => PyOSError::new_err(err.to_string()),
    }
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

impl LoopCore {
    /// The core loop, for objects (transports) that run on it.
    pub(crate) fn event_loop(&self, py: Python<'_>) -> PyResult<EventLoop> {
        Ok(self.core(py)?.ev.clone())
    }

    /// What the loop's objects need to tell which thread may touch the core.
    pub(crate) fn running_state(&self) -> Arc<LoopShared> {
        self.shared.clone()
    }

    fn core(&self, py: Python<'_>) -> PyResult<Ref<'_, Core>> {
        let cell = self.core.get(py, &self.shared)?;
        let core = cell.try_borrow().map_err(|_| closed_error())?;
        Ref::filter_map(core, Option::as_ref).map_err(|_| closed_error())
    }

    /// Sends `f` to the loop through its remote (which also wakes it).
    fn send(&self, py: Python<'_>, f: impl FnOnce() + Send + 'static) -> PyResult<()> {
        match &*self.remote.borrow(py) {
            Some(remote) => remote.call_from_thread(f).map_err(|_| closed_error()),
            None => Err(closed_error()),
        }
    }

    fn new_handle(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Handle> {
        let py = slf.py();
        let debug = slf.get().shared.debug.load(Ordering::Relaxed);
        if debug {
            check_callback(py, &callback)?;
        }
        Handle::new(
            py,
            callback,
            args,
            slf.clone().unbind().into_any(),
            context,
            debug,
        )
    }

    /// The instant of the core's clock at `when` seconds of `time.monotonic()`, or
    /// `None` for a time that never comes (infinite or NaN). Equal `when`s give equal
    /// instants (so their timers keep their order), and the instant is never before
    /// `when` (see `clock_base`).
    fn instant_at(&self, when: f64) -> Option<Instant> {
        let (base_seconds, base) = self.clock_base;
        let offset = when - base_seconds;
        if offset <= 0.0 {
            return Some(base);
        }
        Duration::try_from_secs_f64(offset)
            .ok()
            .and_then(|d| base.checked_add(d))
    }

    /// `call_soon`, or with `threadsafe` `call_soon_threadsafe`: through the loop's
    /// remote, which also wakes it.
    fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
        threadsafe: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        if this.shared.closed.load(Ordering::Relaxed) {
            return Err(closed_error());
        }
        let handle = Py::new(py, LoopCore::new_handle(slf, callback, args, context)?)?;
        crate::ffi::untrack(handle.bind(py));
        let local = if threadsafe {
            None
        } else {
            match this.core(py) {
                Ok(core) => Some(core),
                // `call_soon` from another thread while the loop runs: not thread-safe in
                // asyncio (debug mode says so); here it goes through the remote instead.
                Err(err) if this.shared.debug.load(Ordering::Relaxed) => return Err(err),
                Err(_) => None,
            }
        };
        match local {
            Some(core) => {
                if !this.from_threads.borrow(py).is_empty() {
                    this.queue_from_threads(py, &core);
                }
                queue(&core, handle.clone_ref(py));
            }
            None => LoopCore::send_from_thread(slf, handle.clone_ref(py))?,
        }
        Ok(handle)
    }

    /// Queues `handle` for the loop's next iteration from any thread: after every
    /// callback scheduled before it. The first of a batch sends the loop (through its
    /// remote, which wakes it) a call that moves the batch to the ready queue.
    fn send_from_thread(slf: &Bound<'_, Self>, handle: Py<Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let first = {
            let mut pending = this.from_threads.borrow_mut(py);
            pending.push(handle);
            pending.len() == 1
        };
        if !first {
            return Ok(());
        }
        let core = slf.clone().unbind();
        this.send(py, move || {
            running::with_gil(|py| {
                let this = core.get();
                if let Ok(ev) = this.core(py) {
                    this.queue_from_threads(py, &ev);
                }
            })
        })
        .inspect_err(|_| this.from_threads.borrow_mut(py).clear())
    }

    /// Moves the callbacks scheduled from other threads to the core's ready queue.
    fn queue_from_threads(&self, py: Python<'_>, core: &Core) {
        let pending = std::mem::take(&mut *self.from_threads.borrow_mut(py));
        for handle in pending {
            queue(core, handle);
        }
    }

    fn schedule_timer(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        let this = slf.get();
        let core = this.core(py)?;
        let handle = LoopCore::new_handle(slf, callback, args, context)?;
        let timer = Py::new(
            py,
            PyClassInitializer::from(handle)
                .add_subclass(TimerHandle::new(when, this.shared.clone())),
        )?;
        crate::ffi::untrack(timer.bind(py));
        if let Some(at) = this.instant_at(when) {
            let fired = timer.clone_ref(py);
            let ev = core.ev.clone();
            // Due timers join the ready queue behind the callbacks already in it, and run
            // in the same iteration, as in asyncio.
            let core_handle = core.ev.call_at(at, move || {
                ev.call_soon(move || {
                    running::with_gil(|py| Handle::run(fired.bind(py).as_super()))
                });
            });
            timer.get().set_timer(py, core_handle);
        }
        Ok(timer)
    }

    fn add_watcher(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        write: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let core = slf.get().core(py)?;
        let handle = Py::new(py, LoopCore::new_handle(slf, callback, args, None)?)?;
        crate::ffi::untrack(handle.bind(py));
        LoopCore::remove_watcher(py, &core, fd, write);
        let fired = handle.clone_ref(py);
        let ev = core.ev.clone();
        // As in asyncio, a ready fd's callback joins the ready queue behind the callbacks
        // already in it (and runs in this iteration).
        let run = move || {
            let fired = running::with_gil(|py| fired.clone_ref(py));
            ev.call_soon(move || running::with_gil(|py| Handle::run(fired.bind(py))));
        };
        let added = if write {
            core.ev.add_writer(fd, run)
        } else {
            core.ev.add_reader(fd, run)
        };
        added.map_err(os_error)?;
        let table = if write { &core.writers } else { &core.readers };
        table.borrow_mut().insert(fd, handle.clone_ref(py));
        Ok(handle)
    }

    fn remove_watcher(py: Python<'_>, core: &Core, fd: RawFd, write: bool) -> bool {
        let table = if write { &core.writers } else { &core.readers };
        let Some(old) = table.borrow_mut().remove(&fd) else {
            return false;
        };
        if write {
            core.ev.remove_writer(fd);
        } else {
            core.ev.remove_reader(fd);
        }
        old.get().mark_cancelled(py);
        true
    }
}

/// asyncio's debug-mode check: a coroutine is not a callback.
/// Puts `handle` on the core's ready queue.
fn queue(core: &Core, handle: Py<Handle>) {
    drop(
        core.ev
            .call_soon(move || running::with_gil(|py| Handle::run(handle.bind(py)))),
    );
}

fn check_callback(py: Python<'_>, callback: &Py<PyAny>) -> PyResult<()> {
    let coroutines = py.import("asyncio.coroutines")?;
    let callback = callback.bind(py);
    let is_coroutine = coroutines
        .call_method1("iscoroutine", (callback,))?
        .is_truthy()?
        || coroutines
            .call_method1("iscoroutinefunction", (callback,))?
            .is_truthy()?;
    if is_coroutine {
        return Err(PyTypeError::new_err(
            "coroutines cannot be used as callbacks",
        ));
    }
    if !callback.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "a callable object was expected, got {}",
            callback.repr()?
        )));
    }
    Ok(())
}

#[pymethods]
impl LoopCore {
    /// Creates the loop's core (an oxloop loop of its own, not tied to the thread).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let ev = EventLoop::new_detached().map_err(os_error)?;
        ev.set_wait_wrapper(Some(running::wait_without_gil));
        let remote = ev.remote();
        let seconds = crate::ffi::monotonic();
        let clock_base = (seconds, Instant::now());
        Ok(LoopCore {
            core: LoopCell::new(RefCell::new(Some(Core {
                ev,
                readers: RefCell::default(),
                writers: RefCell::default(),
                signals: RefCell::default(),
            }))),
            shared: Arc::new(LoopShared::new()),
            remote: GilCell::new(Some(remote)),
            from_threads: GilCell::new(Vec::new()),
            clock_base,
        })
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        crate::ffi::monotonic()
    }

    /// Schedules `callback(*args)` for the next iteration (FIFO).
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        LoopCore::schedule_soon(slf, callback, args, context, false)
    }

    /// Schedules `callback(*args)` from any thread, waking the loop.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<Handle>> {
        LoopCore::schedule_soon(slf, callback, args, context, true)
    }

    /// Schedules `callback(*args)` after `delay` seconds; never earlier.
    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Option<f64>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let delay = delay.ok_or_else(|| PyTypeError::new_err("delay must not be None"))?;
        let when = crate::ffi::monotonic() + delay;
        LoopCore::schedule_timer(slf, when, callback, args, context)
    }

    /// Schedules `callback(*args)` at `when` on the loop's clock (`time()`).
    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Option<f64>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = when.ok_or_else(|| PyTypeError::new_err("when cannot be None"))?;
        LoopCore::schedule_timer(slf, when, callback, args, context)
    }

    /// Watches `fd` for reading (replacing an earlier reader); returns the handle.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<Py<Handle>> {
        LoopCore::add_watcher(slf, fd, callback, args, false)
    }

    /// Watches `fd` for reading with a green socket's `reader` (replacing an earlier
    /// reader); returns the handle. When `fd` is ready, the callback joins the ready
    /// queue as any fd callback does, but runs `reader` natively (no context is entered:
    /// it only switches greenlets, and each greenlet has its own context).
    fn _add_task_reader(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        reader: Py<TaskReader>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let core = slf.get().core(py)?;
        let args = PyTuple::empty(py).unbind();
        let callback = reader.clone_ref(py).into_any();
        let handle = Py::new(py, LoopCore::new_handle(slf, callback, args, None)?)?;
        crate::ffi::untrack(handle.bind(py));
        LoopCore::remove_watcher(py, &core, fd, false);
        let fired = handle.clone_ref(py);
        let ev = core.ev.clone();
        let run = move || {
            let (fired, reader) =
                running::with_gil(|py| (fired.clone_ref(py), reader.clone_ref(py)));
            ev.call_soon(move || {
                running::with_gil(|py| {
                    let handle = fired.bind(py);
                    if handle.get().is_cancelled() {
                        return;
                    }
                    if let Err(err) = TaskReader::fire(reader.bind(py)) {
                        crate::handle::report_callback_error(handle, err);
                    }
                })
            });
        };
        core.ev.add_reader(fd, run).map_err(os_error)?;
        core.readers.borrow_mut().insert(fd, handle.clone_ref(py));
        Ok(handle)
    }

    /// Watches `fd` for writing (replacing an earlier writer); returns the handle.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
    ) -> PyResult<Py<Handle>> {
        LoopCore::add_watcher(slf, fd, callback, args, true)
    }

    /// Stops watching `fd` for reading; whether it was watched.
    fn _remove_reader(&self, py: Python<'_>, fd: RawFd) -> PyResult<bool> {
        match self.core(py) {
            Ok(core) => Ok(LoopCore::remove_watcher(py, &core, fd, false)),
            Err(_) if self.shared.closed.load(Ordering::Relaxed) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Stops watching `fd` for writing; whether it was watched.
    fn _remove_writer(&self, py: Python<'_>, fd: RawFd) -> PyResult<bool> {
        match self.core(py) {
            Ok(core) => Ok(LoopCore::remove_watcher(py, &core, fd, true)),
            Err(_) if self.shared.closed.load(Ordering::Relaxed) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The reader and writer handles of `fd` (`None` where there is none).
    fn _fd_handles(&self, py: Python<'_>, fd: RawFd) -> PyResult<FdHandles> {
        let core = self.core(py)?;
        let reader = core.readers.borrow().get(&fd).map(|h| h.clone_ref(py));
        let writer = core.writers.borrow().get(&fd).map(|h| h.clone_ref(py));
        Ok((reader, writer))
    }

    /// Runs `handle` whenever signal `sig` arrives (replacing an earlier handler).
    fn _add_signal_handler(&self, py: Python<'_>, sig: i32, handle: Py<Handle>) -> PyResult<()> {
        let core = self.core(py)?;
        if let Some(old) = core.signals.borrow_mut().remove(&sig) {
            old.cancel();
        }
        let fired = handle.clone_ref(py);
        let added = core
            .ev
            .add_signal_handler(sig, move || {
                running::with_gil(|py| Handle::run(fired.bind(py)))
            })
            .map_err(os_error)?;
        // asyncio's signal handlers do not keep a loop running.
        added.unref();
        core.signals.borrow_mut().insert(sig, added);
        Ok(())
    }

    /// Removes the handler of signal `sig`; whether there was one.
    fn _remove_signal_handler(&self, py: Python<'_>, sig: i32) -> PyResult<bool> {
        let core = self.core(py)?;
        let removed = core.signals.borrow_mut().remove(&sig);
        Ok(removed.map(|h| h.cancel()).is_some())
    }

    /// Runs iterations until `stop()`; raises what a callback let escape
    /// (`KeyboardInterrupt`, `SystemExit`) or Ctrl-C. `slow_callback_duration` turns on
    /// the slow-callback warnings of debug mode.
    #[pyo3(signature = (slow_callback_duration=None))]
    fn _run_forever_core(
        &self,
        py: Python<'_>,
        slow_callback_duration: Option<f64>,
    ) -> PyResult<()> {
        let core = self.core(py)?;
        let me = thread_token();
        if self
            .shared
            .running_thread
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        running::set_debug(slow_callback_duration);
        let mut outcome = Ok(());
        let ran = core.ev.run_while(|| {
            // Python's signal handlers (Ctrl-C's KeyboardInterrupt among them), run here
            // rather than inside the wait so that they may use the loop.
            if let Err(err) = py.check_signals() {
                running::stop_with(err);
            }
            if running::has_pending() {
                outcome = Err(running::take_pending().expect("checked above"));
                return false;
            }
            !self.shared.stopping.swap(false, Ordering::AcqRel)
        });
        let result = ran.map_err(os_error).and(outcome);
        running::set_debug(None);
        self.shared.running_thread.store(0, Ordering::Release);
        result
    }

    /// Runs exactly one cycle of the loop, waiting at most `timeout` seconds for I/O
    /// (`None`: until something happens), never past the earliest timer, and not at
    /// all when callbacks are ready. Refused while the loop runs (here or on another
    /// thread). Raises what a callback let escape, as `_run_forever_core` does.
    #[pyo3(signature = (timeout=None, slow_callback_duration=None))]
    fn _run_once_core(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        slow_callback_duration: Option<f64>,
    ) -> PyResult<()> {
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_nan() => {
                return Err(PyValueError::new_err("timeout must be a number, not NaN"))
            }
            Some(t) => Some(Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)),
        };
        let me = thread_token();
        match self.shared.running_thread.load(Ordering::Acquire) {
            0 => {}
            thread if thread == me => {
                return Err(PyRuntimeError::new_err(
                    "This event loop is already running (run_once was called from one of \
                     its own callbacks)",
                ))
            }
            _ => {
                return Err(PyRuntimeError::new_err(
                    "This event loop is running in another thread; run_once must not \
                     interleave with it",
                ))
            }
        }
        let core = self.core(py)?;
        if self
            .shared
            .running_thread
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        // A loop stepped from inside another loop's callback: keep what belongs to the
        // outer loop (its debug setting and an exception on its way out) aside.
        let outer_debug = running::debug_setting();
        let outer_pending = running::take_pending();
        running::set_debug(slow_callback_duration);
        let mut result = core.ev.run_once(timeout).map_err(os_error);
        if let Err(err) = py.check_signals() {
            running::stop_with(err);
        }
        if let Some(err) = running::take_pending() {
            result = Err(err);
        }
        // A `stop()` called before or during the cycle has had its effect: the cycle
        // ended (the core forgets it too). Kept, it would make `next_timeout()` say 0
        // for ever to a host that only calls `run_once`.
        self.shared.stopping.store(false, Ordering::Release);
        running::set_debug(outer_debug);
        if let Some(err) = outer_pending {
            running::stop_with(err);
        }
        self.shared.running_thread.store(0, Ordering::Release);
        result
    }

    /// The loop's pollable fd (the core's epoll fd): readable when an fd the loop
    /// watches is ready or another thread woke it. Timers do not make it readable: a
    /// host also waits at most `next_timeout()`.
    fn fileno(&self, py: Python<'_>) -> PyResult<RawFd> {
        Ok(self.core(py)?.ev.as_raw_fd())
    }

    /// How long a host may wait on `fileno()` before the next `run_once`: `0.0` when
    /// work is ready, the seconds to the earliest timer, or `None` when only I/O (or
    /// another thread) can wake the loop. Call it right before waiting: it also arms the
    /// cross-thread wake-up, so `call_soon_threadsafe` makes `fileno()` readable.
    fn next_timeout(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        let core = self.core(py)?;
        Ok(core.ev.prepare_wait().map(|d| d.as_secs_f64()))
    }

    /// Makes `run_forever` return after the current iteration.
    fn stop(&self, py: Python<'_>) {
        self.shared.stopping.store(true, Ordering::Release);
        match self.core(py) {
            Ok(core) => core.ev.stop(),
            // Running on another thread: wake it so that it sees the flag (or closed).
            Err(_) => drop(self.send(py, || {})),
        }
    }

    /// Wakes the loop from any thread (asyncio's `_write_to_self`).
    fn _write_to_self(&self, py: Python<'_>) {
        let _ = self.send(py, || {});
    }

    /// Turns debug mode's checks and warnings on or off.
    #[pyo3(signature = (enabled, slow_callback_duration))]
    fn _set_core_debug(&self, enabled: bool, slow_callback_duration: f64) {
        self.shared.debug.store(enabled, Ordering::Relaxed);
        if self.shared.running_thread.load(Ordering::Acquire) == thread_token() {
            running::set_debug(enabled.then_some(slow_callback_duration));
        }
    }

    /// Frees the core: callbacks, timers, watchers and signal handlers are dropped.
    fn _close_core(&self, py: Python<'_>) -> PyResult<()> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let cell = self.core.get(py, &self.shared)?;
        let core = cell
            .try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err("Cannot close a running event loop"))?
            .take();
        self.shared.closed.store(true, Ordering::Relaxed);
        let remote = self.remote.borrow_mut(py).take();
        let from_threads = std::mem::take(&mut *self.from_threads.borrow_mut(py));
        if let Some(core) = core {
            for handle in core.signals.borrow().values() {
                handle.cancel();
            }
            core.ev.destroy();
            // Dropped here, outside every borrow: the handles' callbacks may run Python
            // code as they go, and the last reference to the core closes its fds.
            drop(core);
        }
        drop(remote);
        drop(from_threads);
        Ok(())
    }

    /// Whether `run_forever` is running (on any thread).
    fn _core_running(&self) -> bool {
        self.shared.running_thread.load(Ordering::Acquire) != 0
    }
}

//! `LoopCore`: the native half of `oxloop.Loop`. Callbacks, timers, fd watchers,
//! signal handlers and the run loop live here, on the oxloop core; the Python half
//! (`python/oxloop/_loop.py`) adds asyncio's bookkeeping and network layer on top.

use crate::handle::{Handle, TimerHandle};
use crate::running::{self, thread_token, GilCell, LoopCell, LoopShared};
use crate::task_reader::TaskReader;
use oxloop::{EventLoop, LoopRemote};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyTuple};
use pyo3::PyClassInitializer;
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reader and writer handles of one fd.
type FdHandles = (Option<Py<Handle>>, Option<Py<Handle>>);

/// The core's state that only the loop's thread (see `running`) may touch.
struct Core {
    ev: EventLoop,
    readers: RefCell<HashMap<RawFd, Py<Handle>>>,
    writers: RefCell<HashMap<RawFd, Py<Handle>>>,
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
    /// The loop's clock is its own `time()` (a subclass overrides it, or a test patched
    /// it on the object): deadlines are reckoned from it, see `schedule_timer`.
    own_clock: AtomicBool,
    /// The timers scheduled while `own_clock` is on, with their deadlines on that clock:
    /// checked after every iteration, so that a clock that jumps ahead makes them due.
    own_clock_timers: GilCell<Vec<Py<TimerHandle>>>,
    /// While [`LoopCore::hold_first_soon`] runs: `Some(None)`, then the first callback
    /// given to `call_soon` on the loop's thread, held back instead of queued.
    held_soon: GilCell<Option<Option<Py<Handle>>>>,
    /// asyncio's `_debug` (what `set_debug` set): here, so that `get_debug()`, which
    /// every new Future and Task asks, is a native call.
    asyncio_debug: AtomicBool,
}

/// An `OSError` (or the subclass Python picks for its errno) from an I/O error.
pub(crate) fn os_error(err: io::Error) -> PyErr {
    // An error that wraps the system's (one naming an address) keeps its number.
    let errno = err.raw_os_error().or_else(|| {
        let source = std::error::Error::source(err.get_ref()?)?;
        source.downcast_ref::<io::Error>()?.raw_os_error()
    });
    match errno {
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

    /// The loop's clock when it is its own (`own_clock`): `self.time()`.
    fn own_time(slf: &Bound<'_, Self>) -> PyResult<f64> {
        slf.call_method0(intern!(slf.py(), "time"))?.extract()
    }

    /// The instant `seconds` from now (now for a negative delay, `None` for a time that
    /// never comes).
    fn instant_after(seconds: f64) -> Option<Instant> {
        let now = Instant::now();
        if seconds <= 0.0 {
            return Some(now);
        }
        Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|d| now.checked_add(d))
    }

    /// With the loop's own clock: queues the timers whose deadline that clock has reached
    /// (a patched clock may jump ahead of the real one) and forgets the ones that ran or
    /// were cancelled. Called after every iteration while such timers exist.
    #[cold]
    #[inline(never)]
    fn fire_own_clock_timers(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.own_clock_timers.borrow(py).is_empty() {
            return Ok(());
        }
        let now = LoopCore::own_time(slf)?;
        let due = {
            let mut timers = this.own_clock_timers.borrow_mut(py);
            let mut due = Vec::new();
            timers.retain(|timer| {
                let handle = timer.get();
                if !handle.is_scheduled(py) {
                    return false;
                }
                if handle.deadline() <= now {
                    due.push(timer.clone_ref(py));
                    return false;
                }
                true
            });
            due
        };
        if due.is_empty() {
            return Ok(());
        }
        let core = this.core(py)?;
        for timer in due {
            if let Some(core_timer) = timer.get().take_timer(py) {
                if core_timer.cancel() {
                    drop(core.ev.call_soon(move || {
                        running::with_gil(|py| Handle::run(timer.bind(py).as_super()))
                    }));
                }
            }
        }
        Ok(())
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
        if !threadsafe {
            if let Some(held @ None) = &mut *this.held_soon.borrow_mut(py) {
                *held = Some(handle.clone_ref(py));
                return Ok(handle);
            }
        }
        LoopCore::enqueue(slf, handle.clone_ref(py), threadsafe)?;
        Ok(handle)
    }

    /// Runs `f` on the loop's thread; the first callback that `f` schedules with
    /// `call_soon` is not queued but handed back, for the caller to run at once
    /// (`Handle::run`) or queue after all ([`LoopCore::queue_held`]). The web server
    /// starts an application's `asyncio.Task` this way before Python 3.12, which has
    /// no eager tasks: the task's first step is that callback.
    pub(crate) fn hold_first_soon<R>(
        slf: &Bound<'_, Self>,
        f: impl FnOnce() -> R,
    ) -> (R, Option<Py<Handle>>) {
        let py = slf.py();
        let this = slf.get();
        let outer = this.held_soon.borrow_mut(py).replace(None);
        let result = f();
        let held = std::mem::replace(&mut *this.held_soon.borrow_mut(py), outer).flatten();
        (result, held)
    }

    /// Queues a callback held back by [`LoopCore::hold_first_soon`], as `call_soon`
    /// would have.
    pub(crate) fn queue_held(slf: &Bound<'_, Self>, handle: Py<Handle>) -> PyResult<()> {
        LoopCore::enqueue(slf, handle, false)
    }

    /// Puts `handle` on the ready queue: directly from the loop's thread, else (and
    /// always with `threadsafe`) through the remote, which also wakes the loop.
    fn enqueue(slf: &Bound<'_, Self>, handle: Py<Handle>, threadsafe: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.shared.closed.load(Ordering::Relaxed) {
            return Err(closed_error());
        }
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
                queue(&core, handle);
            }
            None => LoopCore::send_from_thread(slf, handle)?,
        }
        Ok(())
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

    /// Schedules a timer due at `when` on the loop's clock (`when_given`: the object
    /// `call_at` was given, if not a float), which the core runs at `at`.
    #[allow(clippy::too_many_arguments)]
    fn schedule_timer(
        slf: &Bound<'_, Self>,
        when: f64,
        when_given: Option<Py<PyAny>>,
        at: Option<Instant>,
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
            PyClassInitializer::from(handle).add_subclass(TimerHandle::new(
                when,
                when_given,
                this.shared.clone(),
            )),
        )?;
        crate::ffi::untrack(timer.bind(py));
        if let Some(at) = at {
            let fired = timer.clone_ref(py);
            // The core runs due timers after the I/O of the iteration and behind the
            // callbacks that were ready before its wait, as asyncio does (the loop is
            // made with `set_io_behind_ready`).
            let core_handle = core.ev.call_at(at, move || {
                running::with_gil(|py| Handle::run(fired.bind(py).as_super()))
            });
            timer.get().set_timer(py, core_handle);
            if this.own_clock.load(Ordering::Relaxed) {
                this.own_clock_timers
                    .borrow_mut(py)
                    .push(timer.clone_ref(py));
            }
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
        // The core runs a ready fd's callback behind the callbacks that were ready before
        // its wait, as asyncio does (`set_io_behind_ready`).
        let run = move || running::with_gil(|py| Handle::run(fired.bind(py)));
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
        // asyncio's order within an iteration: what was ready before the wait, then the
        // I/O it reported, then the due timers.
        ev.set_io_behind_ready(true);
        let remote = ev.remote();
        let seconds = crate::ffi::monotonic();
        let clock_base = (seconds, Instant::now());
        Ok(LoopCore {
            core: LoopCell::new(RefCell::new(Some(Core {
                ev,
                readers: RefCell::default(),
                writers: RefCell::default(),
            }))),
            shared: Arc::new(LoopShared::new()),
            remote: GilCell::new(Some(remote)),
            from_threads: GilCell::new(Vec::new()),
            clock_base,
            own_clock: AtomicBool::new(false),
            own_clock_timers: GilCell::new(Vec::new()),
            held_soon: GilCell::new(None),
            asyncio_debug: AtomicBool::new(false),
        })
    }

    /// Whether the loop is in debug mode.
    fn get_debug(&self) -> bool {
        self.asyncio_debug.load(Ordering::Relaxed)
    }

    /// asyncio's debug flag, which `set_debug` sets.
    #[getter(_debug)]
    fn debug_flag(&self) -> bool {
        self.asyncio_debug.load(Ordering::Relaxed)
    }

    #[setter(_debug)]
    fn set_debug_flag(&self, enabled: &Bound<'_, PyAny>) -> PyResult<()> {
        self.asyncio_debug
            .store(enabled.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    /// Deleting the flag (as `mock.patch.object` does when it ends) turns it off.
    #[deleter(_debug)]
    fn delete_debug_flag(&self) {
        self.asyncio_debug.store(false, Ordering::Relaxed);
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
        let this = slf.get();
        if this.own_clock.load(Ordering::Relaxed) {
            let when = LoopCore::own_time(slf)? + delay;
            let at = LoopCore::instant_after(delay);
            return LoopCore::schedule_timer(slf, when, None, at, callback, args, context);
        }
        let when = crate::ffi::monotonic() + delay;
        let at = this.instant_at(when);
        LoopCore::schedule_timer(slf, when, None, at, callback, args, context)
    }

    /// Schedules `callback(*args)` at `when` on the loop's clock (`time()`).
    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Option<Bound<'_, PyAny>>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let given = when.ok_or_else(|| PyTypeError::new_err("when cannot be None"))?;
        let when: f64 = given.extract()?;
        // `when()` gives back what it was given, as asyncio's does (an `int` stays one).
        let given = (!given.is_exact_instance_of::<PyFloat>()).then(|| given.unbind());
        let this = slf.get();
        let at = if this.own_clock.load(Ordering::Relaxed) {
            LoopCore::instant_after(when - LoopCore::own_time(slf)?)
        } else {
            this.instant_at(when)
        };
        LoopCore::schedule_timer(slf, when, given, at, callback, args, context)
    }

    /// Makes the loop reckon its timers from its own `time()` (`on`), as asyncio's loop
    /// does, or from the monotonic clock directly. `oxloop.Loop` turns it on when a
    /// subclass overrides `time` or `time` is set on the object (a test's mock clock).
    fn _set_own_clock(&self, py: Python<'_>, on: bool) {
        self.own_clock.store(on, Ordering::Relaxed);
        if !on {
            let timers = std::mem::take(&mut *self.own_clock_timers.borrow_mut(py));
            drop(timers);
        }
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
        reader.get().set_handle(py, handle.clone_ref(py));
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

    /// Queues an existing handle (a signal's, see `oxloop.Loop.add_signal_handler`)
    /// from any thread, as `call_soon_threadsafe` queues a new one.
    fn _call_handle_soon(slf: &Bound<'_, Self>, handle: Py<Handle>) -> PyResult<()> {
        LoopCore::enqueue(slf, handle, true)
    }

    /// Runs iterations until `stop()`; raises what a callback let escape
    /// (`KeyboardInterrupt`, `SystemExit`) or Ctrl-C. `slow_callback_duration` turns on
    /// the slow-callback warnings of debug mode.
    #[pyo3(signature = (slow_callback_duration=None))]
    fn _run_forever_core(
        slf: &Bound<'_, Self>,
        slow_callback_duration: Option<f64>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let core = this.core(py)?;
        let me = thread_token();
        if this
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
            if this.own_clock.load(Ordering::Relaxed) {
                if let Err(err) = LoopCore::fire_own_clock_timers(slf) {
                    running::stop_with(err);
                }
            }
            if running::has_pending() {
                outcome = Err(running::take_pending().expect("checked above"));
                return false;
            }
            !this.shared.stopping.swap(false, Ordering::AcqRel)
        });
        let result = ran.map_err(os_error).and(outcome);
        running::set_debug(None);
        this.shared.running_thread.store(0, Ordering::Release);
        result
    }

    /// Runs exactly one cycle of the loop, waiting at most `timeout` seconds for I/O
    /// (`None`: until something happens), never past the earliest timer, and not at
    /// all when callbacks are ready. Refused while the loop runs (here or on another
    /// thread). Raises what a callback let escape, as `_run_forever_core` does.
    #[pyo3(signature = (timeout=None, slow_callback_duration=None))]
    fn _run_once_core(
        slf: &Bound<'_, Self>,
        timeout: Option<f64>,
        slow_callback_duration: Option<f64>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_nan() => {
                return Err(PyValueError::new_err("timeout must be a number, not NaN"))
            }
            Some(t) => Some(Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)),
        };
        let me = thread_token();
        match this.shared.running_thread.load(Ordering::Acquire) {
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
        let core = this.core(py)?;
        if this
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
        if this.own_clock.load(Ordering::Relaxed) {
            if let Err(err) = LoopCore::fire_own_clock_timers(slf) {
                running::stop_with(err);
            }
        }
        if let Some(err) = running::take_pending() {
            result = Err(err);
        }
        // A `stop()` called before or during the cycle has had its effect: the cycle
        // ended (the core forgets it too). Kept, it would make `next_timeout()` say 0
        // for ever to a host that only calls `run_once`.
        this.shared.stopping.store(false, Ordering::Release);
        running::set_debug(outer_debug);
        if let Some(err) = outer_pending {
            running::stop_with(err);
        }
        this.shared.running_thread.store(0, Ordering::Release);
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
        let own_clock_timers = std::mem::take(&mut *self.own_clock_timers.borrow_mut(py));
        if let Some(core) = core {
            core.ev.destroy();
            // Dropped here, outside every borrow: the handles' callbacks may run Python
            // code as they go, and the last reference to the core closes its fds.
            drop(core);
        }
        drop(remote);
        drop(from_threads);
        drop(own_clock_timers);
        Ok(())
    }

    /// Whether `run_forever` is running (on any thread).
    fn _core_running(&self) -> bool {
        self.shared.running_thread.load(Ordering::Acquire) != 0
    }
}

//! What a running loop shares with Python: which thread runs it, the exception that
//! must leave `run_forever`, debug mode, and the wait that lets other threads have the
//! GIL.
//!
//! # Threads
//!
//! The oxloop core is single-threaded (`Rc`, `RefCell`), while Python lets any thread
//! reach a loop object: asyncio programs create a loop on one thread and run it on
//! another, and call `call_soon_threadsafe` from everywhere. The rule that keeps this
//! sound: the core is touched only with the GIL held, and, while the loop runs, only by
//! the thread that runs it. The running thread releases the GIL only inside the
//! kernel wait ([`wait_without_gil`]), where it touches no Python object and nothing
//! of the core but the poller. Other threads reach a running loop through its
//! `LoopRemote` (`Send`), which is what `call_soon_threadsafe` uses.

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

thread_local! {
    /// The exception that must leave the running loop's `run_forever`.
    static PENDING: RefCell<Option<PyErr>> = const { RefCell::new(None) };
    /// Debug mode of the loop running on this thread: the slow-callback threshold.
    static SLOW_CALLBACK: Cell<Option<f64>> = const { Cell::new(None) };
}

/// This thread's token: never 0, and no other thread alive has it (the thread's pthread
/// handle). It only tells whether the thread running a loop is this one, and that
/// thread is alive while the loop runs. Read through the thread pointer: a thread-local
/// of a Python extension (a shared object) costs a `__tls_get_addr` call, and the
/// transport's `write` asks on every message.
#[inline(always)]
pub(crate) fn thread_token() -> u64 {
    // SAFETY: `pthread_self` has no preconditions and cannot fail.
    let handle = unsafe { libc::pthread_self() };
    handle as u64
}

/// The part of a loop that every thread may read without the core.
pub(crate) struct LoopShared {
    /// The token of the thread running the loop, 0 when it is not running.
    pub(crate) running_thread: AtomicU64,
    /// Set by `stop()`; the run loop clears it when it stops.
    pub(crate) stopping: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) debug: AtomicBool,
}

impl LoopShared {
    pub(crate) fn new() -> LoopShared {
        LoopShared {
            running_thread: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
        }
    }

    /// Whether this thread may touch the core now: the loop is not running, or runs here.
    pub(crate) fn may_touch(&self) -> bool {
        match self.running_thread.load(Ordering::Acquire) {
            0 => true,
            thread => thread == thread_token(),
        }
    }
}

/// A value of the single-threaded core, held by a Python object that any thread may
/// reach. [`LoopCell::get`] hands it out under the rule in the module docs.
pub(crate) struct LoopCell<T>(T);

// SAFETY: the value is reached only through `get`, which takes a `Python` token (the GIL
// is held) and refuses every thread but the running one while the loop runs; it is
// dropped only when its Python owner is deallocated, which also holds the GIL. The GIL
// thus serialises every access, including the `Rc` counts inside, as if all ran on one
// thread. The running thread releases the GIL only inside the kernel wait, where it
// touches none of these values.
unsafe impl<T> Send for LoopCell<T> {}
// SAFETY: as for `Send`: shared references are only used under the GIL, one thread at a
// time.
unsafe impl<T> Sync for LoopCell<T> {}

impl<T> LoopCell<T> {
    pub(crate) fn new(value: T) -> LoopCell<T> {
        LoopCell(value)
    }

    /// The value, unless the loop is running on another thread.
    pub(crate) fn get<'a>(&'a self, _py: Python<'_>, shared: &LoopShared) -> PyResult<&'a T> {
        if shared.may_touch() {
            Ok(&self.0)
        } else {
            Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            ))
        }
    }
}

/// A value that is only touched with the GIL held: Python's lock serialises every
/// access, so a `RefCell` is enough even though any thread may hold the object.
pub(crate) struct GilCell<T>(RefCell<T>);

// SAFETY: every access goes through `borrow`/`borrow_mut`, which take a `Python` token,
// so it happens with the GIL held, one thread at a time; values are dropped only when
// their Python owner is deallocated, also with the GIL held.
unsafe impl<T> Send for GilCell<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(crate) const fn new(value: T) -> GilCell<T> {
        GilCell(RefCell::new(value))
    }

    pub(crate) fn borrow<'a>(&'a self, _py: Python<'_>) -> std::cell::Ref<'a, T> {
        self.0.borrow()
    }

    pub(crate) fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> std::cell::RefMut<'a, T> {
        self.0.borrow_mut()
    }
}

/// Makes the running loop stop and `run_forever` raise `err` (the first one wins).
pub(crate) fn stop_with(err: PyErr) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = Some(err);
            PENDING_THREADS.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// How many threads have an exception in `PENDING`: while none has (the usual case),
/// `has_pending`, checked after every iteration, is one shared load instead of a
/// thread-local access (~15 instructions per iteration).
static PENDING_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Whether `err` must leave `run_forever` rather than go to the exception handler
/// (`KeyboardInterrupt`, `SystemExit`), as in asyncio.
pub(crate) fn leaves_loop(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}

/// Sends an exception raised by a callback or a protocol where asyncio sends it:
/// `KeyboardInterrupt` and `SystemExit` leave `run_forever`; anything else goes to
/// `event_loop.call_exception_handler` with `message`, the exception and `extra`
/// items. An exception raised by the handler itself leaves `run_forever` too.
pub(crate) fn report(
    event_loop: &Bound<'_, PyAny>,
    err: PyErr,
    message: &str,
    extra: &[(&str, &Bound<'_, PyAny>)],
) {
    let py = event_loop.py();
    if leaves_loop(py, &err) {
        stop_with(err);
        return;
    }
    let reported = (|| -> PyResult<()> {
        let context = pyo3::types::PyDict::new(py);
        context.set_item(intern!(py, "message"), message)?;
        context.set_item(intern!(py, "exception"), err.value(py))?;
        for (key, value) in extra {
            context.set_item(*key, value)?;
        }
        event_loop.call_method1(intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    })();
    if let Err(err) = reported {
        stop_with(err);
    }
}

/// The exception `run_forever` must raise, if any.
pub(crate) fn take_pending() -> Option<PyErr> {
    PENDING.with(|p| {
        let taken = p.borrow_mut().take();
        if taken.is_some() {
            PENDING_THREADS.fetch_sub(1, Ordering::Relaxed);
        }
        taken
    })
}

/// Whether a pending exception waits (cheap: checked after every iteration).
#[inline(always)]
pub(crate) fn has_pending() -> bool {
    PENDING_THREADS.load(Ordering::Relaxed) != 0 && PENDING.with(|p| p.borrow().is_some())
}

/// How many threads run a loop in debug mode: when none does (the usual case), a
/// callback learns it from one shared load instead of a thread-local.
static DEBUG_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Whether the loop running on this thread is in debug mode.
pub(crate) fn debug() -> bool {
    DEBUG_RUNNING.load(Ordering::Relaxed) != 0 && SLOW_CALLBACK.with(|s| s.get().is_some())
}

/// The slow-callback threshold of the loop running on this thread (`None`: not in
/// debug mode), to put back after stepping another loop inside it.
pub(crate) fn debug_setting() -> Option<f64> {
    SLOW_CALLBACK.with(Cell::get)
}

/// Sets the debug mode of the loop running on this thread.
pub(crate) fn set_debug(slow_callback_duration: Option<f64>) {
    let was = SLOW_CALLBACK.with(|s| s.replace(slow_callback_duration));
    match (was.is_some(), slow_callback_duration.is_some()) {
        (false, true) => drop(DEBUG_RUNNING.fetch_add(1, Ordering::Relaxed)),
        (true, false) => drop(DEBUG_RUNNING.fetch_sub(1, Ordering::Relaxed)),
        _ => {}
    }
}

/// Runs `f` with the GIL, from a callback of the core.
pub(crate) fn with_gil<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    // SAFETY: the core runs callbacks only when Python called into it: inside
    // `LoopCore::_run_forever_core` or `_run_once_core`, or synchronously inside a
    // method such as `StreamTransport._start` (a transport's `connection_made`); Python
    // holds the GIL for every such call. The GIL is given up only inside the kernel wait
    // (`wait_without_gil`), which runs no callback.
    let py = unsafe { Python::assume_attached() };
    f(py)
}

/// Logs a callback that ran longer than `slow_callback_duration`, as asyncio does.
pub(crate) fn warn_if_slow(py: Python<'_>, handle: &Bound<'_, PyAny>, started: Instant) {
    let Some(limit) = SLOW_CALLBACK.with(Cell::get) else {
        return;
    };
    let took = started.elapsed().as_secs_f64();
    if took >= limit {
        let logged = py.import(intern!(py, "asyncio.log")).and_then(|log| {
            log.getattr(intern!(py, "logger"))?.call_method1(
                intern!(py, "warning"),
                ("Executing %s took %.3f seconds", handle, took),
            )
        });
        if let Err(err) = logged {
            err.write_unraisable(py, None);
        }
    }
}

/// The core's wait wrapper: lets other Python threads run while the loop sleeps.
/// (A signal cuts the wait short; its Python handler runs after the iteration, in
/// `_run_forever_core`, where the loop may be used.)
pub(crate) fn wait_without_gil(wait: &mut dyn FnMut()) {
    crate::ffi::without_gil(wait);
}

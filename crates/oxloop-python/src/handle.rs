//! `Handle` and `TimerHandle`: asyncio's handles as small native objects.
//!
//! A handle keeps its callback, its argument tuple (the one the caller's `*args` built,
//! so running it builds no tuple) and its `contextvars.Context`. The loop's core holds a
//! reference to the handle and runs it; `cancel()` only marks it (and, for a timer,
//! takes it out of the timer queue), as asyncio does.

use crate::ffi::{call_in_context, CallContext};
use crate::running::{self, GilCell, LoopCell};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A callback scheduled by `call_soon` (or an fd/signal callback): asyncio's
/// `Handle`, with `cancel()`, `cancelled()` and `get_context()`.
#[pyclass(subclass, frozen, module = "oxloop._oxloop")]
pub struct Handle {
    /// The callback and its arguments; dropped by `cancel()`, as asyncio does.
    call: GilCell<Option<Call>>,
    context: CallContext,
    event_loop: Py<PyAny>,
    cancelled: AtomicBool,
    /// Where the handle was created, in debug mode (asyncio's `_source_traceback`).
    source_traceback: Option<Py<PyAny>>,
}

/// What a handle calls.
struct Call {
    callback: Py<PyAny>,
    args: Py<PyTuple>,
}

impl Handle {
    pub(crate) fn new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        event_loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
        debug: bool,
    ) -> PyResult<Handle> {
        let context = CallContext::new(py, context)?;
        let source_traceback = if debug {
            Some(source_traceback(py)?)
        } else {
            None
        };
        Ok(Handle {
            call: GilCell::new(Some(Call { callback, args })),
            context,
            event_loop,
            cancelled: AtomicBool::new(false),
            source_traceback,
        })
    }

    /// Runs the callback unless cancelled. An exception goes to the loop's exception
    /// handler; `KeyboardInterrupt` and `SystemExit` stop the loop and leave
    /// `run_forever` (see `running`).
    pub(crate) fn run(this: &Bound<'_, Handle>) {
        let handle = this.get();
        if handle.cancelled.load(Ordering::Relaxed) {
            return;
        }
        let py = this.py();
        let Some((callback, args)) = handle.call(py) else {
            return;
        };
        let started = running::debug().then(Instant::now);
        let result = call_in_context(py, handle.context.get(), &callback, &args);
        if let Err(err) = result {
            report_callback_error(this, err);
        }
        if let Some(started) = started {
            running::warn_if_slow(py, this.as_any(), started);
        }
    }

    /// The callback and its arguments, unless cancelled.
    fn call(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyTuple>)> {
        let call = self.call.borrow(py);
        let call = call.as_ref()?;
        Some((call.callback.clone_ref(py), call.args.clone_ref(py)))
    }

    /// Marks the handle cancelled and lets go of its callback and arguments.
    pub(crate) fn mark_cancelled(&self, py: Python<'_>) {
        self.cancelled.store(true, Ordering::Relaxed);
        let call = self.call.borrow_mut(py).take();
        // Dropped after the borrow ends: a finalizer may run Python code.
        drop(call);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Sends a callback's exception where asyncio sends it (see `running::report`).
pub(crate) fn report_callback_error(handle: &Bound<'_, Handle>, err: PyErr) {
    let py = handle.py();
    let this = handle.get();
    let source = callback_source(this, py).unwrap_or_else(|_| "<callback>".to_owned());
    let tb = this.source_traceback.as_ref().map(|tb| tb.bind(py));
    let mut extra = vec![("handle", handle.as_any())];
    if let Some(tb) = &tb {
        extra.push(("source_traceback", tb));
    }
    running::report(
        this.event_loop.bind(py),
        err,
        &format!("Exception in callback {source}"),
        &extra,
    );
}

fn source_traceback(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let sys = py.import(intern!(py, "sys"))?;
    // Called from native code: frame 0 is the Python code that scheduled the handle.
    let frame = sys.call_method1(intern!(py, "_getframe"), (0,))?;
    py.import(intern!(py, "asyncio.format_helpers"))?
        .call_method1(intern!(py, "extract_stack"), (frame,))
        .map(Bound::unbind)
}

#[pymethods]
impl Handle {
    /// Creates a handle as `asyncio.Handle(callback, args, loop, context=None)` does.
    #[new]
    #[pyo3(signature = (callback, args, event_loop, context=None))]
    fn py_new(
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        event_loop: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Handle> {
        Handle::new(py, callback, args, event_loop, context, running::debug())
    }

    /// Marks the handle so that its callback does not run, and drops the callback.
    fn cancel(&self, py: Python<'_>) {
        self.mark_cancelled(py);
    }

    /// Whether `cancel()` was called.
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in.
    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.expose(py)
    }

    /// Runs the callback now, as the loop would.
    fn _run(slf: &Bound<'_, Self>) {
        Handle::run(slf);
    }

    /// The callback, as asyncio's handles expose it (`None` once cancelled).
    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.call(py).map(|(callback, _)| callback)
    }

    /// The callback's positional arguments (`None` once cancelled).
    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyTuple>> {
        self.call(py).map(|(_, args)| args)
    }

    /// The loop the handle belongs to.
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    /// Where the handle was created (debug mode only), else `None`.
    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|tb| tb.clone_ref(py))
    }

    /// Whether `cancel()` was called (asyncio's attribute, read by some libraries).
    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    /// The `contextvars.Context` the callback runs in (asyncio's attribute).
    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.expose(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.get_type().name()?;
        describe(slf, &name.to_string(), None)
    }
}

/// `<Handle callback(args) created at file:line>`, as asyncio writes it.
fn describe(handle: &Bound<'_, Handle>, name: &str, when: Option<String>) -> PyResult<String> {
    let py = handle.py();
    let this = handle.get();
    let mut parts = vec![];
    if this.is_cancelled() {
        parts.push("cancelled".to_owned());
    }
    if let Some(when) = when {
        parts.push(format!("when={when}"));
    }
    if this.call.borrow(py).is_some() {
        parts.push(callback_source(this, py)?);
    }
    if let Some(tb) = &this.source_traceback {
        let tb = tb.bind(py);
        if let Ok(frame) = tb.get_item(-1) {
            let file: String = frame.get_item(0)?.extract()?;
            let line: i64 = frame.get_item(1)?.extract()?;
            parts.push(format!("created at {file}:{line}"));
        }
    }
    Ok(format!("<{name} {}>", parts.join(" ")))
}

/// `cb(args) at file:line`, as asyncio names a callback.
fn callback_source(handle: &Handle, py: Python<'_>) -> PyResult<String> {
    let (callback, args) = match handle.call(py) {
        Some(call) => call,
        None => return Ok("<cancelled>".to_owned()),
    };
    py.import(intern!(py, "asyncio.format_helpers"))?
        .call_method1(intern!(py, "_format_callback_source"), (callback, args))?
        .extract()
}

/// A callback scheduled by `call_later`/`call_at`: asyncio's `TimerHandle`, with
/// `when()`. Cancelling it also takes it out of the loop's timer queue.
#[pyclass(extends = Handle, frozen, module = "oxloop._oxloop")]
pub struct TimerHandle {
    when: f64,
    /// The object `call_at` was given when it was not a `float` (an `int`, say): `when()`
    /// returns it as asyncio's handle does.
    when_given: Option<Py<PyAny>>,
    /// The core's handle to the timer, set once it is scheduled.
    timer: LoopCell<RefCell<Option<oxloop::Handle>>>,
    running: Arc<running::LoopShared>,
}

impl TimerHandle {
    pub(crate) fn new(
        when: f64,
        when_given: Option<Py<PyAny>>,
        running: Arc<running::LoopShared>,
    ) -> TimerHandle {
        TimerHandle {
            when,
            when_given,
            timer: LoopCell::new(RefCell::new(None)),
            running,
        }
    }

    /// Records the core's handle, so that `cancel()` can take the timer out.
    pub(crate) fn set_timer(&self, py: Python<'_>, timer: oxloop::Handle) {
        if let Ok(cell) = self.timer.get(py, &self.running) {
            *cell.borrow_mut() = Some(timer);
        }
    }

    /// The core's handle to the timer, taken out (the timer stays in the core's queue).
    pub(crate) fn take_timer(&self, py: Python<'_>) -> Option<oxloop::Handle> {
        self.timer.get(py, &self.running).ok()?.borrow_mut().take()
    }

    /// The deadline on the loop's clock.
    pub(crate) fn deadline(&self) -> f64 {
        self.when
    }

    /// Whether the timer still waits in the core's queue (not cancelled, not yet due).
    pub(crate) fn is_scheduled(&self, py: Python<'_>) -> bool {
        self.timer
            .get(py, &self.running)
            .is_ok_and(|cell| cell.borrow().as_ref().is_some_and(|t| t.is_pending()))
    }

    /// `when()`: the object given to `call_at`, or the float deadline.
    fn when_object(&self, py: Python<'_>) -> Py<PyAny> {
        match &self.when_given {
            Some(given) => given.clone_ref(py),
            None => pyo3::types::PyFloat::new(py, self.when).into_any().unbind(),
        }
    }
}

#[pymethods]
impl TimerHandle {
    /// The time (on the loop's clock) at which the callback runs: what `call_at` was
    /// given, or `time() + delay` for `call_later`.
    fn when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_object(py)
    }

    /// asyncio's attribute for `when()`, read by some libraries.
    #[getter]
    fn _when(&self, py: Python<'_>) -> Py<PyAny> {
        self.when_object(py)
    }

    /// Whether the timer still waits in the loop's timer queue: false once it is due
    /// (its callback queued or run) or cancelled, as asyncio's attribute.
    #[getter]
    fn _scheduled(slf: &Bound<'_, Self>) -> bool {
        !slf.as_super().get().is_cancelled() && slf.get().is_scheduled(slf.py())
    }

    /// Marks the handle cancelled and takes it out of the timer queue.
    fn cancel(slf: &Bound<'_, Self>) {
        let py = slf.py();
        slf.as_super().get().mark_cancelled(py);
        let this = slf.get();
        // From a thread other than the running loop's, only the mark is set: the timer
        // then fires as a no-op.
        if let Ok(cell) = this.timer.get(py, &this.running) {
            if let Some(timer) = cell.borrow_mut().take() {
                timer.cancel();
            }
        }
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.get_type().name()?;
        let when = slf
            .get()
            .when_object(slf.py())
            .bind(slf.py())
            .str()?
            .to_string();
        describe(slf.as_super(), &name.to_string(), Some(when))
    }

    /// Hashed by deadline, as asyncio's timer handles are.
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        pyo3::types::PyFloat::new(py, self.when).hash()
    }

    /// Equal when the deadline, callback, arguments and cancellation are.
    fn __eq__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(false);
        };
        if slf.is(other) {
            return Ok(true);
        }
        let py = slf.py();
        let (a, b) = (slf.as_super().get(), other.as_super().get());
        if slf.get().when != other.get().when || a.is_cancelled() != b.is_cancelled() {
            return Ok(false);
        }
        match (a.call(py), b.call(py)) {
            (Some((ca, aa)), Some((cb, ab))) => {
                Ok(ca.bind(py).eq(cb.bind(py))? && aa.bind(py).eq(ab.bind(py))?)
            }
            (None, None) => Ok(true),
            _ => Ok(false),
        }
    }

    fn __lt__(&self, other: PyRef<'_, TimerHandle>) -> bool {
        self.when < other.when
    }

    fn __le__(&self, other: PyRef<'_, TimerHandle>) -> bool {
        self.when <= other.when
    }

    fn __gt__(&self, other: PyRef<'_, TimerHandle>) -> bool {
        self.when > other.when
    }

    fn __ge__(&self, other: PyRef<'_, TimerHandle>) -> bool {
        self.when >= other.when
    }
}

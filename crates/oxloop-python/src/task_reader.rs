//! `TaskReader`: the fd callback of a green socket's reader (`oxloop.green`), run by
//! the core without a Python frame or a context switch.
//!
//! A green task that reads a socket leaves a reader installed on its fd between
//! waits (`LoopCore._add_task_reader`). When the fd is ready, the reader switches to
//! the greenlet in `waiting`, or, with no task waiting, calls its own `idle()` (Python:
//! it removes the reader, so a socket nobody reads does not wake the loop forever).
//! Python subclasses it (`oxloop.green._io._SocketWatch`) to keep its bookkeeping.

use crate::handle::Handle;
use crate::running::GilCell;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// The fd callback of a green socket's reader: switches to the waiting greenlet.
#[pyclass(subclass, frozen, module = "oxloop._oxloop")]
pub struct TaskReader {
    waiting: GilCell<Option<Py<PyAny>>>,
    /// The loop's handle of this reader (set by `LoopCore._add_task_reader`), cancelled
    /// when the reader is removed.
    handle: GilCell<Option<Py<Handle>>>,
}

#[pymethods]
impl TaskReader {
    /// A reader with no task waiting (the arguments are the subclass's).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> TaskReader {
        TaskReader {
            waiting: GilCell::new(None),
            handle: GilCell::new(None),
        }
    }

    /// Waits in the greenlet `current` until the fd is ready: the reader will switch
    /// back to `current`, and `current` switches to `hub` (the greenlet running the
    /// loop). False, without waiting, if the reader is no longer installed. What the
    /// wait raises (a `kill`, a `Timeout`) propagates; the reader then waits for no one.
    fn wait(&self, py: Python<'_>, hub: &Bound<'_, PyAny>, current: Py<PyAny>) -> PyResult<bool> {
        if !self.is_installed(py) {
            return Ok(false);
        }
        let old = self.waiting.borrow_mut(py).replace(current);
        drop(old); // after the borrow: dropping a greenlet may run Python code
        let switched = crate::ffi::switch_greenlet(hub);
        let old = self.waiting.borrow_mut(py).take();
        drop(old);
        switched.map(|_| true)
    }

    /// The greenlet to switch to when the fd is ready (`None`: no task waits).
    #[getter]
    fn waiting(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.waiting.borrow(py).as_ref().map(|w| w.clone_ref(py))
    }

    #[setter]
    fn set_waiting(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.waiting.borrow_mut(py), value);
        drop(old); // after the borrow: dropping a greenlet may run Python code
    }

    /// Runs the callback once, as the loop does when the fd is ready.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        TaskReader::fire(slf)
    }
}

impl TaskReader {
    /// Records the loop's handle of this reader (see `wait`).
    pub(crate) fn set_handle(&self, py: Python<'_>, handle: Py<Handle>) {
        let old = self.handle.borrow_mut(py).replace(handle);
        drop(old);
    }

    /// Whether the reader is still installed on the loop (its handle not cancelled).
    fn is_installed(&self, py: Python<'_>) -> bool {
        match &*self.handle.borrow(py) {
            Some(handle) => !handle.get().is_cancelled(),
            None => false,
        }
    }

    /// The fd is ready: switches to the waiting greenlet (which no longer waits), or
    /// calls `idle()` when none waits.
    pub(crate) fn fire(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let waiting = slf.get().waiting.borrow_mut(py).take();
        match waiting {
            Some(greenlet) => crate::ffi::switch_greenlet(greenlet.bind(py)).map(drop),
            None => slf.call_method0(intern!(py, "idle")).map(drop),
        }
    }
}

//! The few CPython calls PyO3 has no safe wrapper for: entering a `contextvars.Context`
//! around a call, copying the current context, and taking a handle out of the cycle
//! collector; taking ownership of a socket fd that Python detached; and reading
//! `CLOCK_MONOTONIC` as `time.monotonic()` does; duplicating a file descriptor; releasing the
//! GIL around the loop's kernel wait; a green socket's non-blocking `recv`/`send`, the
//! bytes of a buffer-protocol object, the `OSError` of an errno, and a `str` decoded from
//! Latin-1 bytes. The only `unsafe` code of the extension.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// `context.run(callback, *args)` without building a new argument tuple: enters the
/// context, calls, leaves it.
pub(crate) fn call_in_context(
    py: Python<'_>,
    context: &Py<PyAny>,
    callback: &Py<PyAny>,
    args: &Py<PyTuple>,
) -> PyResult<()> {
    // SAFETY: the GIL is held (`py`), and `context` is a `contextvars.Context` (checked
    // by `CallContext::new`): `PyContext_Enter` takes a borrowed reference.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let result = callback.bind(py).call1(args.bind(py)).map(drop);
    // SAFETY: as above; the context was entered on this thread just before, so leaving
    // it cannot fail (CPython only fails when the context is not the current one).
    unsafe { ffi::PyContext_Exit(context.as_ptr()) };
    result
}

/// Makes `context` the current `contextvars.Context` of this thread, as `context.run`
/// does before its call; [`exit_context`] leaves it. Fails if it is entered already.
pub(crate) fn enter_context(py: Python<'_>, context: &Py<PyAny>) -> PyResult<()> {
    // SAFETY: the GIL is held (`py`), and `context` is a `contextvars.Context` (the
    // callers hold it in a `CallContext`, which checks or makes one): `PyContext_Enter`
    // takes a borrowed reference.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// Leaves `context`, entered by [`enter_context`] on this thread and current again
/// (every context entered since has been left).
pub(crate) fn exit_context(_py: Python<'_>, context: &Py<PyAny>) {
    // SAFETY: the GIL is held (`_py`); the context is the current one (see above), so
    // leaving it cannot fail.
    unsafe { ffi::PyContext_Exit(context.as_ptr()) };
}

/// The `contextvars.Context` a handle's callback runs in: the one given, or a copy of
/// the current one (as asyncio's handles do) when none is.
///
/// The copy is taken out of the cycle collector's lists while it is private: only its
/// handle refers to it, so it cannot be part of a cycle until Python code gets hold of
/// it, which only [`CallContext::expose`] (`Handle.get_context()`) allows, and that
/// puts it back. A million pending timers otherwise cost a million objects for every
/// full collection to visit. A context must be tracked when it is freed (its
/// deallocator unlinks it unconditionally), so dropping a `CallContext` tracks it first.
pub(crate) struct CallContext(Py<PyAny>);

impl CallContext {
    pub(crate) fn new(py: Python<'_>, context: Option<Py<PyAny>>) -> PyResult<CallContext> {
        match context {
            Some(context) => {
                // SAFETY: the GIL is held; `PyContext_CheckExact` only reads the type.
                if unsafe { ffi::PyContext_CheckExact(context.as_ptr()) } == 0 {
                    return Err(pyo3::exceptions::PyTypeError::new_err(
                        "context must be a contextvars.Context",
                    ));
                }
                Ok(CallContext(context))
            }
            None => {
                // SAFETY: the GIL is held; `PyContext_CopyCurrent` returns a new
                // reference or NULL with an exception set, which `from_owned_ptr_or_err`
                // handles.
                let copy =
                    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }?;
                untrack(&copy);
                Ok(CallContext(copy.unbind()))
            }
        }
    }

    /// The context, for running a callback in it (not handed to Python code).
    pub(crate) fn get(&self) -> &Py<PyAny> {
        &self.0
    }

    /// The context, handed to Python code: tracked again, since it may now join a cycle.
    pub(crate) fn expose(&self, py: Python<'_>) -> Py<PyAny> {
        track(self.0.bind(py));
        self.0.clone_ref(py)
    }
}

impl Drop for CallContext {
    fn drop(&mut self) {
        Python::attach(|py| track(self.0.bind(py)));
    }
}

/// Puts an object taken out by [`untrack`] back into the cycle collector's lists.
pub(crate) fn track(object: &Bound<'_, PyAny>) {
    // SAFETY: the GIL is held (`object` is bound) and the object is live; it is
    // tracked only if it is a garbage-collected type not tracked already (tracking a
    // tracked object is an error).
    unsafe {
        let ptr = object.as_ptr();
        if ffi::PyObject_IS_GC(ptr) != 0 && ffi::PyObject_GC_IsTracked(ptr) == 0 {
            ffi::PyObject_GC_Track(ptr.cast());
        }
    }
}

/// Takes a handle out of the cycle collector's lists.
///
/// A handle does not report its references to the collector (it has no
/// `__traverse__`), so the collector can never free a cycle through it; visiting it
/// on every collection is pure cost, and handles are the objects a loop allocates
/// most. The core drops its reference when the callback ran or was cancelled.
pub(crate) fn untrack<T>(object: &Bound<'_, T>) {
    // SAFETY: the GIL is held (`object` is bound); the object is a live, tracked
    // instance of a garbage-collected type (every PyO3 class is one), and untracking
    // an object twice is allowed by CPython.
    unsafe { ffi::PyObject_GC_UnTrack(object.as_ptr().cast()) };
}

/// Takes ownership of the fd of a Python socket object, which from then on never
/// closes it (oxloop's transport detaches the object once the core closed the fd).
pub(crate) fn socket_from_fd(fd: std::os::fd::RawFd) -> socket2::Socket {
    use std::os::fd::FromRawFd;
    // SAFETY: the only caller, `StreamTransport._start`, is called by oxloop's own
    // Python layer (`SocketTransport`) with the fd of a connected socket object that it
    // keeps and detaches (`socket.detach()`) when the core has closed the fd, or at once
    // if `_start` fails; so only the returned `Socket` ever closes the fd.
    unsafe { socket2::Socket::from_raw_fd(fd) }
}

/// Copies as much of `data` as fits into the writable buffer `buffer` (what a
/// `BufferedProtocol`'s `get_buffer()` returned); how much.
pub(crate) fn copy_into(buffer: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<usize> {
    let view = pyo3::buffer::PyBuffer::<u8>::get(buffer)?;
    if view.readonly() || !view.is_c_contiguous() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "get_buffer() must return a writable, contiguous buffer of bytes",
        ));
    }
    let n = view.len_bytes().min(data.len());
    if n == 0 {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "get_buffer() returned an empty buffer",
        ));
    }
    // SAFETY: the view is writable, C-contiguous and `len_bytes()` long, and it stays
    // valid while `view` (which holds the buffer export) lives; `data` is Rust memory,
    // so the two ranges cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), view.buf_ptr().cast::<u8>(), n) };
    Ok(n)
}

/// Bytes as a `str`, one character per byte (Latin-1: PEP 3333's "bytes as str"),
/// decoded in one pass by CPython.
pub(crate) fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: the GIL is held (`py`); the pointer and length describe `bytes`, which
    // CPython only reads during the call; Latin-1 decoding cannot meet an invalid byte,
    // and a failure (out of memory) returns NULL with the error set, which
    // `from_owned_ptr_or_err` turns into `Err`.
    unsafe {
        let text = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, text)?.cast_into_unchecked())
    }
}

/// `time.monotonic()`: seconds of `CLOCK_MONOTONIC`, the clock of Rust's `Instant` too.
pub(crate) fn monotonic() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on the
    // systems this builds for, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// A new descriptor for the open file `fd` (`F_DUPFD_CLOEXEC`), owned by the result.
pub(crate) fn duplicate_file(fd: std::os::fd::RawFd) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` only reads `fd` (an invalid one gives EBADF) and
    // returns a new descriptor that nothing else owns.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` was just created by the call above and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(new) })
}

/// Runs `wait` with the GIL released (`PyEval_SaveThread` / `PyEval_RestoreThread`).
///
/// Called only as the core's wait wrapper, on the thread running the loop, which
/// holds the GIL (see `running::with_gil`). PyO3's `Python::detach` does the same with
/// more bookkeeping, which showed as about 100 instructions per blocking wait.
pub(crate) fn without_gil(wait: &mut dyn FnMut()) {
    // SAFETY: the calling thread holds the GIL (the core waits only inside
    // `_run_forever_core`, which Python calls with the GIL). `wait` only calls the kernel
    // on the loop's poller and touches no Python object, and the thread state saved
    // here is restored on the same thread right after it.
    let state = unsafe { ffi::PyEval_SaveThread() };
    wait();
    // SAFETY: `state` is this thread's state, saved just above.
    unsafe { ffi::PyEval_RestoreThread(state) };
}

/// Runs `f` on the bytes of a buffer-protocol object (`bytearray`, `memoryview`...)
/// without copying them; `None` if `object` exports no contiguous byte buffer.
pub(crate) fn with_buffer<R>(object: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let view = pyo3::buffer::PyBuffer::<u8>::get(object).ok()?;
    if !view.is_c_contiguous() {
        return None;
    }
    // SAFETY: the view is C-contiguous and `len_bytes()` long, and stays valid (the
    // export is held) while `view` lives, which outlasts `f`; `f` gets a shared slice
    // and the GIL is held, so no Python code can resize the object meanwhile.
    let bytes =
        unsafe { std::slice::from_raw_parts(view.buf_ptr().cast::<u8>(), view.len_bytes()) };
    Some(f(bytes))
}

/// `recv(2)` on `fd` into `buffer` without blocking (`MSG_DONTWAIT` added to `flags`);
/// how many bytes.
pub(crate) fn recv_nonblocking(
    fd: std::os::fd::RawFd,
    buffer: &mut [u8],
    flags: i32,
) -> std::io::Result<usize> {
    // SAFETY: `buffer` is valid, writable memory of `buffer.len()` bytes for the whole
    // call; an invalid `fd` only makes the call fail (EBADF).
    let n = unsafe {
        libc::recv(
            fd,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `send(2)` of `data` on `fd` without blocking (`MSG_DONTWAIT` added to `flags`); how
/// many bytes went.
pub(crate) fn send_nonblocking(
    fd: std::os::fd::RawFd,
    data: &[u8],
    flags: i32,
) -> std::io::Result<usize> {
    // SAFETY: `data` is valid memory of `data.len()` bytes for the whole call; an
    // invalid `fd` only makes the call fail (EBADF).
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Runs `f` on the bytes of any object with the buffer protocol, as the standard
/// library's `socket.send` takes them (a simple, contiguous export: `bytes`,
/// `bytearray`, `memoryview`, `array`...); raises what Python raises for anything else.
pub(crate) fn with_bytes_like<R>(
    object: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> R,
) -> PyResult<R> {
    let py = object.py();
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: the GIL is held (`object` is bound); `view` is writable memory for one
    // `Py_buffer`, which the call fills when it returns 0 (and leaves alone, with an
    // exception set, otherwise).
    if unsafe { ffi::PyObject_GetBuffer(object.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) }
        != 0
    {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: filled by the successful call above.
    let mut view = unsafe { view.assume_init() };
    let bytes = if view.buf.is_null() || view.len <= 0 {
        &[][..]
    } else {
        // SAFETY: a simple export is `len` contiguous bytes at `buf`, valid until the
        // release below, after `f` has returned; the GIL is held throughout, so no
        // Python code can resize the object meanwhile.
        unsafe { std::slice::from_raw_parts(view.buf.cast::<u8>(), view.len as usize) }
    };
    let result = f(bytes);
    // SAFETY: `view` was filled by `PyObject_GetBuffer` above and is released once.
    unsafe { ffi::PyBuffer_Release(&mut view) };
    Ok(result)
}

/// The `OSError` (the subclass Python picks for `errno`) that the standard library's
/// socket methods raise for a failed system call: `[Errno N] strerror`.
pub(crate) fn os_error_from_errno(py: Python<'_>, errno: i32) -> PyErr {
    // SAFETY: `__errno_location` gives this thread's `errno`, which the call below
    // reads; the GIL is held (`py`), and `PyErr_SetFromErrno` sets an exception (and
    // returns NULL), which `fetch` takes.
    unsafe {
        *libc::__errno_location() = errno;
        ffi::PyErr_SetFromErrno(ffi::PyExc_OSError);
    }
    PyErr::fetch(py)
}

/// `PyGreenlet_Switch` from greenlet's C API (the `greenlet._C_API` capsule, entry 6 of
/// its table, as `greenlet.h` lays it out), or `None` if greenlet cannot be imported.
fn greenlet_switch_fn(py: Python<'_>) -> Option<GreenletSwitch> {
    static SWITCH: std::sync::OnceLock<Option<GreenletSwitch>> = std::sync::OnceLock::new();
    *SWITCH.get_or_init(|| {
        // SAFETY: the GIL is held (`py`); `PyCapsule_Import` imports `greenlet` and
        // returns the capsule's pointer, or NULL with an exception set (cleared here).
        let table = unsafe { ffi::PyCapsule_Import(c"greenlet._C_API".as_ptr(), 0) };
        if table.is_null() {
            drop(PyErr::take(py));
            return None;
        }
        // SAFETY: the capsule holds greenlet's `_PyGreenlet_API`, a static table of
        // pointers (never freed while the module lives, and greenlet is never
        // unloaded); entry `PyGreenlet_Switch_NUM` (6) is `PyGreenlet_Switch`, with
        // the signature of `GreenletSwitch` in every greenlet release that has the
        // capsule (0.4 to 3.x).
        Some(unsafe {
            std::mem::transmute::<*mut std::ffi::c_void, GreenletSwitch>(
                *table.cast::<*mut std::ffi::c_void>().add(6),
            )
        })
    })
}

/// `PyGreenlet_Switch(greenlet, args, kwargs)`.
type GreenletSwitch = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *mut ffi::PyObject,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// `greenlet.switch()` without looking the method up or building its arguments:
/// greenlet's own C function, called directly. Returns what the greenlet that
/// switches back passes (or raises what is thrown in).
pub(crate) fn switch_greenlet<'py>(greenlet: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = greenlet.py();
    let Some(switch) = greenlet_switch_fn(py) else {
        return greenlet.call_method0(pyo3::intern!(py, "switch"));
    };
    // SAFETY: the GIL is held; `PyGreenlet_Switch` checks that its first argument is a
    // greenlet (a `TypeError` otherwise), takes NULL for "no arguments", and returns a
    // new reference or NULL with an exception set.
    unsafe {
        let result = switch(
            greenlet.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, result)
    }
}

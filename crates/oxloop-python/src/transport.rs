//! `StreamTransport`: asyncio's socket transport (TCP and Unix streams) on the core's
//! transport, so a Python protocol's bytes go from the kernel to `data_received` and
//! from `write` to the kernel without any Python code of the loop in between.
//!
//! The core's `oxloop::protocol::Transport` does the I/O, the write buffer and flow
//! control; [`Bridge`] is the core protocol that calls the Python protocol. The Python
//! subclass (`python/oxloop/_transports.py`) adds `get_extra_info`, the server's
//! bookkeeping and the socket object.
//!
//! The order of calls is asyncio's: `connection_made` runs in a callback of its own
//! after the transport is created, reading starts only after it, then the waiter's
//! result is set; a protocol's exception in `data_received`/`eof_received` goes to the
//! exception handler and closes the connection with `connection_lost(exc)`.
//!
//! The protocol's callbacks run in a copy of the `contextvars.Context` current when
//! the transport was made (for a server's connection: the context `create_server` was
//! called in), as they do on asyncio's transports, whose callbacks are handles that
//! inherit it.

use crate::ffi::CallContext;
use crate::loop_core::{os_error, LoopCore};
use crate::running::{self, LoopCell, LoopShared};
use oxloop::protocol::{Protocol, Transport};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

/// asyncio logs a warning after this many writes to a lost connection.
const WARN_AFTER_LOST_WRITES: u32 = 5;

/// How the bytes reach the protocol: `data_received(bytes)`, or a `BufferedProtocol`'s
/// `get_buffer`/`buffer_updated`.
enum Receiver {
    Plain {
        data_received: Py<PyAny>,
    },
    Buffered {
        get_buffer: Py<PyAny>,
        buffer_updated: Py<PyAny>,
    },
}

impl Receiver {
    fn of(protocol: &Bound<'_, PyAny>) -> PyResult<Receiver> {
        let py = protocol.py();
        let buffered = py
            .import(intern!(py, "asyncio"))?
            .getattr(intern!(py, "BufferedProtocol"))?;
        Ok(if protocol.is_instance(&buffered)? {
            Receiver::Buffered {
                get_buffer: protocol.getattr(intern!(py, "get_buffer"))?.unbind(),
                buffer_updated: protocol.getattr(intern!(py, "buffer_updated"))?.unbind(),
            }
        } else {
            Receiver::Plain {
                data_received: protocol.getattr(intern!(py, "data_received"))?.unbind(),
            }
        })
    }
}

/// What the Python transport and the bridge share (on the loop's thread only).
struct State {
    transport: Option<Transport>,
    protocol: Py<PyAny>,
    receiver: Receiver,
    /// `connection_made` was delivered: reading may start.
    made: bool,
    /// `pause_reading()` is in effect.
    paused: bool,
    /// `write_eof()` was called.
    eof_written: bool,
    /// Writes made after the connection was lost (asyncio counts them to warn).
    lost_writes: u32,
    /// The exception that closed the connection, for `connection_lost`.
    fatal: Option<PyErr>,
    /// `loop.sendfile` is sending: plain writes are refused meanwhile, as in asyncio.
    sending_file: bool,
}

type Shared = Rc<RefCell<State>>;

/// The `contextvars.Context` the protocol's callbacks run in: a copy of the one current
/// when the transport was made.
struct ProtocolContext {
    context: CallContext,
    /// The context is entered (a callback runs in it); a callback made inside another,
    /// such as `pause_writing` inside a `write` from `data_received`, runs as it is.
    entered: Cell<bool>,
}

impl ProtocolContext {
    /// A copy of the current context.
    fn copy_current(py: Python<'_>) -> PyResult<Rc<ProtocolContext>> {
        Ok(Rc::new(ProtocolContext {
            context: CallContext::new(py, None)?,
            entered: Cell::new(false),
        }))
    }

    /// Runs `f` (a call into the protocol) inside the context.
    fn run<R>(&self, py: Python<'_>, f: impl FnOnce() -> R) -> R {
        if self.entered.get() {
            return f();
        }
        let context = self.context.get();
        if let Err(err) = crate::ffi::enter_context(py, context) {
            // Entered elsewhere (it never is: only this transport holds it).
            err.write_unraisable(py, None);
            return f();
        }
        self.entered.set(true);
        let result = f();
        self.entered.set(false);
        crate::ffi::exit_context(py, context);
        result
    }
}

/// The native half of oxloop's TCP and Unix stream transports.
#[pyclass(subclass, frozen, weakref, module = "oxloop._oxloop")]
pub struct StreamTransport {
    state: LoopCell<Shared>,
    running: Arc<LoopShared>,
}

impl StreamTransport {
    fn state(&self, py: Python<'_>) -> PyResult<&Shared> {
        self.state.get(py, &self.running)
    }

    /// `pause_reading()`/`resume_reading()`: recorded, and passed to the core once the
    /// protocol has its `connection_made` (reading starts only then).
    fn set_paused(&self, py: Python<'_>, paused: bool) -> PyResult<()> {
        let transport = {
            let mut s = self.state(py)?.borrow_mut();
            s.paused = paused;
            s.transport.clone().filter(|_| s.made)
        };
        match transport {
            Some(t) if paused => t.pause_reading(),
            Some(t) => t.resume_reading(),
            None => {}
        }
        Ok(())
    }

    /// The core transport, while the connection is open.
    fn transport(&self, py: Python<'_>) -> PyResult<Option<Transport>> {
        Ok(self.state(py)?.borrow().transport.clone())
    }
}

/// The core protocol that forwards to the Python protocol.
struct Bridge {
    state: Shared,
    /// The Python transport object the protocol sees (`oxloop._transports.SocketTransport`,
    /// an `asyncio.Transport` that holds this native transport).
    this: Py<PyAny>,
    event_loop: Py<PyAny>,
    waiter: Option<Py<PyAny>>,
    context: Rc<ProtocolContext>,
}

impl Bridge {
    /// asyncio's `_fatal_error`: report (unless it is an `OSError`), then close with it.
    fn fatal(&self, py: Python<'_>, err: PyErr, message: &str) {
        if running::leaves_loop(py, &err) {
            running::stop_with(err);
            return;
        }
        if !err.is_instance_of::<PyOSError>(py) {
            let protocol = self.state.borrow().protocol.clone_ref(py);
            running::report(
                self.event_loop.bind(py),
                err.clone_ref(py),
                message,
                &[
                    ("transport", self.this.bind(py)),
                    ("protocol", protocol.bind(py)),
                ],
            );
        }
        let transport = {
            let mut state = self.state.borrow_mut();
            state.fatal.get_or_insert(err);
            state.transport.clone()
        };
        if let Some(transport) = transport {
            transport.abort();
        }
    }

    /// Runs in the callback after the transport's creation: `connection_made`, then
    /// reading, then the waiter.
    fn deliver_made(
        state: Shared,
        this: Py<PyAny>,
        event_loop: Py<PyAny>,
        waiter: Option<Py<PyAny>>,
        context: Rc<ProtocolContext>,
    ) {
        running::with_gil(|py| {
            let protocol = state.borrow().protocol.clone_ref(py);
            let made = context.run(py, || {
                protocol
                    .bind(py)
                    .call_method1(intern!(py, "connection_made"), (this.bind(py),))
            });
            let transport = {
                let mut state = state.borrow_mut();
                state.made = true;
                (!state.paused).then(|| state.transport.clone()).flatten()
            };
            if let Err(err) = made {
                running::report(
                    event_loop.bind(py),
                    err,
                    "Exception in connection_made()",
                    &[],
                );
            }
            if let Some(transport) = transport {
                transport.resume_reading();
            }
            if let Some(waiter) = waiter {
                let waiter = waiter.bind(py);
                let set = match waiter.call_method0(intern!(py, "cancelled")) {
                    Ok(cancelled) if !cancelled.is_truthy().unwrap_or(true) => waiter
                        .call_method1(intern!(py, "set_result"), (py.None(),))
                        .map(drop),
                    Ok(_) => Ok(()),
                    Err(err) => Err(err),
                };
                if let Err(err) = set {
                    err.write_unraisable(py, Some(waiter));
                }
            }
        });
    }

    fn receive(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let state = self.state.borrow();
        match &state.receiver {
            Receiver::Plain { data_received } => {
                let data_received = data_received.clone_ref(py);
                drop(state);
                data_received.bind(py).call1((PyBytes::new(py, data),))?;
            }
            Receiver::Buffered {
                get_buffer,
                buffer_updated,
            } => {
                let (get_buffer, buffer_updated) =
                    (get_buffer.clone_ref(py), buffer_updated.clone_ref(py));
                drop(state);
                let mut rest = data;
                while !rest.is_empty() {
                    let buffer = get_buffer.bind(py).call1((rest.len(),))?;
                    let n = crate::ffi::copy_into(&buffer, rest)?;
                    buffer_updated.bind(py).call1((n,))?;
                    rest = &rest[n..];
                }
            }
        }
        Ok(())
    }
}

impl Protocol for Bridge {
    fn connection_made(&mut self, transport: Transport) {
        // Reading waits until the Python protocol has its `connection_made`.
        transport.pause_reading();
        self.state.borrow_mut().transport = Some(transport.clone());
        let (state, this, event_loop, waiter, context) = running::with_gil(|py| {
            (
                self.state.clone(),
                self.this.clone_ref(py),
                self.event_loop.clone_ref(py),
                self.waiter.take(),
                self.context.clone(),
            )
        });
        transport
            .event_loop()
            .call_soon(move || Bridge::deliver_made(state, this, event_loop, waiter, context));
    }

    fn data_received(&mut self, data: &[u8]) {
        running::with_gil(|py| {
            if let Err(err) = self.context.run(py, || self.receive(py, data)) {
                self.fatal(
                    py,
                    err,
                    "Fatal error: protocol.data_received() call failed.",
                );
            }
        });
    }

    fn eof_received(&mut self) -> bool {
        running::with_gil(|py| {
            let protocol = self.state.borrow().protocol.clone_ref(py);
            let keep_open = self.context.run(py, || {
                protocol
                    .bind(py)
                    .call_method0(intern!(py, "eof_received"))
                    .and_then(|r| r.is_truthy())
            });
            match keep_open {
                Ok(keep_open) => keep_open,
                Err(err) => {
                    self.fatal(py, err, "Fatal error: protocol.eof_received() call failed.");
                    true
                }
            }
        })
    }

    fn connection_lost(&mut self, err: Option<io::Error>) {
        running::with_gil(|py| {
            let (protocol, fatal) = {
                let mut state = self.state.borrow_mut();
                state.transport = None;
                (state.protocol.clone_ref(py), state.fatal.take())
            };
            let exc: Py<PyAny> = match (fatal, err) {
                (Some(fatal), _) => fatal.into_value(py).into_any(),
                (None, Some(err)) => os_error(err).into_value(py).into_any(),
                (None, None) => py.None(),
            };
            let this = self.this.bind(py);
            let lost = self.context.run(py, || {
                protocol
                    .bind(py)
                    .call_method1(intern!(py, "connection_lost"), (exc,))
            });
            if let Err(err) = lost {
                running::report(
                    self.event_loop.bind(py),
                    err,
                    "Exception in connection_lost()",
                    &[],
                );
            }
            // The Python half's own bookkeeping (server, socket object).
            if let Err(err) = this.call_method0(intern!(py, "_connection_lost")) {
                err.write_unraisable(py, Some(this));
            }
            // Let go of the protocol, as asyncio's transports do once the connection
            // is lost: a protocol that holds its transport (most do) would otherwise
            // make a cycle through this native object, which the garbage collector
            // cannot see, and every connection would stay in memory.
            let mut state = self.state.borrow_mut();
            state.protocol = py.None();
            state.receiver = Receiver::Plain {
                data_received: py.None(),
            };
        });
    }

    fn pause_writing(&mut self) {
        // Inside the `write` that filled the buffer: in its caller's context, as in
        // asyncio.
        running::with_gil(|py| self.call_flow(py, "pause_writing"));
    }

    fn resume_writing(&mut self) {
        running::with_gil(|py| {
            self.context
                .run(py, || self.call_flow(py, "resume_writing"))
        });
    }
}

impl Bridge {
    /// Calls the protocol's `pause_writing` or `resume_writing`.
    fn call_flow(&self, py: Python<'_>, name: &'static str) {
        let protocol = self.state.borrow().protocol.clone_ref(py);
        if let Err(err) = protocol.bind(py).call_method0(name) {
            running::report(
                self.event_loop.bind(py),
                err,
                &format!("protocol.{name}() failed"),
                &[],
            );
        }
    }
}

/// The bytes of a bytes-like object (`bytes`, `bytearray`, `memoryview`...), not copied.
fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let mut f = Some(f);
    if let Some(result) = crate::ffi::with_buffer(data, |b| (f.take().expect("called once"))(b)) {
        return Ok(result);
    }
    match PyBuffer::<u8>::get(data) {
        // A buffer that is not contiguous: copied into one piece.
        Ok(buffer) => Ok((f.take().expect("not called yet"))(
            &buffer.to_vec(data.py())?,
        )),
        Err(_) => Err(PyTypeError::new_err(format!(
            "data argument must be a bytes-like object, not {:?}",
            data.get_type().name()?.to_string()
        ))),
    }
}

#[pymethods]
impl StreamTransport {
    /// A transport of `event_loop` that has no connection yet (the Python subclass
    /// calls `_start`).
    #[new]
    #[pyo3(signature = (event_loop, *_args, **_kwargs))]
    fn py_new(
        event_loop: &Bound<'_, LoopCore>,
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        let py = event_loop.py();
        StreamTransport {
            state: LoopCell::new(Rc::new(RefCell::new(State {
                transport: None,
                protocol: py.None(),
                receiver: Receiver::Plain {
                    data_received: py.None(),
                },
                made: false,
                paused: false,
                eof_written: false,
                lost_writes: 0,
                fatal: None,
                sending_file: false,
            }))),
            running: event_loop.get().running_state(),
        }
    }

    /// Takes over the connected socket `fd` (whose Python socket object never closes
    /// it), and starts the protocol as asyncio does; the protocol sees `face`, the
    /// Python transport that holds this one.
    #[pyo3(signature = (event_loop, fd, protocol, face, waiter=None))]
    fn _start(
        slf: &Bound<'_, Self>,
        event_loop: &Bound<'_, LoopCore>,
        fd: RawFd,
        protocol: Bound<'_, PyAny>,
        face: Py<PyAny>,
        waiter: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let core_loop = event_loop.get().event_loop(py)?;
        let receiver = Receiver::of(&protocol)?;
        let state = this.state(py)?.clone();
        {
            let mut s = state.borrow_mut();
            s.protocol = protocol.unbind();
            s.receiver = receiver;
        }
        let socket = crate::ffi::socket_from_fd(fd);
        let bridge = Bridge {
            state,
            this: face,
            event_loop: event_loop.clone().unbind().into_any(),
            waiter,
            context: ProtocolContext::copy_current(py)?,
        };
        Transport::adopt(&core_loop, socket, bridge).map_err(os_error)?;
        Ok(())
    }

    /// Sends `data` (bytes-like) or buffers what the socket does not take now.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let state = self.state(py)?;
        let mut s = state.borrow_mut();
        if s.eof_written {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        if s.sending_file {
            return Err(PyRuntimeError::new_err(
                "unable to write; sendfile is in progress",
            ));
        }
        let Some(transport) = s.transport.clone() else {
            s.lost_writes += 1;
            if s.lost_writes >= WARN_AFTER_LOST_WRITES {
                drop(s);
                warn_lost_write(py);
            }
            return Ok(());
        };
        drop(s);
        let written = with_bytes(data, |bytes| {
            if bytes.is_empty() {
                return Ok(());
            }
            transport.write(bytes)
        })?;
        match written {
            Ok(()) => Ok(()),
            // Closed or closing: asyncio drops the data quietly (the protocol learns of
            // the end through connection_lost).
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
            // The socket failed: the connection is closed and connection_lost(exc)
            // follows, as in asyncio.
            Err(_) => Ok(()),
        }
    }

    /// Writes each bytes-like item of `list_of_data`, in order.
    fn writelines(&self, py: Python<'_>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut joined = Vec::new();
        for item in list_of_data.try_iter()? {
            with_bytes(&item?, |bytes| joined.extend_from_slice(bytes))?;
        }
        self.write(py, PyBytes::new(py, &joined).as_any())
    }

    /// Closes the writing side once the buffer is sent (a FIN); reading goes on.
    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let transport = {
            let mut s = self.state(py)?.borrow_mut();
            if s.eof_written {
                return Ok(());
            }
            s.eof_written = true;
            s.transport.clone()
        };
        if let Some(transport) = transport {
            transport.write_eof();
        }
        Ok(())
    }

    /// Stream sockets can always half-close.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Sends what is buffered, then closes; `connection_lost(None)` follows.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(transport) = self.transport(py)? {
            transport.close();
        }
        Ok(())
    }

    /// Closes at once, dropping buffered data; `connection_lost(None)` follows.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(transport) = self.transport(py)? {
            transport.abort();
        }
        Ok(())
    }

    /// Whether the transport is closing or closed.
    fn is_closing(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.transport(py)?.is_none_or(|t| t.is_closing()))
    }

    /// Stops `data_received` calls until `resume_reading()`.
    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.set_paused(py, true)
    }

    /// Resumes reading after `pause_reading()`.
    fn resume_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.set_paused(py, false)
    }

    /// Whether the transport is receiving (not paused, not closing).
    fn is_reading(&self, py: Python<'_>) -> PyResult<bool> {
        let s = self.state(py)?.borrow();
        Ok(!s.paused && s.transport.as_ref().is_some_and(|t| !t.is_closing()))
    }

    /// Sets the flow-control water marks, as asyncio does (`high` defaults to 64 KiB,
    /// or 4 × `low`; `low` to `high` / 4).
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        let high = match (high, low) {
            (Some(high), _) => high,
            (None, Some(low)) => 4 * low,
            (None, None) => 64 * 1024,
        };
        let low = low.unwrap_or(high / 4);
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high:?}) must be >= low ({low:?}) must be >= 0"
            )));
        }
        if let Some(transport) = self.transport(py)? {
            transport
                .set_write_buffer_limits(high as usize, low as usize)
                .map_err(os_error)?;
        }
        Ok(())
    }

    /// Bytes written but not yet taken by the kernel.
    fn get_write_buffer_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.transport(py)?.map_or(0, |t| t.write_buffer_size()))
    }

    /// The `(low, high)` water marks.
    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.transport(py)?.map_or((16 * 1024, 64 * 1024), |t| {
            let (high, low) = t.write_buffer_limits();
            (low, high)
        }))
    }

    /// The protocol receiving the data.
    fn get_protocol(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.state(py)?.borrow().protocol.clone_ref(py))
    }

    /// Hands the connection to another protocol (plain or buffered).
    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let receiver = Receiver::of(&protocol)?;
        let mut s = self.state(py)?.borrow_mut();
        s.protocol = protocol.unbind();
        s.receiver = receiver;
        Ok(())
    }

    /// Closes at once because of `exc` (asyncio's `_force_close`, which its TLS layer
    /// calls): the protocol gets `connection_lost(exc)`.
    #[pyo3(signature = (exc=None))]
    fn _force_close(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let transport = {
            let mut s = self.state(py)?.borrow_mut();
            if let Some(exc) = exc.filter(|e| !e.is_none()) {
                s.fatal.get_or_insert(PyErr::from_value(exc));
            }
            s.transport.clone()
        };
        if let Some(transport) = transport {
            transport.abort();
        }
        Ok(())
    }

    /// Sends `count` bytes of the file `fileno` from `offset` with `sendfile(2)`, in
    /// order with the writes around it, and sets `waiter`'s result once they have all
    /// gone to the kernel (or its exception, `ConnectionResetError`, if the connection
    /// closes first). The file is duplicated: the caller keeps its own.
    fn _send_file(
        &self,
        py: Python<'_>,
        fileno: RawFd,
        offset: u64,
        count: u64,
        waiter: Py<PyAny>,
    ) -> PyResult<()> {
        let Some(transport) = self.transport(py)? else {
            return Err(pyo3::exceptions::PyConnectionResetError::new_err(
                "the transport is closed",
            ));
        };
        let file = crate::ffi::duplicate_file(fileno).map_err(os_error)?;
        transport.send_file(file, offset, count).map_err(os_error)?;
        let state = self.state(py)?.clone();
        state.borrow_mut().sending_file = true;
        transport.when_flushed(move |sent| {
            state.borrow_mut().sending_file = false;
            running::with_gil(|py| {
                let waiter = waiter.bind(py);
                if waiter
                    .call_method0(intern!(py, "done"))
                    .and_then(|d| d.is_truthy())
                    .unwrap_or(true)
                {
                    return;
                }
                let set = if sent {
                    waiter.call_method1(intern!(py, "set_result"), (py.None(),))
                } else {
                    let err = pyo3::exceptions::PyConnectionResetError::new_err(
                        "the connection closed before the file was sent",
                    );
                    waiter.call_method1(intern!(py, "set_exception"), (err.into_value(py),))
                };
                if let Err(err) = set {
                    err.write_unraisable(py, Some(waiter));
                }
            })
        });
        Ok(())
    }

    /// Whether the protocol was told `pause_writing` (asyncio's attribute, which its
    /// TLS layer reads for `loop.sendfile`'s fallback).
    #[getter]
    fn _protocol_paused(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.transport(py)?.is_some_and(|t| t.is_writing_paused()))
    }

    /// The socket's fd while the connection is open, else -1.
    fn _fileno(&self, py: Python<'_>) -> PyResult<RawFd> {
        Ok(self.transport(py)?.and_then(|t| t.raw_fd()).unwrap_or(-1))
    }
}

fn warn_lost_write(py: Python<'_>) {
    let logged = py.import(intern!(py, "asyncio.log")).and_then(|log| {
        log.getattr(intern!(py, "logger"))?
            .call_method1(intern!(py, "warning"), ("socket.send() raised exception.",))
    });
    if let Err(err) = logged {
        err.write_unraisable(py, None);
    }
}

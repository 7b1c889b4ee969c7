//! ASGI 3 applications (`http` scope) on oxloop-http, on the loop's own thread.
//!
//! Each request becomes an async handler of oxloop-http that builds the `scope`,
//! starts `app(scope, receive, send)` as an `asyncio.Task` and waits until the
//! application has said enough to answer: a whole body (one `Content-Length`
//! response) or the first piece of a streamed one (a chunked response whose later
//! pieces go through oxloop-http's `BodyWriter`). `receive` and `send` are native
//! callables returning awaitables that are already complete whenever no waiting is
//! needed; otherwise they return an asyncio future that an oxloop task completes (a
//! request body not yet arrived, a response body above its high-water mark).

use crate::handle::Handle;
use crate::loop_core::LoopCore;
use crate::running::{self, LoopCell, LoopShared};
use crate::web::{self, HeaderNames, LastClient, WebServer};
use crate::websocket;
use oxloop::EventLoop;
use oxloop_http::{BodyWriter, HttpServer, Request, RequestBody, Response, Version};
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// What every request of one server shares.
pub(crate) struct App {
    pub(crate) ev: EventLoop,
    pub(crate) running: Arc<LoopShared>,
    pub(crate) app: Py<PyAny>,
    pub(crate) event_loop: Py<PyAny>,
    pub(crate) task_class: Py<PyAny>,
    /// `logger.error(message, exc_info=...)` of `oxloop.web`.
    pub(crate) logger: Py<PyAny>,
    pub(crate) root_path: String,
    /// The lifespan state, copied (shallowly) into each request's scope.
    pub(crate) state: Option<Py<PyDict>>,
    /// `{"loop": event_loop}` (and `eager_start=True` from Python 3.12 on), the keyword
    /// arguments of every `asyncio.Task(...)`.
    pub(crate) task_kwargs: Py<PyDict>,
    /// Tasks start eagerly: their first step runs at once, inside the handler.
    pub(crate) eager: bool,
    /// Before Python 3.12: `asyncio.tasks._current_tasks` (the running task of each
    /// loop). The first step of a task is then held back from the loop and run at
    /// once when no task is running on this loop, as an eager start would.
    pub(crate) current_tasks: Option<Py<PyDict>>,
    /// The complete awaitable whose value is `None` (it holds no state, so one is
    /// shared by every `send`).
    pub(crate) done: Py<PyAny>,
    /// The settings of WebSocket connections.
    pub(crate) websocket: websocket::Settings,
    /// The keys of every `http` scope, with placeholders for the request's values
    /// (see [`App::scope`]).
    pub(crate) http_scope: Py<PyDict>,
    /// The same for `websocket` scopes.
    pub(crate) websocket_scope: Py<PyDict>,
    /// The last client's `(host, port)`.
    pub(crate) client: LastClient<PyTuple>,
    /// Header names in lower case.
    pub(crate) header_names: HeaderNames<PyBytes>,
}

/// The keys of every scope of `kind` (`"http"` or `"websocket"`) in the order the
/// ASGI specification lists them, with placeholders for the request's values.
fn base_scope<'py>(
    py: Python<'py>,
    kind: &str,
    asgi: &Bound<'py, PyDict>,
    server: &Bound<'py, PyAny>,
    root_path: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), PyString::intern(py, kind))?;
    let scheme = if kind == "http" { "http" } else { "ws" };
    scope.set_item(intern!(py, "scheme"), PyString::intern(py, scheme))?;
    if kind == "http" {
        scope.set_item(intern!(py, "method"), intern!(py, "GET"))?;
    }
    scope.set_item(intern!(py, "asgi"), asgi)?;
    scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
    scope.set_item(intern!(py, "server"), server)?;
    scope.set_item(intern!(py, "client"), py.None())?;
    scope.set_item(intern!(py, "root_path"), root_path)?;
    scope.set_item(intern!(py, "path"), intern!(py, ""))?;
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, b""))?;
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, b""))?;
    scope.set_item(intern!(py, "headers"), py.None())?;
    Ok(scope)
}

/// Where the request body stands, for `receive`.
enum Incoming {
    /// Pieces still to come.
    Body(RequestBody),
    /// An oxloop task waits for the next piece.
    Waiting,
    /// The last `http.request` message is not yet handed out.
    LastMessage,
    /// Every `http.request` message went out; `receive` now waits for the end.
    Done,
}

/// Where the response stands, for `send`.
enum Outgoing {
    Start,
    Head(u16, Vec<(String, String)>),
    /// Streaming; `None` while an oxloop task sends a piece above the high-water mark.
    Streaming(Option<BodyWriter>),
    Complete,
}

/// One request's exchange between the connection and the application.
struct Exchange {
    incoming: Incoming,
    outgoing: Outgoing,
    /// The response for the handler, once known.
    response: Option<Response>,
    /// The handler's waker.
    waker: Option<Waker>,
    /// The application's task ended.
    app_done: bool,
    /// The handler returned its response (a later drop is not a disconnect).
    responded: bool,
    disconnected: bool,
    /// Futures of `receive` calls waiting for `http.disconnect`.
    disconnect_waiters: Vec<Py<PyAny>>,
    /// A streamed body ends once the piece in flight is sent.
    finish_after_send: bool,
    /// The application failed while streaming: the body is cut, not ended.
    abort_stream: bool,
}

type Shared = Rc<RefCell<Exchange>>;

impl Exchange {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Marks the exchange as disconnected when the handler is dropped before answering
/// (the connection closed), and wakes `receive` calls waiting for it.
struct DisconnectOnDrop(Shared);

impl Drop for DisconnectOnDrop {
    fn drop(&mut self) {
        let waiters = {
            let mut x = self.0.borrow_mut();
            if x.responded {
                return;
            }
            x.disconnected = true;
            std::mem::take(&mut x.disconnect_waiters)
        };
        if !waiters.is_empty() {
            running::with_gil(|py| disconnect_all(py, waiters));
        }
    }
}

/// Completes each of `receive`'s waiting futures with `http.disconnect` (the message
/// is made only when one waits).
fn disconnect_all(py: Python<'_>, waiters: Vec<Py<PyAny>>) {
    if waiters.is_empty() {
        return;
    }
    let value = disconnect_message(py);
    for fut in waiters {
        resolve(
            py,
            fut.bind(py),
            value
                .as_ref()
                .map(|v| v.clone())
                .map_err(|e| e.clone_ref(py)),
        );
    }
}

/// Completes an asyncio future unless it is already done (cancelled).
pub(crate) fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>, value: PyResult<Bound<'_, PyAny>>) {
    let done = fut
        .call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true);
    if done {
        return;
    }
    let result = match value {
        Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.value(py),)),
    };
    if let Err(err) = result {
        err.write_unraisable(py, Some(fut));
    }
}

fn disconnect_message(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let msg = PyDict::new(py);
    msg.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(msg.into_any())
}

fn request_message<'py>(py: Python<'py>, body: &[u8], more: bool) -> PyResult<Bound<'py, PyAny>> {
    let msg = PyDict::new(py);
    msg.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    msg.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    msg.set_item(intern!(py, "more_body"), more)?;
    Ok(msg.into_any())
}

fn disconnected_error() -> PyErr {
    PyConnectionError::new_err("the client disconnected")
}

/// An awaitable that is already complete: `await` gives its value at once.
#[pyclass(freelist = 8, module = "oxloop._oxloop")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Ends at once. Without a value (`send`'s answers) that is an empty iteration,
    /// which `await` takes as `None` without a `StopIteration` object being made.
    fn __next__(&mut self) -> PyResult<Option<Py<PyAny>>> {
        match self.value.take() {
            None => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v,))),
        }
    }

    fn send(&mut self, _value: Py<PyAny>) -> PyResult<()> {
        match self.value.take() {
            None => Err(PyStopIteration::new_err(())),
            Some(v) => Err(PyStopIteration::new_err((v,))),
        }
    }

    #[pyo3(signature = (*args))]
    fn throw(&mut self, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let exc = args.get_item(0)?;
        Err(PyErr::from_value(exc))
    }

    fn close(&mut self) {}
}

pub(crate) fn ready(py: Python<'_>, value: Option<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(
        py,
        Ready {
            value: value.map(Bound::unbind),
        },
    )?
    .into_any())
}

/// One request's exchange and server, for the callables the application gets (which
/// only the loop's thread may use; see `running`).
struct Parts {
    x: Shared,
    app: Rc<App>,
}

/// The `receive` callable of one request.
#[pyclass(freelist = 8, frozen, module = "oxloop._oxloop")]
pub struct Receive {
    parts: LoopCell<Parts>,
    running: Arc<LoopShared>,
}

#[pymethods]
impl Receive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.parts.get(py, &self.running)?.receive(py)
    }
}

impl Parts {
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut x = self.x.borrow_mut();
        if x.disconnected {
            return ready(py, Some(disconnect_message(py)?));
        }
        match std::mem::replace(&mut x.incoming, Incoming::Waiting) {
            Incoming::Body(mut body) => {
                let polled = {
                    let mut chunk = pin!(body.chunk());
                    chunk.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                };
                match polled {
                    Poll::Ready(Ok(Some(data))) => {
                        x.incoming = Incoming::Body(body);
                        ready(py, Some(request_message(py, &data, true)?))
                    }
                    Poll::Ready(Ok(None)) => {
                        x.incoming = Incoming::Done;
                        ready(py, Some(request_message(py, b"", false)?))
                    }
                    Poll::Ready(Err(_)) => {
                        x.incoming = Incoming::Done;
                        x.disconnected = true;
                        ready(py, Some(disconnect_message(py)?))
                    }
                    Poll::Pending => {
                        drop(x);
                        self.wait_for_body(py, body)
                    }
                }
            }
            Incoming::Waiting => Err(PyRuntimeError::new_err(
                "receive() called while another receive() waits",
            )),
            Incoming::LastMessage => {
                x.incoming = Incoming::Done;
                ready(py, Some(request_message(py, b"", false)?))
            }
            Incoming::Done => {
                x.incoming = Incoming::Done;
                if matches!(x.outgoing, Outgoing::Complete) {
                    return ready(py, Some(disconnect_message(py)?));
                }
                let fut = self
                    .app
                    .event_loop
                    .call_method0(py, intern!(py, "create_future"))?;
                x.disconnect_waiters.push(fut.clone_ref(py));
                Ok(fut)
            }
        }
    }
}

impl Parts {
    /// An asyncio future completed by an oxloop task once the next piece arrived.
    fn wait_for_body(&self, py: Python<'_>, mut body: RequestBody) -> PyResult<Py<PyAny>> {
        let fut = self
            .app
            .event_loop
            .call_method0(py, intern!(py, "create_future"))?;
        let for_task = fut.clone_ref(py);
        let x = self.x.clone();
        self.app.ev.spawn(async move {
            let piece = body.chunk().await;
            running::with_gil(|py| {
                let mut ex = x.borrow_mut();
                let message = match piece {
                    Ok(Some(data)) => {
                        ex.incoming = Incoming::Body(body);
                        request_message(py, &data, true)
                    }
                    Ok(None) => {
                        ex.incoming = Incoming::Done;
                        request_message(py, b"", false)
                    }
                    Err(_) => {
                        ex.incoming = Incoming::Done;
                        ex.disconnected = true;
                        disconnect_message(py)
                    }
                };
                drop(ex);
                resolve(py, for_task.bind(py), message);
            });
        });
        Ok(fut)
    }
}

/// The `send` callable of one request.
#[pyclass(freelist = 8, frozen, module = "oxloop._oxloop")]
pub struct Send {
    parts: LoopCell<Parts>,
    running: Arc<LoopShared>,
}

#[pymethods]
impl Send {
    fn __call__(&self, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.parts.get(message.py(), &self.running)?.send(message)
    }
}

impl Parts {
    fn send(&self, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = message.py();
        let message = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("an ASGI message must be a dict"))?;
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyTypeError::new_err("an ASGI message needs a 'type'"))?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        match kind {
            "http.response.start" => self.start(message),
            "http.response.body" => self.body(message),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {other:?} for an HTTP request"
            ))),
        }
    }
}

impl Parts {
    fn start(&self, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = message.py();
        let status: u16 = message
            .get_item(intern!(py, "status"))?
            .ok_or_else(|| PyTypeError::new_err("http.response.start needs a 'status'"))?
            .extract()?;
        let mut headers = Vec::new();
        if let Some(list) = message.get_item(intern!(py, "headers"))? {
            for item in list.try_iter()? {
                let item = item?;
                let name = item.get_item(0)?;
                let value = item.get_item(1)?;
                let name = name.cast::<PyBytes>()?.as_bytes();
                let value = value.cast::<PyBytes>()?.as_bytes();
                if name.eq_ignore_ascii_case(b"content-length") {
                    continue; // the server frames the body itself (`web::with_headers`)
                }
                headers.push((web::header_text(name), web::header_text(value)));
            }
        }
        let mut x = self.x.borrow_mut();
        if x.disconnected {
            return Err(disconnected_error());
        }
        if !matches!(x.outgoing, Outgoing::Start) {
            return Err(PyRuntimeError::new_err("http.response.start sent twice"));
        }
        x.outgoing = Outgoing::Head(status, headers);
        Ok(self.app.done.clone_ref(py))
    }

    fn body(&self, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = message.py();
        let more = match message.get_item(intern!(py, "more_body"))? {
            Some(v) => v.is_truthy()?,
            None => false,
        };
        let body = message.get_item(intern!(py, "body"))?;
        let data: &[u8] = match &body {
            Some(b) => b.cast::<PyBytes>().map(|b| b.as_bytes()).unwrap_or(b""),
            None => b"",
        };
        let data_owned;
        let data = match &body {
            Some(b) if b.cast::<PyBytes>().is_err() && !b.is_none() => {
                data_owned = b.extract::<Vec<u8>>()?;
                &data_owned[..]
            }
            _ => data,
        };
        let mut x = self.x.borrow_mut();
        if x.disconnected {
            return Err(disconnected_error());
        }
        match std::mem::replace(&mut x.outgoing, Outgoing::Complete) {
            Outgoing::Start => {
                x.outgoing = Outgoing::Start;
                Err(PyRuntimeError::new_err(
                    "http.response.body sent before http.response.start",
                ))
            }
            Outgoing::Complete => Err(PyRuntimeError::new_err(
                "http.response.body sent after the response was complete",
            )),
            Outgoing::Head(status, headers) => {
                if !more {
                    x.response = Some(response(status, headers).body(data.to_vec()));
                    x.wake();
                    let waiters = std::mem::take(&mut x.disconnect_waiters);
                    drop(x);
                    disconnect_all(py, waiters);
                    return Ok(self.app.done.clone_ref(py));
                }
                let (head, writer) = Response::stream(status);
                x.response = Some(web::with_headers(head, headers));
                x.wake();
                drop(x);
                self.write(py, writer, data, more)
            }
            Outgoing::Streaming(Some(writer)) => {
                drop(x);
                self.write(py, writer, data, more)
            }
            Outgoing::Streaming(None) => {
                x.outgoing = Outgoing::Streaming(None);
                Err(PyRuntimeError::new_err(
                    "send() called while another send() waits",
                ))
            }
        }
    }

    /// Queues a piece of a streamed body; waits (an asyncio future) while the
    /// connection's queue is above its high-water mark.
    fn write(
        &self,
        py: Python<'_>,
        mut writer: BodyWriter,
        data: &[u8],
        more: bool,
    ) -> PyResult<Py<PyAny>> {
        let polled = {
            let mut send = pin!(writer.send(data));
            send.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        match polled {
            Poll::Ready(Ok(())) => {
                self.after_write(py, writer, more);
                Ok(self.app.done.clone_ref(py))
            }
            Poll::Ready(Err(_)) => {
                self.x.borrow_mut().disconnected = true;
                Err(disconnected_error())
            }
            Poll::Pending => {
                self.x.borrow_mut().outgoing = Outgoing::Streaming(None);
                let fut = self
                    .app
                    .event_loop
                    .call_method0(py, intern!(py, "create_future"))?;
                let for_task = fut.clone_ref(py);
                let data = data.to_vec();
                let x = self.x.clone();
                let me = Parts {
                    x: self.x.clone(),
                    app: self.app.clone(),
                };
                self.app.ev.spawn(async move {
                    let sent = writer.send(data).await;
                    running::with_gil(|py| match sent {
                        Ok(()) => {
                            me.after_write(py, writer, more);
                            resolve(py, for_task.bind(py), Ok(py.None().into_bound(py)));
                        }
                        Err(_) => {
                            x.borrow_mut().disconnected = true;
                            resolve(py, for_task.bind(py), Err(disconnected_error()));
                        }
                    });
                });
                Ok(fut)
            }
        }
    }

    fn after_write(&self, py: Python<'_>, writer: BodyWriter, more: bool) {
        let mut x = self.x.borrow_mut();
        if more && !x.finish_after_send {
            x.outgoing = Outgoing::Streaming(Some(writer));
            return;
        }
        if x.abort_stream {
            writer.abort();
        } else {
            drop(writer);
        }
        x.outgoing = Outgoing::Complete;
        let waiters = std::mem::take(&mut x.disconnect_waiters);
        drop(x);
        disconnect_all(py, waiters);
    }
}

fn response(status: u16, headers: Vec<(String, String)>) -> Response {
    web::with_headers(Response::new(status), headers)
}

/// Called when the application's task is done: logs its exception, answers 500 when
/// nothing was sent, ends a streamed body.
#[pyclass(freelist = 8, frozen, module = "oxloop._oxloop")]
pub struct AppDone {
    parts: LoopCell<Parts>,
    running: Arc<LoopShared>,
}

#[pymethods]
impl AppDone {
    fn __call__(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        self.parts.get(task.py(), &self.running)?.app_done(task)
    }
}

impl Parts {
    fn app_done(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = task.py();
        let cancelled = task.call_method0(intern!(py, "cancelled"))?.is_truthy()?;
        let failed = if cancelled {
            true
        } else {
            let exc = task.call_method0(intern!(py, "exception"))?;
            if exc.is_none() {
                false
            } else {
                let disconnected = self.x.borrow().disconnected;
                if !disconnected {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "exc_info"), &exc)?;
                    self.app
                        .logger
                        .bind(py)
                        .call(("Exception in ASGI application",), Some(&kwargs))?;
                }
                true
            }
        };
        let mut x = self.x.borrow_mut();
        x.app_done = true;
        match std::mem::replace(&mut x.outgoing, Outgoing::Complete) {
            Outgoing::Start => {
                if !failed && !x.disconnected {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "exc_info"), false)?;
                    self.app.logger.bind(py).call(
                        ("ASGI application returned without a response",),
                        Some(&kwargs),
                    )?;
                }
                x.response = Some(Response::error(500).close());
            }
            Outgoing::Head(status, headers) => {
                x.response = Some(if failed {
                    Response::error(500).close()
                } else {
                    response(status, headers)
                });
            }
            Outgoing::Streaming(None) => {
                // The task sending the last piece ends (or cuts) the body.
                x.outgoing = Outgoing::Streaming(None);
                x.finish_after_send = true;
                x.abort_stream = failed;
            }
            Outgoing::Streaming(Some(writer)) => {
                if failed {
                    writer.abort();
                }
            }
            Outgoing::Complete => {}
        }
        x.wake();
        let waiters = std::mem::take(&mut x.disconnect_waiters);
        drop(x);
        disconnect_all(py, waiters);
        Ok(())
    }
}

impl App {
    /// A request's scope: a copy of `base` (`App::http_scope` or
    /// `App::websocket_scope`) with the request's values in place of its placeholders.
    pub(crate) fn scope<'py>(
        &self,
        py: Python<'py>,
        base: &Py<PyDict>,
        req: &Request,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope = base.bind(py).copy()?;
        if req.version() == Version::Http10 {
            scope.set_item(intern!(py, "http_version"), intern!(py, "1.0"))?;
        }
        if let Some(peer) = req.peer_addr() {
            let client = self.client.get(py, peer, |peer| {
                (peer.ip().to_string(), peer.port()).into_pyobject(py)
            })?;
            scope.set_item(intern!(py, "client"), client)?;
        }
        let path = web::decoded_path(req);
        if self.root_path.is_empty() {
            scope.set_item(intern!(py, "path"), &*path)?;
            scope.set_item(
                intern!(py, "raw_path"),
                PyBytes::new(py, req.path().as_bytes()),
            )?;
        } else {
            scope.set_item(intern!(py, "path"), format!("{}{}", self.root_path, path))?;
            let raw = format!("{}{}", self.root_path, req.path());
            scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw.as_bytes()))?;
        }
        if let Some(query) = req.query().filter(|q| !q.is_empty()) {
            scope.set_item(
                intern!(py, "query_string"),
                PyBytes::new(py, query.as_bytes()),
            )?;
        }
        let headers = PyList::empty(py);
        for (name, value) in req.headers() {
            let name = self.header_names.get(py, name.as_bytes(), |name| {
                Ok(PyBytes::new(py, &name.to_ascii_lowercase()))
            })?;
            headers.append((name, PyBytes::new(py, value)))?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        if let Some(state) = &self.state {
            scope.set_item(intern!(py, "state"), state.bind(py).copy()?)?;
        }
        Ok(scope)
    }

    /// Builds the scope and starts the application's task.
    fn start_http(self: &Rc<App>, py: Python<'_>, req: Request) -> PyResult<Shared> {
        let scope = self.scope(py, &self.http_scope, &req)?;
        if let Some(method) = web::method_unless_get(py, &req) {
            scope.set_item(intern!(py, "method"), method)?;
        }
        let mut req = req;
        let incoming = match req.take_body() {
            Some(body) => Incoming::Body(body),
            None => Incoming::LastMessage,
        };
        let x: Shared = Rc::new(RefCell::new(Exchange {
            incoming,
            outgoing: Outgoing::Start,
            response: None,
            waker: None,
            app_done: false,
            responded: false,
            disconnected: false,
            disconnect_waiters: Vec::new(),
            finish_after_send: false,
            abort_stream: false,
        }));
        let parts = || {
            LoopCell::new(Parts {
                x: x.clone(),
                app: self.clone(),
            })
        };
        let receive = Py::new(
            py,
            Receive {
                parts: parts(),
                running: self.running.clone(),
            },
        )?;
        let send = Py::new(
            py,
            Send {
                parts: parts(),
                running: self.running.clone(),
            },
        )?;
        let coro = self.app.bind(py).call1((scope, receive, send))?;
        let done = Py::new(
            py,
            AppDone {
                parts: parts(),
                running: self.running.clone(),
            },
        )?;
        self.start_task(coro, done.bind(py).as_any(), |task| {
            done.get().__call__(task)
        })?;
        Ok(x)
    }

    /// Runs the application's coroutine `coro` as an asyncio task, and `done` when it
    /// ends: at once through `done_now` when it finished in its first step (eager start:
    /// no callback to schedule), else as the task's done callback.
    pub(crate) fn start_task<'py>(
        &self,
        coro: Bound<'py, PyAny>,
        done: &Bound<'py, PyAny>,
        done_now: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<()> {
        let py = coro.py();
        let new_task = || {
            self.task_class
                .bind(py)
                .call((coro,), Some(self.task_kwargs.bind(py)))
        };
        let mut started = self.eager;
        let task = match &self.current_tasks {
            None => new_task()?,
            Some(current_tasks) => {
                let event_loop = self.event_loop.bind(py).cast::<LoopCore>()?;
                let (task, first_step) = LoopCore::hold_first_soon(event_loop, new_task);
                let task = task?;
                if let Some(step) = first_step {
                    // A step run inside another task's step would fail to enter
                    // its task: then it waits for the loop, as it always did.
                    if current_tasks.bind(py).get_item(event_loop)?.is_none() {
                        Handle::run(step.bind(py));
                        started = true;
                    } else {
                        LoopCore::queue_held(event_loop, step)?;
                    }
                }
                task
            }
        };
        if started && task.call_method0(intern!(py, "done"))?.is_truthy()? {
            done_now(&task)
        } else {
            task.call_method1(intern!(py, "add_done_callback"), (done,))?;
            Ok(())
        }
    }

    fn handle(self: &Rc<App>, req: Request) -> impl Future<Output = Response> + 'static {
        let started = running::with_gil(|py| {
            self.start_http(py, req).map_err(|err| {
                let kwargs = PyDict::new(py);
                let _ = kwargs.set_item(intern!(py, "exc_info"), err.value(py));
                if let Err(e) = self
                    .logger
                    .bind(py)
                    .call(("Exception in ASGI application",), Some(&kwargs))
                {
                    e.write_unraisable(py, None);
                }
            })
        });
        async move {
            let Ok(x) = started else {
                return Response::error(500).close();
            };
            let guard = DisconnectOnDrop(x.clone());
            let response = poll_fn(|cx| {
                let mut ex = x.borrow_mut();
                if let Some(r) = ex.response.take() {
                    return Poll::Ready(r);
                }
                if ex.app_done {
                    return Poll::Ready(Response::error(500).close());
                }
                ex.waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            guard.0.borrow_mut().responded = true;
            response
        }
    }
}

/// Serves the ASGI application `app` on `event_loop` at `host:port`.
#[pyfunction]
#[pyo3(signature = (event_loop, app, host, port, logger, root_path="", state=None, options=None))]
#[allow(clippy::too_many_arguments)]
pub fn _serve_asgi(
    event_loop: &Bound<'_, LoopCore>,
    app: Py<PyAny>,
    host: &str,
    port: u16,
    logger: Py<PyAny>,
    root_path: &str,
    state: Option<Py<PyDict>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<WebServer> {
    let py = event_loop.py();
    // The WebSocket settings are taken out; the rest are oxloop-http's.
    let options = options.map(|o| o.copy()).transpose()?;
    let websocket = websocket::Settings::take_from(options.as_ref())?;
    let config = web::config(options.as_ref())?;
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.4")?;
    let task_class = py.import("asyncio")?.getattr("Task")?.unbind();
    let ev = event_loop.get().event_loop(py)?;
    let running = event_loop.get().running_state();
    let root_path = root_path.trim_end_matches('/').to_owned();
    let event_loop_obj = event_loop.clone().into_any().unbind();
    let task_kwargs = PyDict::new(py);
    task_kwargs.set_item("loop", &event_loop_obj)?;
    // From Python 3.12 on, a task may run its first step at once: an application that
    // answers without waiting then costs no loop callback at all.
    let eager = py.version_info() >= (3, 12);
    if eager {
        task_kwargs.set_item("eager_start", true)?;
    }
    let task_kwargs = task_kwargs.unbind();
    let current_tasks = if eager {
        None
    } else {
        let tasks = py.import("asyncio.tasks")?.getattr("_current_tasks")?;
        Some(tasks.cast_into::<PyDict>()?.unbind())
    };
    let done = ready(py, None)?;
    let make_app = move |addr: std::net::SocketAddr| -> PyResult<Rc<App>> {
        let server = (addr.ip().to_string(), addr.port()).into_pyobject(py)?;
        let http_scope = base_scope(py, "http", &asgi, server.as_any(), &root_path)?.unbind();
        let websocket_scope =
            base_scope(py, "websocket", &asgi, server.as_any(), &root_path)?.unbind();
        Ok(Rc::new(App {
            ev: ev.clone(),
            running,
            app,
            event_loop: event_loop_obj,
            task_class,
            logger,
            root_path,
            state,
            task_kwargs,
            eager,
            current_tasks,
            done,
            websocket,
            http_scope,
            websocket_scope,
            client: LastClient::new(),
            header_names: HeaderNames::new(),
        }))
    };
    let slot: Rc<RefCell<Option<Rc<App>>>> = Rc::new(RefCell::new(None));
    let for_handler = slot.clone();
    let server = web::bind(event_loop, host, port, |ev, addr| {
        HttpServer::bind_async(ev, addr, config, move |req| {
            let app = for_handler.borrow().clone().expect("set before serving");
            async move {
                if websocket::is_upgrade(&req) {
                    websocket::handle(app, req).await
                } else {
                    app.handle(req).await
                }
            }
        })
    })?;
    let addr = server.local_addr();
    *slot.borrow_mut() = Some(make_app(addr)?);
    Ok(server)
}

//! WSGI (PEP 3333) applications on oxloop-http, run on a pool of threads or in green
//! tasks on the loop's own thread.
//!
//! The loop's thread builds the `environ` and hands the request to a worker thread
//! (or, in green mode, starts a green task for it); the worker calls the application
//! and iterates its response, and the response comes back through one exchange
//! (`Arc<Exchange>`: a mutex, a condition variable for the worker, a waker for the
//! loop's handler). The request body flows the other way through the same exchange.
//! Both directions hold at most `HIGH_WATER` bytes: the worker waits (without the GIL)
//! when the client reads slowly, and the loop stops reading the socket when the
//! application reads its body slowly. A green task waits instead by switching to the
//! loop (a Python wait object, `oxloop.green._serving.RequestWait`), and the loop's
//! side wakes it through the same object where it would signal the condition variable.

use crate::ffi;
use crate::loop_core::LoopCore;
use crate::running;
use crate::web::{self, HeaderNames, LastClient, WebServer};
use oxloop::EventLoop;
use oxloop_http::{HttpServer, Request, RequestBody, Response, Version};
use pyo3::exceptions::{
    PyAssertionError, PyConnectionError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::future::poll_fn;
use std::io::{Seek, SeekFrom};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::task::{Poll, Waker};

/// Bytes queued in either direction before the producer waits.
const HIGH_WATER: usize = 64 * 1024;

type Head = (u16, Vec<(String, String)>);

/// A whole response that the worker hands over at once.
enum Whole {
    Bytes(Vec<u8>),
    File(File, u64),
}

#[derive(Default)]
struct State {
    // The request body, loop to worker.
    input: VecDeque<Vec<u8>>,
    input_queued: usize,
    input_done: bool,
    input_broken: bool,
    /// The loop's body pump, waiting for room.
    input_waker: Option<Waker>,
    // The response, worker to loop.
    /// Status and headers, once the application sent its first body bytes (or ended).
    head: Option<Head>,
    whole: Option<Whole>,
    output: VecDeque<Vec<u8>>,
    output_queued: usize,
    output_done: bool,
    /// The application failed before its head was sent: answer 500.
    failed: bool,
    /// The application failed while its body was streamed: cut the connection.
    aborted: bool,
    /// The loop's handler or response pump, waiting for output.
    output_waker: Option<Waker>,
    /// The connection is gone.
    disconnected: bool,
    /// Green mode: the wait of the request's task, while it waits for a change.
    green_wait: Option<Py<PyAny>>,
}

/// One request's exchange between the loop and a worker thread (or green task).
struct Exchange {
    state: Mutex<State>,
    /// The worker thread waits here for body pieces or room for output.
    changed: Condvar,
    /// Green mode: makes the wait object of a green task (`RequestWait()`); `None`
    /// when a worker thread runs the application.
    green_wait: Option<Py<PyAny>>,
    /// Inline mode: the application runs on the loop's thread, which must never wait
    /// for the loop; the body is read whole first and the response is never held back.
    inline: bool,
}

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Worker side: waits until `ready` holds, without the GIL on a worker thread, by
    /// switching to the loop in a green task (which may then raise, when killed).
    fn wait_until(
        &self,
        py: Python<'_>,
        ready: impl Fn(&State) -> bool + Send + Sync,
    ) -> PyResult<MutexGuard<'_, State>> {
        {
            let s = self.lock();
            if ready(&s) {
                return Ok(s);
            }
        }
        if self.inline {
            // Unreachable by construction (the body is whole, output is never held
            // back): waiting here would wait for the very thread that waits.
            return Err(PyRuntimeError::new_err(
                "a WSGI application on the loop's thread cannot wait for the loop",
            ));
        }
        let Some(make_wait) = &self.green_wait else {
            py.detach(|| {
                let mut s = self.lock();
                while !ready(&s) {
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            });
            return Ok(self.lock());
        };
        loop {
            let wait = make_wait.call0(py)?;
            {
                let mut s = self.lock();
                if ready(&s) {
                    return Ok(s);
                }
                s.green_wait = Some(wait.clone_ref(py));
            }
            // Never with the state's mutex held: other tasks run meanwhile.
            let waited = wait.call_method0(py, intern!(py, "wait"));
            self.lock().green_wait = None;
            waited?;
        }
    }

    /// Loop side: tells the worker that the state changed.
    fn notify(&self) {
        self.changed.notify_all();
        if self.green_wait.is_none() {
            return;
        }
        let Some(wait) = self.lock().green_wait.take() else {
            return;
        };
        running::with_gil(|py| {
            if let Err(err) = wait.call_method0(py, intern!(py, "wake")) {
                err.write_unraisable(py, None);
            }
        });
    }

    fn wake_loop(s: &mut State) {
        if let Some(w) = s.output_waker.take() {
            w.wake();
        }
    }
}

/// What the worker knows of the response while the application runs.
#[derive(Default)]
struct Progress {
    /// From `start_response`, not yet handed to the loop.
    pending: Option<Head>,
    /// The head went to the loop.
    sent: bool,
}

/// One request for a worker thread or green task.
struct Job {
    environ: Py<PyDict>,
    exchange: Arc<Exchange>,
}

/// Where the requests' applications run.
enum Runner {
    /// A pool of worker threads, fed through this queue.
    Threads(Jobs),
    /// The loop's own thread, as the request arrives (after its whole body).
    Inline(Arc<Worker>),
    /// Green tasks on the loop's thread: `start(request)` starts one that calls
    /// `request()` and runs it at once, until it ends or waits; `make_wait()` makes
    /// the object a waiting task switches through.
    Green {
        worker: Arc<Worker>,
        start: Py<PyAny>,
        make_wait: Py<PyAny>,
    },
}

/// What every request of one server shares.
struct App {
    ev: EventLoop,
    runner: Runner,
    /// The environ keys every request has, those whose value changes with the
    /// request included (with placeholder values): a request's environ is a copy in
    /// which those values are replaced (see [`roomy_base`]).
    base: Py<PyDict>,
    /// `SCRIPT_NAME` as bytes, one per character (`None` if a character is beyond
    /// U+00FF: then no request path can start with it).
    root_path: Option<Vec<u8>>,
    /// The last client's `(REMOTE_ADDR, REMOTE_PORT)` strings.
    client: LastClient<PyTuple>,
    /// `HTTP_*` environ keys.
    header_keys: HeaderNames<PyString>,
}

/// The worker pool's side: the application and how to report its errors.
struct Worker {
    app: Py<PyAny>,
    logger: Py<PyAny>,
    file_wrapper: Py<PyAny>,
}

/// `wsgi.input`: the request body, read on a worker thread (or in a green task).
#[pyclass(freelist = 8, frozen, module = "oxloop._oxloop")]
pub struct WsgiInput {
    exchange: Arc<Exchange>,
    /// Bytes taken from the exchange and not yet returned.
    buffer: Mutex<Vec<u8>>,
}

impl WsgiInput {
    /// The buffer, held while a read waits. Green tasks share one thread, so a second
    /// task reading the same body at once is refused instead of deadlocking.
    fn buffer(&self) -> PyResult<MutexGuard<'_, Vec<u8>>> {
        if self.exchange.green_wait.is_none() {
            return Ok(self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        }
        match self.buffer.try_lock() {
            Ok(buffer) => Ok(buffer),
            Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "wsgi.input is being read by another task",
            )),
        }
    }

    /// Adds the next piece to `buffer`; false at the end of the body.
    fn fill(&self, py: Python<'_>, buffer: &mut Vec<u8>) -> PyResult<bool> {
        let mut s = self.exchange.wait_until(py, |s| {
            !s.input.is_empty() || s.input_done || s.input_broken
        })?;
        if let Some(piece) = s.input.pop_front() {
            s.input_queued -= piece.len();
            if s.input_queued < HIGH_WATER / 2 {
                if let Some(w) = s.input_waker.take() {
                    w.wake();
                }
            }
            buffer.extend_from_slice(&piece);
            return Ok(true);
        }
        if s.input_broken {
            return Err(PyConnectionError::new_err(
                "the client disconnected before the request body was complete",
            ));
        }
        Ok(false)
    }

    fn take<'py>(py: Python<'py>, buffer: &mut Vec<u8>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(buffer.len());
        let out = PyBytes::new(py, &buffer[..n]);
        buffer.drain(..n);
        out
    }

    fn read_line<'py>(
        &self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut buffer = self.buffer()?;
        let mut searched = 0;
        loop {
            if let Some(i) = buffer[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i + 1;
                return Ok(Self::take(
                    py,
                    &mut buffer,
                    limit.map_or(end, |l| l.min(end)),
                ));
            }
            if limit.is_some_and(|l| buffer.len() >= l) {
                return Ok(Self::take(py, &mut buffer, limit.unwrap_or(0)));
            }
            searched = buffer.len();
            if !self.fill(py, &mut buffer)? {
                let n = buffer.len();
                return Ok(Self::take(py, &mut buffer, n));
            }
        }
    }
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => {
            let n: i64 = v.extract()?;
            Ok((n >= 0).then_some(n as usize))
        }
    }
}

#[pymethods]
impl WsgiInput {
    /// Reads up to `size` bytes (all that is left without one); `b""` at the end.
    #[pyo3(signature = (size=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size)?;
        let mut buffer = self.buffer()?;
        while size.is_none_or(|n| buffer.len() < n) {
            if !self.fill(py, &mut buffer)? {
                break;
            }
        }
        let n = size.unwrap_or(buffer.len());
        Ok(Self::take(py, &mut buffer, n))
    }

    /// Reads one line (up to `size` bytes); `b""` at the end.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.read_line(py, size_arg(size)?)
    }

    /// Reads the remaining lines (stops after `hint` bytes, if given).
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?;
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            if line.as_bytes().is_empty() {
                break;
            }
            total += line.as_bytes().len();
            lines.append(line)?;
            if hint.is_some_and(|h| h > 0 && total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

/// `start_response` and `write` of one request (worker side).
#[pyclass(freelist = 8, frozen, module = "oxloop._oxloop")]
pub struct StartResponse {
    exchange: Arc<Exchange>,
    progress: Mutex<Progress>,
}

impl StartResponse {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends body bytes (and the head before the first), waiting while the client is
    /// behind. Fails once the client is gone.
    fn push(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<()> {
        let head = self.take_head()?;
        let inline = self.exchange.inline;
        let mut s = self.exchange.wait_until(py, |s| {
            s.output_queued < HIGH_WATER || s.disconnected || inline
        })?;
        if s.disconnected {
            return Err(PyConnectionError::new_err("the client disconnected"));
        }
        if let Some(head) = head {
            s.head = Some(head);
        }
        if !data.is_empty() {
            s.output_queued += data.len();
            s.output.push_back(data);
        }
        Exchange::wake_loop(&mut s);
        Ok(())
    }

    /// The head, if it has not gone to the loop yet.
    fn take_head(&self) -> PyResult<Option<Head>> {
        let mut p = self.progress();
        if p.sent {
            return Ok(None);
        }
        let head = p
            .pending
            .take()
            .ok_or_else(|| PyAssertionError::new_err("start_response() was not called"))?;
        p.sent = true;
        Ok(Some(head))
    }

    /// Hands the whole response to the loop at once.
    fn finish_whole(&self, whole: Option<Whole>) -> PyResult<()> {
        let head = self.take_head()?;
        let mut s = self.exchange.lock();
        if let Some(head) = head {
            s.head = Some(head);
        }
        s.whole = whole;
        s.output_done = true;
        Exchange::wake_loop(&mut s);
        Ok(())
    }
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)`; returns `write`.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        slf: &Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let p = this.progress();
            if let Some(exc_info) = exc_info {
                if p.sent {
                    // Too late to change the response: re-raise, as PEP 3333 says.
                    let exc = exc_info.get_item(1)?;
                    return Err(PyErr::from_value(exc));
                }
            } else if p.pending.is_some() || p.sent {
                return Err(PyAssertionError::new_err(
                    "start_response() called twice without exc_info",
                ));
            }
        }
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("the status must be a str"))?
            .to_str()?;
        let code: u16 = status
            .get(..3)
            .and_then(|c| c.parse().ok())
            .filter(|c| (100..1000).contains(c))
            .ok_or_else(|| PyValueError::new_err(format!("bad status {status:?}")))?;
        let mut list = Vec::new();
        for item in headers.try_iter()? {
            let item = item?;
            let item = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err("each response header must be a (name, value) tuple")
            })?;
            let name = item.get_item(0)?;
            let value = item.get_item(1)?;
            let name = name.cast::<PyString>()?.to_str()?;
            let value = value.cast::<PyString>()?.to_str()?;
            if name.eq_ignore_ascii_case("content-length") {
                continue; // the server frames the body itself (as `Response::header` does)
            }
            list.push((name.to_owned(), value.to_owned()));
        }
        this.progress().pending = Some((code, list));
        let write = Py::new(
            py,
            Write {
                start: slf.clone().unbind(),
            },
        )?;
        Ok(write.into_any())
    }
}

/// The `write(data)` callable that `start_response` returns.
#[pyclass(freelist = 8, module = "oxloop._oxloop")]
pub struct Write {
    start: Py<StartResponse>,
}

#[pymethods]
impl Write {
    fn __call__(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = data.py();
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        self.start.get().push(py, bytes.as_bytes().to_vec())
    }
}

/// A request that a green task runs: calling it runs the application (once).
#[pyclass(frozen, module = "oxloop._oxloop")]
pub struct GreenRequest {
    worker: Arc<Worker>,
    job: Mutex<Option<Job>>,
}

#[pymethods]
impl GreenRequest {
    /// Runs the application for the request and hands its response to the loop.
    fn __call__(&self, py: Python<'_>) {
        let job = self.job.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(job) = job {
            self.worker.run(py, job);
        }
    }
}

impl Worker {
    /// Runs one request on this worker thread (or green task).
    fn run(&self, py: Python<'_>, job: Job) {
        let start = match Py::new(
            py,
            StartResponse {
                exchange: job.exchange.clone(),
                progress: Mutex::new(Progress::default()),
            },
        ) {
            Ok(s) => s,
            Err(err) => {
                err.write_unraisable(py, None);
                return;
            }
        };
        let mut iterable: Option<Bound<'_, PyAny>> = None;
        let result = (|| -> PyResult<()> {
            let result = self.app.bind(py).call1((job.environ.bind(py), &start))?;
            iterable = Some(result.clone());
            self.respond(py, start.get(), &result)
        })();
        // A plain list or tuple has no `close` (asking would raise and catch an
        // `AttributeError` per request).
        let plain = |i: &Bound<'_, PyAny>| {
            i.is_exact_instance_of::<PyList>() || i.is_exact_instance_of::<PyTuple>()
        };
        if let Some(iterable) = iterable.filter(|i| !plain(i)) {
            if let Ok(close) = iterable.getattr(intern!(py, "close")) {
                if let Err(err) = close.call0() {
                    self.log(py, "Exception in WSGI response close()", &err);
                }
            }
        }
        let mut s = job.exchange.lock();
        if let Err(err) = result {
            if !s.disconnected {
                drop(s);
                self.log(py, "Exception in WSGI application", &err);
                s = job.exchange.lock();
            }
            if s.head.is_none() && !start.get().progress().sent {
                s.failed = true;
            } else {
                s.aborted = true;
            }
        }
        if s.head.is_none() && !s.failed {
            // The application sent no body bytes: hand over its head now.
            match start.get().take_head() {
                Ok(head) => s.head = head,
                Err(err) => {
                    drop(s);
                    self.log(py, "Exception in WSGI application", &err);
                    s = job.exchange.lock();
                    s.failed = true;
                }
            }
        }
        s.output_done = true;
        Exchange::wake_loop(&mut s);
    }

    fn log(&self, py: Python<'_>, message: &str, err: &PyErr) {
        let kwargs = PyDict::new(py);
        let logged = kwargs
            .set_item(intern!(py, "exc_info"), err.value(py))
            .and_then(|()| self.logger.bind(py).call((message,), Some(&kwargs)));
        if let Err(e) = logged {
            e.write_unraisable(py, None);
        }
    }

    /// Sends what the application returned.
    fn respond(
        &self,
        py: Python<'_>,
        start: &StartResponse,
        result: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        // A list or tuple is the whole body, known now: one `Content-Length` response
        // (unless `write()` already started a streamed one).
        if !start.progress().sent {
            if let Ok(list) = result.cast::<PyList>() {
                return start.finish_whole(Some(Whole::Bytes(join(list.iter())?)));
            }
            if let Ok(tuple) = result.cast::<PyTuple>() {
                return start.finish_whole(Some(Whole::Bytes(join(tuple.iter())?)));
            }
            if result.is_instance(self.file_wrapper.bind(py))? {
                if let Some(file) = regular_file(result)? {
                    return start.finish_whole(Some(file));
                }
            }
        }
        for piece in result.try_iter()? {
            let piece = piece?;
            let bytes = piece
                .cast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("a WSGI response must yield bytes"))?;
            if !bytes.as_bytes().is_empty() {
                start.push(py, bytes.as_bytes().to_vec())?;
            }
        }
        start.take_head().map(|head| {
            if let Some(head) = head {
                start.exchange.lock().head = Some(head);
            }
        })
    }
}

fn join<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>) -> PyResult<Vec<u8>> {
    let mut body = Vec::new();
    for item in items {
        let bytes = item
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("a WSGI response must yield bytes"))?;
        body.extend_from_slice(bytes.as_bytes());
    }
    Ok(body)
}

/// The open regular file behind a `wsgi.file_wrapper`, from its current position.
fn regular_file(wrapper: &Bound<'_, PyAny>) -> PyResult<Option<Whole>> {
    let py = wrapper.py();
    let filelike = wrapper.getattr(intern!(py, "filelike"))?;
    let Ok(fileno) = filelike.call_method0(intern!(py, "fileno")) else {
        return Ok(None);
    };
    let fd: i32 = fileno.extract()?;
    let offset: u64 = filelike.call_method0(intern!(py, "tell"))?.extract()?;
    let mut file = ffi::duplicate_file(fd).map_err(crate::loop_core::os_error)?;
    let meta = file.metadata().map_err(crate::loop_core::os_error)?;
    if !meta.is_file() {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(crate::loop_core::os_error)?;
    let len = meta.len().saturating_sub(offset);
    Ok(Some(Whole::File(file, len)))
}

/// Marks the exchange as disconnected when the handler is dropped (the connection
/// closed) before the response was complete, so that the worker stops.
struct DisconnectOnDrop(Option<Arc<Exchange>>);

impl Drop for DisconnectOnDrop {
    fn drop(&mut self) {
        let Some(exchange) = self.0.take() else {
            return; // answered: the response pump watches the connection now
        };
        let mut s = exchange.lock();
        if !(s.output_done && s.output.is_empty()) {
            s.disconnected = true;
            s.input_broken = true;
        }
        drop(s);
        exchange.notify();
    }
}

/// The request's environ (on the loop's thread).
fn environ<'py>(
    py: Python<'py>,
    app: &App,
    req: &Request,
    input: Py<WsgiInput>,
) -> PyResult<Bound<'py, PyDict>> {
    // The copy has every key; only the values that differ from the placeholders are
    // set, in place.
    let env = app.base.bind(py).copy()?;
    if let Some(method) = web::method_unless_get(py, req) {
        env.set_item(intern!(py, "REQUEST_METHOD"), method)?;
    }
    let target = req.target().as_bytes();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(path).into();
    let path = match app.root_path.as_deref() {
        Some(root) if !root.is_empty() => match decoded.strip_prefix(root) {
            Some(rest) if rest.is_empty() || rest.starts_with(b"/") => rest,
            _ => &decoded,
        },
        _ => &decoded,
    };
    // Non-ASCII bytes in the target are passed on one character per byte, as
    // PEP 3333 has every environ string.
    let path_info = ffi::latin1_str(py, path)?;
    let raw_uri = if path == target {
        path_info.clone() // the usual "/...": no query, nothing decoded or stripped
    } else {
        ffi::latin1_str(py, target)?
    };
    env.set_item(intern!(py, "PATH_INFO"), path_info)?;
    env.set_item(intern!(py, "RAW_URI"), raw_uri)?;
    if !query.is_empty() {
        env.set_item(intern!(py, "QUERY_STRING"), ffi::latin1_str(py, query)?)?;
    }
    if req.version() == Version::Http10 {
        env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.0"))?;
    }
    match req.peer_addr() {
        Some(peer) => {
            let client = app.client.get(py, peer, |peer| {
                let addr = PyString::new(py, &peer.ip().to_string());
                let port = PyString::new(py, &peer.port().to_string());
                PyTuple::new(py, [addr, port])
            })?;
            env.set_item(intern!(py, "REMOTE_ADDR"), client.get_borrowed_item(0)?)?;
            env.set_item(intern!(py, "REMOTE_PORT"), client.get_borrowed_item(1)?)?;
        }
        None => {
            env.del_item(intern!(py, "REMOTE_ADDR"))?;
            env.del_item(intern!(py, "REMOTE_PORT"))?;
        }
    }
    for (name, value) in req.headers() {
        if name.eq_ignore_ascii_case("content-type") {
            env.set_item(intern!(py, "CONTENT_TYPE"), ffi::latin1_str(py, value)?)?;
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            env.set_item(intern!(py, "CONTENT_LENGTH"), ffi::latin1_str(py, value)?)?;
            continue;
        }
        if name.contains('_') {
            // `X_Forwarded` and `X-Forwarded` would both become HTTP_X_FORWARDED:
            // names with underscores are dropped, so one cannot pass for the other.
            continue;
        }
        let key = app.header_keys.get(py, name.as_bytes(), |_| {
            let mut key = String::with_capacity(5 + name.len());
            key.push_str("HTTP_");
            key.extend(name.chars().map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            }));
            // Not interned: CPython 3.12 never frees an interned string, and a key's
            // hash is kept in the string object anyway.
            Ok(PyString::new(py, &key))
        })?;
        match env.get_item(&key)? {
            Some(old) => {
                let mut joined = old.cast::<PyString>()?.to_str()?.to_owned();
                joined.push(',');
                joined.extend(value.iter().map(|&b| b as char));
                env.set_item(&key, joined)?;
            }
            None => env.set_item(&key, ffi::latin1_str(py, value)?)?,
        }
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(env)
}

/// `base` (the environ keys that never change) with the per-request keys added, each
/// with the value most requests have, in a dict whose table has room for about 20
/// more keys (the request's headers): CPython's `dict.copy()` keeps a table's size, so
/// a request's copy takes its `HTTP_*` keys without growing, and its other keys are
/// replaced in place.
fn roomy_base<'py>(base: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let py = base.py();
    let env = PyDict::new(py);
    for (key, value) in base.iter() {
        env.set_item(key, value)?;
    }
    for (key, value) in [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", ""),
        ("RAW_URI", ""),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", ""),
        ("REMOTE_PORT", ""),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
    ] {
        env.set_item(PyString::intern(py, key), value)?;
    }
    env.set_item(intern!(py, "wsgi.input"), py.None())?;
    // A key more than a 32-slot table holds (21) grows the table to 64 slots; deleting
    // it again leaves that size, and `dict.copy()` copies a table as it is while at
    // most a third of its entries are deleted ones.
    let spares: Vec<String> = (env.len()..22).map(|i| format!(" spare {i}")).collect();
    for key in &spares {
        env.set_item(key, py.None())?;
    }
    for key in &spares {
        env.del_item(key)?;
    }
    Ok(env)
}

async fn pump_body(mut body: RequestBody, exchange: Arc<Exchange>) {
    loop {
        poll_fn(|cx| {
            let mut s = exchange.lock();
            if s.input_queued < HIGH_WATER || s.disconnected || exchange.inline {
                return Poll::Ready(());
            }
            s.input_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let piece = body.chunk().await;
        let mut s = exchange.lock();
        match piece {
            Ok(Some(data)) => {
                s.input_queued += data.len();
                s.input.push_back(data);
            }
            Ok(None) => s.input_done = true,
            Err(_) => s.input_broken = true,
        }
        let more = !(s.input_done || s.input_broken || s.disconnected);
        drop(s);
        exchange.notify();
        if !more {
            return;
        }
    }
}

/// Sends a streamed response's pieces as the worker produces them.
async fn pump_response(mut writer: oxloop_http::BodyWriter, exchange: Arc<Exchange>) {
    loop {
        let piece = poll_fn(|cx| {
            let mut s = exchange.lock();
            if let Some(piece) = s.output.pop_front() {
                s.output_queued -= piece.len();
                return Poll::Ready(Some(piece));
            }
            if s.output_done {
                return Poll::Ready(None);
            }
            s.output_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        exchange.notify();
        let Some(piece) = piece else {
            if exchange.lock().aborted {
                writer.abort();
            }
            return;
        };
        if writer.send(piece).await.is_err() {
            let mut s = exchange.lock();
            s.disconnected = true;
            drop(s);
            exchange.notify();
            return;
        }
    }
}

impl App {
    async fn handle(self: Rc<App>, mut req: Request) -> Response {
        let mut body = req.take_body();
        let job = running::with_gil(|py| -> PyResult<Job> {
            let green_wait = match &self.runner {
                Runner::Threads(_) | Runner::Inline(_) => None,
                Runner::Green { make_wait, .. } => Some(make_wait.clone_ref(py)),
            };
            let exchange = Arc::new(Exchange {
                state: Mutex::new(State {
                    input_done: body.is_none(),
                    ..State::default()
                }),
                changed: Condvar::new(),
                green_wait,
                inline: matches!(self.runner, Runner::Inline(_)),
            });
            let input = Py::new(
                py,
                WsgiInput {
                    exchange: exchange.clone(),
                    buffer: Mutex::new(Vec::new()),
                },
            )?;
            let environ = environ(py, &self, &req, input)?.unbind();
            Ok(Job { environ, exchange })
        });
        let job = match job {
            Ok(job) => job,
            Err(err) => {
                running::with_gil(|py| err.write_unraisable(py, None));
                return Response::error(500).close();
            }
        };
        let exchange = job.exchange.clone();
        match &self.runner {
            Runner::Threads(jobs) => jobs.push(job),
            Runner::Inline(worker) => {
                // The whole body first (no back-pressure here: within the server's
                // body limit), so that reading it never waits for the loop.
                if let Some(body) = body.take() {
                    pump_body(body, exchange.clone()).await;
                }
                running::with_gil(|py| worker.run(py, job));
            }
            Runner::Green { worker, start, .. } => {
                let started = running::with_gil(|py| -> PyResult<()> {
                    let request = GreenRequest {
                        worker: worker.clone(),
                        job: Mutex::new(Some(job)),
                    };
                    start.call1(py, (Py::new(py, request)?,))?;
                    Ok(())
                });
                if let Err(err) = started {
                    running::with_gil(|py| err.write_unraisable(py, None));
                    return Response::error(503).close();
                }
            }
        }
        let mut guard = DisconnectOnDrop(Some(exchange.clone()));
        if let Some(body) = body {
            drop(self.ev.spawn(pump_body(body, exchange.clone())));
        }
        // Wait for the head (with the whole body, or the first piece of a stream).
        let (head, whole, failed) = poll_fn(|cx| {
            let mut s = exchange.lock();
            if s.failed {
                return Poll::Ready((None, None, true));
            }
            if s.head.is_some() && (s.output_done || !s.output.is_empty()) {
                let whole = s.whole.take();
                return Poll::Ready((s.head.take(), whole, false));
            }
            if s.output_done {
                return Poll::Ready((None, None, true));
            }
            s.output_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some((status, headers)) = head.filter(|_| !failed) else {
            return Response::error(500).close();
        };
        let done = exchange.lock().output_done;
        let answer = match whole {
            Some(Whole::Bytes(bytes)) => {
                web::with_headers(Response::new(status).body(bytes), headers)
            }
            Some(Whole::File(file, len)) => {
                web::with_headers(Response::file(file, len).status_code(status), headers)
            }
            None if done && !exchange.lock().aborted => {
                let mut s = exchange.lock();
                let mut bytes = Vec::with_capacity(s.output_queued);
                for piece in s.output.drain(..) {
                    bytes.extend_from_slice(&piece);
                }
                s.output_queued = 0;
                web::with_headers(Response::new(status).body(bytes), headers)
            }
            None => {
                let (head, writer) = Response::stream(status);
                drop(self.ev.spawn(pump_response(writer, exchange.clone())));
                web::with_headers(head, headers)
            }
        };
        guard.0 = None;
        answer
    }
}

/// The queue between the loop and the worker threads.
struct JobQueue {
    state: Mutex<Queued>,
    /// Idle workers wait here.
    available: Condvar,
}

struct Queued {
    jobs: VecDeque<Job>,
    /// Workers waiting on `available`: a push wakes one only when one waits, so a
    /// busy pool costs the loop no system call per request.
    idle: usize,
    /// The server is gone: workers end.
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The loop's end of the queue; dropping it (with the server) ends the workers.
struct Jobs(Arc<JobQueue>);

impl Jobs {
    fn push(&self, job: Job) {
        let mut q = self.0.lock();
        q.jobs.push_back(job);
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.0.available.notify_one();
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.available.notify_all();
    }
}

/// Starts `threads` worker threads that run requests until the server is gone.
///
/// A worker attaches to the interpreter once (its thread state lives as long as the
/// thread: attaching per request made a new one each time, with its own stack
/// mapping) and gives up the GIL only to wait for work: it runs queued requests one
/// after the other while any are queued, so a burst of requests costs one hand-over
/// of the GIL each way, not one per request. A request that blocks (releasing the
/// GIL, as `time.sleep` and socket calls do) lets another worker take the next one.
fn thread_pool(threads: usize, worker: Arc<Worker>) -> PyResult<Jobs> {
    let queue = Arc::new(JobQueue {
        state: Mutex::new(Queued {
            jobs: VecDeque::new(),
            idle: 0,
            closed: false,
        }),
        available: Condvar::new(),
    });
    for i in 0..threads.max(1) {
        let queue = queue.clone();
        let worker = worker.clone();
        std::thread::Builder::new()
            .name(format!("oxloop-wsgi-{i}"))
            .spawn(move || {
                Python::attach(|py| loop {
                    let next = queue.lock().jobs.pop_front();
                    let job = match next {
                        Some(job) => job,
                        None => {
                            let job = py.detach(|| {
                                let mut q = queue.lock();
                                loop {
                                    if let Some(job) = q.jobs.pop_front() {
                                        return Some(job);
                                    }
                                    if q.closed {
                                        return None;
                                    }
                                    q.idle += 1;
                                    q = queue.available.wait(q).unwrap_or_else(|e| e.into_inner());
                                    q.idle -= 1;
                                }
                            });
                            let Some(job) = job else {
                                return; // the server is gone
                            };
                            job
                        }
                    };
                    worker.run(py, job);
                })
            })
            .map_err(crate::loop_core::os_error)?;
    }
    Ok(Jobs(queue))
}

/// Serves the WSGI application `app` on `event_loop` at `host:port`, calling it on
/// `threads` worker threads (0: on the loop's own thread, each request's whole body
/// read first), or, when `green` is `(start, make_wait)`, in green tasks
/// on the loop's thread (`start(request)` starts a task that calls `request()` at
/// once, until it ends or waits;
/// `make_wait()` makes the object through which a waiting task switches to the loop,
/// with `wait()` and `wake()`). `base` holds the environ keys that never change.
#[pyfunction]
#[pyo3(signature = (event_loop, app, host, port, threads, logger, root_path, file_wrapper, base, options=None, green=None))]
#[allow(clippy::too_many_arguments)]
pub fn _serve_wsgi(
    event_loop: &Bound<'_, LoopCore>,
    app: Py<PyAny>,
    host: &str,
    port: u16,
    threads: usize,
    logger: Py<PyAny>,
    root_path: &str,
    file_wrapper: Py<PyAny>,
    base: Bound<'_, PyDict>,
    options: Option<&Bound<'_, PyDict>>,
    green: Option<(Py<PyAny>, Py<PyAny>)>,
) -> PyResult<WebServer> {
    let py = event_loop.py();
    let config = web::config(options)?;
    let ev = event_loop.get().event_loop(py)?;
    let worker = Arc::new(Worker {
        app,
        logger,
        file_wrapper,
    });
    let runner = match green {
        Some((start, make_wait)) => Runner::Green {
            worker,
            start,
            make_wait,
        },
        None if threads == 0 => Runner::Inline(worker),
        None => Runner::Threads(thread_pool(threads, worker)?),
    };
    let root_path = root_path.trim_end_matches('/').to_owned();
    base.set_item("SCRIPT_NAME", &root_path)?;
    let root_path = root_path
        .chars()
        .map(|c| u8::try_from(c).ok())
        .collect::<Option<Vec<u8>>>();
    let slot: Rc<std::cell::RefCell<Option<Rc<App>>>> = Rc::new(std::cell::RefCell::new(None));
    let for_handler = slot.clone();
    let server = web::bind(event_loop, host, port, |ev, addr| {
        HttpServer::bind_async(ev, addr, config, move |req| {
            let app = for_handler.borrow().clone().expect("set before serving");
            app.handle(req)
        })
    })?;
    let addr = server.local_addr();
    base.set_item("SERVER_NAME", addr.ip().to_string())?;
    base.set_item("SERVER_PORT", addr.port().to_string())?;
    *slot.borrow_mut() = Some(Rc::new(App {
        ev,
        runner,
        base: roomy_base(&base)?.unbind(),
        root_path,
        client: LastClient::new(),
        header_keys: HeaderNames::new(),
    }));
    Ok(server)
}

//! ASGI `websocket` scopes (RFC 6455) on oxloop-http, on the loop's own thread.
//!
//! A request with `Upgrade: websocket` becomes a `websocket` scope. The handshake
//! headers are checked here (400, or 426 for another protocol version) before the
//! application is called; its first `receive()` gives `websocket.connect`, and its
//! answer decides the HTTP response: `websocket.accept` gives `101 Switching
//! Protocols` through oxloop-http's `Response::upgrade` (after which a [`Session`]
//! owns the connection's bytes), `websocket.close` gives 403, a denial response
//! (`websocket.http.response.*`) is sent as it is, and an application that fails or
//! returns first gives 500.
//!
//! Frames are tungstenite's: its `WebSocketContext` (the RFC 6455 protocol layer
//! without any socket) reads from and writes to a [`Wire`], an in-memory stream that
//! the transport fills and empties. tungstenite answers pings, reassembles fragmented
//! messages, checks masking, reserved bits, opcodes, control frame rules, UTF-8 and
//! the size limit, and runs the close handshake; this module maps its errors to close
//! codes (1002 protocol, 1007 invalid UTF-8, 1009 too big) and its messages to ASGI
//! events. An open connection is pinged every `ws_ping_interval`; a pong that does
//! not come within `ws_ping_timeout` closes it with 1011, so a vanished client does
//! not hold its connection for ever.

use crate::asgi::{self, App};
use crate::running::{self, LoopCell, LoopShared};
use oxloop::protocol::Transport;
use oxloop::Handle;
use oxloop_http::{Request, Response, Upgraded, Version};
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;
use tungstenite::error::Error as WsError;
use tungstenite::error::ProtocolError;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Message, Role, WebSocketConfig, WebSocketContext};

/// How long a close frame we sent waits for the client's before the connection is
/// cut.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Received messages the application has not taken yet, in bytes, above which the
/// socket is no longer read (so a client cannot fill the server's memory).
const INBOX_HIGH_WATER: usize = 1024 * 1024;

/// The WebSocket settings of a server (`oxloop.web`'s `ws_*` keyword arguments).
#[derive(Clone, Copy)]
pub(crate) struct Settings {
    /// The largest message (after reassembly) or frame accepted; larger ones close
    /// the connection with 1009.
    max_message_bytes: usize,
    /// How long an open connection goes between the server's pings (`None`: no
    /// pings).
    ping_interval: Option<Duration>,
    /// How long a ping waits for the client's pong before the connection is closed
    /// with 1011 (`None`: for ever).
    ping_timeout: Option<Duration>,
}

impl Settings {
    /// Takes the `ws_*` settings out of `options` (the rest are oxloop-http's).
    pub(crate) fn take_from(options: Option<&Bound<'_, PyDict>>) -> PyResult<Settings> {
        let mut settings = Settings {
            max_message_bytes: 16 * 1024 * 1024,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
        };
        if let Some(options) = options {
            let py = options.py();
            let key = intern!(py, "ws_max_message_bytes");
            if let Some(value) = options.get_item(key)? {
                settings.max_message_bytes = value.extract()?;
                options.del_item(key)?;
            }
            for (name, slot) in [
                ("ws_ping_interval", &mut settings.ping_interval),
                ("ws_ping_timeout", &mut settings.ping_timeout),
            ] {
                if let Some(value) = options.get_item(name)? {
                    *slot = seconds_or_none(name, &value)?;
                    options.del_item(name)?;
                }
            }
        }
        Ok(settings)
    }

    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }
}

/// A duration in seconds (a positive number), or `None`.
fn seconds_or_none(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if value.is_none() {
        return Ok(None);
    }
    let seconds: f64 = value.extract()?;
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds or None, not {seconds}"
        ))),
    }
}

/// Whether `req` asks for a WebSocket (`Upgrade: websocket`).
pub(crate) fn is_upgrade(req: &Request) -> bool {
    req.header("upgrade")
        .is_some_and(|v| has_token(v, b"websocket"))
}

/// Whether the comma-separated header value holds `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Checks the opening handshake (RFC 6455 section 4.2.1); gives the
/// `Sec-WebSocket-Accept` value, or the response refusing the request.
fn check_handshake(req: &Request) -> Result<String, Response> {
    let bad = || Response::error(400).close();
    if req.method() != "GET" || req.version() != Version::Http11 {
        return Err(bad());
    }
    let connection_upgrade = req.headers().any(|(name, value)| {
        name.eq_ignore_ascii_case("connection") && has_token(value, b"upgrade")
    });
    if !connection_upgrade {
        return Err(bad());
    }
    if req.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Response::error(426)
            .header("Sec-WebSocket-Version", "13")
            .close());
    }
    let key = req.header("sec-websocket-key").map(<[u8]>::trim_ascii);
    match key {
        Some(key) if is_key(key) => Ok(derive_accept_key(key)),
        _ => Err(bad()),
    }
}

/// Whether `key` is 16 bytes in base64 (22 characters and `==`).
fn is_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The connection's bytes as a stream for tungstenite: what arrived and was not yet
/// parsed, and what was written and not yet handed to the transport.
#[derive(Default)]
struct Wire {
    input: Vec<u8>,
    /// Where unread input starts.
    read_at: usize,
    /// The client shut its writing side: reads end once `input` is used up.
    eof: bool,
    out: Vec<u8>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.read_at..];
        if rest.is_empty() {
            self.input.clear();
            self.read_at = 0;
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read_at += n;
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a WebSocket connection stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// The application has not answered the handshake yet.
    Handshake,
    /// Accepted: messages flow (the transport arrives with the `101`).
    Open,
    /// A close frame went out (from the application, an error or a shutdown); the
    /// client's answer is awaited.
    Closing,
    /// Over; `receive()` gives `websocket.disconnect`.
    Closed,
}

/// The application's answer to the handshake, for the HTTP handler.
enum Decision {
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(String, String)>,
    },
    Respond(Response),
}

/// A denial response (`websocket.http.response.*`) being assembled.
struct Denial {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// One WebSocket connection, from the handshake to the end.
struct Session {
    phase: Phase,
    ctx: WebSocketContext,
    wire: Wire,
    transport: Option<Transport>,
    decision: Option<Decision>,
    /// The HTTP handler waiting for `decision`.
    handler_waker: Option<Waker>,
    /// A denial response being assembled.
    denial: Option<Denial>,
    connect_delivered: bool,
    /// Received messages not yet taken by `receive()`.
    inbox: VecDeque<Message>,
    inbox_bytes: usize,
    reading_paused: bool,
    /// The code and reason of the close, for `websocket.disconnect`.
    close: Option<(u16, String)>,
    /// The application sent `websocket.close` (sending more is its error).
    app_closed: bool,
    app_done: bool,
    /// A `receive()` waiting for a message or the end.
    receive_waiter: Option<Py<PyAny>>,
    /// A `send()` waiting for the transport (its buffer to drain, or the switch).
    send_waiter: Option<Py<PyAny>>,
    close_timer: Option<Handle>,
    ping_interval: Option<Duration>,
    ping_timeout: Option<Duration>,
    /// The next keep-alive ping.
    ping_timer: Option<Handle>,
    /// The deadline of the oldest ping not yet answered by a pong.
    pong_timer: Option<Handle>,
}

type SessionRef = Rc<RefCell<Session>>;

impl Session {
    fn new(settings: Settings) -> Session {
        Session {
            phase: Phase::Handshake,
            ctx: WebSocketContext::new(Role::Server, Some(settings.config())),
            wire: Wire::default(),
            transport: None,
            decision: None,
            handler_waker: None,
            denial: None,
            connect_delivered: false,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            reading_paused: false,
            close: None,
            app_closed: false,
            app_done: false,
            receive_waiter: None,
            send_waiter: None,
            close_timer: None,
            ping_interval: settings.ping_interval,
            ping_timeout: settings.ping_timeout,
            ping_timer: None,
            pong_timer: None,
        }
    }

    fn decide(&mut self, decision: Decision) {
        self.decision = Some(decision);
        if let Some(w) = self.handler_waker.take() {
            w.wake();
        }
    }

    /// Hands what was written to the transport (kept until there is one).
    fn flush_out(&mut self) {
        if self.wire.out.is_empty() {
            return;
        }
        if let Some(t) = &self.transport {
            let _ = t.write(&self.wire.out);
            self.wire.out.clear();
        }
    }

    /// Reads the frames that arrived.
    fn process(&mut self) {
        loop {
            match self.ctx.read(&mut self.wire) {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    if !self.app_done {
                        self.inbox_bytes += message.len();
                        self.inbox.push_back(message);
                    }
                }
                Ok(Message::Close(frame)) => {
                    // tungstenite queued the answer; the next read sends it (and
                    // reports the end once the handshake is complete).
                    if self.close.is_none() {
                        self.close = Some(match frame {
                            Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                            None => (1005, String::new()),
                        });
                    }
                }
                Ok(Message::Pong(_)) => {
                    if let Some(timer) = self.pong_timer.take() {
                        timer.cancel();
                    }
                }
                Ok(_) => {} // pings are answered by tungstenite
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.finish();
                    break;
                }
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    self.close.get_or_insert((1006, String::new()));
                    self.finish();
                    break;
                }
                Err(WsError::Capacity(_)) => {
                    self.fail(1009, "message too big");
                    break;
                }
                Err(WsError::Utf8(_)) => {
                    self.fail(1007, "invalid UTF-8");
                    break;
                }
                Err(WsError::Protocol(_)) => {
                    self.fail(1002, "protocol error");
                    break;
                }
                Err(_) => {
                    self.fail(1011, "internal error");
                    break;
                }
            }
        }
        self.flush_out();
        if self.inbox_bytes > INBOX_HIGH_WATER && !self.reading_paused {
            if let Some(t) = &self.transport {
                t.pause_reading();
                self.reading_paused = true;
            }
        }
    }

    /// Fails the connection: sends a close frame with `code` and closes the socket.
    fn fail(&mut self, code: u16, reason: &str) {
        self.close.get_or_insert((code, reason.to_owned()));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ctx.close(&mut self.wire, Some(frame));
        self.flush_out();
        self.finish();
    }

    /// Starts the close handshake with `code` (the application's close, its end, a
    /// shutdown); the client has [`CLOSE_TIMEOUT`] to answer.
    fn start_close(&mut self, code: u16, reason: &str) {
        if self.phase != Phase::Open {
            return;
        }
        self.phase = Phase::Closing;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if let Err(err) = self.ctx.close(&mut self.wire, Some(frame)) {
            if !matches!(err, WsError::ConnectionClosed) {
                self.close.get_or_insert((1006, String::new()));
            }
            self.flush_out();
            self.finish();
            return;
        }
        self.flush_out();
        self.arm_close_timer();
    }

    fn arm_close_timer(&mut self) {
        if self.close_timer.is_some() {
            return;
        }
        if let Some(t) = &self.transport {
            let for_timer = t.clone();
            self.close_timer = Some(t.call_later(CLOSE_TIMEOUT, move || for_timer.abort()));
        }
    }

    /// The connection is over: closes the socket once what is written went out.
    fn finish(&mut self) {
        self.flush_out();
        self.phase = Phase::Closed;
        self.close.get_or_insert((1006, String::new()));
        for timer in [
            &mut self.close_timer,
            &mut self.ping_timer,
            &mut self.pong_timer,
        ] {
            if let Some(timer) = timer.take() {
                timer.cancel();
            }
        }
        if let Some(t) = &self.transport {
            t.close();
        }
    }

    /// The next event for `receive()`, if there is one now.
    fn next_event<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !self.connect_delivered {
            self.connect_delivered = true;
            return event(py, intern!(py, "websocket.connect")).map(Some);
        }
        if let Some(message) = self.inbox.pop_front() {
            self.inbox_bytes -= message.len();
            if self.reading_paused && self.inbox_bytes < INBOX_HIGH_WATER / 2 {
                self.reading_paused = false;
                if let Some(t) = &self.transport {
                    t.resume_reading();
                }
            }
            let msg = PyDict::new(py);
            msg.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
            match message {
                Message::Text(text) => {
                    msg.set_item(intern!(py, "text"), PyString::new(py, text.as_str()))?
                }
                other => {
                    msg.set_item(intern!(py, "bytes"), PyBytes::new(py, &other.into_data()))?
                }
            }
            return Ok(Some(msg.into_any()));
        }
        if self.phase == Phase::Closed {
            let (code, reason) = self.close.clone().unwrap_or((1006, String::new()));
            let msg = PyDict::new(py);
            msg.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
            msg.set_item(intern!(py, "code"), code)?;
            msg.set_item(intern!(py, "reason"), reason)?;
            return Ok(Some(msg.into_any()));
        }
        Ok(None)
    }
}

/// Schedules the next keep-alive ping of an open connection (the timer holds the
/// session weakly, so it keeps nothing alive).
fn schedule_ping(session: &SessionRef) {
    let mut s = session.borrow_mut();
    let (Some(interval), Some(t)) = (s.ping_interval, &s.transport) else {
        return;
    };
    if s.phase != Phase::Open || s.ping_timer.is_some() {
        return;
    }
    let weak = Rc::downgrade(session);
    let timer = t.call_later(interval, move || ping(&weak));
    s.ping_timer = Some(timer);
}

/// Sends a keep-alive ping and starts waiting for its pong (unless an older ping
/// is still waiting for one).
fn ping(weak: &Weak<RefCell<Session>>) {
    let Some(session) = weak.upgrade() else {
        return;
    };
    {
        let mut guard = session.borrow_mut();
        let s = &mut *guard;
        s.ping_timer = None;
        if s.phase != Phase::Open {
            return;
        }
        let sent = s
            .ctx
            .write(&mut s.wire, Message::Ping(Default::default()))
            .and_then(|()| s.ctx.flush(&mut s.wire));
        s.flush_out();
        if sent.is_ok() && s.pong_timer.is_none() {
            if let (Some(timeout), Some(t)) = (s.ping_timeout, &s.transport) {
                let weak = weak.clone();
                s.pong_timer = Some(t.call_later(timeout, move || pong_missed(&weak)));
            }
        }
    }
    schedule_ping(&session);
}

/// No pong came within the ping timeout: the connection is closed with 1011. While
/// reading is paused (the application is behind), the pong may be waiting unread in
/// the socket, so the wait starts again instead.
fn pong_missed(weak: &Weak<RefCell<Session>>) {
    let Some(session) = weak.upgrade() else {
        return;
    };
    {
        let mut s = session.borrow_mut();
        s.pong_timer = None;
        if s.phase != Phase::Open {
            return;
        }
        if s.reading_paused {
            if let (Some(timeout), Some(t)) = (s.ping_timeout, &s.transport) {
                let weak = weak.clone();
                s.pong_timer = Some(t.call_later(timeout, move || pong_missed(&weak)));
            }
            return;
        }
        s.fail(1011, "keepalive ping timeout");
    }
    wake_waiters(&session);
}

fn event<'py>(py: Python<'py>, kind: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let msg = PyDict::new(py);
    msg.set_item(intern!(py, "type"), kind)?;
    Ok(msg.into_any())
}

fn closed_error() -> PyErr {
    PyConnectionError::new_err("the WebSocket is closed")
}

/// Completes the waiting `receive()` and `send()` when they can go on (outside the
/// session's borrow: completing a future runs no Python code now, but stays safe if
/// it did).
fn wake_waiters(session: &SessionRef) {
    running::with_gil(|py| {
        let (receive, send) = {
            let mut s = session.borrow_mut();
            let receive = match s.receive_waiter.take() {
                Some(fut) => match s.next_event(py) {
                    Ok(Some(msg)) => Some((fut, Ok(msg))),
                    Ok(None) => {
                        s.receive_waiter = Some(fut);
                        None
                    }
                    Err(err) => Some((fut, Err(err))),
                },
                None => None,
            };
            let send = match s.phase {
                Phase::Closed => s.send_waiter.take().map(|f| (f, Err(closed_error()))),
                _ if s.transport.as_ref().is_some_and(|t| !t.is_writing_paused()) => s
                    .send_waiter
                    .take()
                    .map(|f| (f, Ok(py.None().into_bound(py)))),
                _ => None,
            };
            (receive, send)
        };
        for (fut, value) in receive.into_iter().chain(send) {
            asgi::resolve(py, fut.bind(py), value);
        }
    });
}

/// The session as oxloop-http's [`Upgraded`] protocol after the `101`.
struct Connection(SessionRef);

impl Upgraded for Connection {
    fn connected(&mut self, transport: Transport, buffered: &[u8]) {
        {
            let mut s = self.0.borrow_mut();
            s.transport = Some(transport);
            s.flush_out();
            match s.phase {
                Phase::Closing => s.arm_close_timer(),
                Phase::Closed => s.finish(),
                _ => {}
            }
        }
        schedule_ping(&self.0);
        self.data_received(buffered);
        wake_waiters(&self.0);
    }

    fn data_received(&mut self, data: &[u8]) {
        {
            let mut s = self.0.borrow_mut();
            if s.phase == Phase::Closed {
                return;
            }
            s.wire.input.extend_from_slice(data);
            s.process();
        }
        wake_waiters(&self.0);
    }

    fn eof_received(&mut self) -> bool {
        {
            let mut s = self.0.borrow_mut();
            s.wire.eof = true;
            if s.phase != Phase::Closed {
                s.process();
            }
        }
        wake_waiters(&self.0);
        false
    }

    fn connection_lost(&mut self, _err: Option<io::Error>) {
        {
            let mut s = self.0.borrow_mut();
            s.transport = None;
            s.close.get_or_insert((1006, String::new()));
            s.finish();
        }
        wake_waiters(&self.0);
    }

    fn resume_writing(&mut self) {
        wake_waiters(&self.0);
    }

    fn shut_down(&mut self) {
        self.0
            .borrow_mut()
            .start_close(1001, "the server is shutting down");
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropped without `connected` (the connection ended before the switch):
        // the application learns that it is over.
        let ended = {
            let mut s = self.0.borrow_mut();
            if s.phase == Phase::Closed {
                false
            } else {
                s.close.get_or_insert((1006, String::new()));
                s.finish();
                true
            }
        };
        if ended {
            wake_waiters(&self.0);
        }
    }
}

/// The connection ended while the application was deciding on the handshake.
struct HandshakeGuard {
    session: SessionRef,
    answered: bool,
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        {
            let mut s = self.session.borrow_mut();
            s.close.get_or_insert((1006, String::new()));
            s.phase = Phase::Closed;
        }
        wake_waiters(&self.session);
    }
}

/// One connection's session and server, for the callables the application gets
/// (which only the loop's thread may use; see `running`).
struct Parts {
    session: SessionRef,
    app: Rc<App>,
}

/// The `receive` callable of a `websocket` scope.
#[pyclass(frozen, module = "oxloop._oxloop")]
pub struct WebSocketReceive {
    parts: LoopCell<Parts>,
    running: Arc<LoopShared>,
}

#[pymethods]
impl WebSocketReceive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.parts.get(py, &self.running)?.receive(py)
    }
}

/// The `send` callable of a `websocket` scope.
#[pyclass(frozen, module = "oxloop._oxloop")]
pub struct WebSocketSend {
    parts: LoopCell<Parts>,
    running: Arc<LoopShared>,
}

#[pymethods]
impl WebSocketSend {
    fn __call__(&self, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.parts.get(message.py(), &self.running)?.send(message)
    }
}

/// Called when the application's task is done.
#[pyclass(frozen, module = "oxloop._oxloop")]
pub struct WebSocketAppDone {
    parts: LoopCell<Parts>,
    running: Arc<LoopShared>,
}

#[pymethods]
impl WebSocketAppDone {
    fn __call__(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        self.parts.get(task.py(), &self.running)?.app_done(task)
    }
}

fn headers_of(message: &Bound<'_, PyDict>) -> PyResult<Vec<(String, String)>> {
    let py = message.py();
    let mut headers = Vec::new();
    if let Some(list) = message.get_item(intern!(py, "headers"))? {
        if list.is_none() {
            return Ok(headers);
        }
        for item in list.try_iter()? {
            let item = item?;
            let name = item.get_item(0)?;
            let value = item.get_item(1)?;
            headers.push((
                crate::web::header_text(name.cast::<PyBytes>()?.as_bytes()),
                crate::web::header_text(value.cast::<PyBytes>()?.as_bytes()),
            ));
        }
    }
    Ok(headers)
}

/// A message's optional string field (`None` when missing or `None`).
fn optional_str(
    message: &Bound<'_, PyDict>,
    key: &Bound<'_, PyString>,
) -> PyResult<Option<String>> {
    match message.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract()?)),
        _ => Ok(None),
    }
}

impl Parts {
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut s = self.session.borrow_mut();
        if s.receive_waiter.is_some() {
            return Err(PyRuntimeError::new_err(
                "receive() called while another receive() waits",
            ));
        }
        if let Some(msg) = s.next_event(py)? {
            return asgi::ready(py, Some(msg));
        }
        let fut = self
            .app
            .event_loop
            .call_method0(py, intern!(py, "create_future"))?;
        s.receive_waiter = Some(fut.clone_ref(py));
        Ok(fut)
    }

    fn send(&self, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = message.py();
        let message = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("an ASGI message must be a dict"))?;
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyTypeError::new_err("an ASGI message needs a 'type'"))?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        let done = || Ok(self.app.done.clone_ref(py));
        match kind {
            "websocket.send" => self.send_data(message),
            "websocket.accept" => {
                let subprotocol = optional_str(message, intern!(py, "subprotocol"))?;
                let headers = headers_of(message)?;
                let mut s = self.session.borrow_mut();
                self.check_handshake_phase(&s, kind)?;
                s.phase = Phase::Open;
                s.decide(Decision::Accept {
                    subprotocol,
                    headers,
                });
                done()
            }
            "websocket.close" => {
                let code: u16 = match message.get_item(intern!(py, "code"))? {
                    Some(v) if !v.is_none() => v.extract()?,
                    _ => 1000,
                };
                let reason = optional_str(message, intern!(py, "reason"))?.unwrap_or_default();
                let mut s = self.session.borrow_mut();
                match s.phase {
                    Phase::Handshake => {
                        self.check_handshake_phase(&s, kind)?;
                        s.close = Some((code, reason));
                        s.phase = Phase::Closed;
                        s.app_closed = true;
                        s.decide(Decision::Respond(Response::error(403).close()));
                    }
                    Phase::Open => {
                        s.app_closed = true;
                        s.start_close(code, &reason);
                    }
                    Phase::Closing | Phase::Closed if s.app_closed => {
                        return Err(PyRuntimeError::new_err("websocket.close sent twice"))
                    }
                    Phase::Closing | Phase::Closed => return Err(closed_error()),
                }
                drop(s);
                wake_waiters(&self.session);
                done()
            }
            "websocket.http.response.start" => {
                let status: u16 = message
                    .get_item(intern!(py, "status"))?
                    .ok_or_else(|| {
                        PyTypeError::new_err("websocket.http.response.start needs a 'status'")
                    })?
                    .extract()?;
                let headers = headers_of(message)?;
                let mut s = self.session.borrow_mut();
                self.check_handshake_phase(&s, kind)?;
                if s.denial.is_some() {
                    return Err(PyRuntimeError::new_err(
                        "websocket.http.response.start sent twice",
                    ));
                }
                s.denial = Some(Denial {
                    status,
                    headers,
                    body: Vec::new(),
                });
                done()
            }
            "websocket.http.response.body" => {
                let more = match message.get_item(intern!(py, "more_body"))? {
                    Some(v) => v.is_truthy()?,
                    None => false,
                };
                let body: Vec<u8> = match message.get_item(intern!(py, "body"))? {
                    Some(v) if !v.is_none() => v.extract()?,
                    _ => Vec::new(),
                };
                let mut s = self.session.borrow_mut();
                if s.phase != Phase::Handshake || s.decision.is_some() {
                    return Err(PyRuntimeError::new_err(format!(
                        "unexpected ASGI message {kind:?} after the handshake"
                    )));
                }
                let Some(denial) = s.denial.as_mut() else {
                    return Err(PyRuntimeError::new_err(
                        "websocket.http.response.body sent before websocket.http.response.start",
                    ));
                };
                denial.body.extend_from_slice(&body);
                if !more {
                    let denial = s.denial.take().expect("checked above");
                    let response =
                        crate::web::with_headers(Response::new(denial.status), denial.headers)
                            .body(denial.body)
                            .close();
                    s.close = Some((1000, String::new()));
                    s.phase = Phase::Closed;
                    s.app_closed = true;
                    s.decide(Decision::Respond(response));
                    drop(s);
                    wake_waiters(&self.session);
                }
                done()
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {other:?} for a WebSocket"
            ))),
        }
    }

    /// Fails unless the handshake is still undecided.
    fn check_handshake_phase(&self, s: &Session, kind: &str) -> PyResult<()> {
        if s.phase != Phase::Handshake || s.decision.is_some() {
            return Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {kind:?}: the handshake is already answered"
            )));
        }
        if s.denial.is_some() && kind != "websocket.http.response.body" {
            return Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {kind:?} during a denial response"
            )));
        }
        Ok(())
    }

    fn send_data(&self, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let py = message.py();
        let bytes = message
            .get_item(intern!(py, "bytes"))?
            .filter(|v| !v.is_none());
        let text = message
            .get_item(intern!(py, "text"))?
            .filter(|v| !v.is_none());
        let outgoing = match (bytes, text) {
            (Some(b), None) => Message::binary(b.extract::<Vec<u8>>()?),
            (None, Some(t)) => Message::text(t.cast::<PyString>()?.to_str()?),
            _ => {
                return Err(PyTypeError::new_err(
                    "websocket.send needs exactly one of 'bytes' and 'text'",
                ))
            }
        };
        let mut guard = self.session.borrow_mut();
        let s = &mut *guard;
        match s.phase {
            Phase::Open => {}
            Phase::Handshake => {
                return Err(PyRuntimeError::new_err(
                    "websocket.send before websocket.accept",
                ))
            }
            Phase::Closing if s.app_closed => {
                return Err(PyRuntimeError::new_err(
                    "websocket.send after websocket.close",
                ))
            }
            Phase::Closing | Phase::Closed => return Err(closed_error()),
        }
        if s.send_waiter.is_some() {
            return Err(PyRuntimeError::new_err(
                "send() called while another send() waits",
            ));
        }
        let sent = s
            .ctx
            .write(&mut s.wire, outgoing)
            .and_then(|()| s.ctx.flush(&mut s.wire));
        if sent.is_err() {
            s.fail(1011, "internal error");
            drop(guard);
            wake_waiters(&self.session);
            return Err(closed_error());
        }
        s.flush_out();
        if s.transport
            .as_ref()
            .is_none_or(Transport::is_writing_paused)
        {
            // Back-pressure: the application waits until the client reads (or, before
            // the `101` went out, until the connection is switched).
            let fut = self
                .app
                .event_loop
                .call_method0(py, intern!(py, "create_future"))?;
            s.send_waiter = Some(fut.clone_ref(py));
            return Ok(fut);
        }
        Ok(self.app.done.clone_ref(py))
    }

    fn app_done(&self, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = task.py();
        let cancelled = task.call_method0(intern!(py, "cancelled"))?.is_truthy()?;
        let failed = if cancelled {
            true
        } else {
            let exc = task.call_method0(intern!(py, "exception"))?;
            if !exc.is_none() {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "exc_info"), &exc)?;
                self.app
                    .logger
                    .bind(py)
                    .call(("Exception in ASGI application",), Some(&kwargs))?;
            }
            !exc.is_none()
        };
        let mut s = self.session.borrow_mut();
        s.app_done = true;
        s.inbox.clear();
        s.inbox_bytes = 0;
        match s.phase {
            Phase::Handshake if s.decision.is_none() => {
                if !failed {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "exc_info"), false)?;
                    self.app.logger.bind(py).call(
                        ("ASGI application returned without accepting or closing the WebSocket",),
                        Some(&kwargs),
                    )?;
                }
                s.phase = Phase::Closed;
                s.close.get_or_insert((1006, String::new()));
                s.decide(Decision::Respond(Response::error(500).close()));
            }
            Phase::Open if failed => s.start_close(1011, "internal error"),
            Phase::Open => s.start_close(1000, ""),
            _ => {}
        }
        if s.reading_paused {
            s.reading_paused = false;
            if let Some(t) = &s.transport {
                t.resume_reading();
            }
        }
        drop(s);
        wake_waiters(&self.session);
        Ok(())
    }
}

/// Builds the `websocket` scope and starts the application's task.
fn start(app: &Rc<App>, py: Python<'_>, req: &Request) -> PyResult<SessionRef> {
    let scope = app.scope(py, &app.websocket_scope, req)?;
    let subprotocols = PyList::empty(py);
    for (name, value) in req.headers() {
        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for offered in value.split(|&b| b == b',') {
                let offered = offered.trim_ascii();
                if !offered.is_empty() {
                    subprotocols.append(String::from_utf8_lossy(offered))?;
                }
            }
        }
    }
    scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
    scope.set_item(intern!(py, "extensions"), extensions)?;

    let session: SessionRef = Rc::new(RefCell::new(Session::new(app.websocket)));
    let parts = || {
        LoopCell::new(Parts {
            session: session.clone(),
            app: app.clone(),
        })
    };
    let receive = Py::new(
        py,
        WebSocketReceive {
            parts: parts(),
            running: app.running.clone(),
        },
    )?;
    let send = Py::new(
        py,
        WebSocketSend {
            parts: parts(),
            running: app.running.clone(),
        },
    )?;
    let coro = app.app.bind(py).call1((scope, receive, send))?;
    let done = Py::new(
        py,
        WebSocketAppDone {
            parts: parts(),
            running: app.running.clone(),
        },
    )?;
    app.start_task(coro, done.bind(py).as_any(), |task| {
        done.get().__call__(task)
    })?;
    Ok(session)
}

/// The HTTP handler of a WebSocket request: checks the handshake, runs the
/// application and answers with what it decided.
pub(crate) async fn handle(app: Rc<App>, req: Request) -> Response {
    let accept_key = match check_handshake(&req) {
        Ok(key) => key,
        Err(refusal) => return refusal,
    };
    let started = running::with_gil(|py| {
        start(&app, py, &req).map_err(|err| {
            let kwargs = PyDict::new(py);
            let _ = kwargs.set_item(intern!(py, "exc_info"), err.value(py));
            if let Err(e) = app
                .logger
                .bind(py)
                .call(("Exception in ASGI application",), Some(&kwargs))
            {
                e.write_unraisable(py, None);
            }
        })
    });
    let Ok(session) = started else {
        return Response::error(500).close();
    };
    let mut guard = HandshakeGuard {
        session: session.clone(),
        answered: false,
    };
    let decision = poll_fn(|cx| {
        let mut s = session.borrow_mut();
        match s.decision.take() {
            Some(d) => Poll::Ready(d),
            None => {
                s.handler_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    guard.answered = true;
    match decision {
        Decision::Respond(response) => response,
        Decision::Accept {
            subprotocol,
            headers,
        } => {
            let mut response = Response::upgrade("websocket", Connection(session))
                .header("Sec-WebSocket-Accept", accept_key);
            if let Some(subprotocol) = subprotocol {
                response = response.header("Sec-WebSocket-Protocol", subprotocol);
            }
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response
        }
    }
}

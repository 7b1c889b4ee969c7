//! One HTTP connection: a [`Protocol`] that parses requests, calls the handler and
//! writes responses in request order.
//!
//! The state lives in `Rc<RefCell<Conn>>`, shared by the protocol object (which the
//! transport owns) and by the tasks of async handlers and streamed bodies. The rules
//! that keep the `RefCell` from being borrowed twice:
//!
//! - the transport's calls into the protocol that can happen while `Conn` is borrowed
//!   (`pause_writing` / `resume_writing`, triggered by our own `write`) never borrow
//!   it: they set a flag or schedule a callback;
//! - everything a task does to the connection goes through `call_soon` or
//!   `try_borrow_mut`.
//!
//! # The fast path
//!
//! When a read holds whole requests and the handler is a closure, `data_received`
//! parses straight from the transport's read buffer (nothing is copied unless a
//! request is split across reads), answers every request into one output buffer and
//! hands that to the transport in a single `write`, which usually goes straight to the
//! socket. Sixteen pipelined requests therefore cost one `read` and one `send`. An async
//! handler's future is polled once at once, in the read callback: when it answers
//! without waiting, its request is answered as a closure handler's is, and the next
//! pipelined request is taken at once; only a handler that waits becomes a task.

use crate::body::{push_hex, Body, RequestBody, StreamShared, STREAM_HIGH_WATER};
use crate::head::{self, Head};
use crate::parse::{parse_head, ChunkedDecoder, Framing, Reject};
use crate::response::Response;
use crate::shared::{Handler, ResponseFuture, Shared, Tracked};
use crate::upgrade::{Upgrade, Upgraded};
use crate::{Request, ACCESS_LOG_TARGET};
use oxloop::protocol::{Protocol, Transport};
use oxloop::task::JoinHandle;
use oxloop::Handle;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, Seek};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// How long a closing connection keeps reading (and discarding) before the socket
/// is closed, so that unread input does not turn the close into a reset that could
/// destroy the response in flight.
const LINGER: Duration = Duration::from_secs(2);

/// Responses collected for one read are handed to the transport once they pass this
/// size (and at the end of the read).
const OUT_FLUSH: usize = 64 * 1024;

/// Which deadline is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    Idle,
    Head,
    Body,
    Linger,
    /// Answering waits for the output to drain (`output_full`); the client must keep
    /// reading: no progress within `idle_timeout` closes the connection.
    Send,
}

/// Where the bytes of a request body go.
enum Sink {
    /// Into `Request::body`, for a closure handler.
    Buffer,
    /// To an async handler.
    Channel(RequestBody),
    /// Nowhere: the handler answered without reading it.
    Discard,
}

enum Framer {
    Length(u64),
    Chunked(ChunkedDecoder),
}

struct BodyIn {
    framer: Framer,
    sink: Sink,
    received: u64,
}

/// What the log line of the current request needs (kept only when logging).
struct LogInfo {
    line: String,
}

pub(crate) struct Conn {
    shared: Rc<Shared>,
    me: Weak<RefCell<Conn>>,
    key: usize,
    transport: Option<Transport>,
    peer: String,
    /// The client's address, handed to each request ([`Request::peer_addr`]).
    peer_addr: Option<std::net::SocketAddr>,
    /// Unparsed input (only used when a request is split across reads, or while a
    /// response is in progress).
    input: Vec<u8>,
    /// The request being read (reused for closure handlers).
    req: Request,
    /// Response bytes gathered during one callback, written at its end.
    out: Vec<u8>,
    body: Option<BodyIn>,
    state: State,
    /// Facts about the current request that outlive it (async handlers take it).
    exchange: Exchange,
    log: Option<LogInfo>,
    /// The peer shut its write side (it may still read our answers).
    peer_eof: bool,
    deadline: Option<(Instant, Deadline)>,
    /// The transport's buffered output when the `Send` deadline was (re)armed.
    send_mark: usize,
    timer: Option<(Instant, Handle)>,
    pump_scheduled: Rc<Cell<bool>>,
}

/// Where a connection is in its life. What only one state needs lives in it, so
/// that, for example, a closed connection cannot still be sending a stream.
// `repr(u8)`: a plain tag byte, so the checks on the request path are one compare.
#[repr(u8)]
enum State {
    /// Reading requests and answering them in order.
    Open {
        /// What produces the current response besides the read callback.
        answer: Answer,
        /// Close once the current response is out: no further request is read.
        last: bool,
    },
    /// The write side is shut; input is read and dropped until the peer closes or
    /// [`LINGER`] passes.
    Lingering,
    /// The transport reported the connection lost.
    Closed,
    /// A `101 Switching Protocols` went out: the connection's bytes go to this.
    Upgraded(UpgradedShared),
}

/// The protocol a connection switched to (shared, so that it can be called without
/// the connection borrowed).
type UpgradedShared = Rc<RefCell<Box<dyn Upgraded>>>;

/// What produces the current response of an open connection, besides the read
/// callback.
#[repr(u8)]
enum Answer {
    /// Nothing: each request is answered as soon as it (and its body) is read.
    Inline,
    /// An async handler runs as this task.
    Handler(JoinHandle<()>),
    /// A streamed body is being sent, framed with chunked encoding if `chunked`.
    Stream { body: StreamShared, chunked: bool },
}

impl State {
    fn is_open(&self) -> bool {
        matches!(self, State::Open { .. })
    }

    /// A response is being produced outside the read callback (an async handler or a
    /// streamed body): the requests behind it wait.
    fn is_busy(&self) -> bool {
        matches!(
            self,
            State::Open {
                answer: Answer::Handler(_) | Answer::Stream { .. },
                ..
            }
        )
    }

    /// Open, and closing once the current response is out.
    fn is_last(&self) -> bool {
        matches!(self, State::Open { last: true, .. })
    }
}

/// What the response to the current request depends on: independent facts, kept
/// here because an async handler takes the request itself.
#[derive(Clone, Copy)]
struct Exchange {
    /// The method is `HEAD`: the response has no body.
    head: bool,
    http11: bool,
    /// The request asked to close the connection (or an error will).
    close: bool,
}

/// The protocol object the transport owns.
pub(crate) struct HttpProtocol {
    conn: Rc<RefCell<Conn>>,
    ev: oxloop::EventLoop,
}

impl HttpProtocol {
    pub(crate) fn new(shared: Rc<Shared>) -> HttpProtocol {
        let ev = shared.ev.clone();
        let conn = Rc::new_cyclic(|me| {
            RefCell::new(Conn {
                shared,
                me: me.clone(),
                key: usize::MAX,
                transport: None,
                peer: String::new(),
                peer_addr: None,
                input: Vec::new(),
                req: Request::default(),
                out: Vec::new(),
                body: None,
                state: State::Open {
                    answer: Answer::Inline,
                    last: false,
                },
                exchange: Exchange {
                    head: false,
                    http11: true,
                    close: false,
                },
                log: None,
                peer_eof: false,
                deadline: None,
                send_mark: 0,
                timer: None,
                pump_scheduled: Rc::new(Cell::new(false)),
            })
        });
        HttpProtocol { conn, ev }
    }
}

impl Protocol for HttpProtocol {
    fn connection_made(&mut self, transport: Transport) {
        let shared = self.conn.borrow().shared.clone();
        let tracked: Rc<dyn Tracked> = self.conn.clone();
        let (key, over_limit) = shared.register(Rc::downgrade(&tracked));
        let mut c = self.conn.borrow_mut();
        c.key = key;
        if shared.config.peer_addrs {
            c.peer_addr = transport.peer_addr().ok().and_then(|a| a.as_inet());
        }
        if shared.config.log_requests {
            c.peer = transport
                .peer_addr()
                .map(|a| {
                    a.as_inet()
                        .map_or_else(|| format!("{a:?}"), |s| s.to_string())
                })
                .unwrap_or_default();
        }
        c.transport = Some(transport);
        if shared.shutting_down.get() {
            c.begin_close();
        } else if over_limit {
            c.exchange.http11 = true;
            c.reject(503);
        } else {
            let idle = c.shared.config.idle_timeout;
            c.set_deadline(Deadline::Idle, idle);
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        self.conn.borrow_mut().on_data(data);
    }

    fn eof_received(&mut self) -> bool {
        self.conn.borrow_mut().on_eof()
    }

    fn connection_lost(&mut self, err: Option<io::Error>) {
        let (lost, shared, key) = {
            let mut c = self.conn.borrow_mut();
            let lost = c.on_lost();
            (lost, c.shared.clone(), c.key)
        };
        // Outside the borrow: the task's future may hold the connection.
        match lost {
            Lost::Nothing => {}
            Lost::Handler(task) => task.abort(),
            Lost::Upgraded(upgraded) => upgraded.borrow_mut().connection_lost(err),
        }
        shared.unregister(key);
    }

    fn resume_writing(&mut self) {
        let upgraded = self.conn.try_borrow().ok().and_then(|c| c.upgraded());
        if let Some(upgraded) = upgraded {
            Conn::upgraded_resume_writing(upgraded, &self.ev);
            return;
        }
        // Sending a stream, and answering pipelined requests, stop while the
        // transport's buffer is above its high-water mark; go on.
        match self.conn.try_borrow_mut() {
            Ok(mut c) => c.pump(),
            Err(_) => Conn::schedule_pump(&Rc::downgrade(&self.conn), &self.ev),
        }
    }
}

impl Tracked for RefCell<Conn> {
    fn shut_down(&self) {
        // A connection running its handler (which called the server's `shutdown`)
        // cannot be borrowed; its response sees the shutdown flag and says
        // `Connection: close`.
        if let Ok(mut c) = self.try_borrow_mut() {
            c.shutdown();
        }
    }
}

impl Conn {
    fn transport(&self) -> Option<&Transport> {
        self.transport.as_ref()
    }

    /// The protocol the connection switched to, if it did.
    fn upgraded(&self) -> Option<UpgradedShared> {
        match &self.state {
            State::Upgraded(u) => Some(u.clone()),
            _ => None,
        }
    }

    /// Tells the protocol the connection switched to that it may write again (in a
    /// callback of its own if it is in use).
    fn upgraded_resume_writing(upgraded: UpgradedShared, ev: &oxloop::EventLoop) {
        if let Ok(mut u) = upgraded.try_borrow_mut() {
            u.resume_writing();
            return;
        }
        let ev2 = ev.clone();
        ev.call_soon(move || Conn::upgraded_resume_writing(upgraded, &ev2));
    }

    // ----- timeouts ------------------------------------------------------------

    /// Sets the connection's single deadline. The timer is only re-armed when the new
    /// deadline is earlier than the one it is set for; a later deadline is picked up
    /// when the timer fires, so the per-request cost is a clock read and a store.
    // Inlined: called once per read on the request path (measured with callgrind).
    #[inline(always)]
    fn set_deadline(&mut self, kind: Deadline, after: Duration) {
        let at = self.shared.ev.time() + after;
        self.deadline = Some((at, kind));
        let rearm = match &self.timer {
            Some((fires, _)) => at < *fires,
            None => true,
        };
        if rearm {
            self.arm(at, after);
        }
    }

    fn arm(&mut self, at: Instant, after: Duration) {
        if let Some((_, old)) = self.timer.take() {
            old.cancel();
        }
        let Some(t) = self.transport() else { return };
        let me = self.me.clone();
        let ev = self.shared.ev.clone();
        let handle = t.call_later(after, move || Conn::timer_fired(&me, &ev));
        self.timer = Some((at, handle));
    }

    fn timer_fired(me: &Weak<RefCell<Conn>>, ev: &oxloop::EventLoop) {
        let Some(conn) = me.upgrade() else { return };
        let Ok(mut c) = conn.try_borrow_mut() else {
            // The connection is in use further up the stack (a handler running a
            // nested loop): look again shortly.
            let (me, ev2) = (me.clone(), ev.clone());
            ev.call_later(Duration::from_millis(10), move || {
                Conn::timer_fired(&me, &ev2)
            });
            return;
        };
        c.on_timer();
    }

    fn on_timer(&mut self) {
        self.timer = None;
        let Some((at, kind)) = self.deadline else {
            return;
        };
        let now = Instant::now();
        if now < at {
            self.arm(at, at - now);
            return;
        }
        let handler_is_slow = self
            .body
            .as_ref()
            .is_some_and(|b| matches!(b.sink, Sink::Channel(_)))
            && self.transport().is_some_and(|t| !t.is_reading());
        if kind == Deadline::Body && handler_is_slow {
            // Reading is paused because the async handler has not taken what arrived:
            // the client is not the slow one. Look again later.
            let limit = self.shared.config.body_timeout;
            self.set_deadline(Deadline::Body, limit);
            return;
        }
        self.deadline = None;
        match kind {
            // A quiet keep-alive connection ends with a FIN, like any other close.
            Deadline::Idle => self.begin_close(),
            Deadline::Linger => {
                if let Some(t) = self.transport() {
                    t.abort();
                }
            }
            Deadline::Head | Deadline::Body => self.reject(408),
            Deadline::Send => {
                let Some(t) = self.transport.clone() else {
                    return;
                };
                let left = t.write_buffer_size();
                if left < self.send_mark {
                    // The client is reading, slowly: give it another period.
                    self.send_mark = left;
                    let limit = self.shared.config.idle_timeout;
                    self.set_deadline(Deadline::Send, limit);
                } else {
                    // It stopped reading: what is buffered cannot be delivered.
                    t.abort();
                }
            }
        }
    }

    // ----- input -----------------------------------------------------------------

    fn on_data(&mut self, data: &[u8]) {
        if !self.state.is_open() {
            if let State::Upgraded(u) = &self.state {
                u.borrow_mut().data_received(data);
            }
            return; // lingering: discarded
        }
        if self.input.is_empty() {
            let used = self.consume(data);
            if used < data.len() {
                if self.state.is_open() {
                    self.input.extend_from_slice(&data[used..]);
                } else {
                    self.forward_to_upgraded(&data[used..]);
                }
            }
        } else {
            self.input.extend_from_slice(data);
            self.consume_buffered();
        }
        self.after_input();
    }

    /// Parses what is buffered in `input`.
    fn consume_buffered(&mut self) {
        let input = std::mem::take(&mut self.input);
        let used = self.consume(&input);
        self.input = input;
        if !self.state.is_open() {
            let rest = std::mem::take(&mut self.input);
            self.forward_to_upgraded(&rest[used..]);
        } else {
            self.input.drain(..used);
            if self.input.is_empty() && self.input.capacity() > 64 * 1024 {
                self.input = Vec::new();
            }
        }
    }

    /// Input that followed a request answered with `101` (a closure handler's: an
    /// async handler's waits in `input`) goes to the new protocol.
    #[cold]
    fn forward_to_upgraded(&mut self, rest: &[u8]) {
        if let State::Upgraded(u) = &self.state {
            if !rest.is_empty() {
                u.borrow_mut().data_received(rest);
            }
        }
    }

    /// Writes what the callback produced, then applies the input limits.
    fn after_input(&mut self) {
        self.flush();
        match self.state {
            State::Open {
                answer: Answer::Inline,
                last: true,
            } => {
                self.begin_close();
                return;
            }
            State::Open { .. } => {}
            State::Lingering | State::Closed | State::Upgraded(_) => return,
        }
        let limit = self.shared.config.max_head_bytes;
        if self.state.is_busy() || self.body.is_some() || self.output_full() {
            // Pipelined input waiting behind a response in progress: stop reading
            // rather than buffer without bound.
            if self.input.len() > limit {
                if let Some(t) = self.transport() {
                    t.pause_reading();
                }
            }
        } else if self.input.len() > limit {
            self.reject(431);
            self.flush();
        }
    }

    /// Handles requests at the start of `buf`; returns the bytes used. Stops at an
    /// incomplete request, while a response is in progress, or after a rejection.
    fn consume(&mut self, buf: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            if !matches!(self.state, State::Open { last: false, .. }) {
                return pos;
            }
            if self.body.is_some() {
                pos += self.feed_body(&buf[pos..]);
                if self.body.is_some() {
                    return pos;
                }
                continue;
            }
            if self.out.len() > OUT_FLUSH {
                // Many small responses to one read: hand them over now, so the
                // transport's water marks see them.
                self.flush();
            }
            if self.state.is_busy() {
                return pos;
            }
            if self.output_full() {
                self.wait_for_output();
                return pos;
            }
            if pos == buf.len() {
                let idle = self.shared.config.idle_timeout;
                self.set_deadline(Deadline::Idle, idle);
                return pos;
            }
            let rest = &buf[pos..];
            match parse_head(rest, &mut self.req) {
                Err(Reject(status)) => {
                    self.reject(status);
                    return pos;
                }
                Ok(None) => {
                    if rest.len() > self.shared.config.max_head_bytes {
                        self.reject(431);
                    } else if !matches!(self.deadline, Some((_, Deadline::Head))) {
                        let limit = self.shared.config.head_timeout;
                        self.set_deadline(Deadline::Head, limit);
                    }
                    return pos;
                }
                Ok(Some(head)) => {
                    if head.len > self.shared.config.max_head_bytes {
                        self.reject(431);
                        return pos;
                    }
                    pos += head.len;
                    self.start_request(head.framing, head.expect_continue);
                }
            }
        }
    }

    /// A head was parsed into `self.req`: read its body or answer it.
    fn start_request(&mut self, framing: Framing, expect_continue: bool) {
        self.exchange = Exchange {
            head: self.req.method_bytes() == b"HEAD",
            http11: self.req.http11,
            close: self.req.close,
        };
        self.deadline = None;
        if self.shared.config.log_requests {
            let version = if self.req.http11 { "1.1" } else { "1.0" };
            self.log = Some(LogInfo {
                line: format!(
                    "{} \"{} {} HTTP/{version}\"",
                    self.peer,
                    self.req.method(),
                    self.req.target().escape_debug()
                ),
            });
        }
        let framer = match framing {
            Framing::None => None,
            Framing::Length(n) if n > self.shared.config.max_body_bytes => {
                self.reject(413);
                return;
            }
            Framing::Length(n) => Some(Framer::Length(n)),
            Framing::Chunked => Some(Framer::Chunked(ChunkedDecoder::new(
                self.shared.config.max_head_bytes,
            ))),
        };
        if expect_continue {
            self.out.extend_from_slice(head::CONTINUE);
        }
        let is_async = matches!(self.shared.handler, Handler::Async(_));
        match framer {
            None => self.dispatch(),
            Some(framer) if is_async => {
                let channel = RequestBody::new();
                self.req.stream = Some(channel.clone());
                self.body = Some(BodyIn {
                    framer,
                    sink: Sink::Channel(channel),
                    received: 0,
                });
                let limit = self.shared.config.body_timeout;
                self.set_deadline(Deadline::Body, limit);
                self.dispatch();
            }
            Some(framer) => {
                self.body = Some(BodyIn {
                    framer,
                    sink: Sink::Buffer,
                    received: 0,
                });
                let limit = self.shared.config.body_timeout;
                self.set_deadline(Deadline::Body, limit);
            }
        }
    }

    /// Feeds body bytes; returns how many belonged to the body.
    fn feed_body(&mut self, input: &[u8]) -> usize {
        let Some(mut body) = self.body.take() else {
            return 0;
        };
        let max = self.shared.config.max_body_bytes;
        let transport = self.transport.clone();
        let req_body = &mut self.req.body;
        let mut too_large = false;
        let mut deliver = |data: &[u8], body_sink: &Sink, received: &mut u64| {
            *received += data.len() as u64;
            if *received > max {
                too_large = true;
                return;
            }
            match body_sink {
                Sink::Buffer => req_body.extend_from_slice(data),
                Sink::Channel(ch) => {
                    if let Some(t) = &transport {
                        ch.push(data, t);
                    }
                }
                Sink::Discard => {}
            }
        };
        let (used, done, error) = match &mut body.framer {
            Framer::Length(left) => {
                let n = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                deliver(&input[..n], &body.sink, &mut body.received);
                *left -= n as u64;
                (n, *left == 0, None)
            }
            Framer::Chunked(dec) => {
                let sink = &body.sink;
                let received = &mut body.received;
                match dec.feed(input, &mut |d| deliver(d, sink, received)) {
                    Ok(n) => (n, dec.is_done(), None),
                    Err(Reject(status)) => (input.len(), false, Some(status)),
                }
            }
        };
        let error = if too_large { Some(413) } else { error };
        if let Some(status) = error {
            if let Sink::Channel(ch) = &body.sink {
                ch.finish(Some(io::ErrorKind::InvalidData));
            }
            self.reject(status);
            return used;
        }
        if !done {
            if !input.is_empty() {
                let limit = self.shared.config.body_timeout;
                self.set_deadline(Deadline::Body, limit);
            }
            self.body = Some(body);
            return used;
        }
        self.deadline = None;
        match body.sink {
            Sink::Buffer => self.dispatch(),
            Sink::Channel(ch) => ch.finish(None),
            Sink::Discard => {}
        }
        used
    }

    fn on_eof(&mut self) -> bool {
        self.peer_eof = true;
        if !self.state.is_open() {
            if let State::Upgraded(u) = &self.state {
                return u.borrow_mut().eof_received();
            }
            return false;
        }
        if let Some(body) = self.body.take() {
            // The request was cut short.
            if let Sink::Channel(ch) = body.sink {
                ch.finish(Some(io::ErrorKind::UnexpectedEof));
            }
            return false;
        }
        if self.state.is_busy() || self.output_full() {
            // Finish the response in progress and answer the complete requests that
            // wait behind it; `continue_input` closes once nothing is left. (Without
            // either, anything left in `input` is an incomplete request.)
            return true;
        }
        false
    }

    /// The connection is gone; returns what must learn it outside the borrow.
    fn on_lost(&mut self) -> Lost {
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.deadline = None;
        self.timer = None;
        if let Some(body) = self.body.take() {
            if let Sink::Channel(ch) = body.sink {
                ch.finish(Some(io::ErrorKind::ConnectionReset));
            }
        }
        self.transport = None;
        match state {
            State::Open {
                answer: Answer::Handler(task),
                ..
            } => Lost::Handler(task),
            State::Open {
                answer: Answer::Stream { body, .. },
                ..
            } => {
                let waker = {
                    let mut s = body.borrow_mut();
                    s.broken = true;
                    s.notify = None;
                    s.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
                Lost::Nothing
            }
            State::Upgraded(upgraded) => Lost::Upgraded(upgraded),
            _ => Lost::Nothing,
        }
    }

    // ----- answering ---------------------------------------------------------------

    /// Calls the handler for the request in `self.req`.
    fn dispatch(&mut self) {
        self.req.peer_addr = self.peer_addr;
        match &self.shared.handler {
            Handler::Sync(handler) => {
                // A panicking handler costs its connection a 500, not the server.
                let call = std::panic::AssertUnwindSafe(|| handler(&self.req));
                match std::panic::catch_unwind(call) {
                    Ok(response) => self.respond(response),
                    Err(_) => {
                        self.exchange.close = true;
                        self.respond(Response::error(500).close());
                    }
                }
            }
            Handler::Async(handler) => {
                let req = std::mem::take(&mut self.req);
                let mut future = handler(req);
                // The first poll happens here: a handler that answers at once is
                // answered like a closure handler, so pipelined requests are taken
                // back to back and their responses leave in one write. A waker is
                // not needed: a handler that waits is polled again by its task.
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    future.as_mut().poll(&mut cx)
                }));
                match first {
                    Ok(std::task::Poll::Pending) => {}
                    Ok(std::task::Poll::Ready(response)) => {
                        self.answered(response);
                        return;
                    }
                    Err(_) => {
                        self.exchange.close = true;
                        self.answered(Response::error(500).close());
                        return;
                    }
                }
                let me = self.me.clone();
                let task = self.shared.ev.spawn(async move {
                    let response = CatchPanic(future)
                        .await
                        .unwrap_or_else(|| Response::error(500).close());
                    if let Some(conn) = me.upgrade() {
                        Conn::async_done(&conn, response);
                    }
                });
                if let State::Open { answer, .. } = &mut self.state {
                    *answer = Answer::Handler(task);
                }
            }
        }
    }

    /// An async handler finished: write its response and go on with the input.
    fn async_done(conn: &Rc<RefCell<Conn>>, response: Response) {
        let Ok(mut c) = conn.try_borrow_mut() else {
            // Cannot happen from a task; be safe anyway.
            return;
        };
        match &mut c.state {
            State::Open { answer, .. } => *answer = Answer::Inline,
            State::Lingering | State::Closed | State::Upgraded(_) => return,
        }
        c.answered(response);
        c.continue_input();
    }

    /// An async handler's response: written after whatever the request's body still
    /// has to deliver is dropped.
    fn answered(&mut self, response: Response) {
        if let Some(body) = &mut self.body {
            // The handler answered without reading the whole body: skip the rest.
            if let Sink::Channel(ch) = &body.sink {
                ch.finish(Some(io::ErrorKind::Other));
            }
            body.sink = Sink::Discard;
        }
        self.respond(response);
    }

    /// After a response in progress finished: parse what waited, resume reading.
    fn continue_input(&mut self) {
        if self.state.is_busy() || matches!(self.state, State::Closed) {
            return;
        }
        if !self.input.is_empty() && self.state.is_open() {
            self.consume_buffered();
        }
        let reading = self.state.is_open() && !self.state.is_busy();
        if let Some(t) = self.transport() {
            if reading && !self.peer_eof {
                t.resume_reading();
            }
        }
        self.after_input();
        let idle = self.state.is_open() && !self.state.is_busy();
        if self.peer_eof && idle && !self.output_full() {
            self.begin_close();
        }
    }

    /// Appends the head (and a small body) of `response` to `out`.
    fn respond(&mut self, response: Response) {
        let Response {
            status,
            content_type,
            headers,
            body,
            close,
            upgrade,
        } = response;
        if let Some(upgrade) = upgrade {
            self.switch_protocols(status, &headers, *upgrade);
            return;
        }
        // A peer that half-closed still gets every answer it asked for; the connection
        // closes once idle (`continue_input`), so its end does not decide keep-alive.
        let keep_alive = !(self.exchange.close
            || close
            || self.state.is_last()
            || self.shared.shutting_down.get());
        let written = Head {
            http11: self.exchange.http11,
            status,
            content_type: &content_type,
            headers: &headers,
            body: &body,
            keep_alive,
        }
        .write(
            &mut self.out,
            &self.shared.response_start,
            self.shared.ev.time(),
        );
        if !written.keep_alive {
            self.close_after_response();
        }
        if let Some(log) = self.log.take() {
            tracing::info!(
                target: ACCESS_LOG_TARGET,
                "{} {status} {}",
                log.line,
                body.length().unwrap_or(0)
            );
        }
        let send_body = written.has_body && !self.exchange.head;
        match body {
            Body::Bytes(bytes) => {
                if send_body {
                    if bytes.len() > 16 * 1024 {
                        // Large: no copy into `out`.
                        self.flush();
                        if let Some(t) = self.transport() {
                            let _ = t.write(&bytes);
                        }
                    } else {
                        self.out.extend_from_slice(&bytes);
                    }
                }
            }
            Body::File(mut file, len) => {
                if send_body && len > 0 {
                    // Zero-copy: the transport sends the range after the head (and
                    // after any earlier response), with sendfile(2) where available.
                    self.flush();
                    let Some(t) = self.transport.clone() else {
                        return;
                    };
                    match file.stream_position() {
                        // An error closes the connection and is reported there.
                        Ok(offset) => drop(t.send_file(file, offset, len)),
                        Err(_) => t.abort(),
                    }
                }
            }
            Body::Stream(stream) => {
                if send_body {
                    self.start_sending(stream, written.chunked);
                } else {
                    stream.borrow_mut().broken = true;
                }
            }
        }
    }

    /// Answers `101 Switching Protocols` and hands the connection to the new
    /// protocol. (A request that cannot switch, HTTP/1.0 or `HEAD`, is answered 400
    /// and closed.)
    #[inline(never)]
    fn switch_protocols(
        &mut self,
        status: u16,
        headers: &[(Cow<'static, str>, Cow<'static, str>)],
        upgrade: Upgrade,
    ) {
        if !self.state.is_open() {
            return;
        }
        if status != 101 || !self.exchange.http11 || self.exchange.head {
            self.exchange.close = true;
            self.respond(Response::error(400).close());
            return;
        }
        if let Some(log) = self.log.take() {
            tracing::info!(target: ACCESS_LOG_TARGET, "{} 101 0", log.line);
        }
        head::write_switch(
            &mut self.out,
            &self.shared.response_start,
            self.shared.ev.time(),
            headers,
            &upgrade.protocol,
        );
        let upgraded = upgrade.upgraded;
        self.flush();
        let Some(t) = self.transport.clone() else {
            return;
        };
        // The HTTP deadlines end here; the new protocol keeps its own.
        self.deadline = None;
        if let Some((_, timer)) = self.timer.take() {
            timer.cancel();
        }
        self.body = None;
        let buffered = std::mem::take(&mut self.input);
        let upgraded: UpgradedShared = Rc::new(RefCell::new(upgraded));
        self.state = State::Upgraded(upgraded.clone());
        if !self.peer_eof {
            t.resume_reading();
        }
        let mut u = upgraded.borrow_mut();
        u.connected(t, &buffered);
        if self.shared.shutting_down.get() {
            u.shut_down();
        }
    }

    /// No request after the current one is read; the connection closes once its
    /// response is out.
    fn close_after_response(&mut self) {
        if let State::Open { last, .. } = &mut self.state {
            *last = true;
        }
    }

    // Kept out of `respond`, whose common path it would slow down.
    #[inline(never)]
    fn start_sending(&mut self, stream: StreamShared, chunked: bool) {
        let State::Open { answer, .. } = &mut self.state else {
            stream.borrow_mut().broken = true;
            return;
        };
        let me = self.me.clone();
        let ev = self.shared.ev.clone();
        let scheduled = self.pump_scheduled.clone();
        let notify: Rc<dyn Fn()> = Rc::new(move || {
            if !scheduled.replace(true) {
                Conn::schedule_pump(&me, &ev);
            }
        });
        stream.borrow_mut().notify = Some(notify);
        *answer = Answer::Stream {
            body: stream,
            chunked,
        };
        self.flush();
        self.pump();
    }

    /// Runs `pump` in a loop callback of its own (from places where the connection
    /// may be borrowed).
    fn schedule_pump(me: &Weak<RefCell<Conn>>, ev: &oxloop::EventLoop) {
        let me = me.clone();
        ev.call_soon(move || {
            if let Some(conn) = me.upgrade() {
                if let Ok(mut c) = conn.try_borrow_mut() {
                    c.pump_scheduled.set(false);
                    c.pump();
                }
            }
        });
    }

    /// Sends more of a streamed body while the transport takes it, then answers
    /// pipelined requests that waited.
    fn pump(&mut self) {
        let Some(t) = self.transport.clone() else {
            return;
        };
        if let State::Open {
            answer: Answer::Stream { body, chunked },
            ..
        } = &self.state
        {
            let (stream, chunked) = (body.clone(), *chunked);
            if self.send_queued(&t, &stream, chunked) {
                if let State::Open { answer, .. } = &mut self.state {
                    *answer = Answer::Inline;
                }
            }
        }
        if !self.state.is_busy() {
            // Also what answers pipelined requests that waited for the transport's
            // buffer to drain (`output_full`).
            self.continue_input();
        }
    }

    /// Moves pieces of `stream` to the transport; returns whether the body ended.
    fn send_queued(&mut self, t: &Transport, stream: &StreamShared, chunked: bool) -> bool {
        let mut finished = false;
        let mut aborted = false;
        // Move queued pieces to the transport until it is full (then
        // `resume_writing` calls us again) or the queue is empty (then the
        // writer's next `send` or its drop does).
        while !t.is_closing() && t.write_buffer_size() <= STREAM_HIGH_WATER {
            let mut s = stream.borrow_mut();
            let mut took = false;
            while let Some(chunk) = s.chunks.pop_front() {
                took = true;
                s.queued -= chunk.len();
                if chunked {
                    push_hex(&mut self.out, chunk.len() as u64);
                    self.out.extend_from_slice(b"\r\n");
                    self.out.extend_from_slice(&chunk);
                    self.out.extend_from_slice(b"\r\n");
                } else {
                    self.out.extend_from_slice(&chunk);
                }
                if self.out.len() >= STREAM_HIGH_WATER {
                    break;
                }
            }
            if s.finished && s.chunks.is_empty() {
                finished = true;
                aborted = s.aborted;
                if chunked && !aborted {
                    self.out.extend_from_slice(b"0\r\n\r\n");
                }
                s.notify = None;
            }
            let waker = if s.queued < STREAM_HIGH_WATER {
                s.waker.take()
            } else {
                None
            };
            drop(s);
            if let Some(w) = waker {
                w.wake();
            }
            self.flush();
            if finished || !took {
                break;
            }
        }
        if aborted {
            // The body was given up (`BodyWriter::abort`): what is written stays
            // incomplete, and the client sees the connection cut.
            t.abort();
        }
        finished
    }

    /// Answering waits for the output to drain; the client has `idle_timeout` to make
    /// progress reading it.
    fn wait_for_output(&mut self) {
        if matches!(self.deadline, Some((_, Deadline::Send))) {
            return;
        }
        self.send_mark = self.transport.as_ref().map_or(0, |t| t.write_buffer_size());
        let limit = self.shared.config.idle_timeout;
        self.set_deadline(Deadline::Send, limit);
    }

    /// Whether the transport's output went above its high-water mark: answering more
    /// pipelined requests waits until it drained to the low-water mark (the transport
    /// then calls `resume_writing`), so a client that sends without reading cannot
    /// make the server buffer responses (or hold files open) without bound.
    fn output_full(&self) -> bool {
        self.transport
            .as_ref()
            .is_some_and(Transport::is_writing_paused)
    }

    /// Answers `status` with a short error page and closes the connection.
    fn reject(&mut self, status: u16) {
        if !self.state.is_open() {
            return;
        }
        if self.state.is_busy() {
            // A response is already being produced for this connection; an error
            // page cannot be put in front of it.
            if let Some(t) = self.transport() {
                t.abort();
            }
            return;
        }
        if let Some(body) = self.body.take() {
            if let Sink::Channel(ch) = body.sink {
                ch.finish(Some(io::ErrorKind::InvalidData));
            }
        }
        if self.shared.config.log_requests && self.log.is_none() {
            self.log = Some(LogInfo {
                line: format!("{} \"-\"", self.peer),
            });
        }
        self.exchange.head = false;
        self.exchange.close = true;
        self.respond(Response::error(status).close());
        self.close_after_response();
        self.flush();
        self.begin_close();
    }

    /// Writes `out` to the transport.
    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if let Some(t) = &self.transport {
            let _ = t.write(&self.out);
        }
        self.out.clear();
        if self.out.capacity() > 256 * 1024 {
            self.out = Vec::new();
        }
    }

    /// Ends the connection politely: sends what is buffered, shuts the write side
    /// (the client sees the end of the response), then reads and drops input until the
    /// client closes or [`LINGER`] passes.
    fn begin_close(&mut self) {
        if !self.state.is_open() {
            return;
        }
        self.flush();
        self.state = State::Lingering;
        self.input = Vec::new();
        let Some(t) = self.transport.clone() else {
            return;
        };
        if self.peer_eof {
            t.close();
            return;
        }
        t.write_eof();
        t.resume_reading();
        self.set_deadline(Deadline::Linger, LINGER);
    }

    /// Graceful shutdown: idle connections close now, busy ones after their
    /// response.
    pub(crate) fn shutdown(&mut self) {
        if !self.state.is_open() {
            if let State::Upgraded(u) = &self.state {
                if let Ok(mut u) = u.try_borrow_mut() {
                    u.shut_down();
                }
            }
            return;
        }
        if !self.state.is_busy() && self.body.is_none() && self.input.is_empty() {
            self.begin_close();
        } else {
            self.close_after_response();
        }
    }
}

/// What a lost connection must tell outside its borrow.
enum Lost {
    Nothing,
    /// An async handler still running: aborted.
    Handler(JoinHandle<()>),
    /// The protocol the connection switched to.
    Upgraded(UpgradedShared),
}

/// Polls a response future, turning a panic into `None` (the client then gets a 500
/// instead of a connection that hangs).
struct CatchPanic(ResponseFuture);

impl Future for CatchPanic {
    type Output = Option<Response>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Response>> {
        let future = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(r)) => std::task::Poll::Ready(Some(r)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(None),
        }
    }
}

//! Bodies: what follows a response head, and the streamed ones: a request body read
//! by an async handler, and a response body written piece by piece.
//!
//! Both are small single-threaded channels (`Rc` + `RefCell` + one waker) between the
//! connection and a task. Each side bounds what is queued: a request body that the
//! handler does not read pauses reading from the socket; a response writer that runs
//! ahead of the socket waits in [`BodyWriter::send`].

use oxloop::protocol::Transport;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Bytes queued in either channel before the producer is held back.
pub(crate) const STREAM_HIGH_WATER: usize = 64 * 1024;

#[derive(Default)]
struct RequestState {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    done: bool,
    error: Option<io::ErrorKind>,
    waker: Option<Waker>,
    /// Set while reading is paused because the queue is full.
    paused: Option<Transport>,
}

/// A request body arriving in pieces, for async handlers (from
/// [`Request::take_body`](crate::Request::take_body)).
#[derive(Clone)]
pub struct RequestBody {
    shared: Rc<RefCell<RequestState>>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestBody")
    }
}

impl RequestBody {
    pub(crate) fn new() -> RequestBody {
        RequestBody {
            shared: Rc::new(RefCell::new(RequestState::default())),
        }
    }

    /// The next piece of the body, `None` at its end. Fails if the connection broke
    /// before the body was complete.
    pub async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        poll_fn(|cx| {
            let mut s = self.shared.borrow_mut();
            if let Some(chunk) = s.chunks.pop_front() {
                s.queued -= chunk.len();
                if s.queued < STREAM_HIGH_WATER / 2 {
                    if let Some(t) = s.paused.take() {
                        drop(s);
                        t.resume_reading();
                    }
                }
                return Poll::Ready(Ok(Some(chunk)));
            }
            if let Some(kind) = s.error {
                return Poll::Ready(Err(io::Error::new(kind, "request body incomplete")));
            }
            if s.done {
                return Poll::Ready(Ok(None));
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Reads the rest of the body into one buffer. The server's body size limit
    /// already applies, so this is bounded.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    /// Connection side: queues `data`; pauses reading from `transport` when too much
    /// waits.
    pub(crate) fn push(&self, data: &[u8], transport: &Transport) {
        let mut s = self.shared.borrow_mut();
        s.chunks.push_back(data.to_vec());
        s.queued += data.len();
        if s.queued >= STREAM_HIGH_WATER && s.paused.is_none() {
            s.paused = Some(transport.clone());
            transport.pause_reading();
        }
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Connection side: the body is complete (`None`) or broken off.
    pub(crate) fn finish(&self, error: Option<io::ErrorKind>) {
        let mut s = self.shared.borrow_mut();
        s.done = true;
        s.error = error;
        if let Some(t) = s.paused.take() {
            t.resume_reading();
        }
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub chunks: VecDeque<Vec<u8>>,
    pub queued: usize,
    /// The writer finished (or was dropped).
    pub finished: bool,
    /// The writer gave up: the connection is cut instead of ending the body.
    pub aborted: bool,
    /// The connection is gone: sends fail.
    pub broken: bool,
    /// The writer waits for room.
    pub waker: Option<Waker>,
    /// Tells the connection there is something to send.
    pub notify: Option<Rc<dyn Fn()>>,
}

/// The connection's end of a streamed response body.
pub(crate) type StreamShared = Rc<RefCell<StreamState>>;

/// Writes a streamed response body (from [`Response::stream`](crate::Response::stream)).
///
/// Each [`send`](BodyWriter::send) becomes one chunk of a chunked response (or raw
/// bytes for an HTTP/1.0 client, ended by closing the connection). The body ends with
/// [`finish`](BodyWriter::finish) or when the writer is dropped.
pub struct BodyWriter {
    pub(crate) shared: StreamShared,
}

impl std::fmt::Debug for BodyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyWriter")
    }
}

impl BodyWriter {
    /// Queues `data`, first waiting while more than 64 KiB is still unsent. Fails once
    /// the connection is gone.
    pub async fn send(&mut self, data: impl AsRef<[u8]>) -> io::Result<()> {
        let data = data.as_ref();
        poll_fn(|cx| {
            let mut s = self.shared.borrow_mut();
            if s.broken {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the connection is closed",
                )));
            }
            if s.queued >= STREAM_HIGH_WATER {
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
        .await?;
        if data.is_empty() {
            return Ok(());
        }
        let notify = {
            let mut s = self.shared.borrow_mut();
            s.chunks.push_back(data.to_vec());
            s.queued += data.len();
            s.notify.clone()
        };
        if let Some(notify) = notify {
            notify();
        }
        Ok(())
    }

    /// Ends the body.
    pub fn finish(self) {
        // Drop does it.
    }

    /// Gives up on the body (the producer failed half-way): what was queued is sent,
    /// then the connection is cut, so that the client sees an incomplete response
    /// rather than a complete one.
    pub fn abort(self) {
        self.shared.borrow_mut().aborted = true;
        // Drop ends it.
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        let notify = {
            let mut s = self.shared.borrow_mut();
            s.finished = true;
            s.notify.clone()
        };
        if let Some(notify) = notify {
            notify();
        }
    }
}

/// What follows the response head.
pub(crate) enum Body {
    /// Bytes known up front (`Content-Length`).
    Bytes(Cow<'static, [u8]>),
    /// A file of known length, read in pieces as the socket drains.
    File(File, u64),
    /// Pieces from a [`BodyWriter`]: chunked for HTTP/1.1.
    Stream(StreamShared),
}

impl Body {
    /// The length, when it is known up front (`Content-Length`).
    #[inline]
    pub(crate) fn length(&self) -> Option<u64> {
        match self {
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File(_, len) => Some(*len),
            Body::Stream(_) => None,
        }
    }
}

/// Appends `n` in hexadecimal (chunk sizes).
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

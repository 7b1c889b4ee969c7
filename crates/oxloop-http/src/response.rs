//! The response a handler returns (its head is written by [`crate::head`]).

use crate::body::{Body, BodyWriter, StreamShared, StreamState};
use crate::head::reason;
use crate::upgrade::{Upgrade, Upgraded};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::rc::Rc;

/// An HTTP response: status, headers and body.
///
/// ```
/// use oxloop_http::Response;
/// let r = Response::text("Hello, World!").header("Cache-Control", "no-store");
/// assert_eq!(r.status(), 200);
/// ```
pub struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: Option<Cow<'static, str>>,
    pub(crate) headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    pub(crate) body: Body,
    pub(crate) close: bool,
    /// The protocol a `101` switches to ([`Response::upgrade`]).
    pub(crate) upgrade: Option<Box<Upgrade>>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Body::Bytes(Cow::Borrowed(b"")),
            close: false,
            upgrade: None,
        }
    }

    /// 200 with a `text/plain; charset=utf-8` body. A `&'static str` is not copied.
    pub fn text(body: impl Into<Cow<'static, str>>) -> Response {
        let body = match body.into() {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        };
        Response::new(200)
            .content_type("text/plain; charset=utf-8")
            .body(body)
    }

    /// 200 with a body of `content_type`.
    pub fn bytes(
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Response {
        Response::new(200).content_type(content_type).body(body)
    }

    /// A short plain-text error page for `status` (its reason phrase).
    pub fn error(status: u16) -> Response {
        let mut text = String::with_capacity(32);
        text.push_str(reason(status));
        text.push('\n');
        Response::text(text).status_code(status)
    }

    /// A response whose body is written later through the returned [`BodyWriter`]
    /// (from a task: `oxloop::task::spawn`). HTTP/1.1 clients get it chunked.
    pub fn stream(status: u16) -> (Response, BodyWriter) {
        let shared: StreamShared = Rc::new(RefCell::new(StreamState::default()));
        let mut r = Response::new(status);
        r.body = Body::Stream(shared.clone());
        (r, BodyWriter { shared })
    }

    /// `101 Switching Protocols` to `protocol` (the `Upgrade` header; `Connection:
    /// Upgrade` is added): after this head the connection belongs to `upgraded`,
    /// which gets the transport and every byte that follows. The handler decides
    /// whether the request may switch (HTTP/1.1, its `Upgrade` header, the new
    /// protocol's handshake headers, which it adds to this response). A protocol name
    /// that is not an HTTP token gives a 500 instead.
    pub fn upgrade(
        protocol: impl Into<Cow<'static, str>>,
        upgraded: impl Upgraded + 'static,
    ) -> Response {
        let protocol = protocol.into();
        if !is_token(&protocol) {
            return Response::error(500).close();
        }
        let mut r = Response::new(101);
        r.upgrade = Some(Box::new(Upgrade {
            protocol,
            upgraded: Box::new(upgraded),
        }));
        r
    }

    /// A response sending `len` bytes of `file` from its current position.
    pub fn file(file: File, len: u64) -> Response {
        let mut r = Response::new(200);
        r.body = Body::File(file, len);
        r
    }

    /// Sets the status code.
    pub fn status_code(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, value: impl Into<Cow<'static, str>>) -> Response {
        self.content_type = Some(value.into());
        self
    }

    /// Replaces the body with these bytes.
    pub fn body(mut self, body: impl Into<Cow<'static, [u8]>>) -> Response {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Adds a header. `Content-Length`, `Transfer-Encoding`, `Date`, `Server` and
    /// `Connection` are written by the server and ignored here (use
    /// [`close`](Response::close) to end the connection). Values containing CR or LF
    /// are dropped, so a handler cannot split the response.
    pub fn header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Response {
        let (name, value) = (name.into(), value.into());
        let reserved = [
            "content-length",
            "transfer-encoding",
            "date",
            "server",
            "connection",
        ]
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r));
        let unsafe_text = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if !reserved && is_token(&name) && !unsafe_text(&value) {
            self.headers.push((name, value));
        }
        self
    }

    /// Closes the connection after this response (`Connection: close`).
    pub fn close(mut self) -> Response {
        self.close = true;
        self
    }
}

/// Whether `s` is an HTTP token (a header name, a protocol name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

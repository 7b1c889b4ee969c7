//! The request a handler sees.

use crate::body::RequestBody;

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless the client asked for
    /// `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: keep-alive unless `Connection: close`.
    Http11,
}

/// A byte range inside [`Request`]'s copy of the request head.
pub(crate) type Span = (u32, u32);

/// One parsed request.
///
/// The head (request line and header lines) is kept as one byte buffer and every
/// field is a range into it, so parsing a request costs one copy and no allocation per
/// header. Header names are matched case-insensitively.
///
/// Closure handlers get the whole body in [`body`](Request::body); async handlers get
/// it as a stream from [`take_body`](Request::take_body).
#[derive(Debug, Default)]
pub struct Request {
    pub(crate) head: Vec<u8>,
    pub(crate) method: Span,
    pub(crate) target: Span,
    pub(crate) http11: bool,
    pub(crate) headers: Vec<(Span, Span)>,
    pub(crate) body: Vec<u8>,
    pub(crate) stream: Option<RequestBody>,
    /// The client asked to close (or HTTP/1.0 without keep-alive).
    pub(crate) close: bool,
    pub(crate) peer_addr: Option<std::net::SocketAddr>,
}

impl Request {
    fn span(&self, (a, b): Span) -> &[u8] {
        &self.head[a as usize..b as usize]
    }

    fn span_str(&self, span: Span) -> &str {
        // The parser only accepts ASCII tokens for the method and visible ASCII for the
        // target, so this never falls back.
        std::str::from_utf8(self.span(span)).unwrap_or("")
    }

    /// The method, e.g. `"GET"`.
    pub fn method(&self) -> &str {
        self.span_str(self.method)
    }

    pub(crate) fn method_bytes(&self) -> &[u8] {
        self.span(self.method)
    }

    /// The request target exactly as sent, e.g. `"/a/b?x=1"`.
    pub fn target(&self) -> &str {
        self.span_str(self.target)
    }

    /// The target's path (before any `?`), still percent-encoded.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        if self.http11 {
            Version::Http11
        } else {
            Version::Http10
        }
    }

    /// The first header called `name` (any case), as raw bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.span(*n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.span(*v))
    }

    /// The first header called `name` as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header in the order received, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (self.span_str(*n), self.span(*v)))
    }

    /// The whole body (closure handlers). Empty for async handlers, whose body comes
    /// from [`take_body`](Request::take_body).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The streamed body (async handlers); `None` for a request without a body or once
    /// taken.
    pub fn take_body(&mut self) -> Option<RequestBody> {
        self.stream.take()
    }

    /// The client's address (TCP), when [`Config::peer_addrs`](crate::Config::peer_addrs)
    /// is on.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer_addr
    }

    /// Whether the connection will close after this request's response.
    pub fn wants_close(&self) -> bool {
        self.close
    }

    /// Empties the request for reuse, keeping its buffers' capacity.
    pub(crate) fn clear(&mut self) {
        self.head.clear();
        self.headers.clear();
        self.body.clear();
        if self.body.capacity() > 64 * 1024 {
            // Do not keep a large upload's buffer for the rest of the connection.
            self.body = Vec::new();
        }
        self.stream = None;
        self.close = false;
    }
}

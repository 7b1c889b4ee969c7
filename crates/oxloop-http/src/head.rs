//! Writing response heads: the status line, the `Server` and `Date` headers every
//! response starts with (cached per server, the `Date` formatted at most once per
//! second), the handler's headers and the framing headers.

use crate::body::Body;
use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The status line of the common response.
const OK_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// The start of every response of one server, rebuilt when a new second starts.
pub(crate) struct ResponseStart {
    /// `Server: NAME\r\n`, or nothing.
    server_header: Vec<u8>,
    cached: RefCell<Cached>,
}

struct Cached {
    /// Until when the text is right (the next whole second, on the loop's clock).
    valid_until: Option<Instant>,
    /// `HTTP/1.1 200 OK\r\n`, the `Server` header, `Date: ...\r\n`: the start of a
    /// `200 OK` response in one piece (other responses take it from the second line).
    ok_head: Vec<u8>,
    /// `ok_head` followed by `Content-Type: {typed_ct}\r\n`, for the content type
    /// used last (a server usually answers most requests with one); empty when stale.
    typed: Vec<u8>,
    typed_ct: String,
    /// Address and length of `typed_ct` when it came from a `&'static str`: the same
    /// static string again is recognised without comparing bytes.
    typed_static: Option<(usize, usize)>,
}

impl ResponseStart {
    /// For a server called `server_name` (the `Server` header; none when empty or
    /// when the name holds control characters).
    pub fn new(server_name: &str) -> ResponseStart {
        let server_header =
            if server_name.is_empty() || server_name.bytes().any(|b| b < 0x20 || b == 0x7f) {
                Vec::new()
            } else {
                format!("Server: {server_name}\r\n").into_bytes()
            };
        ResponseStart {
            server_header,
            cached: RefCell::new(Cached {
                valid_until: None,
                ok_head: Vec::new(),
                typed: Vec::new(),
                typed_ct: String::new(),
                typed_static: None,
            }),
        }
    }

    /// Appends `HTTP/1.1 200 OK`, `Server` and `Date` (`now`: the loop's clock).
    pub fn push_ok_head(&self, out: &mut Vec<u8>, now: Instant) {
        let cached = self.fresh(now);
        out.extend_from_slice(&cached.ok_head);
    }

    /// Appends `HTTP/1.1 200 OK`, `Server`, `Date` and `Content-Type: content_type`.
    // `&Cow`, not `&str`: whether the content type is a `&'static str` matters here.
    #[allow(clippy::ptr_arg)]
    pub fn push_ok_head_typed(
        &self,
        out: &mut Vec<u8>,
        now: Instant,
        content_type: &Cow<'static, str>,
    ) {
        let static_id = match content_type {
            Cow::Borrowed(s) => Some((s.as_ptr() as usize, s.len())),
            Cow::Owned(_) => None,
        };
        {
            let cached = self.fresh(now);
            if !cached.typed.is_empty()
                && ((static_id.is_some() && cached.typed_static == static_id)
                    || cached.typed_ct == **content_type)
            {
                out.extend_from_slice(&cached.typed);
                return;
            }
        }
        let mut cached = self.cached.borrow_mut();
        let cached = &mut *cached;
        cached.typed.clear();
        cached.typed.extend_from_slice(&cached.ok_head);
        cached.typed.extend_from_slice(b"Content-Type: ");
        cached.typed.extend_from_slice(content_type.as_bytes());
        cached.typed.extend_from_slice(b"\r\n");
        cached.typed_ct.clear();
        cached.typed_ct.push_str(content_type);
        cached.typed_static = static_id;
        out.extend_from_slice(&cached.typed);
    }

    /// Appends the `Server` and `Date` headers only (`now`: the loop's clock).
    pub fn push_headers(&self, out: &mut Vec<u8>, now: Instant) {
        let cached = self.fresh(now);
        out.extend_from_slice(&cached.ok_head[OK_LINE.len()..]);
    }

    /// The cache, re-formatted first if a new second started: the wall clock is read
    /// once a second, so a response costs a comparison and one copy.
    #[inline]
    fn fresh(&self, now: Instant) -> std::cell::Ref<'_, Cached> {
        let cached = self.cached.borrow();
        if cached.valid_until.is_some_and(|until| now < until) {
            return cached;
        }
        drop(cached);
        self.refresh(now);
        self.cached.borrow()
    }

    #[cold]
    fn refresh(&self, now: Instant) {
        let mut cached = self.cached.borrow_mut();
        let wall = SystemTime::now();
        let into_second = wall.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
            Duration::from_nanos(u64::from(d.subsec_nanos()))
        });
        cached.ok_head.clear();
        cached.ok_head.extend_from_slice(OK_LINE);
        cached.ok_head.extend_from_slice(&self.server_header);
        cached.ok_head.extend_from_slice(b"Date: ");
        cached
            .ok_head
            .extend_from_slice(httpdate::fmt_http_date(wall).as_bytes());
        cached.ok_head.extend_from_slice(b"\r\n");
        cached.typed.clear();
        cached.valid_until = Some(now + (Duration::from_secs(1) - into_second));
    }
}

/// The interim response to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A response head to write: what the connection knows about the exchange and the
/// parts of the handler's [`Response`](crate::Response) the head depends on.
pub(crate) struct Head<'a> {
    /// The request was HTTP/1.1 (else 1.0).
    pub http11: bool,
    pub status: u16,
    pub content_type: &'a Option<Cow<'static, str>>,
    pub headers: &'a [(Cow<'static, str>, Cow<'static, str>)],
    /// The body that follows (only its length matters here).
    pub body: &'a Body,
    /// Whether the connection may stay open after this response.
    pub keep_alive: bool,
}

/// What a written head promised about the body and the connection.
pub(crate) struct Written {
    /// The status allows a body (not 1xx, 204 or 304).
    pub has_body: bool,
    /// The body goes out with chunked encoding.
    pub chunked: bool,
    /// The connection stays open after the response (else the head said
    /// `Connection: close`).
    pub keep_alive: bool,
}

/// Whether responses with `status` have no body (1xx, 204, 304).
#[inline]
pub(crate) fn has_no_body(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

impl Head<'_> {
    /// Appends the head to `out` (`now`: the loop's clock) and says how the body is
    /// framed.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>, start: &ResponseStart, now: Instant) -> Written {
        let mut typed = false;
        match (self.http11, self.status, self.content_type) {
            (true, 200, Some(ct)) => {
                start.push_ok_head_typed(out, now, ct);
                typed = true;
            }
            (true, 200, None) => start.push_ok_head(out, now),
            (http11, status, _) => {
                out.extend_from_slice(if http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
                push_decimal(out, u64::from(status));
                out.push(b' ');
                out.extend_from_slice(reason(status).as_bytes());
                out.extend_from_slice(b"\r\n");
                start.push_headers(out, now);
            }
        }
        if let Some(ct) = self.content_type.as_ref().filter(|_| !typed) {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let mut written = Written {
            has_body: !has_no_body(self.status),
            chunked: false,
            keep_alive: self.keep_alive,
        };
        if written.has_body {
            match self.body.length() {
                Some(n) => {
                    out.extend_from_slice(b"Content-Length: ");
                    push_decimal(out, n);
                    out.extend_from_slice(b"\r\n");
                }
                None if self.http11 => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                    written.chunked = true;
                }
                // HTTP/1.0: the end of the body is the end of the connection.
                None => written.keep_alive = false,
            }
        }
        if !written.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if !self.http11 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        written
    }
}

/// Appends the head of a `101 Switching Protocols` to `protocol` with the handler's
/// `headers` (`now`: the loop's clock). Kept apart from [`Head::write`], whose common
/// path it would lengthen.
pub(crate) fn write_switch(
    out: &mut Vec<u8>,
    start: &ResponseStart,
    now: Instant,
    headers: &[(Cow<'static, str>, Cow<'static, str>)],
    protocol: &str,
) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    start.push_headers(out, now);
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends the decimal form of `n`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_head_and_headers() {
        let start = ResponseStart::new("x");
        let mut out = Vec::new();
        start.push_ok_head(&mut out, Instant::now());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nServer: x\r\nDate: "));
        assert!(text.ends_with(" GMT\r\n"));
        assert_eq!(text.len(), 17 + 11 + 6 + 29 + 2);
        let mut out = Vec::new();
        start.push_headers(&mut out, Instant::now());
        assert_eq!(out, text.as_bytes()[17..]);
        for ct in ["text/plain", "text/plain", "text/html", "text/plain"] {
            let mut out = Vec::new();
            start.push_ok_head_typed(&mut out, Instant::now(), &Cow::Borrowed(ct));
            assert_eq!(out, format!("{text}Content-Type: {ct}\r\n").as_bytes());
        }
    }

    #[test]
    fn heads_and_framing() {
        let start = ResponseStart::new("");
        let headers = [(Cow::Borrowed("X-A"), Cow::Borrowed("b"))];
        let stream = Body::Stream(Default::default());
        let empty = Body::Bytes(Cow::Borrowed(b""));
        let head = Head {
            http11: false,
            status: 404,
            content_type: &Some(Cow::Borrowed("text/plain")),
            headers: &headers,
            body: &stream,
            keep_alive: true,
        };
        let mut out = Vec::new();
        let written = head.write(&mut out, &start, Instant::now());
        assert!(
            !written.keep_alive,
            "HTTP/1.0 with no length ends with the connection"
        );
        assert!(!written.chunked);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.0 404 Not Found\r\nDate: "),
            "{text}"
        );
        assert!(
            text.ends_with("\r\nContent-Type: text/plain\r\nX-A: b\r\nConnection: close\r\n\r\n"),
            "{text}"
        );

        let head = Head {
            http11: true,
            content_type: &None,
            headers: &[],
            ..head
        };
        let mut out = Vec::new();
        let written = head.write(&mut out, &start, Instant::now());
        assert!(written.keep_alive && written.chunked);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("GMT\r\nTransfer-Encoding: chunked\r\n\r\n"));

        let head = Head {
            status: 204,
            body: &empty,
            ..head
        };
        let mut out = Vec::new();
        let written = head.write(&mut out, &start, Instant::now());
        assert!(written.keep_alive && !written.chunked);
        assert!(
            String::from_utf8(out).unwrap().ends_with("GMT\r\n\r\n"),
            "no length for 204"
        );
    }
}

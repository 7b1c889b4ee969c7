//! The headers every response starts with (`Server` and `Date`), with the `Date`
//! formatted at most once per second.

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
    /// For a server whose `Server` header is `server_header` (complete with its CRLF,
    /// or empty for none).
    pub fn new(server_header: Vec<u8>) -> ResponseStart {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_head_and_headers() {
        let start = ResponseStart::new(b"Server: x\r\n".to_vec());
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
}

//! Request heads (with `httparse`) and chunked bodies, with the checks that keep a
//! request from meaning two different things to two different servers (smuggling).

use crate::request::{Request, Span};

/// The most header lines a request may have (more: 431).
pub(crate) const MAX_HEADERS: usize = 64;

/// Why a request is refused: the status to answer, then the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reject(pub u16);

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a complete head says.
#[derive(Debug)]
pub(crate) struct Head {
    /// Bytes of input the head took.
    pub len: usize,
    pub framing: Framing,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Parses a request head at the start of `buf` into `req` (cleared first).
///
/// `Ok(None)`: incomplete, more bytes needed. Rejections: 400 for anything malformed
/// or ambiguous, 431 for too many header lines, 417 for an unknown expectation.
pub(crate) fn parse_head(buf: &[u8], req: &mut Request) -> Result<Option<Head>, Reject> {
    // Uninitialised header slots: initialising 64 of them per request costs more than
    // parsing a small request.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Reject garbage early instead of waiting for a size or time limit.
            if buf.len() >= 2 && has_bare_lf(buf) {
                return Err(Reject(400));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Reject(431)),
        Err(_) => return Err(Reject(400)),
    };
    let head = &buf[..len];
    // httparse accepts a lone LF as a line end; a proxy in front may not. Refuse it.
    let method_at = parsed
        .method
        .map_or(0, |m| m.as_ptr() as usize - buf.as_ptr() as usize);
    if !line_ends_are_crlf(buf, head, method_at, parsed.headers) {
        return Err(Reject(400));
    }
    let http11 = match parsed.version {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(Reject(400)),
    };
    let method = parsed.method.ok_or(Reject(400))?;
    let target = parsed.path.ok_or(Reject(400))?;
    if target.is_empty() {
        return Err(Reject(400));
    }

    req.clear();
    req.head.extend_from_slice(head);
    let base = buf.as_ptr() as usize;
    // Every slice httparse returns points into `buf`; store offsets instead.
    let span = |s: &[u8]| -> Span {
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    req.method = span(method.as_bytes());
    req.target = span(target.as_bytes());
    req.http11 = http11;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut expect_continue = false;
    let mut host = false;
    let mut keep_alive = false;
    let mut close = false;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        req.headers.push((span(name), span(value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            // A repeated Content-Length must agree with the first one.
            if content_length.is_some_and(|m| m != n) {
                return Err(Reject(400));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a single `chunked` is understood; anything else (gzip, a list, a
            // second header) could be read differently elsewhere.
            if transfer_encoding || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Reject(400));
            }
            transfer_encoding = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Reject(417));
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            if host {
                return Err(Reject(400));
            }
            host = true;
        }
    }
    if http11 && !host {
        return Err(Reject(400));
    }
    if chunked && (content_length.is_some() || !http11) {
        return Err(Reject(400));
    }
    req.close = close || (!http11 && !keep_alive);
    let framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(Head {
        len,
        framing,
        expect_continue: expect_continue && http11 && framing != Framing::None,
    }))
}

/// Whether every line of a complete head ends with CRLF. Only line ends need
/// checking, and httparse tells where they are: after each header value (past any
/// trailing blanks), before the first header name (the request line's end), and the
/// head's last two bytes (the empty line). A head without headers must end with
/// CRLF CRLF. Leading empty lines (which httparse skips) must be CRLFs too.
fn line_ends_are_crlf(
    buf: &[u8],
    head: &[u8],
    method_at: usize,
    headers: &[httparse::Header<'_>],
) -> bool {
    // Empty lines before the request line (skipped by httparse) must be CRLFs.
    let leading = &head[..method_at.min(head.len())];
    if !leading.len().is_multiple_of(2) || !leading.chunks(2).all(|c| c == b"\r\n") {
        return false;
    }
    if !head.ends_with(b"\r\n") {
        return false;
    }
    let base = buf.as_ptr() as usize;
    let Some(first) = headers.first() else {
        return head.ends_with(b"\r\n\r\n");
    };
    let name_at = first.name.as_ptr() as usize - base;
    if name_at < 2 || &head[name_at - 2..name_at] != b"\r\n" {
        return false;
    }
    headers.iter().all(|h| {
        let mut end = h.value.as_ptr() as usize - base + h.value.len();
        while matches!(head.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        head.get(end..end + 2) == Some(b"\r\n")
    })
}

/// Whether some `\n` in `bytes` is not preceded by `\r` (for incomplete heads). Written as two counts so
/// the compiler vectorises it.
fn has_bare_lf(bytes: &[u8]) -> bool {
    let lf = bytes.iter().filter(|&&b| b == b'\n').count();
    let crlf = bytes
        .iter()
        .zip(bytes.iter().skip(1))
        .filter(|&(&a, &b)| a == b'\r' && b == b'\n')
        .count();
    lf != crlf
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Digits only (no sign, no list, no spaces inside), at most 18 of them.
fn parse_content_length(value: &[u8]) -> Result<u64, Reject> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Reject(400));
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Where a chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size.
    Size,
    /// After `;`: a chunk extension, skipped up to the CR.
    Extension,
    /// Saw the CR ending the size line.
    SizeLf,
    /// Inside chunk data: bytes left.
    Data(u64),
    /// After the data: expecting CR.
    DataCr,
    /// Expecting LF.
    DataLf,
    /// After the last chunk: at the start of a trailer line.
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Saw CR ending a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    /// Finished.
    Done,
}

/// An incremental `Transfer-Encoding: chunked` decoder with strict syntax: hex sizes
/// of at most 15 digits, CRLF everywhere, trailers skipped but counted.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: Chunk,
    size: u64,
    digits: u8,
    /// Bytes of size lines, extensions and trailers seen, bounded by `max_meta`.
    meta: usize,
    max_meta: usize,
}

impl ChunkedDecoder {
    /// A decoder allowing `max_meta` bytes of size lines, extensions and trailers.
    pub fn new(max_meta: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: Chunk::Size,
            size: 0,
            digits: 0,
            meta: 0,
            max_meta,
        }
    }

    /// Whether the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes from `input`, handing data to `out`; returns the bytes consumed (all of
    /// `input` unless the body ended inside it). 400 on bad syntax, 431 when the
    /// metadata exceeds its limit.
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<usize, Reject> {
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data(left) = self.state {
                let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                out(&input[i..i + n]);
                i += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            if self.state == Chunk::Done {
                break;
            }
            let b = input[i];
            i += 1;
            self.meta += 1;
            if self.meta > self.max_meta {
                return Err(Reject(431));
            }
            self.state = match (self.state, b) {
                (Chunk::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if self.digits == 15 {
                        return Err(Reject(400));
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex(b));
                    Chunk::Size
                }
                (Chunk::Size, b';') if self.digits > 0 => Chunk::Extension,
                (Chunk::Size, b'\r') if self.digits > 0 => Chunk::SizeLf,
                (Chunk::Size, _) => return Err(Reject(400)),
                (Chunk::Extension, b'\r') => Chunk::SizeLf,
                (Chunk::Extension, b'\n') => return Err(Reject(400)),
                (Chunk::Extension, c) if c < 0x20 && c != b'\t' || c == 0x7f => {
                    return Err(Reject(400))
                }
                (Chunk::Extension, _) => Chunk::Extension,
                (Chunk::SizeLf, b'\n') => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    if size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data(size)
                    }
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size,
                (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
                (Chunk::TrailerStart | Chunk::Trailer, b'\n') => return Err(Reject(400)),
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::TrailerStart | Chunk::Trailer, c) if c < 0x20 && c != b'\t' => {
                    return Err(Reject(400))
                }
                (Chunk::TrailerStart | Chunk::Trailer, _) => Chunk::Trailer,
                (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
                (Chunk::EndLf, b'\n') => Chunk::Done,
                _ => return Err(Reject(400)),
            };
        }
        Ok(i)
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Runs the head parser and, for a complete head with a chunked body, the chunk
/// decoder over `input`. For property tests: must never panic (it asserts that an
/// accepted head has no bare LF). Returns the status a rejection would give, or 0.
pub fn fuzz_parse(input: &[u8]) -> u16 {
    let mut req = Request::default();
    match parse_head(input, &mut req) {
        Err(Reject(s)) => s,
        Ok(None) => 0,
        Ok(Some(head)) => {
            let _ = (req.method(), req.target(), req.path(), req.query());
            // The fast line-end check must agree with the plain one.
            assert!(!has_bare_lf(&input[..head.len]), "a bare LF was accepted");
            if head.framing == Framing::Chunked {
                let mut dec = ChunkedDecoder::new(1024);
                if let Err(Reject(s)) = dec.feed(&input[head.len..], &mut |_| {}) {
                    return s;
                }
            }
            0
        }
    }
}

/// Decodes `input` as a chunked body twice, in one piece and split in two at `split`
/// (modulo its length), and asserts both give the same data, the same bytes consumed
/// and the same verdict. For fuzzing: must never panic. Returns the rejection status,
/// or 0.
pub fn fuzz_chunked(input: &[u8], split: usize) -> u16 {
    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, usize, Result<bool, u16>) {
        let mut dec = ChunkedDecoder::new(1024);
        let (mut data, mut consumed) = (Vec::new(), 0);
        for piece in pieces {
            match dec.feed(piece, &mut |d| data.extend_from_slice(d)) {
                Ok(n) => {
                    assert!(n <= piece.len(), "consumed more than it was given");
                    consumed += n;
                    if n < piece.len() {
                        assert!(dec.is_done(), "stopped early without finishing");
                        break;
                    }
                }
                Err(Reject(s)) => return (data, consumed, Err(s)),
            }
        }
        (data, consumed, Ok(dec.is_done()))
    }
    let at = split % (input.len() + 1);
    let whole = decode(&[input]);
    let halves = decode(&[&input[..at], &input[at..]]);
    match (&whole.2, &halves.2) {
        (Ok(_), Ok(_)) => assert_eq!(whole, halves, "splitting the input changed the result"),
        // A rejection comes at the same byte either way: the data before it agrees.
        (Err(a), Err(b)) => assert_eq!((a, &whole.0), (b, &halves.0)),
        _ => panic!("splitting the input changed the verdict: {whole:?} vs {halves:?}"),
    }
    match whole.2 {
        Err(s) => s,
        Ok(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<Head>, Reject> {
        parse_head(s.as_bytes(), &mut Request::default())
    }

    #[test]
    fn heads() {
        let mut req = Request::default();
        let h = parse_head(
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            &mut req,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(req.method(), "POST");
        assert_eq!(req.path(), "/a");
        assert_eq!(req.query(), Some("b=1"));
        assert_eq!(req.header("HOST"), Some(&b"x"[..]));
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert_eq!(
            head("GET / HTTP/1.1\nHost: x\n\n").unwrap_err(),
            Reject(400)
        );
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").unwrap_err(), Reject(400));
        let both =
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(both).unwrap_err(), Reject(400));
        let dup = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(head(dup).unwrap_err(), Reject(400));
        let same = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert!(head(same).unwrap().is_some());
        let fold = "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n";
        assert_eq!(head(fold).unwrap_err(), Reject(400));
        let plus = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n";
        assert_eq!(head(plus).unwrap_err(), Reject(400));
        let gzip = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(head(gzip).unwrap_err(), Reject(400));
        let space = "GET / HTTP/1.1\r\nHost : x\r\n\r\n";
        assert_eq!(head(space).unwrap_err(), Reject(400));
    }

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize, bool), Reject> {
        let mut dec = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        let n = dec.feed(input, &mut |d| out.extend_from_slice(d))?;
        Ok((out, n, dec.is_done()))
    }

    #[test]
    fn chunked() {
        let (out, n, done) =
            decode(b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(out, b"helloabc");
        assert_eq!(n, 33);
        assert!(done);
        assert!(decode(b"5\nhello\r\n").is_err());
        assert!(decode(b"5\r\nhelloX\r\n").is_err());
        assert!(decode(b"-5\r\n").is_err());
        assert!(decode(b"0x5\r\n").is_err());
        assert!(decode(b"ffffffffffffffff\r\n").is_err());
        assert!(decode(b" 5\r\n").is_err());
        // Byte by byte gives the same result.
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        for b in input {
            dec.feed(std::slice::from_ref(b), &mut |d| out.extend_from_slice(d))
                .unwrap();
        }
        assert!(dec.is_done());
        assert_eq!(out, b"hello");
    }
}

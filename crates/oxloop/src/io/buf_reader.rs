//! Buffered, line-oriented reading with a hard limit on line length.

use futures_io::AsyncRead;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The default largest line [`BufReader::lines`] accepts, terminator included.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Buffers an async reader and reads it line by line.
///
/// Unlike an unbounded `read_line`, every line read has a maximum length: a longer line
/// is an [`io::ErrorKind::InvalidData`] error, never unbounded memory.
///
/// ```
/// use oxloop::io::{pipe, BufReader};
/// use futures_util::AsyncWriteExt;
///
/// let ev = oxloop::EventLoop::new()?;
/// ev.block_on(async {
///     let (r, mut w) = pipe()?;
///     w.write_all(b"one\ntwo\n").await?;
///     drop(w);
///     let mut lines = BufReader::new(r);
///     let mut line = String::new();
///     lines.read_line(&mut line, 100).await?;
///     assert_eq!(line, "one\n");
///     Ok::<_, std::io::Error>(())
/// })??;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct BufReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl<R: AsyncRead + Unpin> BufReader<R> {
    /// Wraps `inner` with an 8 KiB buffer.
    pub fn new(inner: R) -> BufReader<R> {
        Self::with_capacity(8 * 1024, inner)
    }

    /// Wraps `inner` with a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize, inner: R) -> BufReader<R> {
        BufReader {
            inner,
            buf: vec![0; capacity.max(1)].into_boxed_slice(),
            pos: 0,
            filled: 0,
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader, mutably (reading from it directly skips the buffer).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Bytes buffered but not yet consumed.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.pos < self.filled {
            return Poll::Ready(Ok(self.filled - self.pos));
        }
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut self.buf))?;
        self.pos = 0;
        self.filled = n;
        Poll::Ready(Ok(n))
    }

    /// Appends bytes up to and including the next `\n` to `out`. Returns how many bytes
    /// were appended: 0 at end of stream. A line longer than `max_len` bytes (counting
    /// the `\n`) is an `InvalidData` error; the bytes read so far are discarded.
    pub async fn read_until_newline(
        &mut self,
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> io::Result<usize> {
        let start = out.len();
        poll_fn(|cx| loop {
            let available = std::task::ready!(self.poll_fill(cx))?;
            if available == 0 {
                return Poll::Ready(Ok(out.len() - start));
            }
            let chunk = &self.buf[self.pos..self.filled];
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if out.len() - start + take > max_len {
                out.truncate(start);
                // Skip what was looked at so the caller can resynchronise if it wants.
                self.pos += take;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line longer than {max_len} bytes"),
                )));
            }
            out.extend_from_slice(&chunk[..take]);
            self.pos += take;
            if done {
                return Poll::Ready(Ok(out.len() - start));
            }
        })
        .await
    }

    /// Like [`read_until_newline`](Self::read_until_newline) into a `String`; invalid
    /// UTF-8 is an `InvalidData` error.
    pub async fn read_line(&mut self, line: &mut String, max_len: usize) -> io::Result<usize> {
        let mut bytes = Vec::new();
        let n = self.read_until_newline(&mut bytes, max_len).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not valid UTF-8"))?;
        line.push_str(&text);
        Ok(n)
    }

    /// The lines of the stream without their terminators (`\n` or `\r\n`), each at most
    /// [`DEFAULT_MAX_LINE`] bytes. `Ok(None)` at end of stream.
    pub fn lines(self) -> Lines<R> {
        Lines {
            reader: self,
            max_len: DEFAULT_MAX_LINE,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for BufReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos == this.filled && out.len() >= this.buf.len() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let available = std::task::ready!(this.poll_fill(cx))?;
        let n = available.min(out.len());
        out[..n].copy_from_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// The lines of a [`BufReader`]; see [`BufReader::lines`].
pub struct Lines<R> {
    reader: BufReader<R>,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    /// Sets the longest accepted line, terminator included.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The next line without its terminator; `Ok(None)` at end of stream.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line, self.max_len).await? == 0 {
            return Ok(None);
        }
        if line.ends_with('\n') {
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
        }
        Ok(Some(line))
    }

    /// The reader back.
    pub fn into_inner(self) -> BufReader<R> {
        self.reader
    }
}

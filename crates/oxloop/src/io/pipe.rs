//! Async pipes.

use super::Async;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// The read end of an async pipe. Implements `futures_io::AsyncRead`.
#[derive(Debug)]
pub struct PipeReader {
    io: Async<std::io::PipeReader>,
}

/// The write end of an async pipe. Implements `futures_io::AsyncWrite`; closing it
/// (`close().await` or dropping it) gives the reader end of file.
#[derive(Debug)]
pub struct PipeWriter {
    io: Option<Async<std::io::PipeWriter>>,
}

/// Creates a pipe registered with the current thread's loop.
pub fn pipe() -> io::Result<(PipeReader, PipeWriter)> {
    let (r, w) = std::io::pipe()?;
    Ok((PipeReader::from_std(r)?, PipeWriter::from_std(w)?))
}

impl PipeReader {
    /// Registers std's pipe reader (for example a child's stdout) with the current loop.
    pub fn from_std(r: std::io::PipeReader) -> io::Result<PipeReader> {
        Ok(PipeReader { io: Async::new(r)? })
    }
}

impl PipeWriter {
    /// Registers std's pipe writer (for example a child's stdin) with the current loop.
    pub fn from_std(w: std::io::PipeWriter) -> io::Result<PipeWriter> {
        Ok(PipeWriter {
            io: Some(Async::new(w)?),
        })
    }
}

impl futures_io::AsyncRead for PipeReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        super::stream::poll_read(&self.io, cx, buf)
    }
}

#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncRead for PipeReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let n = std::task::ready!(super::stream::poll_read(
            &self.io,
            cx,
            buf.initialize_unfilled()
        ))?;
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl PipeWriter {
    /// The writer, while it is open; a closed one answers `BrokenPipe`.
    fn open(&self) -> io::Result<&Async<std::io::PipeWriter>> {
        self.io
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "pipe writer was closed"))
    }
}

impl futures_io::AsyncWrite for PipeWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        super::stream::poll_write(self.open()?, cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.io = None;
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncWrite for PipeWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        super::stream::poll_write(self.open()?, cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.io = None;
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsFd for PipeReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl AsRawFd for PipeReader {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

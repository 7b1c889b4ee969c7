//! The byte-stream glue shared by TCP, Unix and pipe streams: `futures_io` (and, with
//! the `tokio-io` feature, tokio) `AsyncRead`/`AsyncWrite` on top of [`Async`].

use super::Async;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::task::{Context, Poll};

/// Reads into `buf`. A short read means the kernel buffer is drained, so readiness is
/// cleared without paying for a `WouldBlock` round trip: the next arrival re-arms it.
/// Not after a hang-up, though: no edge will follow it, and the next read must run to
/// see the end of the stream.
pub(crate) fn poll_read<T>(
    io: &Async<T>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>>
where
    T: AsFd,
    for<'a> &'a T: Read,
{
    let result = std::task::ready!(io.poll_read_with(cx, |mut s| s.read(buf)));
    if let Ok(n) = result {
        if n > 0 && n < buf.len() && !io.peer_closed() {
            io.clear_readable();
        }
    }
    Poll::Ready(result)
}

pub(crate) fn poll_write<T>(
    io: &Async<T>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>>
where
    T: AsFd,
    for<'a> &'a T: Write,
{
    let result = std::task::ready!(io.poll_write_with(cx, |mut s| s.write(buf)));
    if let Ok(n) = result {
        if n < buf.len() {
            io.clear_writable();
        }
    }
    Poll::Ready(result)
}

pub(crate) fn poll_write_vectored<T>(
    io: &Async<T>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>>
where
    T: AsFd,
    for<'a> &'a T: Write,
{
    io.poll_write_with(cx, |mut s| s.write_vectored(bufs))
}

/// Implements `futures_io` (and optionally tokio) read/write traits for a stream type
/// whose field `$field` is an `Async<$inner>`. `$shutdown` closes the write side.
/// `poll_read` and `poll_write` are marked `#[inline]`: without the hint, whole-program
/// optimisation kept them out of line in a larger program (the `oxloop` command's
/// async echo took 653 instructions per message, against 579 with it).
macro_rules! impl_stream {
    ($ty:ty, $field:ident, $shutdown:expr) => {
        impl futures_io::AsyncRead for $ty {
            #[inline]
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::io::stream::poll_read(&self.$field, cx, buf)
            }
        }

        impl futures_io::AsyncWrite for $ty {
            #[inline]
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::io::stream::poll_write(&self.$field, cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::io::stream::poll_write_vectored(&self.$field, cx, bufs)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let shutdown: fn(&Self) -> std::io::Result<()> = $shutdown;
                std::task::Poll::Ready(shutdown(&self))
            }
        }

        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let unfilled = buf.initialize_unfilled();
                let n =
                    std::task::ready!($crate::io::stream::poll_read(&self.$field, cx, unfilled))?;
                buf.advance(n);
                std::task::Poll::Ready(Ok(()))
            }
        }

        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::io::stream::poll_write(&self.$field, cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                $crate::io::stream::poll_write_vectored(&self.$field, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let shutdown: fn(&Self) -> std::io::Result<()> = $shutdown;
                std::task::Poll::Ready(shutdown(&self))
            }
        }
    };
}
pub(crate) use impl_stream;

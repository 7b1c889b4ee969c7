//! A green socket's receive and send (`oxloop.green.socket`): the system call made
//! directly, never blocking, with the GIL held.
//!
//! The standard library's `socket.recv` allocates a buffer of the size asked for (64 KiB
//! in a typical read loop, from `malloc`, then shrunk to what arrived), parses its
//! arguments from a tuple, and releases and takes back the GIL around the call; a
//! green socket's fd is non-blocking, so none of that is needed. Here the bytes land in
//! one reused buffer and the result is a `bytes` object of their exact size. Where the
//! standard library raises `BlockingIOError` these return `None`, so that the green
//! socket waits without an exception being raised and caught.

use crate::ffi;
use crate::running::GilCell;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::io;
use std::os::fd::RawFd;

/// The receive buffer, reused by every call (the GIL serialises them, and nothing in a
/// call gives it up). Grown to the largest size asked for, up to `SCRATCH_LIMIT`.
static SCRATCH: GilCell<Vec<u8>> = GilCell::new(Vec::new());

/// Larger reads use a buffer of their own, freed after the call.
const SCRATCH_LIMIT: usize = 256 * 1024;

/// `socket.recv(bufsize, flags)` on the fd without waiting: the bytes (`b""` at end
/// of stream), or `None` if none are there yet.
#[pyfunction]
pub(crate) fn _socket_recv(
    py: Python<'_>,
    fd: RawFd,
    bufsize: isize,
    flags: i32,
) -> PyResult<Option<Bound<'_, PyBytes>>> {
    if bufsize < 0 {
        return Err(PyValueError::new_err("negative buffersize in recv"));
    }
    let size = bufsize as usize;
    loop {
        let received = if size <= SCRATCH_LIMIT {
            let mut scratch = SCRATCH.borrow_mut(py);
            if scratch.len() < size {
                scratch.resize(size, 0);
            }
            ffi::recv_nonblocking(fd, &mut scratch[..size], flags)
                .map(|n| PyBytes::new(py, &scratch[..n]))
        } else {
            let mut buffer = vec![0u8; size];
            ffi::recv_nonblocking(fd, &mut buffer, flags).map(|n| PyBytes::new(py, &buffer[..n]))
        };
        match received {
            Ok(data) => return Ok(Some(data)),
            Err(err) => match would_block_or_retry(py, &err)? {
                true => return Ok(None),
                false => continue,
            },
        }
    }
}

/// `socket.send(data, flags)` on the fd without waiting: how many bytes went, or
/// `None` if none could.
#[pyfunction]
pub(crate) fn _socket_send(
    py: Python<'_>,
    fd: RawFd,
    data: &Bound<'_, PyAny>,
    flags: i32,
) -> PyResult<Option<usize>> {
    loop {
        let sent = match data.cast_exact::<PyBytes>() {
            Ok(bytes) => ffi::send_nonblocking(fd, bytes.as_bytes(), flags),
            Err(_) => ffi::with_bytes_like(data, |bytes| ffi::send_nonblocking(fd, bytes, flags))?,
        };
        match sent {
            Ok(n) => return Ok(Some(n)),
            Err(err) => match would_block_or_retry(py, &err)? {
                true => return Ok(None),
                false => continue,
            },
        }
    }
}

/// For a failed call: `Ok(true)` if it would have blocked, `Ok(false)` if a signal
/// interrupted it (its Python handler has run and the call is to be made again, as
/// the standard library does), else the `OSError` to raise.
fn would_block_or_retry(py: Python<'_>, err: &io::Error) -> PyResult<bool> {
    match err.kind() {
        io::ErrorKind::WouldBlock => Ok(true),
        io::ErrorKind::Interrupted => py.check_signals().map(|()| false),
        _ => Err(ffi::os_error_from_errno(
            py,
            err.raw_os_error().unwrap_or(libc::EIO),
        )),
    }
}

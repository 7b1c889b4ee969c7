//! The transport's sends: every one goes through rustix with the same flags.

use rustix::net::SendFlags;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;

/// Flags for every send: a reset peer must give `EPIPE`, not a process-killing
/// `SIGPIPE` (where `MSG_NOSIGNAL` is missing, `SO_NOSIGPIPE`, set by
/// `prepare_stream`, does the job).
#[cfg(not(any(target_vendor = "apple", target_os = "redox")))]
pub(crate) const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(any(target_vendor = "apple", target_os = "redox"))]
pub(crate) const SEND_FLAGS: SendFlags = SendFlags::empty();

/// Sends `data`; a short count means the socket took only that much.
pub(crate) fn send(fd: impl AsFd, data: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(fd, data, SEND_FLAGS)?)
}

/// Sends the slices in order with one system call (`sendmsg`).
pub(crate) fn send_vectored(fd: impl AsFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut no_control = rustix::net::SendAncillaryBuffer::default();
    Ok(rustix::net::sendmsg(
        fd,
        slices,
        &mut no_control,
        SEND_FLAGS,
    )?)
}

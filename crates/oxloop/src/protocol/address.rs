//! Socket addresses of both families the transports handle.

use socket2::SockAddr;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The address of a socket: an IP address and port, or a Unix socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address with its port.
    Inet(SocketAddr),
    /// A Unix socket, with its path; `None` for an unnamed socket (a client that did
    /// not bind, one end of a socket pair) or an abstract one.
    Unix(Option<PathBuf>),
}

impl Address {
    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(addr) => Some(*addr),
            Address::Unix(_) => None,
        }
    }

    /// The path, if this is a named Unix socket.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(Some(path)) => Some(path),
            _ => None,
        }
    }

    pub(crate) fn from_sockaddr(addr: &SockAddr) -> Address {
        match addr.as_socket() {
            Some(inet) => Address::Inet(inet),
            None => Address::Unix(addr.as_pathname().map(Path::to_path_buf)),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Inet(addr)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Address {
        Address::Unix(Some(path))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => addr.fmt(f),
            Address::Unix(Some(path)) => path.display().fmt(f),
            Address::Unix(None) => f.write_str("(unnamed)"),
        }
    }
}

//! Name resolution without blocking the loop: the system resolver, run on the blocking
//! pool (`getaddrinfo` and `getnameinfo` have no non-blocking form).

use crate::task::spawn_blocking;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Resolves `host` (a name or an address literal) to socket addresses with `port`,
/// exactly as `std::net::ToSocketAddrs` does, without blocking the loop.
pub async fn lookup_host(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let host = host.to_string();
    spawn_blocking(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    })
    .await?
}

/// Reverse lookup: the name of `ip` from the system resolver (`getnameinfo`).
pub async fn lookup_addr(ip: IpAddr) -> io::Result<String> {
    spawn_blocking(move || dns_lookup::lookup_addr(&ip)).await?
}

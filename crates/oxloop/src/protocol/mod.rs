//! Protocols and transports: callback-driven TCP, UDP and Unix servers and clients.
//!
//! The model is asyncio's (and uvloop's): a [`Transport`] owns a socket and does the
//! I/O; a [`Protocol`] you write receives what happens to it (`connection_made`,
//! `data_received`, `eof_received`, `connection_lost`, and the flow-control calls
//! `pause_writing` / `resume_writing`). No futures, no tasks: one read per readiness
//! report, one thread-local read buffer shared by every connection of the thread,
//! writes that go straight to the socket when it accepts them.
//!
//! The loop's networking entry points come from the [`LoopNetExt`] extension trait,
//! implemented for [`EventLoop`] (bring it into scope with
//! `use oxloop::protocol::LoopNetExt`):
//!
//! | method | what it does |
//! |---|---|
//! | [`create_server`](LoopNetExt::create_server) / [`create_server_with`](LoopNetExt::create_server_with) | TCP listener(s), one protocol per accepted connection |
//! | [`create_unix_server`](LoopNetExt::create_unix_server) | the same on a Unix socket path |
//! | [`create_connection`](LoopNetExt::create_connection) | TCP client, non-blocking connect, optional timeout |
//! | [`create_unix_connection`](LoopNetExt::create_unix_connection) | Unix stream client |
//! | [`create_datagram_endpoint`](LoopNetExt::create_datagram_endpoint) | UDP socket |
//! | [`create_unix_datagram_endpoint`](LoopNetExt::create_unix_datagram_endpoint) | Unix datagram socket |
//!
//! ```no_run
//! use oxloop::protocol::{LoopNetExt, Protocol, Transport};
//! use oxloop::EventLoop;
//!
//! struct Echo(Option<Transport>);
//!
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, transport: Transport) {
//!         self.0 = Some(transport);
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         if let Some(t) = &self.0 {
//!             let _ = t.write(data); // fails only once the connection is closed
//!         }
//!     }
//! }
//!
//! let ev = EventLoop::new()?;
//! let server = ev.create_server("127.0.0.1:7000", || Echo(None))?;
//! println!("listening on {:?}", server.local_addrs());
//! ev.run_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Lifetimes and cycles
//!
//! A protocol usually keeps its transport, and the loop keeps the transport (through
//! its fd watchers) while the connection is open. When the connection closes the
//! transport removes its watchers, cancels its owned timeouts
//! ([`Transport::call_later`]), closes the socket, calls `connection_lost` in a later
//! callback and then drops the protocol, so nothing outlives the connection unless you
//! keep it. The same holds for a [`Server`] until [`Server::close`].
//!
//! # Errors
//!
//! Errors that happen while setting something up (a bad address, a port in use) are
//! returned at once. Errors on an established connection (a reset peer, a failed
//! write) close the transport and reach the protocol exactly once, as
//! `connection_lost(Some(err))`. [`Transport::write`] after the transport was closed
//! returns an error and never panics; `SIGPIPE` is never raised (`MSG_NOSIGNAL`, and
//! `SO_NOSIGPIPE` where that is the mechanism).

mod address;
mod buffer;
mod connect;
mod datagram;
mod send;
mod server;
mod slot;
mod stream;

pub use address::Address;
pub use connect::ConnectOptions;
pub use datagram::{DatagramProtocol, DatagramTransport};
pub use server::{Server, ServerOptions};
pub use stream::Transport;

use crate::EventLoop;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// The callbacks of a stream connection (TCP or Unix), called on the loop's thread.
///
/// Only [`data_received`](Protocol::data_received) is required. The order is:
/// `connection_made`, then any number of `data_received`, then at most one
/// `eof_received`, then exactly one `connection_lost`; `pause_writing` and
/// `resume_writing` alternate in between (never two pauses in a row).
pub trait Protocol {
    /// The connection is established. Keep `transport` to write and close.
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Bytes arrived. `data` borrows the loop's shared read buffer: copy what you need
    /// to keep.
    fn data_received(&mut self, data: &[u8]);

    /// The peer closed its writing side. Return `true` to keep the connection open for
    /// writing (a half-closed connection; close it yourself later), `false` (the
    /// default) to close the transport.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is closed: `None` after a normal close or abort, `Some(err)` when
    /// an error ended it. Called once, in its own loop callback; the transport drops
    /// the protocol afterwards.
    fn connection_lost(&mut self, err: Option<io::Error>) {
        let _ = err;
    }

    /// The transport's write buffer went above its high-water mark: stop producing
    /// data until [`resume_writing`](Protocol::resume_writing).
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark: producing may resume.
    fn resume_writing(&mut self) {}
}

/// Networking methods for [`EventLoop`]: servers, clients and datagram endpoints
/// built on [`Protocol`] and [`Transport`].
///
/// It is an extension trait so that the loop itself stays free of socket code; import
/// it with `use oxloop::protocol::LoopNetExt;`.
pub trait LoopNetExt {
    /// Listens on every address `addrs` resolves to (with [`ServerOptions::default`]:
    /// backlog 1024, `SO_REUSEADDR`), calling `factory` for a new protocol per accepted
    /// connection. Port 0 picks a free port; see [`Server::local_addrs`].
    fn create_server<P, F>(&self, addrs: impl ToSocketAddrs, factory: F) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static;

    /// [`create_server`](LoopNetExt::create_server) with explicit options (backlog,
    /// `SO_REUSEPORT`, ...).
    fn create_server_with<P, F>(
        &self,
        addrs: impl ToSocketAddrs,
        options: &ServerOptions,
        factory: F,
    ) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static;

    /// Listens on the Unix socket `path`. A stale socket file left at `path` is
    /// replaced (any other kind of file is an error); the file is removed again by
    /// [`Server::close`].
    fn create_unix_server<P, F>(
        &self,
        path: impl AsRef<Path>,
        options: &ServerOptions,
        factory: F,
    ) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static;

    /// Connects to `addr` without blocking. Once connected, `protocol` gets
    /// `connection_made` and `done` gets the transport; if the connection is refused,
    /// fails or times out ([`ConnectOptions::timeout`], [`io::ErrorKind::TimedOut`]),
    /// `done` gets the error and `protocol` is dropped. `done` is always called from a
    /// loop callback, never from inside this method. An error returned here (no socket
    /// could be created) means `done` will not be called.
    fn create_connection<P, F>(
        &self,
        addr: SocketAddr,
        protocol: P,
        options: &ConnectOptions,
        done: F,
    ) -> io::Result<()>
    where
        P: Protocol + 'static,
        F: FnOnce(io::Result<Transport>) + 'static;

    /// [`create_connection`](LoopNetExt::create_connection) to a Unix stream socket.
    fn create_unix_connection<P, F>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        options: &ConnectOptions,
        done: F,
    ) -> io::Result<()>
    where
        P: Protocol + 'static,
        F: FnOnce(io::Result<Transport>) + 'static;

    /// A UDP socket bound to `local` (default: an ephemeral port on the family of
    /// `remote`) and, if `remote` is given, connected to it so that
    /// [`DatagramTransport::send`] needs no address. At least one of the two is needed.
    fn create_datagram_endpoint<P>(
        &self,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        protocol: P,
    ) -> io::Result<DatagramTransport>
    where
        P: DatagramProtocol + 'static;

    /// A Unix datagram socket bound to `local` (unbound if `None`: it can send but
    /// receives no replies) and optionally connected to `remote`.
    fn create_unix_datagram_endpoint<P>(
        &self,
        local: Option<&Path>,
        remote: Option<&Path>,
        protocol: P,
    ) -> io::Result<DatagramTransport>
    where
        P: DatagramProtocol + 'static;
}

impl LoopNetExt for EventLoop {
    fn create_server<P, F>(&self, addrs: impl ToSocketAddrs, factory: F) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        self.create_server_with(addrs, &ServerOptions::default(), factory)
    }

    fn create_server_with<P, F>(
        &self,
        addrs: impl ToSocketAddrs,
        options: &ServerOptions,
        factory: F,
    ) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        let addrs: Vec<SocketAddr> = addrs.to_socket_addrs()?.collect();
        server::create_tcp(self, &addrs, options, server::boxed_factory(factory))
    }

    fn create_unix_server<P, F>(
        &self,
        path: impl AsRef<Path>,
        options: &ServerOptions,
        factory: F,
    ) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        server::create_unix(self, path.as_ref(), options, server::boxed_factory(factory))
    }

    fn create_connection<P, F>(
        &self,
        addr: SocketAddr,
        protocol: P,
        options: &ConnectOptions,
        done: F,
    ) -> io::Result<()>
    where
        P: Protocol + 'static,
        F: FnOnce(io::Result<Transport>) + 'static,
    {
        connect::connect(
            self,
            socket2::SockAddr::from(addr),
            Box::new(protocol),
            options,
            Box::new(done),
        )
    }

    fn create_unix_connection<P, F>(
        &self,
        path: impl AsRef<Path>,
        protocol: P,
        options: &ConnectOptions,
        done: F,
    ) -> io::Result<()>
    where
        P: Protocol + 'static,
        F: FnOnce(io::Result<Transport>) + 'static,
    {
        connect::connect(
            self,
            socket2::SockAddr::unix(path.as_ref())?,
            Box::new(protocol),
            options,
            Box::new(done),
        )
    }

    fn create_datagram_endpoint<P>(
        &self,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        protocol: P,
    ) -> io::Result<DatagramTransport>
    where
        P: DatagramProtocol + 'static,
    {
        datagram::create_udp(self, local, remote, Box::new(protocol))
    }

    fn create_unix_datagram_endpoint<P>(
        &self,
        local: Option<&Path>,
        remote: Option<&Path>,
        protocol: P,
    ) -> io::Result<DatagramTransport>
    where
        P: DatagramProtocol + 'static,
    {
        datagram::create_unix(self, local, remote, Box::new(protocol))
    }
}

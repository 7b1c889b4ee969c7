//! Switching protocols: a handler answers `101 Switching Protocols` with
//! [`Response::upgrade`](crate::Response::upgrade), and after that head the connection
//! belongs to an [`Upgraded`] value (a WebSocket session, for example).

use oxloop::protocol::Transport;
use std::borrow::Cow;
use std::io;

/// What speaks on a connection after its `101 Switching Protocols` response.
///
/// The HTTP connection forwards the transport's calls to it; its timeouts and limits
/// no longer apply (the new protocol keeps its own). The connection still counts
/// towards [`HttpServer::connections`](crate::HttpServer::connections) until it is
/// closed, so a graceful shutdown waits for it after asking it to end
/// ([`shut_down`](Upgraded::shut_down)).
///
/// The methods are called while the HTTP connection is in use: they must not call
/// back into the [`HttpServer`](crate::HttpServer) (schedule such work with
/// `call_soon`).
pub trait Upgraded {
    /// The `101` head has been handed to `transport`. `buffered` holds what the
    /// client sent after the request head and was already read (the first bytes of
    /// the new protocol, possibly none).
    fn connected(&mut self, transport: Transport, buffered: &[u8]);

    /// Bytes arrived (see [`Protocol::data_received`](oxloop::protocol::Protocol::data_received)).
    fn data_received(&mut self, data: &[u8]);

    /// The client shut its writing side; `true` keeps the connection open for writing
    /// (see [`Protocol::eof_received`](oxloop::protocol::Protocol::eof_received)).
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is closed.
    fn connection_lost(&mut self, err: Option<io::Error>);

    /// The transport's write buffer drained to its low-water mark (whether it is
    /// above the high-water mark is [`Transport::is_writing_paused`]).
    fn resume_writing(&mut self) {}

    /// The server shuts down gracefully: end the connection soon, the protocol's
    /// polite way (a WebSocket sends a close frame).
    fn shut_down(&mut self);
}

/// The protocol a `101` response switches to.
pub(crate) struct Upgrade {
    /// The `Upgrade` header's value.
    pub protocol: Cow<'static, str>,
    pub upgraded: Box<dyn Upgraded>,
}

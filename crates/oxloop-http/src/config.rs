//! Server limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of an [`HttpServer`](crate::HttpServer). Build with
/// [`Config::default`] and the setters.
///
/// | setting | default | when exceeded |
/// |---|---|---|
/// | `max_head_bytes` | 16 KiB | 431, close |
/// | `max_body_bytes` | 8 MiB | 413, close |
/// | `head_timeout` (first byte of a request to the end of its head) | 10 s | 408, close |
/// | `body_timeout` (longest pause between two reads of a body) | 10 s | 408, close |
/// | `idle_timeout` (keep-alive connection without a request) | 60 s | silent close |
/// | `max_connections` | 10 000 | accepting pauses until one closes (a connection accepted in the same burst past the limit gets 503) |
/// | `reuse_port` | off | (listens with `SO_REUSEPORT`: several loops or processes share the port, see `oxloop::cluster`) |
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) max_head_bytes: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) head_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) server_name: String,
    pub(crate) log_requests: bool,
    pub(crate) reuse_port: bool,
    pub(crate) peer_addrs: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            server_name: "oxloop".to_string(),
            log_requests: false,
            reuse_port: false,
            peer_addrs: false,
        }
    }
}

impl Config {
    /// The largest request head (request line plus headers), in bytes.
    pub fn max_head_bytes(mut self, n: usize) -> Config {
        self.max_head_bytes = n;
        self
    }

    /// The largest request body, in bytes (`Content-Length` or decoded chunks).
    pub fn max_body_bytes(mut self, n: u64) -> Config {
        self.max_body_bytes = n;
        self
    }

    /// How long a request head may take from its first byte.
    pub fn head_timeout(mut self, d: Duration) -> Config {
        self.head_timeout = d;
        self
    }

    /// The longest silence allowed while a body is arriving.
    pub fn body_timeout(mut self, d: Duration) -> Config {
        self.body_timeout = d;
        self
    }

    /// How long an idle keep-alive connection stays open; also how long a client may
    /// go without reading any of the output that holds its pipelined requests back
    /// (more than the transport's high-water mark buffered) before the connection is
    /// closed.
    pub fn idle_timeout(mut self, d: Duration) -> Config {
        self.idle_timeout = d;
        self
    }

    /// The most connections open at once; at the limit the server stops accepting
    /// (the kernel queues new ones in the listen backlog) until one closes. The
    /// listener accepts connections in bursts, so one accepted past the limit before
    /// accepting stopped is answered 503 and closed.
    pub fn max_connections(mut self, n: usize) -> Config {
        self.max_connections = n.max(1);
        self
    }

    /// The `Server` header's value (empty: no header).
    pub fn server_name(mut self, name: impl Into<String>) -> Config {
        self.server_name = name.into();
        self
    }

    /// Logs one line per request (peer, method, target, status, body bytes) as a
    /// `tracing` event at INFO level with target [`ACCESS_LOG_TARGET`](crate::ACCESS_LOG_TARGET);
    /// a subscriber decides where it goes.
    pub fn log_requests(mut self, on: bool) -> Config {
        self.log_requests = on;
        self
    }

    /// Listens with `SO_REUSEPORT`, so that several loops (an `oxloop::cluster`) or
    /// processes serve the same port, the kernel spreading connections over them.
    pub fn reuse_port(mut self, on: bool) -> Config {
        self.reuse_port = on;
        self
    }

    /// Reads each connection's peer address once (one `getpeername(2)`) and hands it
    /// to its requests ([`Request::peer_addr`](crate::Request::peer_addr)). Off by
    /// default.
    pub fn peer_addrs(mut self, on: bool) -> Config {
        self.peer_addrs = on;
        self
    }
}

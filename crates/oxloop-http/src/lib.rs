//! oxloop-http: an HTTP/1.1 server on oxloop's protocol layer.
//!
//! - [`HttpServer::bind`] answers with a plain closure `Fn(&Request) -> Response`, run
//!   on the loop with the whole body read (the fastest path);
//! - [`HttpServer::bind_async`] runs an `async` handler per request as an oxloop task,
//!   with a streamed request body ([`Request::take_body`]) and optionally a streamed
//!   response ([`Response::stream`]);
//! - [`serve_dir`] / [`StaticFiles`] serve a directory;
//! - [`Response::upgrade`] switches a connection to another protocol (WebSocket):
//!   after the `101` head, an [`Upgraded`] value gets the connection's bytes.
//!
//! ```no_run
//! use oxloop::EventLoop;
//! use oxloop_http::{Config, HttpServer, Response};
//!
//! let ev = EventLoop::new()?;
//! HttpServer::bind(&ev, "127.0.0.1:8080", Config::default(), |_req| {
//!     Response::text("Hello, World!")
//! })?;
//! ev.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! An async handler gets the request by value; its body arrives as a stream, and the
//! response can be streamed too:
//!
//! ```no_run
//! use oxloop::{task, EventLoop};
//! use oxloop_http::{Config, HttpServer, Response};
//!
//! let ev = EventLoop::new()?;
//! HttpServer::bind_async(&ev, "127.0.0.1:8080", Config::default(), |mut req| async move {
//!     if req.path() == "/upload" {
//!         let mut size = 0;
//!         if let Some(mut body) = req.take_body() {
//!             while let Ok(Some(piece)) = body.chunk().await {
//!                 size += piece.len();
//!             }
//!         }
//!         return Response::text(format!("{size} bytes\n"));
//!     }
//!     let (response, mut writer) = Response::stream(200);
//!     task::spawn(async move {
//!         for i in 0..3 {
//!             let _ = writer.send(format!("line {i}\n")).await;
//!         }
//!     }); // the body ends when `writer` is dropped
//!     response.content_type("text/plain")
//! })?;
//! ev.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What the server does for you
//!
//! HTTP/1.0 and 1.1, keep-alive, pipelining (responses in request order),
//! `Content-Length` and chunked request bodies, `Expect: 100-continue`, `HEAD`,
//! `Date` and `Server` headers, `Connection: close` in both directions.
//!
//! Bad input gets a clear answer and the connection is closed: 400 for malformed or
//! ambiguous requests (both `Content-Length` and `Transfer-Encoding`, differing
//! `Content-Length`s, obsolete line folding, bare LF, bad chunk sizes, an unknown
//! transfer coding), 431 for heads that are too large, 413 for bodies that are too
//! large, 408 when a head or body arrives too slowly. See [`Config`] for the limits.
//! A closing connection shuts its write side first and drains the client's input for
//! up to two seconds, so that unread bytes do not turn the close into a reset that
//! would destroy the error response in flight.
//!
//! # Connections and the protocol layer
//!
//! Each connection is an oxloop [`Protocol`](oxloop::protocol::Protocol); the
//! transport does the socket I/O. Requests of one connection are handled one at a
//! time, in order: while an async handler runs or a body is being streamed out,
//! pipelined requests wait in the connection's buffer (reading pauses when more than
//! `max_head_bytes` wait). Timeouts are the transport's own `call_later` timeouts,
//! one per connection, re-armed only when a deadline moves earlier.
//!
//! Large files go out with `sendfile(2)` through the transport's write buffer, so they
//! keep their place among the responses; see [`StaticFiles`]. While a connection's
//! output is above the transport's high-water mark, its pipelined requests wait, so a
//! client that sends without reading holds neither unbounded memory nor open files; one
//! that reads nothing for `idle_timeout` is disconnected. A client that half-closes
//! after sending still gets every answer before the server closes.

#![warn(missing_docs)]

mod body;
mod config;
mod conn;
mod head;
mod parse;
mod request;
mod response;
mod server;
mod shared;
mod static_files;
mod upgrade;

pub use body::{BodyWriter, RequestBody};
pub use config::Config;
pub use head::reason;
pub use request::{Request, Version};
pub use response::Response;
pub use server::HttpServer;
pub use static_files::{serve_dir, serve_dir_forever, StaticFiles};
pub use upgrade::Upgraded;

/// The `tracing` target of the request log lines ([`Config::log_requests`]).
pub const ACCESS_LOG_TARGET: &str = "oxloop_http::access";

#[doc(hidden)]
pub mod fuzz {
    //! Entry points for property tests and fuzzing of the parser (`fuzz/`).
    pub use crate::parse::{fuzz_chunked, fuzz_parse};
}

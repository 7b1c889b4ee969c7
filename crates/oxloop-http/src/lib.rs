//! oxloop-http: an HTTP/1.1 server on oxloop's protocol layer.
//!
//! - [`HttpServer::bind`] answers with a plain closure `Fn(&Request) -> Response`, run
//!   on the loop with the whole body read (the fastest path);
//! - [`HttpServer::bind_async`] runs an `async` handler per request as an oxloop task,
//!   with a streamed request body ([`Request::take_body`]) and optionally a streamed
//!   response ([`Response::stream`]);
//! - [`serve_dir`] / [`StaticFiles`] serve a directory.
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

#![warn(missing_docs)]

mod body;
mod config;
mod conn;
mod date;
mod parse;
mod request;
mod response;
mod server;
mod static_files;

pub use body::{BodyWriter, RequestBody};
pub use config::Config;
pub use request::{Request, Version};
pub use response::{reason, Response};
pub use server::HttpServer;
pub use static_files::{serve_dir, StaticFiles};

#[doc(hidden)]
pub mod fuzz {
    //! Entry points for property tests of the parser.
    pub use crate::parse::fuzz_parse;
}

//! Answers every request with `Hello, World!` (text/plain) until killed: the subject
//! of the HTTP benchmark.
//!
//! ```text
//! cargo run --release -p oxloop-http --example http_hello -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/
//! ```

use oxloop::EventLoop;
use oxloop_http::{Config, HttpServer, Response};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let ev = EventLoop::new()?;
    let server = HttpServer::bind(&ev, addr.as_str(), Config::default(), |_req| {
        Response::text("Hello, World!").content_type("text/plain")
    })?;
    println!("listening on {}", server.local_addr());
    ev.run_forever()
}

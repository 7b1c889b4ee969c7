//! A TCP echo server on the protocol API, running until killed.
//!
//! ```text
//! cargo run --release --example tcp_echo_server -- 127.0.0.1:7000
//! ```
//!
//! Port 0 picks a free port; the first line printed is `listening on <address>`.

use oxloop::protocol::{LoopNetExt, Protocol, Transport};
use oxloop::EventLoop;
use std::io::Write;

/// Writes back whatever arrives.
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // Fails only if the connection is already closed; then there is no one to
            // echo to, and connection_lost follows.
            let _ = t.write(data);
        }
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let ev = EventLoop::new()?;
    let server = ev.create_server(addr.as_str(), || Echo { transport: None })?;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    std::io::stdout().flush()?;
    ev.run_forever()
}

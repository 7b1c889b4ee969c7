//! A UDP echo server: every datagram goes back to its sender. Runs until killed.
//!
//! ```text
//! cargo run --release --example udp_echo_server -- 127.0.0.1:7001
//! ```

use oxloop::protocol::{Address, DatagramProtocol, DatagramTransport, LoopNetExt};
use oxloop::EventLoop;
use std::io::Write;
use std::net::SocketAddr;

struct Echo {
    transport: Option<DatagramTransport>,
}

impl DatagramProtocol for Echo {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: Address) {
        if let Some(t) = &self.transport {
            if let Err(e) = t.sendto(data, Some(&addr)) {
                eprintln!("cannot answer {addr}: {e}");
            }
        }
    }

    fn error_received(&mut self, err: std::io::Error) {
        eprintln!("error: {err}");
    }
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let ev = EventLoop::new()?;
    let endpoint = ev.create_datagram_endpoint(Some(addr), None, Echo { transport: None })?;
    println!("listening on {}", endpoint.local_addr()?);
    std::io::stdout().flush()?;
    ev.run_forever()
}

//! An echo server that closes connections that stay silent too long, with a timeout
//! owned by the transport (cancelled automatically when the connection closes).
//!
//! ```text
//! cargo run --release --example idle_timeout_server -- 127.0.0.1:7003 [timeout_ms]
//! ```
//!
//! The default timeout is 10 s. A silent client gets `idle for <n> ms, closing` and
//! is disconnected.

use oxloop::protocol::{LoopNetExt, Protocol, Transport};
use oxloop::{EventLoop, Handle};
use std::io::Write;
use std::time::Duration;

struct IdleEcho {
    timeout: Duration,
    transport: Option<Transport>,
    timer: Option<Handle>,
}

impl IdleEcho {
    /// (Re)starts the idle timer.
    fn arm(&mut self) {
        if let Some(old) = self.timer.take() {
            old.cancel();
        }
        let Some(t) = &self.transport else { return };
        let t2 = t.clone();
        let ms = self.timeout.as_millis();
        self.timer = Some(t.call_later(self.timeout, move || {
            let _ = t2.write(format!("idle for {ms} ms, closing\n").as_bytes());
            t2.close();
        }));
    }
}

impl Protocol for IdleEcho {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
        self.arm();
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            let _ = t.write(data);
        }
        self.arm();
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7003".to_string());
    let ms: u64 = match args.next().map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            eprintln!("bad timeout: {e}");
            std::process::exit(2);
        }
    };
    let timeout = Duration::from_millis(ms);
    let ev = EventLoop::new()?;
    let server = ev.create_server(addr.as_str(), move || IdleEcho {
        timeout,
        transport: None,
        timer: None,
    })?;
    for a in server.local_addrs() {
        println!("listening on {a} (idle timeout {ms} ms)");
    }
    std::io::stdout().flush()?;
    ev.run_forever()
}

//! A TCP echo client: sends messages one at a time and checks every echoed byte.
//!
//! ```text
//! cargo run --release --example tcp_echo_client -- 127.0.0.1:7000 [messages] [size]
//! ```
//!
//! Prints `echoed <n> messages of <size> bytes` and exits 0 when every byte came back
//! as sent; exits 1 on a mismatch, a refused connection or a 5 s connect timeout.

use oxloop::protocol::{ConnectOptions, LoopNetExt, Protocol, Transport};
use oxloop::EventLoop;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Outcome {
    echoed: usize,
    error: Option<String>,
}

/// Sends message `i` (bytes derived from `i`), waits for all of it to come back,
/// checks it, sends the next.
struct PingPong {
    transport: Option<Transport>,
    messages: usize,
    size: usize,
    current: Vec<u8>,
    received: usize,
    outcome: Rc<RefCell<Outcome>>,
}

impl PingPong {
    fn send_next(&mut self) {
        let t = self.transport.as_ref().expect("connected");
        let done = self.outcome.borrow().echoed;
        if done == self.messages {
            t.close();
            return;
        }
        self.current = (0..self.size).map(|j| (done * 31 + j) as u8).collect();
        self.received = 0;
        if let Err(e) = t.write(&self.current) {
            self.outcome.borrow_mut().error = Some(format!("write failed: {e}"));
        }
    }
}

impl Protocol for PingPong {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
        self.send_next();
    }

    fn data_received(&mut self, data: &[u8]) {
        let expected = &self.current[self.received..];
        if data.len() > expected.len() || data != &expected[..data.len()] {
            self.outcome.borrow_mut().error = Some("echoed bytes differ from the sent ones".into());
            self.transport.as_ref().unwrap().abort();
            return;
        }
        self.received += data.len();
        if self.received == self.size {
            self.outcome.borrow_mut().echoed += 1;
            self.send_next();
        }
    }

    fn eof_received(&mut self) -> bool {
        let mut outcome = self.outcome.borrow_mut();
        if outcome.echoed < self.messages && outcome.error.is_none() {
            outcome.error = Some("the server closed the connection early".into());
        }
        false
    }

    fn connection_lost(&mut self, err: Option<io::Error>) {
        if let Some(e) = err {
            self.outcome.borrow_mut().error.get_or_insert(e.to_string());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = match args.next().map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: tcp_echo_client <ip:port> [messages] [size]");
            std::process::exit(2);
        }
    };
    let messages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let ev = EventLoop::new().expect("event loop");
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    let protocol = PingPong {
        transport: None,
        messages,
        size: size.max(1),
        current: Vec::new(),
        received: 0,
        outcome: outcome.clone(),
    };
    let o = outcome.clone();
    let start = Instant::now();
    ev.create_connection(
        addr,
        protocol,
        &ConnectOptions::new().timeout(Duration::from_secs(5)),
        move |result| {
            if let Err(e) = result {
                o.borrow_mut().error = Some(e.to_string());
            }
        },
    )
    .expect("socket");
    ev.run().expect("loop");
    let outcome = outcome.borrow();
    match &outcome.error {
        Some(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        None => println!(
            "echoed {} messages of {} bytes in {:?}",
            outcome.echoed,
            size.max(1),
            start.elapsed()
        ),
    }
}

//! A UDP echo client: sends numbered datagrams, waits for each reply (resending after
//! 200 ms, up to 10 times), checks it.
//!
//! ```text
//! cargo run --release --example udp_echo_client -- 127.0.0.1:7001 [count]
//! ```
//!
//! Prints `received <n>/<n> replies` and exits 0, or exits 1 on a wrong reply or when
//! the server does not answer.

use oxloop::protocol::{Address, DatagramProtocol, DatagramTransport, LoopNetExt};
use oxloop::{EventLoop, Handle};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

#[derive(Default)]
struct State {
    transport: Option<DatagramTransport>,
    next: usize,
    tries: u32,
    timer: Option<Handle>,
    received: usize,
    error: Option<String>,
}

type Shared = Rc<RefCell<State>>;

struct Client {
    state: Shared,
    count: usize,
}

fn message(i: usize) -> Vec<u8> {
    format!("datagram {i}").into_bytes()
}

/// Sends datagram `next` and arms the resend timer.
fn send(state: &Shared, count: usize) {
    let mut s = state.borrow_mut();
    if let Some(old) = s.timer.take() {
        old.cancel();
    }
    let t = s.transport.clone().expect("ready");
    if s.next == count || s.error.is_some() {
        t.close();
        return;
    }
    if s.tries == 10 {
        s.error = Some(format!("no reply to datagram {} after 10 tries", s.next));
        t.close();
        return;
    }
    s.tries += 1;
    if let Err(e) = t.send(&message(s.next)) {
        s.error = Some(e.to_string());
        t.close();
        return;
    }
    let st = state.clone();
    s.timer = Some(
        t.event_loop()
            .call_later(Duration::from_millis(200), move || send(&st, count)),
    );
}

impl DatagramProtocol for Client {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.state.borrow_mut().transport = Some(transport);
        send(&self.state, self.count);
    }

    fn datagram_received(&mut self, data: &[u8], _addr: Address) {
        {
            let mut s = self.state.borrow_mut();
            if data != message(s.next).as_slice() {
                // A late duplicate of an earlier (resent) datagram is fine; anything
                // else is wrong.
                let earlier = (0..s.next).any(|i| data == message(i).as_slice());
                if !earlier {
                    s.error = Some(format!(
                        "unexpected reply {:?}",
                        String::from_utf8_lossy(data)
                    ));
                }
                return;
            }
            s.received += 1;
            s.next += 1;
            s.tries = 0;
        }
        send(&self.state, self.count);
    }

    fn error_received(&mut self, err: std::io::Error) {
        let mut s = self.state.borrow_mut();
        s.error = Some(err.to_string());
        if let Some(t) = &s.transport {
            t.close();
        }
        if let Some(timer) = s.timer.take() {
            timer.cancel();
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = match args.next().map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: udp_echo_client <ip:port> [count]");
            std::process::exit(2);
        }
    };
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let ev = EventLoop::new().expect("event loop");
    let state: Shared = Rc::default();
    ev.create_datagram_endpoint(
        None,
        Some(addr),
        Client {
            state: state.clone(),
            count,
        },
    )
    .expect("UDP socket");
    ev.run().expect("loop");
    let s = state.borrow();
    if let Some(e) = &s.error {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    println!("received {}/{count} replies", s.received);
}

//! A line-based chat server: each line a client sends goes to every other client,
//! prefixed with the sender's address. Runs until killed.
//!
//! ```text
//! cargo run --release --example chat_server -- 127.0.0.1:7002
//! ```
//!
//! Lines longer than 64 KiB are refused (the client is disconnected).

use oxloop::protocol::{LoopNetExt, Protocol, Transport};
use oxloop::EventLoop;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

const MAX_LINE: usize = 64 * 1024;

/// Everyone connected, by client number.
type Room = Rc<RefCell<HashMap<u64, Transport>>>;

struct Member {
    id: u64,
    name: String,
    room: Room,
    transport: Option<Transport>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Member {
    fn broadcast(&self, line: &[u8]) {
        let mut message = Vec::with_capacity(self.name.len() + line.len() + 3);
        message.extend_from_slice(self.name.as_bytes());
        message.extend_from_slice(b": ");
        message.extend_from_slice(line);
        message.push(b'\n');
        for (id, t) in self.room.borrow().iter() {
            if *id != self.id {
                // A member whose connection just failed is removed by its own
                // connection_lost.
                let _ = t.write(&message);
            }
        }
    }
}

impl Protocol for Member {
    fn connection_made(&mut self, transport: Transport) {
        self.name = transport
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| format!("client {}", self.id));
        self.room.borrow_mut().insert(self.id, transport.clone());
        self.transport = Some(transport);
    }

    fn data_received(&mut self, mut data: &[u8]) {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..end]);
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.broadcast(&line);
            data = &data[end + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_LINE {
            if let Some(t) = &self.transport {
                let _ = t.write(b"line too long, bye\n");
                t.close();
            }
        }
    }

    fn connection_lost(&mut self, _err: Option<std::io::Error>) {
        self.room.borrow_mut().remove(&self.id);
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7002".to_string());
    let ev = EventLoop::new()?;
    let room: Room = Rc::default();
    let mut next_id = 0;
    let server = ev.create_server(addr.as_str(), move || {
        next_id += 1;
        Member {
            id: next_id,
            name: String::new(),
            room: room.clone(),
            transport: None,
            partial: Vec::new(),
        }
    })?;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    std::io::stdout().flush()?;
    ev.run_forever()
}

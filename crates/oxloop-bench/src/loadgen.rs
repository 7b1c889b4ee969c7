//! A verifying echo load generator: one thread, epoll, any number of connections,
//! a fixed number of messages in flight on each.
//!
//! Each connection sends a deterministic byte stream (a pattern offset per connection)
//! cut into messages of `size` bytes, keeping `depth` messages outstanding: message
//! `k + depth` is sent once message `k` came back in full. Every echoed byte is
//! compared with the byte sent at the same stream position; a mismatch is an error,
//! and so is a connection closed or reset by the server, or echoes that stop coming
//! (bytes lost) for [`STALL`].
//!
//! Each message's round trip (from the moment it may be sent to the moment its last
//! byte is back) goes into a [`Histogram`].

use crate::latency::Histogram;
use crate::sys::Epoll;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Pattern period: a prime, so connections and message boundaries do not line up.
const PERIOD: usize = 65_521;
/// The longest single send or receive.
const CHUNK: usize = 256 * 1024;
/// How long the load generator waits for an outstanding echo before calling it lost.
pub const STALL: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections, all open for the whole run.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (1: ping-pong).
    pub depth: usize,
    /// Stop issuing messages after this long...
    pub duration: Option<Duration>,
    /// ... or after this many messages per connection (whichever comes first).
    pub messages_per_connection: Option<u64>,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Messages echoed in full and verified, over all connections.
    pub messages: u64,
    /// Bytes echoed and verified.
    pub bytes: u64,
    /// From the first send to the last echo.
    pub elapsed: Duration,
    /// Round-trip time of every message.
    pub latency: Histogram,
}

impl LoadResult {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Conn {
    stream: TcpStream,
    /// Pattern offset of this connection's stream.
    offset: usize,
    sent: u64,
    received: u64,
    /// Bytes this connection may send in total (grows as echoes come back).
    issued: u64,
    want_write: bool,
    done: bool,
    /// When each issued, not yet echoed message was issued.
    issued_at: VecDeque<Instant>,
}

/// The periodic byte stream: `pattern()[i] == pattern()[i % PERIOD]`, long enough
/// that any chunk starting in the first period is one contiguous slice.
fn pattern() -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let period: Vec<u8> = (0..PERIOD)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    (0..PERIOD + CHUNK).map(|i| period[i % PERIOD]).collect()
}

/// Runs the load described by `cfg`; fails on a connection error or on any echoed
/// byte that differs from the one sent.
pub fn run(cfg: &LoadConfig) -> io::Result<LoadResult> {
    if cfg.size == 0 || cfg.depth == 0 || cfg.connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "size, depth and connections must be positive",
        ));
    }
    if cfg.duration.is_none() && cfg.messages_per_connection.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "give a duration or a message count",
        ));
    }
    let pat = pattern();
    let size = cfg.size as u64;
    let limit = cfg.messages_per_connection.unwrap_or(u64::MAX);
    let epoll = Epoll::new()?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let stream = TcpStream::connect(cfg.addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        epoll.add(stream.as_raw_fd(), libc::EPOLLIN as u32, i as u64)?;
        conns.push(Conn {
            stream,
            offset: (i * 7919) % PERIOD,
            sent: 0,
            received: 0,
            issued: (cfg.depth as u64).min(limit) * size,
            want_write: false,
            done: false,
            issued_at: std::iter::repeat_n(start, cfg.depth.min(limit as usize)).collect(),
        });
    }
    let mut latency = Histogram::new();
    let mut last_progress = start;
    let deadline = cfg.duration.map(|d| start + d);
    let mut buf = vec![0u8; CHUNK];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut active = conns.len();
    let mut stopped = false;
    for (i, c) in conns.iter_mut().enumerate() {
        flush(&epoll, c, i, &pat)?;
    }
    while active > 0 {
        if !stopped && deadline.is_some_and(|d| Instant::now() >= d) {
            // Stop issuing: each connection finishes what is in flight.
            stopped = true;
            for c in conns.iter_mut() {
                c.issued = c.issued.min(c.sent);
                if !c.done && c.received == c.issued {
                    c.done = true;
                    active -= 1;
                }
            }
            continue;
        }
        let n = epoll.wait(&mut events, 100)?;
        let now = Instant::now();
        if n == 0 && now.duration_since(last_progress) > STALL {
            let missing: u64 = conns.iter().map(|c| c.sent - c.received).sum();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no echo for {STALL:?}: {missing} bytes sent were never echoed (lost)"),
            ));
        }
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let flags = ev.events;
            let c = &mut conns[i];
            if c.done {
                continue;
            }
            if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                let got = match c.stream.read(&mut buf) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("connection {i} closed by the server"),
                        ))
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                if got > 0 {
                    let at = (c.received as usize + c.offset) % PERIOD;
                    if buf[..got] != pat[at..at + got] {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "connection {i}: echoed bytes differ near offset {}",
                                c.received
                            ),
                        ));
                    }
                    if c.received + got as u64 > c.sent {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("connection {i}: more bytes echoed than sent"),
                        ));
                    }
                    last_progress = now;
                    let before = c.received / size;
                    c.received += got as u64;
                    let completed = c.received / size;
                    for _ in before..completed {
                        if let Some(t) = c.issued_at.pop_front() {
                            latency.record(now.duration_since(t));
                        }
                    }
                    if !stopped {
                        let old = c.issued / size;
                        c.issued = ((completed + cfg.depth as u64).min(limit)) * size;
                        for _ in old..c.issued / size {
                            c.issued_at.push_back(now);
                        }
                    }
                    if c.received == c.issued && (stopped || c.received / size >= limit) {
                        c.done = true;
                        active -= 1;
                        continue;
                    }
                }
            }
            flush(&epoll, &mut conns[i], i, &pat)?;
        }
    }
    let elapsed = start.elapsed();
    let bytes: u64 = conns.iter().map(|c| c.received).sum();
    let messages = conns.iter().map(|c| c.received / size).sum();
    Ok(LoadResult {
        messages,
        bytes,
        elapsed,
        latency,
    })
}

/// Sends what the connection may send; watches for writability if the socket is full.
fn flush(epoll: &Epoll, c: &mut Conn, token: usize, pat: &[u8]) -> io::Result<()> {
    while c.sent < c.issued {
        let at = (c.sent as usize + c.offset) % PERIOD;
        let len = ((c.issued - c.sent) as usize).min(CHUNK);
        match c.stream.write(&pat[at..at + len]) {
            Ok(n) => c.sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let want = c.sent < c.issued;
    if want != c.want_write {
        c.want_write = want;
        let events = libc::EPOLLIN as u32 | if want { libc::EPOLLOUT as u32 } else { 0 };
        epoll.modify(c.stream.as_raw_fd(), events, token as u64)?;
    }
    Ok(())
}

/// Opens `count` connections to `addr`, checks each with a one-byte echo, and returns
/// them (for idle-memory measurements).
pub fn open_idle(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(b"x")?;
        conns.push(s);
    }
    for s in conns.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        if b != *b"x" {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad echo"));
        }
    }
    Ok(conns)
}

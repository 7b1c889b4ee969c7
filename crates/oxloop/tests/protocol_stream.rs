//! Stream transports over real sockets: echo, half-close, flow control, owned
//! timeouts, connect errors, write errors, Unix sockets, server control.

use oxloop::protocol::{Address, ConnectOptions, LoopNetExt, Protocol, ServerOptions, Transport};
use oxloop::EventLoop;
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

mod support;

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// Stops the loop after `limit` so a broken test fails instead of hanging.
fn guard(ev: &EventLoop, limit: Duration) {
    // Not a clone of `ev`: a pending callback holding its own loop would keep the loop
    // alive after the test drops it (valgrind reports the loop lost).
    ev.call_later(support::time_limit(limit), move || {
        let e = EventLoop::current().expect("the test's loop");
        e.stop();
        panic!("test timed out: {e:?}");
    })
    .unref();
}

/// Runs the loop until it stops; a failure (a panic in a callback, the time-out's
/// included) destroys the loop before it reaches the test, so that the connections
/// still open, whose protocols hold their transports and so the loop, do not keep it
/// alive (valgrind would report a failed test's loop lost).
fn run(ev: &EventLoop) {
    ev.set_propagate_panics(true);
    guard(ev, Duration::from_secs(8));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ev.run()));
    match outcome {
        Ok(result) => result.unwrap(),
        Err(panic) => {
            ev.destroy();
            std::panic::resume_unwind(panic);
        }
    }
}

/// Echoes everything; records events.
struct Echo {
    t: Option<Transport>,
    log: Log,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.log.borrow_mut().push("made".into());
        self.t = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data).unwrap();
    }
    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().push("eof".into());
        false
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        self.log
            .borrow_mut()
            .push(format!("lost {:?}", err.map(|e| e.kind())));
    }
}

/// Sends `payload`, collects what comes back, half-closes once all came back.
struct Client {
    payload: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    t: Option<Transport>,
    lost: Rc<Cell<bool>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: Transport) {
        // Many small writes: exercises coalescing and vectored sends.
        for chunk in self.payload.chunks(1000) {
            t.write(chunk).unwrap();
        }
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut got = self.got.borrow_mut();
        got.extend_from_slice(data);
        if got.len() == self.payload.len() {
            self.t.as_ref().unwrap().close();
        }
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        assert!(err.is_none(), "{err:?}");
        self.lost.set(true);
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn tcp_echo_through_create_connection() {
    let ev = EventLoop::new().unwrap();
    let server_log = log();
    let sl = server_log.clone();
    let server = ev
        .create_server("127.0.0.1:0", move || Echo {
            t: None,
            log: sl.clone(),
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    assert_ne!(addr.port(), 0);
    let payload = pattern(3 << 20);
    let got = Rc::new(RefCell::new(Vec::new()));
    let lost = Rc::new(Cell::new(false));
    let connected = Rc::new(Cell::new(false));
    let (c, s) = (connected.clone(), server.clone());
    ev.create_connection(
        addr,
        Client {
            payload: payload.clone(),
            got: got.clone(),
            t: None,
            lost: lost.clone(),
        },
        &ConnectOptions::new().timeout(Duration::from_secs(5)),
        move |result| {
            let t = result.unwrap();
            assert_eq!(t.peer_addr().unwrap(), Address::Inet(addr));
            c.set(true);
            s.close();
        },
    )
    .unwrap();
    run(&ev);
    assert!(connected.get());
    assert!(lost.get());
    assert!(*got.borrow() == payload, "echoed bytes differ");
    assert_eq!(
        *server_log.borrow(),
        vec!["made", "eof", "lost None"],
        "server side events"
    );
    assert!(server.is_closed());
    assert!(server.local_addrs().is_empty());
}

/// Half-close: the client sends, then shuts its writing side; the server's
/// `eof_received` returns true, it answers after the EOF and closes.
#[test]
fn half_close_keeps_the_connection_open_for_writing() {
    struct Counter {
        t: Option<Transport>,
        total: usize,
    }
    impl Protocol for Counter {
        fn connection_made(&mut self, t: Transport) {
            self.t = Some(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.total += data.len();
        }
        fn eof_received(&mut self) -> bool {
            let t = self.t.as_ref().unwrap();
            assert!(!t.is_reading());
            // Written after the peer's EOF: the half-open connection still carries it.
            t.write(format!("got {} bytes", self.total).as_bytes())
                .unwrap();
            t.close();
            true
        }
    }
    let ev = EventLoop::new().unwrap();
    let server = ev
        .create_server("127.0.0.1:0", || Counter { t: None, total: 0 })
        .unwrap();
    let addr = server.socket_addrs()[0];
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[1u8; 10_000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    let s = server.clone();
    let e = ev.clone();
    let check = Rc::new(Cell::new(0));
    let c = check.clone();
    // Close the server once the connection was accepted, so `run` ends.
    fn poll(e: EventLoop, s: oxloop::protocol::Server, c: Rc<Cell<i32>>) {
        if s.accepted() > 0 {
            s.close();
            c.set(1);
        } else {
            let e2 = e.clone();
            e.call_later(Duration::from_millis(5), move || poll(e2, s, c));
        }
    }
    poll(e, s, c);
    run(&ev);
    assert_eq!(client.join().unwrap(), "got 10000 bytes");
    assert_eq!(check.get(), 1);
}

/// A peer that does not read makes the buffer pass the high-water mark
/// (`pause_writing`); once it reads, the buffer drains (`resume_writing`) and every
/// byte arrives in order.
#[test]
fn flow_control_pauses_and_resumes_writing() {
    struct Producer {
        t: Option<Transport>,
        log: Log,
        sent: usize,
        total: usize,
        paused: bool,
        /// Tells the reader that writing was paused once (it reads only then).
        paused_once: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }
    impl Producer {
        fn produce(&mut self) {
            let t = self.t.clone().unwrap();
            while !self.paused && self.sent < self.total {
                let chunk: Vec<u8> = (self.sent..self.sent + 8192)
                    .map(|i| (i % 251) as u8)
                    .collect();
                self.sent += chunk.len();
                // `pause_writing` is delivered when this call returns.
                t.write(&chunk).unwrap();
                if t.write_buffer_size() > 64 * 1024 {
                    assert!(t.is_writing_paused());
                    break;
                }
            }
            if self.sent >= self.total {
                t.close();
            }
        }
    }
    impl Protocol for Producer {
        fn connection_made(&mut self, t: Transport) {
            t.set_write_buffer_limits(64 * 1024, 16 * 1024).unwrap();
            assert!(t.set_write_buffer_limits(1, 2).is_err());
            self.t = Some(t);
            self.produce();
        }
        fn data_received(&mut self, _: &[u8]) {}
        fn pause_writing(&mut self) {
            assert!(!self.paused, "two pauses in a row");
            self.paused = true;
            self.paused_once
                .store(true, std::sync::atomic::Ordering::Release);
            assert!(self.t.as_ref().unwrap().is_writing_paused());
            let size = self.t.as_ref().unwrap().write_buffer_size();
            self.log
                .borrow_mut()
                .push(format!("pause {}", size > 64 * 1024));
        }
        fn resume_writing(&mut self) {
            assert!(self.paused, "resume without pause");
            self.paused = false;
            assert!(!self.t.as_ref().unwrap().is_writing_paused());
            let size = self.t.as_ref().unwrap().write_buffer_size();
            self.log
                .borrow_mut()
                .push(format!("resume {}", size <= 16 * 1024));
            self.produce();
        }
    }
    let total = 16 << 20;
    let ev = EventLoop::new().unwrap();
    let flow = log();
    let fl = flow.clone();
    let paused_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p = paused_once.clone();
    let server = ev
        .create_server("127.0.0.1:0", move || Producer {
            t: None,
            log: fl.clone(),
            sent: 0,
            total,
            paused: false,
            paused_once: p.clone(),
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    let reader = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // A slow reader: it starts once the producer has filled the socket's buffers
        // and its own up to the high-water mark (however slow the machine), or after
        // a while (the producer then sees no pause, which the test reports).
        let waiting = Instant::now();
        while !paused_once.load(std::sync::atomic::Ordering::Acquire)
            && waiting.elapsed() < support::time_limit(Duration::from_secs(5))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0usize;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((at + i) % 251) as u8, "byte {}", at + i);
            }
            at += n;
        }
        at
    });
    let s = server.clone();
    ev.call_later(Duration::from_millis(100), move || s.close());
    run(&ev);
    assert_eq!(reader.join().unwrap(), total);
    let flow = flow.borrow();
    assert!(flow.len() >= 2, "{flow:?}");
    assert_eq!(flow[0], "pause true");
    assert_eq!(flow[1], "resume true");
}

/// A timeout owned by the transport is cancelled when the connection closes, and the
/// closure it captured (here the transport itself) is dropped.
#[test]
fn owned_timeout_is_cancelled_on_close() {
    struct Timed {
        fired: Rc<Cell<u32>>,
        dropped: Rc<Cell<bool>>,
    }
    impl Drop for Timed {
        fn drop(&mut self) {
            self.dropped.set(true);
        }
    }
    impl Protocol for Timed {
        fn connection_made(&mut self, t: Transport) {
            let (f1, f2) = (self.fired.clone(), self.fired.clone());
            let t2 = t.clone();
            // Fires before the close:
            t.call_later(Duration::from_millis(10), move || {
                f1.set(f1.get() + 1);
                t2.close();
            });
            // Would fire long after: must be cancelled by the close.
            let t3 = t.clone();
            t.call_later(Duration::from_secs(30), move || {
                let _keep = t3;
                f2.set(f2.get() + 100);
            });
        }
        fn data_received(&mut self, _: &[u8]) {}
    }
    let ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(0));
    let dropped = Rc::new(Cell::new(false));
    let (f, d) = (fired.clone(), dropped.clone());
    let server = ev
        .create_server("127.0.0.1:0", move || Timed {
            fired: f.clone(),
            dropped: d.clone(),
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 16];
        s.read(&mut buf).unwrap() // the server closes: EOF
    });
    let s = server.clone();
    ev.call_later(Duration::from_millis(100), move || s.close());
    let start = Instant::now();
    run(&ev); // returns only if the 30 s timeout is gone
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(client.join().unwrap(), 0);
    assert_eq!(fired.get(), 1);
    assert!(
        dropped.get(),
        "the protocol was not dropped after connection_lost"
    );
}

#[test]
fn connection_refused_reaches_the_callback() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // closed: nothing listens there now
    let ev = EventLoop::new().unwrap();
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    struct Never;
    impl Protocol for Never {
        fn connection_made(&mut self, _: Transport) {
            panic!("connected to a closed port");
        }
        fn data_received(&mut self, _: &[u8]) {}
    }
    ev.create_connection(addr, Never, &ConnectOptions::new(), move |res| {
        *r.borrow_mut() = Some(res.map(|_| ()).unwrap_err().kind());
    })
    .unwrap();
    run(&ev);
    assert_eq!(*result.borrow(), Some(io::ErrorKind::ConnectionRefused));
}

/// A listener that never accepts, with its backlog full: the kernel drops further
/// SYNs, so a connect never completes and the timeout fires.
#[test]
fn connect_timeout_reaches_the_callback() {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (backlog 0 still queues one or two connections).
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(50));
    let ev = EventLoop::new().unwrap();
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    let start = Instant::now();
    ev.create_connection(
        addr,
        Echo {
            t: None,
            log: log(),
        },
        &ConnectOptions::new().timeout(Duration::from_millis(300)),
        move |res| {
            *r.borrow_mut() = Some(res.map(|_| ()).unwrap_err());
        },
    )
    .unwrap();
    run(&ev);
    let elapsed = start.elapsed();
    let err = result.borrow_mut().take().expect("no result");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    drop(fillers);
}

/// Writes to a peer that reset the connection end the connection once, through
/// `connection_lost(Some(_))`; writes after that return errors, never panic.
#[test]
fn write_to_reset_peer_and_after_close_are_errors() {
    struct Writer {
        t: Option<Transport>,
        log: Log,
    }
    impl Protocol for Writer {
        fn connection_made(&mut self, t: Transport) {
            self.t = Some(t);
        }
        fn data_received(&mut self, _: &[u8]) {
            // The peer sent one byte, then reset: keep writing until the error shows.
            let t = self.t.clone().unwrap();
            let e = t.event_loop().clone();
            let log = self.log.clone();
            fn again(e: EventLoop, t: Transport, log: Log, n: u32) {
                match t.write(&[0u8; 1024]) {
                    Ok(()) if n < 1000 => {
                        let e2 = e.clone();
                        e.call_later(Duration::from_millis(1), move || again(e2, t, log, n + 1));
                    }
                    Ok(()) => log.borrow_mut().push("never failed".into()),
                    Err(err) => {
                        log.borrow_mut()
                            .push(format!("write error {:?}", err.kind()));
                        let second = t.write(b"x").unwrap_err();
                        log.borrow_mut().push(format!("then {:?}", second.kind()));
                    }
                }
            }
            again(e, t, log, 0);
        }
        fn connection_lost(&mut self, err: Option<io::Error>) {
            self.log
                .borrow_mut()
                .push(format!("lost {}", err.is_some()));
        }
    }
    let ev = EventLoop::new().unwrap();
    let events = log();
    let ev_log = events.clone();
    let server = ev
        .create_server("127.0.0.1:0", move || Writer {
            t: None,
            log: ev_log.clone(),
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    let client = std::thread::spawn(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.connect(&addr.into()).unwrap();
        s.send(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.set_linger(Some(Duration::ZERO)).unwrap(); // close sends RST
    });
    let s = server.clone();
    ev.call_later(Duration::from_millis(50), move || s.close());
    run(&ev);
    client.join().unwrap();
    let events = events.borrow();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("lost")).count(),
        1,
        "{events:?}"
    );
    assert!(events.contains(&"lost true".to_string()), "{events:?}");
    assert!(
        events.iter().any(|e| e.starts_with("write error")),
        "{events:?}"
    );
    assert!(
        events.contains(&"then NotConnected".to_string()),
        "{events:?}"
    );
}

#[test]
fn abort_drops_the_buffer_and_pause_reading_stops_data() {
    struct Pauser {
        t: Option<Transport>,
        got: Rc<RefCell<Vec<u8>>>,
        log: Log,
    }
    impl Protocol for Pauser {
        fn connection_made(&mut self, t: Transport) {
            t.pause_reading();
            assert!(!t.is_reading());
            let t2 = t.clone();
            let log = self.log.clone();
            t.call_later(Duration::from_millis(100), move || {
                log.borrow_mut().push("resume".into());
                t2.resume_reading();
            });
            self.t = Some(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.log.borrow_mut().push("data".into());
            self.got.borrow_mut().extend_from_slice(data);
            if self.got.borrow().len() == 5 {
                let t = self.t.as_ref().unwrap();
                // Far more than the socket takes at once, then abort: dropped.
                t.write(&vec![0u8; 8 << 20]).unwrap();
                assert!(t.write_buffer_size() > 0);
                t.abort();
                assert!(t.is_closing());
                assert_eq!(t.write_buffer_size(), 0);
                assert!(t.write(b"late").is_err());
            }
        }
        fn connection_lost(&mut self, err: Option<io::Error>) {
            self.log
                .borrow_mut()
                .push(format!("lost {}", err.is_some()));
        }
    }
    let ev = EventLoop::new().unwrap();
    let events = log();
    let got = Rc::new(RefCell::new(Vec::new()));
    let (l, g) = (events.clone(), got.clone());
    let server = ev
        .create_server("127.0.0.1:0", move || Pauser {
            t: None,
            got: g.clone(),
            log: l.clone(),
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"hello").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // ends with EOF or a reset
    });
    let s = server.clone();
    ev.call_later(Duration::from_millis(50), move || s.close());
    run(&ev);
    client.join().unwrap();
    assert_eq!(&*got.borrow(), b"hello");
    let events = events.borrow();
    assert_eq!(events[0], "resume", "data arrived while paused: {events:?}");
    assert_eq!(events.last().unwrap(), "lost false");
}

#[test]
fn unix_stream_server_and_connection() {
    let dir = std::env::temp_dir().join(format!("oxloop-proto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    // A stale socket file is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let ev = EventLoop::new().unwrap();
    let server_log = log();
    let sl = server_log.clone();
    let server = ev
        .create_unix_server(&path, &ServerOptions::new().backlog(16), move || Echo {
            t: None,
            log: sl.clone(),
        })
        .unwrap();
    assert_eq!(
        server.local_addrs(),
        vec![Address::Unix(Some(path.clone()))]
    );
    let payload = pattern(1 << 20);
    let got = Rc::new(RefCell::new(Vec::new()));
    let lost = Rc::new(Cell::new(false));
    let s = server.clone();
    ev.create_unix_connection(
        &path,
        Client {
            payload: payload.clone(),
            got: got.clone(),
            t: None,
            lost: lost.clone(),
        },
        &ConnectOptions::new(),
        move |result| {
            let t = result.unwrap();
            assert!(matches!(t.local_addr().unwrap(), Address::Unix(_)));
            s.close();
        },
    )
    .unwrap();
    run(&ev);
    assert!(lost.get());
    assert!(*got.borrow() == payload);
    assert!(!path.exists(), "the socket file was not removed on close");
    // Refusal on a path nobody listens on.
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    ev.create_unix_connection(
        dir.join("nobody.sock"),
        Echo {
            t: None,
            log: log(),
        },
        &ConnectOptions::new(),
        move |res| *r.borrow_mut() = Some(res.map(|_| ()).unwrap_err().kind()),
    )
    .unwrap();
    run(&ev);
    assert_eq!(*result.borrow(), Some(io::ErrorKind::NotFound));
    // A regular file is not replaced.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = ev
        .create_unix_server(&file, &ServerOptions::new(), || Echo {
            t: None,
            log: log(),
        })
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn server_with_several_addresses_stops_and_resumes_accepting() {
    let ev = EventLoop::new().unwrap();
    let server = ev
        .create_server_with(
            &[
                "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ][..],
            &ServerOptions::new().reuse_port(true).backlog(64),
            || Echo {
                t: None,
                log: log(),
            },
        )
        .unwrap();
    let addrs = server.socket_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port());
    server.stop_accepting();
    assert!(!server.is_serving());
    // Connections queue in the kernel meanwhile.
    let clients: Vec<_> = addrs
        .iter()
        .map(|a| {
            let a = *a;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(a).unwrap();
                s.write_all(b"ping").unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).unwrap();
                buf
            })
        })
        .collect();
    let s = server.clone();
    let e = ev.clone();
    ev.call_later(Duration::from_millis(100), move || {
        assert_eq!(s.accepted(), 0, "accepted while stopped");
        s.resume_accepting().unwrap();
        let s2 = s.clone();
        e.call_later(Duration::from_millis(100), move || s2.close());
    });
    run(&ev);
    for c in clients {
        assert_eq!(&c.join().unwrap(), b"ping");
    }
    assert_eq!(server.accepted(), 2);
    assert!(server.resume_accepting().is_err());
    // Port in use: a clear error naming the address.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = taken.local_addr().unwrap();
    let err = ev
        .create_server_with(a, &ServerOptions::new().reuse_address(false), || Echo {
            t: None,
            log: log(),
        })
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&a.to_string()), "{err}");
    // The system's error, with its number, is the error's source.
    let source = std::error::Error::source(err.get_ref().unwrap()).unwrap();
    let system = source.downcast_ref::<io::Error>().unwrap();
    assert_eq!(system.raw_os_error(), Some(libc::EADDRINUSE));
    let empty: &[SocketAddr] = &[];
    assert_eq!(
        ev.create_server(empty, || Echo {
            t: None,
            log: log()
        })
        .unwrap_err()
        .kind(),
        io::ErrorKind::InvalidInput
    );
}

/// `write_eof` with data still buffered: everything is sent first, then the FIN; the
/// connection keeps reading afterwards.
#[test]
fn write_eof_after_buffered_data_sends_everything_first() {
    struct Sender {
        t: Option<Transport>,
        got: Log,
    }
    impl Protocol for Sender {
        fn connection_made(&mut self, t: Transport) {
            let big = pattern(8 << 20);
            t.writelines([&big[..1 << 20], &big[1 << 20..]]).unwrap();
            assert!(t.write_buffer_size() > 0, "8 MiB went out at once?");
            t.write_eof();
            assert!(t.can_write_eof());
            let err = t.write(b"more").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
            assert!(!t.is_closing());
            self.t = Some(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.got
                .borrow_mut()
                .push(String::from_utf8_lossy(data).into_owned());
        }
        fn eof_received(&mut self) -> bool {
            self.got.borrow_mut().push("eof".into());
            false
        }
    }
    let ev = EventLoop::new().unwrap();
    let got = log();
    let g = got.clone();
    let server = ev
        .create_server("127.0.0.1:0", move || Sender {
            t: None,
            got: g.clone(),
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    let client = std::thread::spawn(move || {
        // A small receive buffer, set before connecting, fixes the window (no
        // autotuning), and the client does not read at first: so the 8 MiB cannot all
        // fit in the kernel's buffers, however far the machine lets them grow (this one
        // lets a receive buffer reach 32 MiB).
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(64 << 10).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut s = TcpStream::from(sock);
        std::thread::sleep(Duration::from_millis(100));
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap(); // ends at the server's FIN
        s.write_all(b"done").unwrap();
        all
    });
    let s = server.clone();
    ev.call_later(Duration::from_millis(50), move || s.close());
    run(&ev);
    let all = client.join().unwrap();
    assert!(all == pattern(8 << 20), "{} bytes", all.len());
    assert_eq!(*got.borrow(), vec!["done", "eof"]);
}

/// Shutdown: `close` stops accepting, `close_clients` closes every open connection
/// after flushing what it buffered, and `run` returns.
#[test]
fn server_close_clients_shuts_down_gracefully() {
    struct Greeter;
    impl Protocol for Greeter {
        fn connection_made(&mut self, t: Transport) {
            // Buffered (far more than the socket takes at once) when the shutdown
            // comes: still delivered.
            t.write(&pattern(2 << 20)).unwrap();
        }
        fn data_received(&mut self, _: &[u8]) {}
    }
    let ev = EventLoop::new().unwrap();
    let server = ev.create_server("127.0.0.1:0", || Greeter).unwrap();
    let addr = server.socket_addrs()[0];
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                let mut all = Vec::new();
                s.read_to_end(&mut all).unwrap();
                all.len()
            })
        })
        .collect();
    fn shut_down_when_all_in(ev: EventLoop, s: oxloop::protocol::Server) {
        if s.accepted() == 3 {
            assert_eq!(s.connections().len(), 3);
            s.close();
            s.close_clients();
            assert!(s.connections().is_empty());
        } else {
            let e = ev.clone();
            ev.call_later(Duration::from_millis(5), move || {
                shut_down_when_all_in(e, s)
            });
        }
    }
    shut_down_when_all_in(ev.clone(), server.clone());
    run(&ev);
    for c in clients {
        assert_eq!(c.join().unwrap(), 2 << 20);
    }
}

/// `send_file` puts a file range between writes, in order, through a reader slower
/// than the socket buffers; a file shorter than promised ends the connection with
/// `UnexpectedEof` after what it had.
#[test]
fn send_file_keeps_write_order_and_reports_a_short_file() {
    struct Sender {
        path: std::path::PathBuf,
        /// Bytes promised beyond the file's end (0: the range fits).
        over: u64,
        log: Log,
    }
    impl Protocol for Sender {
        fn connection_made(&mut self, t: Transport) {
            let file = std::fs::File::open(&self.path).unwrap();
            let size = file.metadata().unwrap().len();
            t.write(b"head:").unwrap();
            // From offset 3 to the end (plus `over` bytes that do not exist).
            t.send_file(file, 3, size - 3 + self.over).unwrap();
            t.write(b":tail").unwrap();
            if self.over == 0 {
                assert!(t.write_buffer_size() > 0, "8 MiB went out at once?");
                t.close();
            }
        }
        fn data_received(&mut self, _data: &[u8]) {}
        fn connection_lost(&mut self, err: Option<io::Error>) {
            self.log
                .borrow_mut()
                .push(format!("lost {:?}", err.map(|e| e.kind())));
        }
    }
    let path = std::env::temp_dir().join(format!("oxloop-send-file-{}", std::process::id()));
    let content = pattern(8 << 20);
    std::fs::write(&path, &content).unwrap();
    for over in [0, 1000] {
        let ev = EventLoop::new().unwrap();
        let log = log();
        let (p, l) = (path.clone(), log.clone());
        let server = ev
            .create_server("127.0.0.1:0", move || Sender {
                path: p.clone(),
                over,
                log: l.clone(),
            })
            .unwrap();
        let addr = server.socket_addrs()[0];
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(100)); // let the buffers fill
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            all
        });
        let s = server.clone();
        ev.call_later(Duration::from_millis(50), move || s.close());
        run(&ev);
        ev.destroy(); // the next round makes a new loop on this thread
        let all = client.join().unwrap();
        let mut expected = b"head:".to_vec();
        expected.extend_from_slice(&content[3..]);
        if over == 0 {
            expected.extend_from_slice(b":tail");
            assert!(all == expected, "{} bytes", all.len());
            assert_eq!(*log.borrow(), vec!["lost None"]);
        } else {
            // Everything the file had, then the close: never the bytes written after.
            assert!(all == expected, "{} bytes", all.len());
            assert_eq!(*log.borrow(), vec!["lost Some(UnexpectedEof)"]);
        }
    }
    std::fs::remove_file(&path).unwrap();
}

/// Keeps its transport; writes nothing itself.
struct Holder {
    t: Rc<RefCell<Option<Transport>>>,
}

impl Protocol for Holder {
    fn connection_made(&mut self, transport: Transport) {
        *self.t.borrow_mut() = Some(transport);
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

#[test]
fn an_adopted_socket_is_flushed_then_closed_by_its_transport() {
    let ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let held = Rc::new(RefCell::new(None));
    let transport = Transport::adopt(
        &ev,
        socket2::Socket::from(accepted),
        Holder { t: held.clone() },
    )
    .unwrap();
    assert!(held.borrow().is_some(), "connection_made ran in adopt");

    // 4 MiB cannot all fit in the kernel's buffers while nobody reads: the flush waiter
    // is told only once the reader below has taken enough.
    let payload = pattern(4 << 20);
    transport.write(&payload).unwrap();
    assert!(transport.write_buffer_size() > 0);
    let flushed = Rc::new(Cell::new(None));
    let f = flushed.clone();
    let t = transport.clone();
    transport.when_flushed(move |sent| {
        f.set(Some(sent));
        t.close();
    });
    let reader = std::thread::spawn(move || {
        let mut client = client;
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    });
    run(&ev);
    assert_eq!(flushed.get(), Some(true));
    assert_eq!(
        reader.join().unwrap(),
        payload,
        "every byte, then EOF from close()"
    );

    // On a closed transport the waiter hears `false` at once.
    let after = Rc::new(Cell::new(None));
    let a = after.clone();
    transport.when_flushed(move |sent| a.set(Some(sent)));
    ev.run().unwrap();
    assert_eq!(after.get(), Some(false));
}

/// A protocol that keeps its own transport (as most do) makes a cycle through the loop
/// (transport → protocol → transport, and the transport holds the loop): destroying
/// the loop must drop the protocol, without calling it, so that the loop, its
/// connections and what they buffered are freed.
#[test]
fn destroying_a_loop_drops_the_protocols_of_open_connections() {
    struct Keeper {
        transport: Option<Transport>,
        made: Rc<Cell<usize>>,
        lost: Rc<RefCell<Vec<Option<String>>>>,
        dropped: Rc<Cell<usize>>,
    }
    impl Protocol for Keeper {
        fn connection_made(&mut self, transport: Transport) {
            self.transport = Some(transport);
            self.made.set(self.made.get() + 1);
        }
        fn data_received(&mut self, _data: &[u8]) {}
        fn connection_lost(&mut self, err: Option<io::Error>) {
            self.lost.borrow_mut().push(err.map(|e| e.to_string()));
        }
    }
    impl Drop for Keeper {
        fn drop(&mut self) {
            if self.transport.is_some() {
                self.dropped.set(self.dropped.get() + 1);
            }
        }
    }
    let ev = EventLoop::new().unwrap();
    let (made, lost, dropped) = (Rc::new(Cell::new(0)), Rc::default(), Rc::new(Cell::new(0)));
    let (m, l, d) = (made.clone(), Rc::clone(&lost), dropped.clone());
    let server = ev
        .create_server("127.0.0.1:0", move || Keeper {
            transport: None,
            made: m.clone(),
            lost: Rc::clone(&l),
            dropped: d.clone(),
        })
        .unwrap();
    let _client = TcpStream::connect(server.socket_addrs()[0]).unwrap();
    for _ in 0..500 {
        if made.get() == 1 {
            break;
        }
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(made.get(), 1, "the connection was not made");
    drop(server);
    ev.destroy();
    assert!(lost.borrow().is_empty(), "connection_lost was called");
    assert_eq!(dropped.get(), 1, "the protocol was not dropped");
}

/// A factory that holds what holds its server (as oxloop-http's server state holds its
/// listener) makes a cycle the loop's readers are not part of: destroying the loop must
/// close the listening server, dropping the factory, so that the state is freed and
/// the port is free again.
#[test]
fn destroying_a_loop_closes_its_listening_servers() {
    struct State {
        listener: RefCell<Option<oxloop::protocol::Server>>,
    }
    let ev = EventLoop::new().unwrap();
    let state = Rc::new(State {
        listener: RefCell::new(None),
    });
    let for_factory = state.clone();
    let server = ev
        .create_server("127.0.0.1:0", move || Echo {
            t: None,
            log: {
                let _ = &for_factory;
                log()
            },
        })
        .unwrap();
    let addr = server.socket_addrs()[0];
    *state.listener.borrow_mut() = Some(server);
    let weak_state = Rc::downgrade(&state);
    drop(state);
    ev.destroy();
    assert!(
        weak_state.upgrade().is_none(),
        "the server's state was kept"
    );
    TcpListener::bind(addr).expect("the listening socket was left open");
}

/// A connection closed just before the loop is destroyed: its protocol (which keeps
/// its transport) waits for `connection_lost` in a pending call, not in the loop's fd
/// handlers. Destroying the loop must drop it too, without the call.
#[test]
fn destroying_a_loop_drops_the_protocol_of_a_connection_closed_just_before() {
    struct Keeper {
        transport: Option<Transport>,
        made: Rc<RefCell<Option<Transport>>>,
        lost: Rc<Cell<bool>>,
        dropped: Rc<Cell<bool>>,
    }
    impl Protocol for Keeper {
        fn connection_made(&mut self, transport: Transport) {
            *self.made.borrow_mut() = Some(transport.clone());
            self.transport = Some(transport);
        }
        fn data_received(&mut self, _data: &[u8]) {}
        fn connection_lost(&mut self, _err: Option<io::Error>) {
            self.lost.set(true);
        }
    }
    impl Drop for Keeper {
        fn drop(&mut self) {
            if self.transport.is_some() {
                self.dropped.set(true);
            }
        }
    }
    let ev = EventLoop::new().unwrap();
    let (made, lost, dropped) = (Rc::default(), Rc::default(), Rc::default());
    let (m, l, d) = (Rc::clone(&made), Rc::clone(&lost), Rc::clone(&dropped));
    let server = ev
        .create_server("127.0.0.1:0", move || Keeper {
            transport: None,
            made: Rc::clone(&m),
            lost: Rc::clone(&l),
            dropped: Rc::clone(&d),
        })
        .unwrap();
    let _client = TcpStream::connect(server.socket_addrs()[0]).unwrap();
    for _ in 0..500 {
        if made.borrow().is_some() {
            break;
        }
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    let transport = made
        .borrow_mut()
        .take()
        .expect("the connection was not made");
    server.close();
    // Nothing buffered: closed at once, `connection_lost` left to a pending call.
    transport.close();
    drop(transport);
    ev.destroy();
    assert!(!lost.get(), "connection_lost was called");
    assert!(dropped.get(), "the protocol was not dropped");
}

/// Keeps its transport's fd for the test to look at.
struct FdKeeper(Rc<Cell<Option<std::os::fd::RawFd>>>, Option<Transport>);

impl Protocol for FdKeeper {
    fn connection_made(&mut self, t: Transport) {
        self.0.set(t.raw_fd());
        self.1 = Some(t);
    }
    fn data_received(&mut self, _: &[u8]) {}
}

#[test]
fn accepted_sockets_are_nonblocking_close_on_exec_and_nodelay() {
    let ev = EventLoop::new_detached().unwrap();
    guard(&ev, Duration::from_secs(10));
    let fd = Rc::new(Cell::new(None));
    let f = fd.clone();
    let server = ev
        .create_server("127.0.0.1:0", move || FdKeeper(f.clone(), None))
        .unwrap();
    let _client = TcpStream::connect(server.socket_addrs()[0]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd.get().is_none() {
        assert!(Instant::now() < deadline, "never accepted");
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    // SAFETY: the transport keeps the fd open while the loop (and so the protocol) is
    // alive, for the length of this borrow.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.get().unwrap()) };
    let sock = socket2::SockRef::from(&sock);
    assert!(sock.tcp_nodelay().unwrap(), "TCP_NODELAY");
    assert!(sock.nonblocking().unwrap(), "O_NONBLOCK");
    // SAFETY: F_GETFD on an open fd takes no pointer.
    let flags = unsafe { libc::fcntl(fd.get().unwrap(), libc::F_GETFD) };
    assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "FD_CLOEXEC");
    server.close();
    ev.destroy();
}

/// `destroy()` or `stop()` called by a protocol while nothing is queued (no timer, no
/// callback: the iteration's short path, which tests one flag for both) ends
/// `run_forever` at once, not when something else wakes the loop.
#[test]
fn destroy_or_stop_from_a_protocol_ends_the_run_with_nothing_queued() {
    use std::sync::mpsc;
    struct Ender {
        ev: EventLoop,
        destroy: bool,
    }
    impl Protocol for Ender {
        fn connection_made(&mut self, _transport: Transport) {}
        fn data_received(&mut self, _data: &[u8]) {
            if self.destroy {
                self.ev.destroy();
            } else {
                self.ev.stop();
            }
        }
    }
    for destroy in [false, true] {
        let ev = EventLoop::new().unwrap();
        let e = ev.clone();
        let server = ev
            .create_server("127.0.0.1:0", move || Ender {
                ev: e.clone(),
                destroy,
            })
            .unwrap();
        let addr = server.socket_addrs()[0];
        // A watchdog on another thread, so that the loop has no timer: it stops a run
        // the protocol's call did not end, and says so. A destroyed loop's run cannot
        // be stopped from outside (nothing can wake it), so then it ends the test
        // program rather than let it hang.
        let remote = ev.remote();
        let (done, wait) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let mut client = TcpStream::connect(addr).unwrap();
            client.write_all(b"x").unwrap();
            let timed_out = wait.recv_timeout(Duration::from_secs(10)).is_err();
            if timed_out && remote.stop().is_err() {
                eprintln!("destroy = {destroy}: the run of a destroyed loop did not end");
                std::process::exit(1);
            }
            timed_out
        });
        ev.run_forever().unwrap();
        done.send(()).unwrap();
        let timed_out = watchdog.join().unwrap();
        assert!(
            !timed_out,
            "destroy = {destroy}: the run did not end at once"
        );
        assert_eq!(ev.is_destroyed(), destroy);
        drop(server);
        ev.destroy();
    }
}

//! Datagram endpoints over real UDP and Unix datagram sockets.

use oxloop::protocol::{Address, DatagramProtocol, DatagramTransport, LoopNetExt};
use oxloop::EventLoop;
use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

fn run(ev: &EventLoop) {
    ev.set_propagate_panics(true);
    let e = ev.clone();
    ev.call_later(Duration::from_secs(8), move || {
        e.stop();
        panic!("test timed out: {e:?}");
    })
    .unref();
    ev.run().unwrap();
}

/// Sends every datagram back to where it came from.
struct Echo {
    t: Option<DatagramTransport>,
}

impl DatagramProtocol for Echo {
    fn connection_made(&mut self, t: DatagramTransport) {
        self.t = Some(t);
    }
    fn datagram_received(&mut self, data: &[u8], addr: Address) {
        self.t.as_ref().unwrap().sendto(data, Some(&addr)).unwrap();
    }
}

/// Sends `count` datagrams, collects the replies, closes when all came back.
struct Pinger {
    t: Option<DatagramTransport>,
    count: usize,
    got: Rc<RefCell<Vec<Vec<u8>>>>,
    errors: Rc<RefCell<Vec<io::ErrorKind>>>,
    lost: Rc<RefCell<bool>>,
}

impl DatagramProtocol for Pinger {
    fn connection_made(&mut self, t: DatagramTransport) {
        for i in 0..self.count {
            t.send(format!("ping {i}").as_bytes()).unwrap();
        }
        self.t = Some(t);
    }
    fn datagram_received(&mut self, data: &[u8], _: Address) {
        self.got.borrow_mut().push(data.to_vec());
        if self.got.borrow().len() == self.count {
            self.t.as_ref().unwrap().close();
        }
    }
    fn error_received(&mut self, err: io::Error) {
        self.errors.borrow_mut().push(err.kind());
        self.t.as_ref().unwrap().close();
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        assert!(err.is_none());
        *self.lost.borrow_mut() = true;
    }
}

type Shared<T> = Rc<RefCell<T>>;
/// A pinger and what it records: replies, errors, whether it was closed.
type PingerParts = (
    Pinger,
    Shared<Vec<Vec<u8>>>,
    Shared<Vec<io::ErrorKind>>,
    Shared<bool>,
);

fn pinger(count: usize) -> PingerParts {
    let got = Rc::new(RefCell::new(Vec::new()));
    let errors = Rc::new(RefCell::new(Vec::new()));
    let lost = Rc::new(RefCell::new(false));
    (
        Pinger {
            t: None,
            count,
            got: got.clone(),
            errors: errors.clone(),
            lost: lost.clone(),
        },
        got,
        errors,
        lost,
    )
}

#[test]
fn udp_echo_between_two_endpoints() {
    let ev = EventLoop::new().unwrap();
    let server = ev
        .create_datagram_endpoint(Some("127.0.0.1:0".parse().unwrap()), None, Echo { t: None })
        .unwrap();
    let addr = server.local_addr().unwrap().as_inet().unwrap();
    assert_ne!(addr.port(), 0);
    assert!(server.peer_addr().is_err());
    let (p, got, errors, lost) = pinger(50);
    let client = ev.create_datagram_endpoint(None, Some(addr), p).unwrap();
    assert_eq!(client.peer_addr().unwrap(), Address::Inet(addr));
    let s = server.clone();
    ev.call_later(Duration::from_millis(500), move || s.close());
    run(&ev);
    assert!(errors.borrow().is_empty());
    assert!(*lost.borrow());
    let mut got: Vec<String> = got
        .borrow()
        .iter()
        .map(|d| String::from_utf8(d.clone()).unwrap())
        .collect();
    got.sort_by_key(|s| s[5..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..50).map(|i| format!("ping {i}")).collect();
    assert_eq!(got, expected);
    assert!(server.sendto(b"late", Some(&Address::Inet(addr))).is_err());
    // The time-out guard holds a clone of the loop: end it.
    ev.destroy();
}

#[test]
fn udp_send_to_a_closed_port_reports_error_received() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ev = EventLoop::new().unwrap();
    let (p, _got, errors, lost) = pinger(1);
    ev.create_datagram_endpoint(None, Some(port), p).unwrap();
    run(&ev);
    assert_eq!(*errors.borrow(), vec![io::ErrorKind::ConnectionRefused]);
    assert!(*lost.borrow());
    // The time-out guard holds a clone of the loop: end it.
    ev.destroy();
}

#[test]
fn datagram_endpoint_argument_errors() {
    let ev = EventLoop::new().unwrap();
    let err = ev
        .create_datagram_endpoint(None, None, Echo { t: None })
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let t = ev
        .create_datagram_endpoint(Some("127.0.0.1:0".parse().unwrap()), None, Echo { t: None })
        .unwrap();
    let unix = Address::Unix(Some("/nonexistent".into()));
    assert_eq!(
        t.sendto(b"x", Some(&unix)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assert!(t.sendto(b"x", Some(&Address::Inet(v6))).is_err());
    t.abort();
    run(&ev);
    // The time-out guard holds a clone of the loop: end it.
    ev.destroy();
}

#[test]
fn unix_datagram_echo() {
    let dir = std::env::temp_dir().join(format!("oxloop-dgram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_path = dir.join("server.sock");
    let client_path = dir.join("client.sock");
    let ev = EventLoop::new().unwrap();
    let server = ev
        .create_unix_datagram_endpoint(Some(&server_path), None, Echo { t: None })
        .unwrap();
    assert_eq!(
        server.local_addr().unwrap(),
        Address::Unix(Some(server_path.clone()))
    );
    let (p, got, errors, lost) = pinger(20);
    ev.create_unix_datagram_endpoint(Some(&client_path), Some(&server_path), p)
        .unwrap();
    let s = server.clone();
    ev.call_later(Duration::from_millis(300), move || s.close());
    run(&ev);
    assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    assert!(*lost.borrow());
    assert_eq!(got.borrow().len(), 20);
    assert!(
        !server_path.exists() && !client_path.exists(),
        "socket files left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // The time-out guard holds a clone of the loop: end it.
    ev.destroy();
}

/// Records flow-control calls; sends through the transport it is given.
struct Flow {
    t: Rc<RefCell<Option<DatagramTransport>>>,
    log: Rc<RefCell<Vec<&'static str>>>,
}

impl DatagramProtocol for Flow {
    fn connection_made(&mut self, t: DatagramTransport) {
        *self.t.borrow_mut() = Some(t);
    }
    fn datagram_received(&mut self, _: &[u8], _: Address) {}
    fn pause_writing(&mut self) {
        self.log.borrow_mut().push("pause");
    }
    fn resume_writing(&mut self) {
        self.log.borrow_mut().push("resume");
    }
}

#[test]
fn a_peer_that_does_not_read_pauses_writing_then_resumes_it_once_drained() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("oxloop-dgflow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (local, remote) = (dir.join("local.sock"), dir.join("remote.sock"));
    let _ = std::fs::remove_file(&local);
    let _ = std::fs::remove_file(&remote);
    let peer = UnixDatagram::bind(&remote).unwrap();
    peer.set_nonblocking(true).unwrap();

    let ev = EventLoop::new().unwrap();
    let transport = Rc::new(RefCell::new(None));
    let log = Rc::new(RefCell::new(Vec::new()));
    ev.create_unix_datagram_endpoint(
        Some(&local),
        Some(&remote),
        Flow {
            t: transport.clone(),
            log: log.clone(),
        },
    )
    .unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    let t = transport.borrow().clone().expect("connection_made ran");
    // The peer never reads: its receive queue fills, sends would block, datagrams queue
    // in the transport, and past the high-water mark the protocol is paused.
    let chunk = [7u8; 1024];
    let mut sent = 0;
    while log.borrow().is_empty() {
        t.send(&chunk).unwrap();
        sent += 1;
        assert!(sent < 100_000, "pause_writing never came");
    }
    assert_eq!(*log.borrow(), vec!["pause"]);
    // Draining the peer lets the queued datagrams out; below the low mark it resumes.
    let mut received = 0;
    let mut buf = [0u8; 2048];
    for _ in 0..2000 {
        while let Ok(n) = peer.recv(&mut buf) {
            assert_eq!(n, 1024);
            received += 1;
        }
        if *log.borrow() == vec!["pause", "resume"] && received == sent {
            break;
        }
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(*log.borrow(), vec!["pause", "resume"]);
    assert_eq!(received, sent, "every queued datagram was delivered");
    t.close();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

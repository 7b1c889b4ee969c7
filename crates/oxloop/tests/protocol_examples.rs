//! The protocol examples, run as programs over real sockets.

mod support;
use support::{example, run_example};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server example, ended by `SIGTERM` when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        // `SIGTERM`, not `SIGKILL`: the servers do not handle it, so it ends them all
        // the same, but under valgrind (`memcheck.sh` follows the examples) valgrind
        // sees it and checks the server for leaks before the process ends, which it
        // cannot do on `SIGKILL`.
        let pid = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts a server example on a free port; reads its `listening on <addr>` line.
fn start(name: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(example(name))
        .arg("127.0.0.1:0")
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run example {name} ({}): {e}",
                example(name).display()
            )
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} printed {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

fn run_client(name: &str, args: &[&str]) -> String {
    run_example(name, args).0
}

#[test]
fn tcp_echo_server_and_client() {
    let server = start("tcp_echo_server", &[]);
    let addr = server.addr.to_string();
    let out = run_client("tcp_echo_client", &[&addr, "200", "64"]);
    assert!(out.contains("echoed 200 messages of 64 bytes"), "{out}");
    let out = run_client("tcp_echo_client", &[&addr, "20", "100000"]);
    assert!(out.contains("echoed 20 messages of 100000 bytes"), "{out}");
    // A plain client too, with a half-close: the echo still arrives in full.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo differs ({} bytes back)", back.len());
}

#[test]
fn tcp_echo_client_reports_refusal() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(example("tcp_echo_client"))
        .arg(addr.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn udp_echo_server_and_client() {
    let server = start("udp_echo_server", &[]);
    let out = run_client("udp_echo_client", &[&server.addr.to_string(), "100"]);
    assert!(out.contains("received 100/100 replies"), "{out}");
    // A plain UDP socket too.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(b"plain", server.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"plain");
    assert_eq!(from, server.addr);
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn chat_server_broadcasts_to_the_others() {
    let server = start("chat_server", &[]);
    let connect = || {
        let s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let (mut a, b, c) = (connect(), connect(), connect());
    let a_name = a.local_addr().unwrap().to_string();
    let c_name = c.local_addr().unwrap().to_string();
    // Let the server register all three before anyone speaks.
    std::thread::sleep(Duration::from_millis(300));
    // A line split over two writes still arrives as one line.
    a.write_all(b"hel").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    a.write_all(b"lo everyone\r\n").unwrap();
    let mut rb = BufReader::new(b);
    let mut rc = BufReader::new(c.try_clone().unwrap());
    assert_eq!(read_line(&mut rb), format!("{a_name}: hello everyone\n"));
    assert_eq!(read_line(&mut rc), format!("{a_name}: hello everyone\n"));
    let mut c_w = c;
    c_w.write_all(b"hi a\nhi b\n").unwrap();
    let mut ra = BufReader::new(a.try_clone().unwrap());
    assert_eq!(read_line(&mut ra), format!("{c_name}: hi a\n"));
    assert_eq!(read_line(&mut ra), format!("{c_name}: hi b\n"));
    assert_eq!(read_line(&mut rb), format!("{c_name}: hi a\n"));
    assert_eq!(read_line(&mut rb), format!("{c_name}: hi b\n"));
    // The sender got nothing back of its own line; a departed client is forgotten.
    drop(rb);
    a.write_all(b"still here\n").unwrap();
    assert_eq!(read_line(&mut rc), format!("{a_name}: still here\n"));
    a.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        a.read(&mut buf).is_err(),
        "the sender received its own line"
    );
}

#[test]
fn idle_timeout_server_closes_silent_connections() {
    let server = start("idle_timeout_server", &["300"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Activity re-arms the timeout: 4 messages 150 ms apart outlive one timeout.
    let mut last_sent = Instant::now();
    for i in 0..4 {
        let msg = format!("ping {i}");
        // The server re-arms its timer after this write reaches it, so the silence it
        // measures starts no earlier than this instant.
        last_sent = Instant::now();
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.as_bytes());
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap(); // ends when the server closes
    let waited = last_sent.elapsed();
    assert_eq!(rest, "idle for 300 ms, closing\n");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

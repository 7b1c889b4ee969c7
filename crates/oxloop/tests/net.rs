//! Async sockets, pipes, DNS and line reading over real fds.

use oxloop::io::{pipe, AsyncReadExt, AsyncWriteExt, BufReader};
use oxloop::net::{
    lookup_addr, lookup_host, TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener,
    UnixStream,
};
use oxloop::{task, EventLoop};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A socket path in a directory of its own, both removed when it is dropped.
struct TempPath(std::path::PathBuf);

impl AsRef<std::path::Path> for TempPath {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn temp_path(name: &str) -> TempPath {
    let dir = std::env::temp_dir().join(format!("oxloop-net-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    TempPath(path)
}

#[test]
fn tcp_echo() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let listener = TcpListener::bind(local())?;
        let addr = listener.local_addr()?;
        let server = task::spawn(async move {
            let (mut conn, peer) = listener.accept().await?;
            assert_eq!(peer, conn.peer_addr()?);
            let mut buf = vec![0; 1024];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).await?;
            }
            Ok::<_, io::Error>(())
        });
        let mut client = TcpStream::connect(addr).await?;
        client.set_nodelay(true)?;
        assert_eq!(client.peer_addr()?, addr);
        for msg in [&b"hello"[..], b"world", &[0u8; 1000]] {
            client.write_all(msg).await?;
            let mut echo = vec![0; msg.len()];
            client.read_exact(&mut echo).await?;
            assert_eq!(echo, msg);
        }
        client.shutdown(std::net::Shutdown::Write)?;
        server.await.unwrap()?;
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await?;
        assert!(rest.is_empty());
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn eight_mib_through_tcp_byte_for_byte() {
    const SIZE: usize = 8 * 1024 * 1024;
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let listener = TcpListener::bind(local())?;
        let addr = listener.local_addr()?;
        let sender = task::spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
            conn.write_all(&data).await?;
            conn.close().await?;
            Ok::<_, io::Error>(())
        });
        let mut client = TcpStream::connect(addr).await?;
        let mut got = Vec::with_capacity(SIZE);
        client.read_to_end(&mut got).await?;
        sender.await.unwrap()?;
        assert_eq!(got.len(), SIZE);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 31 % 251) as u8));
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn connection_refused_from_a_closed_port() {
    let ev = EventLoop::new().unwrap();
    // Bind then drop: the port is (almost certainly) closed afterwards.
    let addr = std::net::TcpListener::bind(local())
        .unwrap()
        .local_addr()
        .unwrap();
    let err = ev.block_on(TcpStream::connect(addr)).unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn connect_timeout_against_a_full_backlog() {
    let ev = EventLoop::new().unwrap();
    // A listener with backlog 0 that never accepts: once its queue is full, further
    // SYNs are dropped and a connect never completes.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&local().into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let result = ev
        .block_on(async {
            let mut held = Vec::new();
            for _ in 0..16 {
                match TcpStream::connect_timeout(addr, Duration::from_millis(200)).await {
                    Ok(s) => held.push(s),
                    Err(e) => return Err(e),
                }
            }
            Ok(held.len())
        })
        .unwrap();
    let err = result.expect_err("a connect should have timed out");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn udp_echo() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let server = UdpSocket::bind(local())?;
        let server_addr = server.local_addr()?;
        let echo = task::spawn(async move {
            let mut buf = [0; 64];
            for _ in 0..3 {
                let (n, from) = server.recv_from(&mut buf).await?;
                server.send_to(&buf[..n], from).await?;
            }
            Ok::<_, io::Error>(())
        });
        let client = UdpSocket::bind(local())?;
        client.connect(server_addr)?;
        for msg in [&b"one"[..], b"two", b"three"] {
            client.send(msg).await?;
            let mut buf = [0; 64];
            let n = client.recv(&mut buf).await?;
            assert_eq!(&buf[..n], msg);
        }
        echo.await.unwrap()?;
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn unix_stream_echo() {
    let ev = EventLoop::new().unwrap();
    let path = temp_path("stream.sock");
    ev.block_on(async {
        let listener = UnixListener::bind(&path)?;
        let server = task::spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut buf = [0; 5];
            conn.read_exact(&mut buf).await?;
            conn.write_all(&buf).await?;
            Ok::<_, io::Error>(())
        });
        let mut client = UnixStream::connect(&path).await?;
        client.write_all(b"unix!").await?;
        let mut buf = [0; 5];
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"unix!");
        server.await.unwrap()?;
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unix_datagram_echo() {
    let ev = EventLoop::new().unwrap();
    let server_path = temp_path("dgram-server.sock");
    let client_path = temp_path("dgram-client.sock");
    ev.block_on(async {
        let server = UnixDatagram::bind(&server_path)?;
        let echo = task::spawn(async move {
            let mut buf = [0; 64];
            let (n, from) = server.recv_from(&mut buf).await?;
            let from = from.as_pathname().unwrap().to_path_buf();
            server.send_to(&buf[..n], from).await?;
            Ok::<_, io::Error>(())
        });
        let client = UnixDatagram::bind(&client_path)?;
        client.send_to(b"datagram", &server_path).await?;
        let mut buf = [0; 64];
        let n = client.recv(&mut buf).await?;
        assert_eq!(&buf[..n], b"datagram");
        echo.await.unwrap()?;
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn socketpair_and_pipe_round_trips() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let (mut a, mut b) = oxloop::net::socketpair()?;
        a.write_all(b"ping").await?;
        let mut buf = [0; 4];
        b.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");

        let (mut r, mut w) = pipe()?;
        let writer = task::spawn(async move {
            for i in 0..100 {
                w.write_all(format!("line {i}\n").as_bytes()).await?;
            }
            w.close().await?;
            Ok::<_, io::Error>(())
        });
        let mut all = String::new();
        r.read_to_string(&mut all).await?;
        writer.await.unwrap()?;
        assert_eq!(all.lines().count(), 100);
        assert_eq!(all.lines().last(), Some("line 99"));
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn lines_and_the_over_long_line_error() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let (r, mut w) = pipe()?;
        let writer = task::spawn(async move {
            w.write_all(b"short\r\nsecond\n").await?;
            w.write_all(&vec![b'x'; 10_000]).await?;
            w.write_all(b"\nafter\n").await?;
            w.close().await?;
            Ok::<_, io::Error>(())
        });
        let mut lines = BufReader::with_capacity(64, r).lines().max_len(1000);
        assert_eq!(lines.next_line().await?.as_deref(), Some("short"));
        assert_eq!(lines.next_line().await?.as_deref(), Some("second"));
        let err = lines.next_line().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("longer than 1000"));
        writer.await.unwrap()?;
        Ok::<_, io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn dns_for_localhost_equals_std() {
    let ev = EventLoop::new().unwrap();
    let ours = ev.block_on(lookup_host("localhost", 80)).unwrap().unwrap();
    let std: Vec<SocketAddr> = ("localhost", 80).to_socket_addrs().unwrap().collect();
    assert_eq!(ours, std);
    assert!(ours.iter().any(|a| a.ip().is_loopback()));
    let name = ev
        .block_on(lookup_addr("127.0.0.1".parse().unwrap()))
        .unwrap()
        .unwrap();
    assert!(!name.is_empty());
    let err = ev
        .block_on(lookup_host("no-such-host.invalid", 80))
        .unwrap();
    assert!(err.is_err());
}

#[test]
fn readiness_of_a_generic_fd() {
    use oxloop::io::Async;
    use std::io::{Read, Write};
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = Async::new(a).unwrap();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        b.write_all(b"late").unwrap();
        b
    });
    let mut buf = [0; 4];
    let n = ev
        .block_on(a.read_with(|mut s| s.read(&mut buf)))
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"late");
    assert!(start.elapsed() >= Duration::from_millis(15));
    drop(t.join().unwrap());
    // The fd can be taken back out.
    let inner = a.into_inner();
    drop(inner);
}

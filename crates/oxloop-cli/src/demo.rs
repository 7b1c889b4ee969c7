//! `oxloop demo`: every part of oxloop, working, in one process.
//!
//! Each part prints what happened; a part that fails ends the demo with an error, so
//! a successful run is a small end-to-end check of the whole stack.

use oxloop::io::{AsyncReadExt, AsyncWriteExt};
use oxloop::net::{TcpStream, UdpSocket};
use oxloop::protocol::{
    Address, DatagramProtocol, DatagramTransport, LoopNetExt, Protocol, Transport,
};
use oxloop::wire::LoopWireExt;
use oxloop::{task, EventLoop};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Runs the tour.
pub fn run() -> io::Result<()> {
    let ev = EventLoop::new()?;
    let start = Instant::now();
    ev.block_on(tour(ev.clone(), start))??;
    println!(
        "[{:>5} ms] done: every part worked",
        start.elapsed().as_millis()
    );
    Ok(())
}

fn say(start: Instant, part: &str, what: impl std::fmt::Display) {
    println!("[{:>5} ms] {part:<7} {what}", start.elapsed().as_millis());
}

async fn tour(ev: EventLoop, start: Instant) -> io::Result<()> {
    timers(&ev, start).await?;
    signal(&ev, start).await?;
    cross_thread(&ev, start).await?;
    tcp_echo(&ev, start).await?;
    udp_echo(&ev, start).await?;
    tasks(start).await?;
    wires(&ev, start).await?;
    http(&ev, start).await?;
    Ok(())
}

/// Two timers, one cancelled before it fires.
async fn timers(ev: &EventLoop, start: Instant) -> io::Result<()> {
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ev.call_later(Duration::from_millis(50), move || {
        say(start, "timers", "50 ms timer fired");
        f.set(true);
    });
    let cancelled = ev.call_later(Duration::from_millis(30), move || {
        say(start, "timers", "this cancelled timer must not fire")
    });
    say(
        start,
        "timers",
        "set a 50 ms timer and a 30 ms timer; cancelling the 30 ms one",
    );
    cancelled.cancel();
    task::sleep(Duration::from_millis(80)).await;
    if !fired.get() || cancelled.is_pending() {
        return Err(io::Error::other("timers misbehaved"));
    }
    say(start, "timers", "the cancelled timer never fired");
    Ok(())
}

/// The process sends itself SIGUSR1; the handler runs on the loop thread.
async fn signal(ev: &EventLoop, start: Instant) -> io::Result<()> {
    let got = Rc::new(Cell::new(false));
    let g = got.clone();
    let handle = ev.add_signal_handler(libc::SIGUSR1, move || {
        say(start, "signal", "SIGUSR1 handled on the loop thread");
        g.set(true);
    })?;
    say(start, "signal", "sending SIGUSR1 to this process");
    // SAFETY: raise(3) with a valid signal number has no memory effects.
    unsafe { libc::raise(libc::SIGUSR1) };
    for _ in 0..100 {
        if got.get() {
            break;
        }
        task::sleep(Duration::from_millis(5)).await;
    }
    handle.cancel(); // the default disposition is back
    if !got.get() {
        return Err(io::Error::other("the signal handler did not run"));
    }
    Ok(())
}

/// Another thread calls into the loop and wakes it.
async fn cross_thread(ev: &EventLoop, start: Instant) -> io::Result<()> {
    let remote = ev.remote();
    let (done, wait) = oneshot();
    let worker = std::thread::spawn(move || {
        let name = format!("{:?}", std::thread::current().id());
        remote
            .call_from_thread(move || {
                say(
                    start,
                    "thread",
                    format!("call from thread {name}, run on the loop"),
                );
                done();
            })
            .map_err(io::Error::other)
    });
    wait.await;
    worker
        .join()
        .map_err(|_| io::Error::other("worker panicked"))??;
    Ok(())
}

/// A protocol-layer echo server and an async client.
async fn tcp_echo(ev: &EventLoop, start: Instant) -> io::Result<()> {
    struct Echo(Option<Transport>);
    impl Protocol for Echo {
        fn connection_made(&mut self, transport: Transport) {
            self.0 = Some(transport);
        }
        fn data_received(&mut self, data: &[u8]) {
            if let Some(t) = &self.0 {
                let _ = t.write(data);
            }
        }
    }
    let server = ev.create_server("127.0.0.1:0", || Echo(None))?;
    let addr = match server.local_addrs().first() {
        Some(Address::Inet(addr)) => *addr,
        _ => return Err(io::Error::other("the server has no TCP address")),
    };
    say(start, "tcp", format!("echo server listening on {addr}"));
    let mut client = TcpStream::connect(addr).await?;
    for msg in ["hello", "event loop"] {
        client.write_all(msg.as_bytes()).await?;
        let mut echo = vec![0; msg.len()];
        client.read_exact(&mut echo).await?;
        say(
            start,
            "tcp",
            format!(
                "sent {msg:?}, got back {:?}",
                String::from_utf8_lossy(&echo)
            ),
        );
        if echo != msg.as_bytes() {
            return Err(io::Error::other("TCP echo mismatch"));
        }
    }
    server.close();
    Ok(())
}

/// A protocol-layer UDP echo endpoint and an async client socket.
async fn udp_echo(ev: &EventLoop, start: Instant) -> io::Result<()> {
    struct Echo(Option<DatagramTransport>);
    impl DatagramProtocol for Echo {
        fn connection_made(&mut self, transport: DatagramTransport) {
            self.0 = Some(transport);
        }
        fn datagram_received(&mut self, data: &[u8], addr: Address) {
            if let Some(t) = &self.0 {
                let _ = t.sendto(data, Some(&addr));
            }
        }
    }
    let endpoint =
        ev.create_datagram_endpoint(Some("127.0.0.1:0".parse().unwrap()), None, Echo(None))?;
    let addr = match endpoint.local_addr()? {
        Address::Inet(addr) => addr,
        _ => return Err(io::Error::other("the endpoint has no UDP address")),
    };
    say(start, "udp", format!("echo endpoint on {addr}"));
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    socket.send_to(b"datagram", addr).await?;
    let mut buf = [0u8; 64];
    let (n, from) = task::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await??;
    say(
        start,
        "udp",
        format!(
            "got {:?} back from {from}",
            String::from_utf8_lossy(&buf[..n])
        ),
    );
    if &buf[..n] != b"datagram" {
        return Err(io::Error::other("UDP echo mismatch"));
    }
    endpoint.close();
    Ok(())
}

/// Tasks: spawn, join, abort.
async fn tasks(start: Instant) -> io::Result<()> {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut handles = Vec::new();
    for (name, ms) in [("slow", 30u64), ("fast", 10)] {
        let log = log.clone();
        handles.push(task::spawn(async move {
            task::sleep(Duration::from_millis(ms)).await;
            log.borrow_mut().push(name);
            ms
        }));
    }
    let doomed = task::spawn(task::sleep(Duration::from_secs(3600)));
    doomed.abort();
    let mut total = 0;
    for h in handles {
        total += h.await.map_err(io::Error::from)?;
    }
    let aborted = doomed.await.is_err();
    say(
        start,
        "tasks",
        format!("two tasks finished in order {:?} (slept {total} ms in all); a third was aborted: {aborted}", log.borrow()),
    );
    Ok(())
}

/// A wire program (the aiowire seed): `(Call(sleep 20 ms) >> Call(beep)) * 3`.
async fn wires(ev: &EventLoop, start: Instant) -> io::Result<()> {
    use oxloop::wire::Call;
    let beeps = Rc::new(Cell::new(0));
    let b = beeps.clone();
    let prog = (Call(|| task::sleep(Duration::from_millis(20)))
        >> Call(move || {
            b.set(b.get() + 1);
            say(start, "wire", format!("beep {}", b.get()));
        }))
        * 3;
    say(
        start,
        "wire",
        "running (Call(sleep 20 ms) >> Call(beep)) * 3",
    );
    ev.start_wire(prog).await.map_err(io::Error::other)?;
    if beeps.get() != 3 {
        return Err(io::Error::other(
            "the wire program did not beep three times",
        ));
    }
    Ok(())
}

/// The built-in HTTP server answering a request from an async client.
async fn http(ev: &EventLoop, start: Instant) -> io::Result<()> {
    use oxloop_http::{Config, HttpServer, Request, Response};
    let server = HttpServer::bind(ev, "127.0.0.1:0", Config::default(), |req: &Request| {
        Response::text(format!(
            "Hello from oxloop-http, you asked for {}",
            req.path()
        ))
    })?;
    let addr = server.local_addr();
    say(start, "http", format!("server listening on http://{addr}"));
    let mut client = TcpStream::connect(addr).await?;
    client
        .write_all(b"GET /demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    task::timeout(Duration::from_secs(5), client.read_to_string(&mut response)).await??;
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    say(
        start,
        "http",
        format!("GET /demo -> {status:?}, body {body:?}"),
    );
    if !status.starts_with("HTTP/1.1 200") || !body.contains("/demo") {
        return Err(io::Error::other("unexpected HTTP response"));
    }
    server.shutdown(|| {});
    Ok(())
}

/// A one-shot signal from another thread to a task.
fn oneshot() -> (impl FnOnce() + Send, impl std::future::Future<Output = ()>) {
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};
    let slot: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
    let s = slot.clone();
    let fire = move || {
        let waker = {
            let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
            g.0 = true;
            g.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    };
    let wait = std::future::poll_fn(move |cx| {
        let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 {
            Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    });
    (fire, wait)
}

//! Choosing the loop's backend: the builder, `OXLOOP_BACKEND`, and the fallback to the
//! default backend when io_uring is refused.
//!
//! The rest of the core's tests run on whichever backend `OXLOOP_BACKEND` names
//! (`test.sh` runs them once more with `OXLOOP_BACKEND=io_uring`).

#![cfg(target_os = "linux")]

use oxloop::{BackendKind, EventLoop};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

/// Whether this machine lets a process set up an io_uring (the tests that need one say
/// so and pass vacuously where it cannot).
fn io_uring_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
        && EventLoop::builder()
            .backend(BackendKind::IoUring)
            .build_detached()
            .map(|ev| ev.backend() == BackendKind::IoUring)
            .unwrap_or(false)
}

/// Runs `check` on epoll, then on io_uring where this machine allows it.
fn on_both_backends(check: fn(BackendKind)) {
    check(BackendKind::Epoll);
    if io_uring_allowed() {
        check(BackendKind::IoUring);
    } else {
        eprintln!("io_uring is not allowed here: its half of this test is skipped");
    }
}

/// An echo round trip through `add_reader` and a timer, on `ev`.
fn echo_round_trip(ev: &EventLoop) {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let got = Rc::new(Cell::new(0usize));
    let (g, e, mut sock) = (got.clone(), ev.clone(), a.try_clone().unwrap());
    let fd = a.as_raw_fd();
    ev.add_reader(fd, move || {
        let mut buf = [0u8; 16];
        let n = sock.read(&mut buf).unwrap();
        sock.write_all(&buf[..n]).unwrap();
        g.set(g.get() + n);
        e.remove_reader(fd);
    })
    .unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ev.call_later(Duration::from_millis(5), move || f.set(true));
    b.write_all(b"ping").unwrap();
    ev.run().unwrap();
    let mut back = [0u8; 4];
    b.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(got.get(), 4);
    assert!(fired.get());
}

#[test]
fn the_builder_chooses_the_backend_and_the_loop_says_which() {
    let ev = EventLoop::builder()
        .backend(BackendKind::Epoll)
        .build_detached()
        .unwrap();
    assert_eq!(ev.backend(), BackendKind::Epoll);
    assert_eq!(ev.backend_fallback(), None);
    echo_round_trip(&ev);

    if !io_uring_allowed() {
        eprintln!("io_uring is not allowed here: its half of this test is skipped");
        return;
    }
    let ev = EventLoop::builder()
        .backend(BackendKind::IoUring)
        .build_detached()
        .unwrap();
    assert_eq!(ev.backend(), BackendKind::IoUring);
    assert_eq!(ev.backend_fallback(), None);
    echo_round_trip(&ev);
}

#[test]
fn backend_names_round_trip() {
    for kind in [
        BackendKind::Epoll,
        BackendKind::IoUring,
        BackendKind::Portable,
    ] {
        assert_eq!(BackendKind::from_name(kind.name()), Some(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(
        BackendKind::from_name("IO-URING"),
        Some(BackendKind::IoUring)
    );
    assert_eq!(BackendKind::from_name("kqueue"), None);
}

/// Installs, on the calling thread only, a seccomp filter that answers
/// `io_uring_setup` with `EPERM` (as Docker's default profile does) and allows every
/// other system call.
fn refuse_io_uring_on_this_thread() {
    const IO_URING_SETUP: u32 = libc::SYS_io_uring_setup as u32;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq_k = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
    // struct seccomp_data { int nr; __u32 arch; ... }
    let mut program = [
        stmt(ld_w_abs, 4),                                   // arch
        jump(jeq_k, AUDIT_ARCH, 1, 0),                       // our architecture: go on
        stmt(ret_k, SECCOMP_RET_ALLOW),                      // another: not ours to judge
        stmt(ld_w_abs, 0),                                   // system call number
        jump(jeq_k, IO_URING_SETUP, 0, 1),                   // io_uring_setup:
        stmt(ret_k, SECCOMP_RET_ERRNO | libc::EPERM as u32), // refused
        stmt(ret_k, SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers. PR_SET_SECCOMP reads the
    // program through `fprog`, which points at `program`; both live on this stack frame
    // for the whole call, and the kernel copies the program before returning. Without
    // SECCOMP_FILTER_FLAG_TSYNC the filter applies to this thread alone.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ),
            0,
            "seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn a_refused_io_uring_falls_back_to_the_default_backend_and_says_why() {
    // On a thread of its own: the filter stays with the thread, which ends here.
    std::thread::spawn(|| {
        refuse_io_uring_on_this_thread();
        let ev = EventLoop::builder()
            .backend(BackendKind::IoUring)
            .build()
            .unwrap();
        assert_eq!(ev.backend(), BackendKind::DEFAULT);
        let reason = ev.backend_fallback().expect("a reason for the fallback");
        assert!(reason.contains("io_uring"), "{reason}");
        assert!(
            reason.contains(&std::io::Error::from_raw_os_error(libc::EPERM).to_string()),
            "{reason}"
        );
        // The loop it fell back to works.
        echo_round_trip(&ev);
    })
    .join()
    .unwrap();
}

/// Run by the test below in a child process, with `OXLOOP_BACKEND` set: the loops it
/// creates use the backend named there (`OXLOOP_EXPECTED_BACKEND`).
#[test]
#[ignore = "run by the_environment_variable_chooses_the_backend, in a child process"]
fn loops_use_the_backend_the_environment_names() {
    let expected = std::env::var("OXLOOP_EXPECTED_BACKEND").unwrap();
    let ev = EventLoop::new().unwrap();
    assert_eq!(ev.backend().name(), expected, "{:?}", ev.backend_fallback());
    echo_round_trip(&ev);
    // The builder's choice wins over the environment's.
    let other = EventLoop::builder()
        .backend(BackendKind::Epoll)
        .build_detached()
        .unwrap();
    assert_eq!(other.backend(), BackendKind::Epoll);
}

#[test]
fn the_environment_variable_chooses_the_backend() {
    let mut cases = vec![
        ("epoll", "epoll"),
        ("no-such-backend", BackendKind::DEFAULT.name()),
    ];
    if io_uring_allowed() {
        cases.push(("io_uring", "io_uring"));
    }
    for (variable, expected) in cases {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "loops_use_the_backend_the_environment_names",
            ])
            .env(oxloop::BACKEND_VARIABLE, variable)
            .env("OXLOOP_EXPECTED_BACKEND", expected)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "OXLOOP_BACKEND={variable}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Echoes every byte back through its transport.
struct Echo {
    transport: Option<oxloop::protocol::Transport>,
}

impl oxloop::protocol::Protocol for Echo {
    fn connection_made(&mut self, transport: oxloop::protocol::Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data).unwrap();
        }
    }
}

/// A byte pattern that shows where a chunk came from if bytes are lost, repeated or
/// reordered.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn io_uring_transports_echo_many_buffers_intact() {
    use oxloop::protocol::LoopNetExt;
    if !io_uring_allowed() {
        eprintln!("io_uring is not allowed here: skipped");
        return;
    }
    let ev = EventLoop::builder()
        .backend(BackendKind::IoUring)
        .build()
        .unwrap();
    let server = ev
        .create_server("127.0.0.1:0", || Echo { transport: None })
        .unwrap();
    let addr = server.socket_addrs()[0];
    // 8 MiB: the receive ring's buffers (4 MiB in all) are each reused, and the
    // client writes while it reads, so sends queue up behind one another.
    let sent = pattern(8 << 20);
    let expected = sent.clone();
    let client = std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut stream = stream;
            for chunk in sent.chunks(7919) {
                stream.write_all(chunk).unwrap();
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    });
    ev.call_later(Duration::from_secs(60), move || panic!("timed out"))
        .unref();
    // Runs until the client saw the end of the echo (the server closes on EOF, once
    // everything queued was sent).
    while !client.is_finished() {
        ev.run_once(Some(Duration::from_millis(50))).unwrap();
    }
    server.close();
    let got = client.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "echoed bytes differ");
}

#[test]
fn an_io_uring_loop_dropped_with_sends_in_the_kernel_frees_them_safely() {
    use oxloop::protocol::LoopNetExt;
    if !io_uring_allowed() {
        eprintln!("io_uring is not allowed here: skipped");
        return;
    }
    // The peer never reads: sends stay in the kernel, waiting for window space, when
    // the loop is dropped.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ev = EventLoop::builder()
        .backend(BackendKind::IoUring)
        .build_detached()
        .unwrap();
    let connected = Rc::new(Cell::new(false));
    let c = connected.clone();
    ev.create_connection(
        addr,
        Echo { transport: None },
        &oxloop::protocol::ConnectOptions::new(),
        move |result| {
            let t = result.unwrap();
            t.set_write_buffer_limits(64 << 20, 0).unwrap();
            t.write(&pattern(32 << 20)).unwrap();
            c.set(true);
        },
    )
    .unwrap();
    let (_peer, _) = listener.accept().unwrap();
    for _ in 0..20 {
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert!(connected.get());
    // Destroying drops the transport (its send's bytes go to the backend's orphans, the
    // send is cancelled); dropping the last handle drops the backend, which waits for
    // the cancelled send to end before the bytes are freed.
    ev.destroy();
    drop(ev);
}

/// Keeps what it is given.
struct Keeper {
    got: Rc<std::cell::RefCell<Vec<u8>>>,
}

impl oxloop::protocol::Protocol for Keeper {
    fn data_received(&mut self, data: &[u8]) {
        self.got.borrow_mut().extend_from_slice(data);
    }
}

/// A connected loopback pair: the client's end (non-blocking) and the server's.
fn loopback_pair(listener: &std::net::TcpListener) -> (std::net::TcpStream, socket2::Socket) {
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nonblocking(true).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, socket2::Socket::from(server))
}

/// Writes `pattern` bytes into `client` until the kernel takes no more (or 4 MiB);
/// returns them.
fn fill(client: &mut std::net::TcpStream) -> Vec<u8> {
    let block = pattern(1 << 20);
    let mut written = 0;
    while written < 4 << 20 {
        // Continues the pattern where the last write stopped.
        let piece = &block[written % 251..][..64 * 1024];
        match client.write(piece) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    pattern(written)
}

/// Streams paused with bytes received for them (more in all than io_uring's receive
/// ring holds, 4 MiB) do not keep a stream beside them from its bytes, and get all of
/// theirs, in order, once they resume.
fn paused_streams_beside_an_echo(kind: BackendKind) {
    use oxloop::protocol::Transport;
    const PAUSED: usize = 8;
    let ev = EventLoop::builder().backend(kind).build_detached().unwrap();
    // As the Python binding runs it: the I/O a wait reports runs after the callbacks
    // queued before it, so the streams below pause after their first receive took
    // their bytes and before they were handed any.
    ev.set_io_behind_ready(true);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut paused = Vec::new();
    for _ in 0..PAUSED {
        let (mut client, server) = loopback_pair(&listener);
        let sent = fill(&mut client);
        let got = Rc::new(std::cell::RefCell::new(Vec::new()));
        let transport = Transport::adopt(&ev, server, Keeper { got: got.clone() }).unwrap();
        paused.push((client, sent, got, transport));
    }
    let transports: Vec<Transport> = paused.iter().map(|p| p.3.clone()).collect();
    ev.call_soon(move || transports.iter().for_each(Transport::pause_reading));
    for _ in 0..20 {
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
    }

    let (mut client, server) = loopback_pair(&listener);
    Transport::adopt(&ev, server, Echo { transport: None }).unwrap();
    client.write_all(b"ping").unwrap();
    let mut echoed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while echoed.len() < 4 && std::time::Instant::now() < deadline {
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
        let mut buf = [0u8; 16];
        match client.read(&mut buf) {
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        echoed, b"ping",
        "{kind:?}: the echo waited behind paused streams"
    );

    for (_, _, _, transport) in &paused {
        transport.resume_reading();
    }
    let all_in = || {
        paused
            .iter()
            .all(|(_, sent, got, _)| got.borrow().len() >= sent.len())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !all_in() && std::time::Instant::now() < deadline {
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    for (i, (_, sent, got, _)) in paused.iter().enumerate() {
        let got = got.borrow();
        assert_eq!(got.len(), sent.len(), "{kind:?}: stream {i}: bytes lost");
        assert!(*got == *sent, "{kind:?}: stream {i}: other bytes than sent");
    }
}

#[test]
fn streams_paused_with_unread_bytes_do_not_hold_up_other_streams() {
    on_both_backends(paused_streams_beside_an_echo);
}

/// Clients that write a lot before they read: the echo's sends (on io_uring, sent from
/// the receive ring's buffers) go out in pieces, the server's small send buffer taking
/// a little at a time, and every byte arrives, in order.
fn echoes_to_late_readers(kind: BackendKind) {
    use oxloop::protocol::Transport;
    const CLIENTS: usize = 6;
    const BYTES: usize = 2 << 20;
    let ev = EventLoop::builder().backend(kind).build_detached().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        // Small buffers on both sides: the window opens a little at a time.
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let client = std::net::TcpStream::from(client);
        let server = socket2::Socket::from(listener.accept().unwrap().0);
        server.set_send_buffer_size(4096).unwrap();
        Transport::adopt(&ev, server, Echo { transport: None }).unwrap();
        clients.push(std::thread::spawn(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut reader = client.try_clone().unwrap();
            // Each client's bytes differ from the others', so bytes crossing streams
            // show.
            let sent: Vec<u8> = pattern(BYTES + i).split_off(i);
            let expected = sent.clone();
            let writer = std::thread::spawn(move || {
                let mut client = client;
                for chunk in sent.chunks(50_000) {
                    client.write_all(chunk).unwrap();
                }
                client.shutdown(std::net::Shutdown::Write).unwrap();
            });
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            (got, expected)
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !clients.iter().all(|c| c.is_finished()) {
        assert!(std::time::Instant::now() < deadline, "{kind:?}: timed out");
        ev.run_once(Some(Duration::from_millis(20))).unwrap();
    }
    for (i, client) in clients.into_iter().enumerate() {
        let (got, expected) = client.join().unwrap();
        assert_eq!(got.len(), expected.len(), "{kind:?}: client {i}: length");
        assert!(
            got == expected,
            "{kind:?}: client {i}: other bytes than sent"
        );
    }
    ev.destroy();
}

#[test]
fn echoes_to_clients_that_read_late_arrive_whole() {
    on_both_backends(echoes_to_late_readers);
}

/// Echoes what it is handed first four times over; handed more (its echo still in the
/// kernel, the peer reading nothing), panics or aborts its transport.
struct Faulty {
    transport: Option<oxloop::protocol::Transport>,
    calls: usize,
    panics: bool,
}

impl oxloop::protocol::Protocol for Faulty {
    fn connection_made(&mut self, transport: oxloop::protocol::Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.calls += 1;
        let Some(t) = &self.transport else { return };
        if self.calls == 1 {
            // More than the peer takes: the first write's send stays in the kernel.
            for _ in 0..4 {
                t.write(data).unwrap();
            }
        } else if self.panics {
            panic!("a protocol that panics");
        } else {
            t.abort();
        }
    }
}

/// Protocols that panic in `data_received` or abort with their echo in flight, and
/// peers that reset the connection with sends pending, more times than io_uring's
/// receive ring has buffers: every buffer goes back (a debug build checks when the
/// loop is dropped), and an echo still works after.
fn faults_give_receive_buffers_back(kind: BackendKind) {
    use oxloop::protocol::{LoopNetExt, Transport};
    let ev = EventLoop::builder().backend(kind).build_detached().unwrap();
    let panics = Rc::new(Cell::new(0usize));
    let p = panics.clone();
    ev.set_exception_handler(move |_| p.set(p.get() + 1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let block = pattern(15 * 1024);
    for round in 0..300 {
        // Small buffers on both sides and a client that never reads: the echo's send
        // waits in the kernel.
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(1).unwrap(); // the kernel's least
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let mut client = std::net::TcpStream::from(client);
        client.set_nonblocking(true).unwrap();
        let server = socket2::Socket::from(listener.accept().unwrap().0);
        server.set_send_buffer_size(1).unwrap();
        let protocol = Faulty {
            transport: None,
            calls: 0,
            panics: round % 2 == 0,
        };
        Transport::adopt(&ev, server, protocol).unwrap();
        // Pieces of less than a receive buffer, one after the other: the first is
        // echoed, the second finds the echo in the kernel.
        for _ in 0..2 {
            let _ = client.write(&block);
            for _ in 0..3 {
                ev.run_once(Some(Duration::from_millis(1))).unwrap();
            }
        }
        if round % 3 == 0 {
            // Closed unread, with a zero linger: the peer resets the connection.
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(client);
        for _ in 0..3 {
            ev.run_once(Some(Duration::from_millis(1))).unwrap();
        }
    }
    assert!(panics.get() > 0, "{kind:?}: no protocol panicked");
    let server = ev
        .create_server("127.0.0.1:0", || Echo { transport: None })
        .unwrap();
    let mut client = std::net::TcpStream::connect(server.socket_addrs()[0]).unwrap();
    client.set_nonblocking(true).unwrap();
    client.write_all(b"still here").unwrap();
    let mut echoed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while echoed.len() < 10 && std::time::Instant::now() < deadline {
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
        let mut buf = [0u8; 16];
        match client.read(&mut buf) {
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(echoed, b"still here", "{kind:?}");
    ev.destroy();
    drop(ev);
}

#[test]
fn receive_buffers_come_back_after_panics_aborts_and_resets() {
    on_both_backends(faults_give_receive_buffers_back);
}

/// Echoes, and panics once, after its first echo.
struct PanicsOnce {
    transport: Option<oxloop::protocol::Transport>,
    panicked: bool,
}

impl oxloop::protocol::Protocol for PanicsOnce {
    fn connection_made(&mut self, transport: oxloop::protocol::Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data).unwrap();
        }
        if !std::mem::replace(&mut self.panicked, true) {
            panic!("a protocol that panics once");
        }
    }
}

/// Protocols that panic while more of what arrived waits to be handed to them get the
/// rest after the panic, as on epoll (where the socket stays readable). On io_uring
/// the rest waits in other receive buffers, or, for the streams whose receives found
/// the ring empty (300 streams with 40 KiB each need more than its 256 buffers), in
/// the socket, which such a stream reads itself.
fn a_panic_leaves_no_bytes_behind(kind: BackendKind) {
    use oxloop::protocol::Transport;
    const STREAMS: usize = 300;
    const BYTES: usize = 40 * 1024;
    let ev = EventLoop::builder().backend(kind).build_detached().unwrap();
    let panics = Rc::new(Cell::new(0usize));
    let p = panics.clone();
    ev.set_exception_handler(move |_| p.set(p.get() + 1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sent = pattern(BYTES);
    let mut clients = Vec::new();
    for _ in 0..STREAMS {
        let (mut client, server) = loopback_pair(&listener);
        // Written before the transport starts, so that it all waits at once.
        client.write_all(&sent).unwrap();
        let protocol = PanicsOnce {
            transport: None,
            panicked: false,
        };
        Transport::adopt(&ev, server, protocol).unwrap();
        clients.push((client, Vec::new()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 64 * 1024];
    while clients.iter().any(|(_, got)| got.len() < BYTES) && std::time::Instant::now() < deadline {
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
        for (client, got) in &mut clients {
            loop {
                match client.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    assert_eq!(panics.get(), STREAMS, "{kind:?}");
    for (i, (_, got)) in clients.iter().enumerate() {
        assert_eq!(got.len(), BYTES, "{kind:?}: stream {i}: bytes left behind");
        assert!(*got == sent, "{kind:?}: stream {i}: other bytes than sent");
    }
    ev.destroy();
}

#[test]
fn a_panicking_protocol_is_handed_the_rest_of_what_arrived() {
    on_both_backends(a_panic_leaves_no_bytes_behind);
}

/// Echoes; pauses reading while its writes are above the high-water mark, as a proxy
/// does; records the largest write buffer it saw.
struct FlowEcho {
    transport: Option<oxloop::protocol::Transport>,
    largest: Rc<Cell<usize>>,
}

impl oxloop::protocol::Protocol for FlowEcho {
    fn connection_made(&mut self, transport: oxloop::protocol::Transport) {
        transport
            .set_write_buffer_limits(64 * 1024, 16 * 1024)
            .unwrap();
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let Some(t) = &self.transport else { return };
        t.write(data).unwrap();
        self.largest
            .set(self.largest.get().max(t.write_buffer_size()));
    }
    fn pause_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.pause_reading();
        }
    }
    fn resume_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }
}

/// A client that writes much more than it reads for a while: the echo's write buffer
/// stays within its high-water mark plus what one read hands the protocol (64 KiB on
/// epoll), also on io_uring, where a receive cancelled when reading paused may still
/// fill many buffers.
fn flow_control_bounds_the_write_buffer(kind: BackendKind) {
    use oxloop::protocol::Transport;
    let ev = EventLoop::builder().backend(kind).build_detached().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (client, server) = loopback_pair(&listener);
    let largest = Rc::new(Cell::new(0));
    let protocol = FlowEcho {
        transport: None,
        largest: largest.clone(),
    };
    Transport::adopt(&ev, server, protocol).unwrap();
    client.set_nonblocking(false).unwrap();
    let sent = pattern(8 << 20);
    let expected = sent.clone();
    let mut reader = client.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut client = client;
        client.write_all(&sent).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let echo = std::thread::spawn(move || {
        // Late, then slowly: the server's sends back up and it pauses reading.
        std::thread::sleep(Duration::from_millis(300));
        let mut got = Vec::new();
        let mut piece = vec![0u8; 8192];
        loop {
            match reader.read(&mut piece).unwrap() {
                0 => break,
                n => got.extend_from_slice(&piece[..n]),
            }
            if got.len() % (1 << 20) < 8192 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        got
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !echo.is_finished() {
        assert!(std::time::Instant::now() < deadline, "{kind:?}: timed out");
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    writer.join().unwrap();
    let got = echo.join().unwrap();
    assert!(got == expected, "{kind:?}: other bytes than sent");
    let bound = 64 * 1024 + 64 * 1024;
    assert!(
        largest.get() <= bound,
        "{kind:?}: write buffer reached {} B, bound {bound} B",
        largest.get()
    );
    ev.destroy();
}

#[test]
fn pausing_reading_keeps_the_write_buffer_near_its_high_water_mark() {
    on_both_backends(flow_control_bounds_the_write_buffer);
}

/// Writes 4 KiB pieces until its buffer is over the high-water mark, again at every
/// `resume_writing`.
struct Flooder {
    transport: Rc<std::cell::RefCell<Option<oxloop::protocol::Transport>>>,
    paused: Rc<Cell<bool>>,
}

impl Flooder {
    const HIGH: usize = 64 * 1024;
    /// Near the high-water mark, so that a send the kernel took only part of often
    /// leaves the queue at or under it.
    const LOW: usize = 60 * 1024;

    fn fill(&self) {
        let transport = self.transport.borrow();
        let Some(t) = transport.as_ref() else { return };
        let piece = vec![b'x'; 4 * 1024];
        while t.write_buffer_size() <= Self::HIGH {
            t.write(&piece).unwrap();
        }
    }
}

impl oxloop::protocol::Protocol for Flooder {
    fn connection_made(&mut self, transport: oxloop::protocol::Transport) {
        transport
            .set_write_buffer_limits(Self::HIGH, Self::LOW)
            .unwrap();
        *self.transport.borrow_mut() = Some(transport);
        self.fill();
    }
    fn data_received(&mut self, _data: &[u8]) {}
    fn pause_writing(&mut self) {
        self.paused.set(true);
    }
    fn resume_writing(&mut self) {
        self.paused.set(false);
        self.fill();
    }
}

/// Servers writing to clients that read nothing: once the kernel takes no more, each
/// protocol is left paused with its buffer above the low-water mark, never paused with
/// it at or under the mark. On io_uring the queue drains into the kernel's socket
/// buffer, wholly or in part, while the socket stays unwritable: the transport must
/// still learn that its queue came down to the mark and resume the protocol, or the
/// protocol waits for ever for a `resume_writing` its buffer owes it.
fn a_drained_queue_resumes_its_protocol(kind: BackendKind) {
    use oxloop::protocol::Transport;
    let ev = EventLoop::builder().backend(kind).build_detached().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..16 {
        // The client's small receive buffer, set before connecting, stops the flood
        // soon.
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(16 << 10).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        let transport = Rc::new(std::cell::RefCell::new(None));
        let paused = Rc::new(Cell::new(false));
        let protocol = Flooder {
            transport: transport.clone(),
            paused: paused.clone(),
        };
        Transport::adopt(&ev, socket2::Socket::from(server), protocol).unwrap();
        servers.push((transport, paused));
        clients.push(client);
    }
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    for (i, (transport, paused)) in servers.iter().enumerate() {
        let size = transport.borrow().as_ref().unwrap().write_buffer_size();
        assert!(
            paused.get(),
            "{kind:?} #{i}: the flood never paused ({size} B)"
        );
        assert!(
            size > Flooder::LOW,
            "{kind:?} #{i}: paused with {size} B buffered, not over the low-water mark ({} B)",
            Flooder::LOW
        );
    }
    for (transport, _) in &servers {
        if let Some(t) = transport.borrow_mut().take() {
            t.abort();
        }
    }
    drop(clients);
    ev.destroy();
}

#[test]
fn a_drained_send_queue_resumes_its_protocol_while_the_peer_reads_nothing() {
    on_both_backends(a_drained_queue_resumes_its_protocol);
}

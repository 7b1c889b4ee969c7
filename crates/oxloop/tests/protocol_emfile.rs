//! Accepting while the process is out of fds: the server backs off without spinning,
//! open connections keep working, and accepting resumes once fds are free.
//! Alone in its binary: RLIMIT_NOFILE is process-wide.

mod support;

use oxloop::protocol::{LoopNetExt, Protocol, ServerOptions, Transport};
use oxloop::EventLoop;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::DestroyOnDrop;

struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.as_ref().unwrap().write(data).unwrap();
    }
}

fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full `rusage` into the pointer we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: initialised by the successful call above (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn set_soft_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

#[test]
fn accept_backs_off_on_emfile_and_resumes() {
    let ev = EventLoop::new().unwrap();
    let _destroy = DestroyOnDrop(ev.clone());
    ev.set_propagate_panics(true);
    let server = ev
        .create_server_with(
            "127.0.0.1:0",
            &ServerOptions::new().accept_retry_delay(Duration::from_millis(100)),
            || Echo(None),
        )
        .unwrap();
    let addr = server.socket_addrs()[0];

    // One connection open before the exhaustion.
    let mut early = TcpStream::connect(addr).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.accepted() == 0 {
        assert!(Instant::now() < deadline);
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    // Three more connect while fds are exhausted (their client fds are made before):
    // they wait in the backlog, or, on io_uring, accepted by the loop with fds past the
    // lowered limit, until the server may take them.
    let late: Vec<socket2::Socket> = (0..3)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();

    // Use up every fd.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let old_limit = set_soft_nofile(open + 16);
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    let late: Vec<TcpStream> = late
        .into_iter()
        .map(|s| {
            s.connect(&addr.into()).unwrap();
            TcpStream::from(s)
        })
        .collect();

    // The early connection keeps echoing meanwhile, from another thread.
    let early_client = std::thread::spawn(move || {
        for i in 0..10 {
            echo_once(&mut early, format!("early {i}").as_bytes());
            std::thread::sleep(Duration::from_millis(40));
        }
        early
    });
    let cpu_before = thread_cpu();
    let start = Instant::now();
    let window = Duration::from_millis(800);
    while start.elapsed() < window {
        ev.run_once(Some(window.saturating_sub(start.elapsed())))
            .unwrap();
    }
    let cpu = thread_cpu() - cpu_before;
    let early = early_client.join().unwrap();
    assert_eq!(server.accepted(), 1, "accepted without a free fd?");
    assert!(server.is_serving());
    // A spinning accept loop would burn the whole window; back-off costs a few
    // syscalls every 100 ms.
    assert!(
        cpu < Duration::from_millis(100),
        "the loop used {cpu:?} of CPU in {window:?}"
    );

    // Free the fds: the queued connections are served.
    drop(fillers);
    set_soft_nofile(old_limit);
    let clients: Vec<_> = late
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                echo_once(&mut s, format!("late {i}").as_bytes());
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !clients.iter().all(|c| c.is_finished()) {
        assert!(Instant::now() < deadline, "queued connections never served");
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(server.accepted(), 4);
    server.close();
    drop(early);
    ev.destroy();
}

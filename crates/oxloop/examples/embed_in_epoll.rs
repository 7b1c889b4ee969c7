//! oxloop inside a host loop written directly on epoll.
//!
//! The host owns an epoll instance and its own fd (a socket). It adds oxloop's fd to
//! the same epoll, and each round:
//!
//! 1. asks oxloop how long it may sleep ([`EventLoop::prepare_wait`], which also makes
//!    wake-ups from other threads show up on oxloop's fd);
//! 2. waits in `epoll_wait` for its own fd or oxloop's, for at most that long;
//! 3. handles its own fd, then runs one oxloop iteration without blocking.
//!
//! oxloop meanwhile runs a timer, a task reading a socket the host writes to, and a call
//! from another thread. Run it with `cargo run -p oxloop --example embed_in_epoll`.

use oxloop::io::Async;
use oxloop::EventLoop;
use rustix::buffer::spare_capacity;
use rustix::event::{epoll, Timespec};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

const HOST_SOCKET: u64 = 1;
const OXLOOP: u64 = 2;

fn main() -> io::Result<()> {
    let ev = EventLoop::new()?;

    // oxloop's work: a timer, a task on a socket, a call from another thread.
    let done = Rc::new(Cell::new(0));
    let d = done.clone();
    ev.call_later(Duration::from_millis(10), move || {
        println!("oxloop: timer fired");
        d.set(d.get() + 1);
    });
    let (oxloop_side, mut host_writes) = UnixStream::pair()?;
    let d = done.clone();
    ev.spawn(async move {
        let socket = Async::new(oxloop_side).expect("register");
        let mut buf = [0; 32];
        let n = socket
            .read_with(|mut s| s.read(&mut buf))
            .await
            .expect("read");
        println!("oxloop: task read {:?}", String::from_utf8_lossy(&buf[..n]));
        d.set(d.get() + 1);
    });
    let remote = ev.remote();
    // The closure sent from the thread must be `Send`: it reports through a channel.
    let (called_tx, called_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        remote
            .call_from_thread(move || {
                println!("oxloop: call from another thread");
                called_tx.send(()).expect("main is waiting");
            })
            .expect("loop alive");
    });

    // The host: its own socket, and oxloop's fd, in one epoll.
    let (mut peer, host_socket) = UnixStream::pair()?;
    let epoll_fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &epoll_fd,
        host_socket.as_fd(),
        epoll::EventData::new_u64(HOST_SOCKET),
        epoll::EventFlags::IN,
    )?;
    epoll::add(
        &epoll_fd,
        ev.as_fd(),
        epoll::EventData::new_u64(OXLOOP),
        epoll::EventFlags::IN,
    )?;
    peer.write_all(b"hello host")?;

    let mut events = Vec::with_capacity(8);
    let mut rounds = 0;
    while done.get() < 3 {
        rounds += 1;
        let timeout = ev.prepare_wait().map(|d| Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        events.clear();
        match epoll::wait(&epoll_fd, spare_capacity(&mut events), timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            if event.data.u64() == HOST_SOCKET {
                let mut buf = [0; 32];
                let n = (&host_socket).read(&mut buf)?;
                println!("host: read {:?}", String::from_utf8_lossy(&buf[..n]));
                // Feed oxloop's task through its socket.
                host_writes.write_all(b"hello oxloop")?;
                epoll::delete(&epoll_fd, host_socket.as_fd())?;
            }
            // OXLOOP: nothing to do here; the iteration below handles it.
        }
        ev.run_once(Some(Duration::ZERO))?;
        if called_rx.try_recv().is_ok() {
            done.set(done.get() + 1);
        }
    }
    thread.join().expect("thread");
    println!("host: oxloop finished its work in {rounds} rounds");
    ev.destroy();
    Ok(())
}

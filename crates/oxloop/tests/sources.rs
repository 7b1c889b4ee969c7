//! Event sources: the trait's trigger modes and post-actions, and the ready-made sources.

use oxloop::source::LoopSourceExt;
use oxloop::source::{
    channel, ping, ChannelEvent, ChildExit, Event, EventSource, Generic, Nested, PostAction,
    Registration, Signal, TimeoutAction, Timer,
};
use oxloop::source::{Interest, Trigger};
use oxloop::EventLoop;
use rustix::event::{PollFd, PollFlags};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Counts dispatches of a socket that is never read, with the given mode and answer.
struct Unread {
    socket: UnixStream,
    mode: Trigger,
    answer: PostAction,
    seen: Rc<Cell<u32>>,
}

impl EventSource for Unread {
    fn register(&mut self, reg: &mut Registration) -> std::io::Result<()> {
        reg.watch(&self.socket, Interest::READ, self.mode);
        Ok(())
    }

    fn dispatch(&mut self, event: Event) -> PostAction {
        assert!(matches!(event, Event::Io { readable: true, .. }));
        self.seen.set(self.seen.get() + 1);
        self.answer
    }
}

fn dispatches(mode: Trigger, answer: PostAction, iterations: usize) -> u32 {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"data").unwrap();
    let seen = Rc::new(Cell::new(0));
    let handle = ev
        .insert_source(Unread {
            socket: a,
            mode,
            answer,
            seen: seen.clone(),
        })
        .unwrap();
    for _ in 0..iterations {
        ev.run_once(Some(Duration::from_millis(1))).unwrap();
    }
    drop(handle.remove());
    ev.destroy();
    seen.get()
}

#[test]
fn trigger_modes() {
    assert_eq!(dispatches(Trigger::Level, PostAction::Continue, 5), 5);
    assert_eq!(dispatches(Trigger::Edge, PostAction::Continue, 5), 1);
    assert_eq!(dispatches(Trigger::Oneshot, PostAction::Continue, 5), 1);
    // Re-registering re-arms a oneshot fd (and re-reports an unread edge fd).
    assert_eq!(dispatches(Trigger::Oneshot, PostAction::Reregister, 5), 5);
    assert_eq!(dispatches(Trigger::Level, PostAction::Disable, 5), 1);
    assert_eq!(dispatches(Trigger::Level, PostAction::Remove, 5), 1);
}

#[test]
fn handle_disables_enables_and_hands_back() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let seen = Rc::new(Cell::new(0));
    let handle = ev
        .insert_source(Unread {
            socket: a,
            mode: Trigger::Level,
            answer: PostAction::Continue,
            seen: seen.clone(),
        })
        .unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(seen.get(), 1);
    handle.disable();
    assert!(!handle.is_enabled() && handle.is_inserted());
    ev.run_once(Some(Duration::from_millis(1))).unwrap();
    assert_eq!(seen.get(), 1);
    assert!(!ev.has_work(), "a disabled source keeps nothing going");
    handle.enable().unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(seen.get(), 2);
    let mut source = handle.remove().expect("handed back");
    assert!(!handle.is_inserted());
    let mut buf = [0; 1];
    source.socket.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x");
    assert!(handle.remove().is_none());
    assert!(!ev.has_work());
}

#[test]
fn dropping_the_handle_keeps_the_source() {
    let ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    drop(
        ev.insert_source(Timer::after(Duration::from_millis(1), move |_| {
            f.set(true);
            TimeoutAction::Drop
        }))
        .unwrap(),
    );
    ev.run().unwrap();
    assert!(fired.get());
}

#[test]
fn timer_repeats_and_drops() {
    let ev = EventLoop::new().unwrap();
    let ticks = Rc::new(RefCell::new(Vec::new()));
    let t = ticks.clone();
    let start = Instant::now();
    ev.insert_source(Timer::at(start + Duration::from_millis(2), move |when| {
        t.borrow_mut().push(when);
        match t.borrow().len() {
            1 => TimeoutAction::ToDuration(Duration::from_millis(2)),
            2 => TimeoutAction::ToInstant(when + Duration::from_millis(3)),
            _ => TimeoutAction::Drop,
        }
    }))
    .unwrap();
    ev.run().unwrap();
    let ticks = ticks.borrow();
    assert_eq!(ticks.len(), 3);
    assert_eq!(ticks[0], start + Duration::from_millis(2));
    assert_eq!(ticks[2], ticks[1] + Duration::from_millis(3));
    assert!(Instant::now() >= ticks[2]);
}

#[test]
fn channel_delivers_in_order_then_closes() {
    let ev = EventLoop::new().unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let (tx, source) = channel(move |event: ChannelEvent<u32>| g.borrow_mut().push(event)).unwrap();
    let handle = ev.insert_source(source).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    tx.send(t * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    ev.run().unwrap(); // ends when the channel has closed and removed itself
    let got = got.borrow();
    assert_eq!(got.len(), 201);
    assert_eq!(got.last(), Some(&ChannelEvent::Closed));
    for t in 0..2u32 {
        let mine: Vec<u32> = got
            .iter()
            .filter_map(|e| match e {
                ChannelEvent::Msg(m) if m / 1000 == t => Some(*m),
                _ => None,
            })
            .collect();
        assert_eq!(mine, (0..100).map(|i| t * 1000 + i).collect::<Vec<_>>());
    }
    assert!(!handle.is_inserted());
}

#[test]
fn sending_to_a_removed_channel_fails() {
    let ev = EventLoop::new().unwrap();
    let (tx, source) = channel(|_: ChannelEvent<u8>| {}).unwrap();
    let handle = ev.insert_source(source).unwrap();
    drop(handle.remove());
    assert_eq!(tx.send(1).unwrap_err().0, 1);
}

#[test]
fn ping_from_another_thread_wakes_a_sleeping_loop() {
    let ev = EventLoop::new().unwrap();
    let count = Rc::new(Cell::new(0));
    let (sender, source) = ping({
        let ev = ev.clone();
        let count = count.clone();
        move || {
            count.set(count.get() + 1);
            ev.stop();
        }
    })
    .unwrap();
    ev.insert_source(source).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        sender.ping();
        sender.ping();
    });
    let start = Instant::now();
    ev.run_forever().unwrap();
    t.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(count.get(), 1, "pings before a wake-up coalesce");
    ev.destroy(); // the ping's callback holds the loop
}

#[test]
fn child_exit_reports_the_status() {
    let ev = EventLoop::new().unwrap();
    let status = Rc::new(Cell::new(None));
    let s = status.clone();
    let child = std::process::Command::new("sh")
        .args(["-c", "sleep 0.05; exit 3"])
        .spawn()
        .unwrap();
    ev.insert_source(
        ChildExit::new(child, move |_child, result| s.set(result.unwrap().code())).unwrap(),
    )
    .unwrap();
    ev.run().unwrap();
    assert_eq!(status.get(), Some(3));
}

#[test]
fn generic_fd_sees_both_directions() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let handle = ev
        .insert_source(Generic::new(
            a,
            Interest::BOTH,
            Trigger::Level,
            move |event, socket| {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&socket.as_fd());
                match event {
                    Event::Io {
                        fd: f,
                        readable,
                        writable,
                    } => {
                        assert_eq!(f, fd);
                        s.borrow_mut().push((readable, writable));
                    }
                    Event::Deadline => unreachable!(),
                }
                PostAction::Disable
            },
        ))
        .unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    // Readable and writable at once: two dispatches, readers first; the first one
    // disabled the source, so the second never came.
    assert_eq!(*seen.borrow(), vec![(true, false)]);
    assert!(!handle.is_enabled());
    let socket = handle.remove().unwrap().into_inner();
    drop(socket);
}

#[test]
fn nested_loop_runs_its_timers_and_remote_calls() {
    let ev = EventLoop::new().unwrap();
    let (tx, source) = channel({
        let ev = ev.clone();
        let mut got = Vec::new();
        move |event: ChannelEvent<&'static str>| {
            if let ChannelEvent::Msg(m) = event {
                got.push(m);
                if got.len() == 2 {
                    ev.stop();
                }
            }
        }
    })
    .unwrap();
    ev.insert_source(source).unwrap();
    let timer_tx = tx.clone();
    let nested = Nested::spawn(move |inner: &EventLoop| {
        inner.call_later(Duration::from_millis(10), move || {
            timer_tx.send("inner timer").unwrap();
        });
    })
    .unwrap();
    let inner_remote = nested.remote();
    let handle = ev.insert_source(nested).unwrap();
    let t = std::thread::spawn(move || {
        inner_remote
            .call_from_thread(move || tx.send("inner remote call").unwrap())
            .unwrap();
    });
    let start = Instant::now();
    ev.run_forever().unwrap();
    t.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    // Removing the source stops the inner loop and joins its thread.
    let nested = handle.remove().unwrap();
    let inner_remote = nested.remote();
    drop(nested);
    assert!(inner_remote.is_closed());
}

#[test]
fn prepare_wait_lets_other_threads_wake_the_fd() {
    let ev = EventLoop::new().unwrap();
    let remote = ev.remote();
    let keep = ev.keep_alive();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(ev.prepare_wait(), None);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    std::thread::spawn(move || {
        remote
            .call_from_thread(move || r.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap()
    })
    .join()
    .unwrap();
    // The loop's fd is readable now.
    let mut fds = [PollFd::new(&ev, PollFlags::IN)];
    let timeout = rustix::event::Timespec {
        tv_sec: 2,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&timeout)).unwrap(), 1);
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    drop(keep);
}

#[test]
fn run_once_after_prepare_wait_still_waits_for_the_timer() {
    let ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ev.call_later(Duration::from_millis(20), move || f.set(true));
    assert!(ev.prepare_wait().unwrap() > Duration::ZERO);
    // The one cycle blocks until the timer is due (the loop was already marked
    // sleeping by `prepare_wait`, which must not turn the wait into a poll).
    ev.run_once(None).unwrap();
    assert!(fired.get());
}

#[test]
fn an_unreferenced_source_does_not_keep_run_going() {
    let ev = EventLoop::new().unwrap();
    let (_a, b) = UnixStream::pair().unwrap();
    let handle = ev
        .insert_source(Generic::new(b, Interest::READ, Trigger::Level, |_, _| {
            PostAction::Continue
        }))
        .unwrap();
    let timer = ev
        .insert_source(Timer::after(Duration::from_secs(60), |_| {
            TimeoutAction::Drop
        }))
        .unwrap();
    assert!(ev.has_work());
    handle.set_ref(false);
    timer.set_ref(false);
    assert!(!ev.has_work());
    let start = Instant::now();
    ev.run().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    // Still inserted, and still unreferenced after registering again.
    handle.disable();
    handle.enable().unwrap();
    assert!(handle.is_inserted() && !ev.has_work());
}

#[test]
fn signal_source_runs_on_the_loop_and_restores_on_drop() {
    let ev = EventLoop::new().unwrap();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let stop = ev.clone();
    let handle = ev
        .insert_source(
            Signal::new(&ev, libc::SIGUSR2, move || {
                c.set(c.get() + 1);
                stop.stop();
            })
            .unwrap(),
        )
        .unwrap();
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-USR2", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    ev.run_forever().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(count.get(), 1);
    let signal = handle.remove().unwrap();
    assert_eq!(signal.signum(), libc::SIGUSR2);
    drop(signal);
    assert!(
        !ev.has_work(),
        "the loop's signal handler went with the source"
    );
}

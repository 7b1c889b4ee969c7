//! A calloop loop inside oxloop.

use calloop::generic::Generic;
use calloop::timer::{TimeoutAction, Timer};
use calloop::{Interest, Mode, PostAction};
use oxloop::source::calloop::Calloop;
use oxloop::source::LoopSourceExt;
use oxloop::EventLoop;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[derive(Default, Debug)]
struct Seen {
    channel: Vec<u32>,
    socket: Vec<u8>,
    timer: bool,
}

#[test]
fn calloop_sources_run_inside_oxloop_and_the_loop_comes_back() {
    let ev = EventLoop::new().unwrap();
    let inner: calloop::EventLoop<'static, Seen> = calloop::EventLoop::try_new().unwrap();
    let handle = inner.handle();

    let (tx, rx) = calloop::channel::channel::<u32>();
    handle
        .insert_source(rx, |event, _, seen: &mut Seen| {
            if let calloop::channel::Event::Msg(m) = event {
                seen.channel.push(m);
            }
        })
        .unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    handle
        .insert_source(
            Generic::new(a, Interest::READ, Mode::Level),
            |_, socket, seen: &mut Seen| {
                let mut buf = [0; 16];
                let n = (&**socket).read(&mut buf)?;
                seen.socket.extend_from_slice(&buf[..n]);
                Ok(PostAction::Continue)
            },
        )
        .unwrap();
    handle
        .insert_source(
            Timer::from_duration(Duration::from_millis(10)),
            |_, _, seen: &mut Seen| {
                seen.timer = true;
                TimeoutAction::Drop
            },
        )
        .unwrap();

    let source = ev
        .insert_source(Calloop::new(inner, Seen::default()).poll_every(Duration::from_millis(2)))
        .unwrap();
    let t = std::thread::spawn(move || {
        tx.send(1).unwrap();
        b.write_all(b"abc").unwrap();
        tx.send(2).unwrap();
        b
    });
    let start = Instant::now();
    let check = source.clone();
    let ev2 = ev.clone();
    // Stop once everything has arrived (checked every millisecond by an oxloop timer).
    fn watch(ev: EventLoop, check: oxloop::source::SourceHandle<Calloop<Seen>>) {
        let done = check
            .with(|c| {
                let seen = c.data();
                seen.timer && seen.channel == [1, 2] && seen.socket == b"abc"
            })
            .unwrap_or(false);
        if done {
            ev.stop();
        } else {
            let ev2 = ev.clone();
            ev.call_later(Duration::from_millis(1), move || watch(ev2, check));
        }
    }
    watch(ev2, check);
    ev.run_forever().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    let _b = t.join().unwrap();
    // Removing the source hands back the calloop loop, still usable on its own.
    let calloop = source.remove().unwrap();
    let (mut inner, mut seen) = calloop.into_inner();
    assert_eq!(seen.channel, [1, 2]);
    inner
        .dispatch(Some(Duration::ZERO), &mut seen)
        .expect("the calloop loop still works");
}

//! A tour of the core loop: timers (one cancelled), a pipe reader, a signal handler and
//! a call from another thread. Runs for about a tenth of a second, until the pipe is
//! drained and the other thread's call has arrived.
//!
//! ```text
//! cargo run -p oxloop --example tour
//! ```

use oxloop::EventLoop;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

thread_local! {
    /// Parts still running: the pipe reader and the cross-thread call.
    static PARTS_LEFT: std::cell::Cell<u32> = const { std::cell::Cell::new(2) };
}

/// Marks one part finished; the last one stops the loop.
fn part_done() {
    let left = PARTS_LEFT.with(|p| {
        p.set(p.get() - 1);
        p.get()
    });
    if left == 0 {
        EventLoop::current().unwrap().stop();
    }
}

fn main() -> std::io::Result<()> {
    let ev = EventLoop::new()?;
    let start = Instant::now();
    let ms = move || start.elapsed().as_millis();

    // Timers: fired in deadline order; a cancelled one never fires.
    ev.call_later(Duration::from_millis(50), move || {
        println!("[{:>3} ms] timer: 50 ms timer fired", ms())
    });
    let doomed = ev.call_later(Duration::from_millis(20), || println!("never printed"));
    ev.call_later(Duration::from_millis(10), move || {
        println!(
            "[{:>3} ms] timer: 10 ms timer fired, cancelling the 20 ms one",
            ms()
        );
        doomed.cancel();
    });

    // A pipe reader: another thread writes lines, the loop reads them as they come.
    let (reader, mut writer) = std::io::pipe()?;
    let fd = reader.as_raw_fd();
    let mut lines = BufReader::new(reader);
    let e = ev.clone();
    ev.add_reader(fd, move || {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => {
                println!("[{:>3} ms] pipe: end of stream, reader removed", ms());
                e.remove_reader(fd);
                part_done();
            }
            Ok(_) => println!("[{:>3} ms] pipe: read {:?}", ms(), line.trim_end()),
        }
    })?;
    let writer_thread = std::thread::spawn(move || {
        for i in 1..=3 {
            std::thread::sleep(Duration::from_millis(30));
            writeln!(writer, "line {i}").unwrap();
        }
    });

    // A signal handler: the process sends itself SIGUSR1; the handler runs on the loop.
    let handled = Rc::new(std::cell::Cell::new(false));
    let h = handled.clone();
    let handle = Rc::new(std::cell::RefCell::new(None::<oxloop::Handle>));
    let hh = handle.clone();
    *handle.borrow_mut() = Some(ev.add_signal_handler(libc::SIGUSR1, move || {
        println!(
            "[{:>3} ms] signal: SIGUSR1 handled on the loop thread",
            ms()
        );
        h.set(true);
        // One-shot: cancelling the last handler restores the default disposition.
        if let Some(handle) = hh.borrow_mut().take() {
            handle.cancel();
        }
    })?);
    ev.call_later(Duration::from_millis(70), || {
        // SAFETY: raise(3) with a valid signal number has no memory effects.
        unsafe { libc::raise(libc::SIGUSR1) };
    });

    // A call from another thread wakes the loop. The tour ends when it and the pipe
    // are both done (the machine may be slow: nothing relies on timing).
    let remote = ev.remote();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(120));
        remote
            .call_from_thread(move || {
                println!("[{:>3} ms] thread: call from another thread", ms());
                part_done();
            })
            .unwrap();
    });

    ev.run_forever()?;
    writer_thread.join().unwrap();
    worker.join().unwrap();
    println!(
        "[{:>3} ms] done: stopped after {} iterations, signal handled: {}",
        ms(),
        ev.iterations(),
        handled.get()
    );
    Ok(())
}

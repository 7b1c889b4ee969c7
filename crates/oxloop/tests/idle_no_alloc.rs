//! The idle path allocates nothing: iterations with watchers, timers pending and
//! cross-thread wake-ups make no heap allocation. Alone in its binary, with a counting
//! allocator.

use oxloop::EventLoop;
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the loop's thread: the test harness's own thread allocates now and then
    /// while the test runs (its table of running tests), which is not the loop's doing.
    static ON_LOOP_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if ON_LOOP_THREAD.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
#[cfg_attr(
    feature = "portable-backend",
    ignore = "a guarantee of the epoll backend: the polling crate allocates in some waits"
)]
fn idle_iterations_do_not_allocate() {
    ON_LOOP_THREAD.with(|c| c.set(true));
    let ev = EventLoop::new().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let (c, mut d) = UnixStream::pair().unwrap();
    ev.add_reader(a.as_raw_fd(), || {}).unwrap();
    let mut sink = c.try_clone().unwrap();
    sink.set_nonblocking(true).unwrap();
    ev.add_reader(c.as_raw_fd(), move || {
        let mut buf = [0u8; 64];
        let _ = std::io::Read::read(&mut sink, &mut buf);
    })
    .unwrap();
    ev.call_later(Duration::from_secs(3600), || {});
    ev.add_signal_handler(libc::SIGUSR2, || {}).unwrap();
    // Warm up: buffers reach their working size.
    for _ in 0..10 {
        ev.run_once(Some(Duration::ZERO)).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..1000 {
        ev.run_once(Some(Duration::ZERO)).unwrap();
    }
    // Readiness dispatch with a level-triggered reader is on the idle path too.
    for _ in 0..100 {
        std::io::Write::write_all(&mut d, b"x").unwrap();
        ev.run_once(Some(Duration::ZERO)).unwrap();
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations on the idle path");
}

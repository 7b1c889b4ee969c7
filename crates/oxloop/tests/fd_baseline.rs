//! After a loop is destroyed, the process holds exactly the fds it held before.
//! Alone in its binary so no other test opens fds meanwhile.

mod support;

use oxloop::EventLoop;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use support::open_fds;

#[test]
fn fd_count_returns_to_baseline_after_the_loop_is_destroyed() {
    let baseline = open_fds();
    for round in 0..3 {
        let ev = EventLoop::new().unwrap();
        let remote = ev.remote();
        let (a, b) = UnixStream::pair().unwrap();
        ev.add_reader(a.as_raw_fd(), || {}).unwrap();
        ev.add_writer(b.as_raw_fd(), || {}).unwrap();
        ev.add_signal_handler(libc::SIGUSR1, || {}).unwrap();
        ev.call_later(Duration::from_secs(60), || {});
        let t = std::thread::spawn(move || remote.call_from_thread(|| {}).unwrap());
        t.join().unwrap();
        ev.run_once(Some(Duration::ZERO)).unwrap();
        assert!(
            open_fds() > baseline,
            "round {round}: the loop opened no fd?"
        );
        if round % 2 == 0 {
            ev.destroy();
        }
        drop(ev);
        drop((a, b));
        assert_eq!(open_fds(), baseline, "round {round}");
    }
}

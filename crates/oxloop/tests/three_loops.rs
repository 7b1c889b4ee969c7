//! The three-loop program in-process: every loop's events arrive in bounded time, and
//! shutting down closes every fd the loops opened. Its own test binary, because
//! `/proc/self/fd` is process-wide.

mod support;

use support::open_fds;
#[path = "../examples/three_loops.rs"]
#[allow(dead_code)]
mod three_loops;

use std::time::{Duration, Instant};

#[test]
fn every_loop_progresses_and_fds_return_to_baseline() {
    let baseline = open_fds();
    for round in 0..3 {
        let start = Instant::now();
        let events = three_loops::run().unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        for lp in ["oxloop", "calloop", "tokio"] {
            for kind in ["timer", "socket got", "channel got"] {
                assert!(
                    events
                        .iter()
                        .any(|e| e.starts_with(&format!("{lp}: {kind}"))),
                    "round {round}: no {lp} {kind} in {events:?}"
                );
            }
        }
        assert_eq!(events.len(), 9);
        assert_eq!(open_fds(), baseline, "round {round} leaked fds");
    }
}

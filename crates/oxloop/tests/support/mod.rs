//! Helpers shared by the integration tests: running the built examples, counting fds.

#![allow(dead_code)] // each test binary uses part of it

use oxloop::EventLoop;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `limit` times `$OXLOOP_TEST_TIME_SCALE` (a whole number, 1 when unset): the
/// time-outs of tests that fail rather than hang, stretched where everything runs
/// slower (`memcheck.sh` sets it, as valgrind runs code 20-50 times slower).
pub fn time_limit(limit: Duration) -> Duration {
    let scale = std::env::var("OXLOOP_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    limit * scale
}

/// Destroys its loop when dropped, so at the end of a test, failed or not: a loop
/// whose open connections' protocols hold their transports (which hold the loop), or
/// whose pending callbacks hold it, would otherwise stay allocated after the test
/// (valgrind reports it lost).
pub struct DestroyOnDrop(pub EventLoop);

impl Drop for DestroyOnDrop {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

/// The path of a built example: `cargo test` builds the examples next to the test
/// binaries (`target/<profile>/examples/<name>`).
pub fn example(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join(name)
}

/// Runs an example to completion with `args`: its stdout and how long it took. The
/// test fails if the example cannot start or exits unsuccessfully.
pub fn run_example(name: &str, args: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let out = Command::new(example(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run example {name} ({}): {e}",
                example(name).display()
            )
        });
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, elapsed)
}

/// The fds this process holds now (process-wide: a test that compares counts runs
/// alone in its binary).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

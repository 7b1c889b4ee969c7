//! After many children (waited for, dropped with open pipes, killed), the process's fds
//! are back to where they were and no child is left. One test per binary: it counts
//! the whole process's fds.

mod support;

use oxloop::io::AsyncWriteExt;
use oxloop::process::{force_sigchld_reaping, Command, Stdio};
use oxloop::{task, EventLoop};
use std::time::{Duration, Instant};
use support::open_fds;

/// Children of any of our threads, running or zombie.
fn our_children() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum()
}

#[test]
fn fds_and_children_return_to_baseline() {
    let ev = EventLoop::new().unwrap();
    let fds = open_fds();
    for sigchld in [false, true] {
        force_sigchld_reaping(sigchld);
        ev.block_on(async {
            for i in 0..60 {
                let mut child = Command::new("cat")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                match i % 3 {
                    0 => {
                        let mut stdin = child.stdin.take().unwrap();
                        stdin.write_all(b"x").await.unwrap();
                        drop(stdin);
                        let out = child.wait_with_output().await.unwrap();
                        assert_eq!(out.stdout, b"x");
                    }
                    1 => drop(child), // cat sees its stdin close and exits later
                    _ => {
                        child.kill().unwrap();
                        child.wait().await.unwrap();
                    }
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while our_children() > 0 && Instant::now() < deadline {
                task::sleep(Duration::from_millis(10)).await;
            }
        })
        .unwrap();
        assert_eq!(our_children(), 0, "children left (sigchld path: {sigchld})");
        assert_eq!(open_fds(), fds, "fds leaked (sigchld path: {sigchld})");
    }
}

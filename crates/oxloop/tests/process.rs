//! Subprocesses: piped stdio, exit statuses, kill, and reaping without zombies, over
//! both the pidfd and the SIGCHLD paths.

use oxloop::io::{AsyncReadExt, AsyncWriteExt};
use oxloop::process::{force_sigchld_reaping, Command, Stdio};
use oxloop::{task, EventLoop};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// Whether `pid` is still our child (running or a zombie).
fn still_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next();
    let ppid: u32 = fields.next().unwrap().parse().unwrap();
    ppid == std::process::id()
}

/// Runs the loop until none of `pids` is our child any more, for at most 5 s.
async fn all_reaped(pids: &[u32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !pids.iter().any(|&p| still_our_child(p)) {
            return true;
        }
        task::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn both_paths(test: impl Fn()) {
    force_sigchld_reaping(false);
    test();
    force_sigchld_reaping(true);
    test();
    force_sigchld_reaping(false);
}

fn run<T>(f: impl std::future::Future<Output = io::Result<T>>) -> T {
    let ev = EventLoop::current().or_else(|_| EventLoop::new()).unwrap();
    let result = ev
        .block_on(async { task::timeout(Duration::from_secs(20), f).await })
        .unwrap()
        .expect("test timed out");
    ev.destroy();
    result.unwrap()
}

#[test]
fn cat_round_trip() {
    both_paths(|| {
        run(async {
            let mut child = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            stdin.write_all(b"hello\n").await?;
            let mut line = [0; 6];
            stdout.read_exact(&mut line).await?;
            assert_eq!(&line, b"hello\n");

            // 1 MiB: more than both pipe buffers, so writing and reading must overlap.
            let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
            let expected = data.clone();
            let writer = task::spawn(async move {
                stdin.write_all(&data).await?;
                stdin.close().await?;
                Ok::<_, io::Error>(())
            });
            let mut echoed = Vec::new();
            stdout.read_to_end(&mut echoed).await?;
            writer.await??;
            assert_eq!(echoed.len(), expected.len());
            assert!(echoed == expected);
            let status = child.wait().await?;
            assert!(status.success(), "{status:?}");
            Ok(())
        })
    });
}

#[test]
fn exit_statuses() {
    both_paths(|| {
        run(async {
            let status = Command::new("false").status().await?;
            assert_eq!(status.code(), Some(1));
            let status = Command::new("sh").args(["-c", "exit 3"]).status().await?;
            assert_eq!(status.code(), Some(3));
            let status = Command::new("true").status().await?;
            assert!(status.success());
            Ok(())
        })
    });
}

#[test]
fn output_captures_stdout_and_stderr() {
    both_paths(|| {
        run(async {
            let out = Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 2"])
                .output()
                .await?;
            assert_eq!(out.stdout, b"out\n");
            assert_eq!(out.stderr, b"err\n");
            assert_eq!(out.status.code(), Some(2));

            let mut child = Command::new("sh")
                .args(["-c", "echo oops >&2"])
                .stderr(Stdio::piped())
                .spawn()?;
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .await?;
            assert_eq!(err, "oops\n");
            assert!(child.wait().await?.success());
            Ok(())
        })
    });
}

#[test]
fn env_and_current_dir() {
    run(async {
        let out = Command::new("sh")
            .args(["-c", "echo $OXLOOP_TEST_VAR; pwd"])
            .env("OXLOOP_TEST_VAR", "value")
            .current_dir("/")
            .output()
            .await?;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "value\n/\n");
        Ok(())
    });
}

#[test]
fn killed_child_is_reaped() {
    both_paths(|| {
        run(async {
            let mut child = Command::new("sleep").arg("100").spawn()?;
            let pid = child.id();
            assert!(child.try_wait()?.is_none());
            child.kill()?;
            let status = child.wait().await?;
            assert_eq!(status.signal(), Some(9), "{status:?}");
            assert!(!still_our_child(pid));
            // Killing or waiting again is harmless.
            child.kill()?;
            assert_eq!(child.wait().await?.signal(), Some(9));
            assert_eq!(child.try_wait()?.and_then(|s| s.signal()), Some(9));
            Ok(())
        })
    });
}

#[test]
fn dropped_child_is_reaped() {
    both_paths(|| {
        run(async {
            // Exits after the drop: the loop must notice and reap it.
            let child = Command::new("sh").args(["-c", "sleep 0.1"]).spawn()?;
            let late = child.id();
            drop(child);
            // Already exited when dropped.
            let mut child = Command::new("true").spawn()?;
            let early = child.id();
            while !std::fs::read_to_string(format!("/proc/{early}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
            {
                task::sleep(Duration::from_millis(5)).await;
            }
            drop(child.stdin.take());
            drop(child);
            assert!(all_reaped(&[late, early]).await, "zombie left behind");
            Ok(())
        })
    });
}

#[test]
fn dropped_child_does_not_keep_run_going() {
    let ev = EventLoop::new().unwrap();
    let pid = ev
        .block_on(async {
            let child = Command::new("sleep").arg("0.2").spawn()?;
            Ok::<_, io::Error>(child.id())
        })
        .unwrap()
        .unwrap();
    let start = Instant::now();
    ev.run().unwrap();
    assert!(start.elapsed() < Duration::from_millis(150));
    // Still reaped when the loop runs for other reasons.
    ev.block_on(async {
        assert!(all_reaped(&[pid]).await, "zombie left behind");
    })
    .unwrap();
}

#[test]
fn no_zombies_after_many_spawns() {
    both_paths(|| {
        run(async {
            let mut pids = Vec::new();
            for i in 0..100 {
                let mut child = Command::new("true").spawn()?;
                pids.push(child.id());
                if i % 2 == 0 {
                    assert!(child.wait().await?.success());
                }
            }
            assert!(all_reaped(&pids).await, "zombie left behind");
            Ok(())
        })
    });
}

#[test]
fn bad_program_is_a_clear_error() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let err = Command::new("/nonexistent/oxloop-no-such-program")
            .spawn()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    })
    .unwrap();
}

#[test]
fn spawn_without_a_loop_is_an_error() {
    std::thread::spawn(|| {
        let err = Command::new("true").spawn().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    })
    .join()
    .unwrap();
}

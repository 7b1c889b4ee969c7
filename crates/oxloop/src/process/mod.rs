//! Subprocesses whose pipes and exit are awaited on the loop.
//!
//! [`Command`] wraps [`std::process::Command`]; [`Command::spawn`] gives a [`Child`]
//! whose piped stdio are async streams ([`ChildStdin`], [`ChildStdout`],
//! [`ChildStderr`]) and whose exit is awaited with [`Child::wait`].
//!
//! ```
//! use oxloop::io::{AsyncReadExt, AsyncWriteExt};
//! use oxloop::process::{Command, Stdio};
//!
//! let ev = oxloop::EventLoop::new()?;
//! ev.block_on(async {
//!     let mut child = Command::new("cat")
//!         .stdin(Stdio::piped())
//!         .stdout(Stdio::piped())
//!         .spawn()?;
//!     let mut stdin = child.stdin.take().unwrap();
//!     stdin.write_all(b"hello").await?;
//!     drop(stdin); // end of file for cat
//!     let mut out = String::new();
//!     child.stdout.take().unwrap().read_to_string(&mut out).await?;
//!     assert_eq!(out, "hello");
//!     assert!(child.wait().await?.success());
//!     Ok::<_, std::io::Error>(())
//! })??;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Reaping
//!
//! On Linux the child's exit is watched through a pidfd (`pidfd_open`), registered with
//! the loop like any fd. Where pidfds are unavailable (other systems, old kernels,
//! sandboxes) the loop handles `SIGCHLD` and polls `try_wait` when it arrives.
//!
//! A [`Child`] dropped before its exit was collected is **not killed** (as with std),
//! but it does not become a zombie: the loop keeps it and reaps it when it exits,
//! without keeping [`EventLoop::run`](crate::EventLoop::run) going. If the loop is
//! destroyed first, the child goes to a process-wide list that is reaped at the next
//! [`Command::spawn`] or `SIGCHLD` seen by a loop.

mod reap;
mod stdio;

pub use std::process::{ExitStatus, Output, Stdio};
pub use stdio::{ChildStderr, ChildStdin, ChildStdout};

#[doc(hidden)]
pub use reap::force_sigchld_reaping;

use crate::io::AsyncReadExt;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;
use std::task::{Context, Poll};

/// A process builder, like [`std::process::Command`], whose [`spawn`](Command::spawn)
/// gives an async [`Child`].
pub struct Command {
    std: std::process::Command,
    stdin_set: bool,
    stdout_set: bool,
    stderr_set: bool,
}

impl Command {
    /// A command running `program` (looked up in `PATH` unless it contains a `/`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets several environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what `env` adds).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's stdin (default: inherited; `null` for [`output`](Command::output)).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self.stdin_set = true;
        self
    }

    /// The child's stdout (default: inherited; piped for [`output`](Command::output)).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self.stdout_set = true;
        self
    }

    /// The child's stderr (default: inherited; piped for [`output`](Command::output)).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self.stderr_set = true;
        self
    }

    /// The wrapped std command, for settings this type does not mirror (uid, groups,
    /// `pre_exec`, …).
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Starts the child. Its piped stdio are registered with the current thread's loop,
    /// so a loop must exist. A program that cannot be started (not found, not
    /// executable) is an error here, as with std.
    pub fn spawn(&mut self) -> io::Result<Child> {
        let ev = crate::EventLoop::current()?;
        reap::reap_orphans();
        let child = self.std.spawn()?;
        Child::new(&ev, child)
    }

    /// Runs the child to completion and collects its exit status and output. Unless
    /// set otherwise, stdin is null and stdout and stderr are captured (those settings
    /// then stay on this command for later spawns).
    pub async fn output(&mut self) -> io::Result<Output> {
        if !self.stdin_set {
            self.std.stdin(Stdio::null());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::piped());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::piped());
        }
        self.spawn()?.wait_with_output().await
    }

    /// Runs the child to completion (stdio inherited unless set) and returns its exit
    /// status.
    pub async fn status(&mut self) -> io::Result<ExitStatus> {
        self.spawn()?.wait().await
    }
}

impl From<std::process::Command> for Command {
    fn from(std: std::process::Command) -> Command {
        Command {
            std,
            stdin_set: false,
            stdout_set: false,
            stderr_set: false,
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.std.fmt(f)
    }
}

/// A running (or exited) child process.
///
/// Dropping it neither kills nor waits for the process; the loop reaps it once it
/// exits (see the [module documentation](self)).
pub struct Child {
    /// The child's stdin, if it was [`Stdio::piped`].
    pub stdin: Option<ChildStdin>,
    /// The child's stdout, if it was [`Stdio::piped`].
    pub stdout: Option<ChildStdout>,
    /// The child's stderr, if it was [`Stdio::piped`].
    pub stderr: Option<ChildStderr>,
    /// `None` only while being dropped.
    inner: Option<std::process::Child>,
    exit: reap::ExitWatch,
    status: Option<ExitStatus>,
}

impl Child {
    fn new(ev: &crate::EventLoop, mut child: std::process::Child) -> io::Result<Child> {
        // From here on an error must not leak the process: `Child`'s drop reaps it.
        let exit = reap::ExitWatch::new(ev, &child);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut this = Child {
            stdin: None,
            stdout: None,
            stderr: None,
            inner: Some(child),
            exit,
            status: None,
        };
        this.stdin = stdin.map(ChildStdin::from_std).transpose()?;
        this.stdout = stdout.map(ChildStdout::from_std).transpose()?;
        this.stderr = stderr.map(ChildStderr::from_std).transpose()?;
        Ok(this)
    }

    fn std(&mut self) -> &mut std::process::Child {
        self.inner.as_mut().expect("present until dropped")
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.inner.as_ref().expect("present until dropped").id()
    }

    /// Sends `SIGKILL`. Does nothing (and succeeds) if the child has already exited.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        self.std().kill()
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.std().try_wait()?;
        }
        Ok(self.status)
    }

    /// Ready with the exit status once the child has exited; closes its stdin first so
    /// a child reading it is not left waiting.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        if let Some(status) = self.status {
            return Poll::Ready(Ok(status));
        }
        self.stdin = None;
        let child = self.inner.as_mut().expect("present until dropped");
        let status = std::task::ready!(self.exit.poll_exit(cx, child))?;
        self.status = Some(status);
        Poll::Ready(Ok(status))
    }

    /// Waits for the child to exit without blocking the loop (closing its stdin first,
    /// like std). Cancel-safe: dropping the future loses nothing.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Closes stdin, reads stdout and stderr to their end (at the same time, so neither
    /// pipe can fill up and stall the child) and waits for the exit.
    pub async fn wait_with_output(mut self) -> io::Result<Output> {
        self.stdin = None;
        async fn drain<R: futures_io::AsyncRead + Unpin>(r: Option<R>) -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                r.read_to_end(&mut buf).await?;
            }
            Ok(buf)
        }
        let (stdout, stderr) =
            futures_util::future::try_join(drain(self.stdout.take()), drain(self.stderr.take()))
                .await?;
        let status = self.wait().await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(child) = self.inner.take() {
            if self.status.is_none() {
                self.exit.orphan(child);
            }
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.inner.as_ref().map(|c| c.id()))
            .field("status", &self.status)
            .finish()
    }
}

//! oxloop and tokio in one program (feature `tokio`).
//!
//! - [`drive`]: runs an oxloop loop from a tokio task, so a tokio application can run
//!   oxloop code. The task waits on the loop's fd with [`AsyncFd`] and for the loop's
//!   next timer with `tokio::time`, then runs one oxloop iteration without blocking.
//!   [`EventLoop`] is `!Send`, so the task must be local: a `current_thread` runtime
//!   with a [`LocalSet`](::tokio::task::LocalSet), or `block_on` directly.
//! - [`TokioBridge`]: the other way round, for tokio-only libraries called from oxloop. A
//!   helper thread owns a tokio runtime; [`TokioBridge::spawn`] runs a future there and
//!   hands back a future that oxloop code awaits. Dropping that future cancels the
//!   tokio task.
//!
//! ```
//! use oxloop::{source::tokio::{drive, TokioBridge}, EventLoop};
//! use std::{cell::Cell, rc::Rc, time::Duration};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let local = tokio::task::LocalSet::new();
//! let ev = EventLoop::new()?;
//! let bridge = TokioBridge::new()?;
//! // oxloop code: a task awaiting a future that needs a tokio runtime.
//! let answer = bridge.spawn(async {
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//!     42
//! });
//! let result = Rc::new(Cell::new(0));
//! let r = result.clone();
//! ev.spawn(async move { r.set(answer.await.unwrap()) });
//! // The tokio application runs the loop until it has nothing left to do.
//! local.block_on(&rt, drive(&ev))?;
//! assert_eq!(result.get(), 42);
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::EventLoop;
use ::tokio::io::unix::AsyncFd;
use ::tokio::runtime::{Builder, Handle};
use ::tokio::sync::oneshot;
use ::tokio::task::JoinHandle;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

/// Runs `ev` from the current tokio task until it has nothing left to do (like
/// [`EventLoop::run`]; hold a [`KeepAlive`](crate::KeepAlive) to keep it going, drop it
/// to end) or is destroyed.
///
/// Each round runs one oxloop iteration with a zero timeout, then sleeps in tokio until
/// the loop's fd is readable or its next timer is due. Other tokio tasks run meanwhile.
///
/// Work given to the loop by a tokio task (outside the loop's own callbacks) while it
/// sleeps — `call_soon`, a new timer, a dropped `KeepAlive` — is seen when it next
/// wakes. To have it seen at once, wake it: `ev.remote().call_from_thread(|| {})`
/// (works from any thread, this one included).
pub async fn drive(ev: &EventLoop) -> io::Result<()> {
    let fd = crate::reactor::tokio_async_fd(ev.as_fd().try_clone_to_owned()?)?;
    loop {
        ev.run_once(Some(Duration::ZERO))?;
        if ev.is_destroyed() || !ev.has_work() {
            return Ok(());
        }
        // A level-triggered fd that is still ready makes no new edge for tokio: look.
        if readable_now(&fd)? {
            ::tokio::task::yield_now().await;
            continue;
        }
        match ev.prepare_wait() {
            Some(Duration::ZERO) => ::tokio::task::yield_now().await,
            Some(timeout) => {
                let _ = ::tokio::time::timeout(timeout, readable(&fd)).await;
            }
            None => readable(&fd).await?,
        }
    }
}

async fn readable(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    let mut guard = fd.readable().await?;
    // Safe to forget: the next `run_once` drains what is ready, and the check before
    // the next wait catches what is still ready after it.
    guard.clear_ready();
    Ok(())
}

fn readable_now(fd: &AsyncFd<OwnedFd>) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.get_ref(), PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    Ok(poll(&mut fds, Some(&zero))? > 0)
}

/// A tokio runtime on a helper thread, for running tokio-only futures from oxloop.
///
/// Dropping the bridge shuts the runtime down (its tasks are cancelled) and joins the
/// thread.
pub struct TokioBridge {
    handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TokioBridge {
    /// Starts a `current_thread` runtime, with I/O and timers, on a new thread.
    pub fn new() -> io::Result<TokioBridge> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("oxloop-tokio-bridge".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels the tasks still running.
                drop(runtime);
            })?;
        Ok(TokioBridge {
            handle,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Runs `future` on the bridge's runtime. The returned future (awaited on oxloop,
    /// or anywhere) resolves to its output; dropping it cancels the tokio task.
    pub fn spawn<F>(&self, future: F) -> Bridged<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Bridged {
            join: self.handle.spawn(future),
        }
    }

    /// The runtime's handle (to spawn tasks that outlive a [`Bridged`], or to enter it).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for TokioBridge {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for TokioBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioBridge").finish_non_exhaustive()
    }
}

/// The result of [`TokioBridge::spawn`]: resolves to the tokio task's output, or to an
/// error if the runtime shut down first. A panic in the task is resumed here. Dropping
/// it aborts the task.
pub struct Bridged<T> {
    join: JoinHandle<T>,
}

impl<T> Future for Bridged<T> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match Pin::new(&mut self.join).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(value)) => Poll::Ready(Ok(value)),
            Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the tokio task was cancelled (its runtime shut down)",
            ))),
        }
    }
}

impl<T> Drop for Bridged<T> {
    fn drop(&mut self) {
        self.join.abort();
    }
}

impl<T> fmt::Debug for Bridged<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridged").finish_non_exhaustive()
    }
}

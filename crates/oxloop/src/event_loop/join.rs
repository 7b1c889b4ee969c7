//! Spawning, and the handle that waits for a task's result (re-exported by
//! [`crate::task`]).

use super::{timed, EventLoop, Inner};
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Why a task produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task was aborted, or its loop destroyed, before it finished.
    Cancelled,
    /// The task panicked; the message is the panic's.
    Panicked(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Panicked(msg) => write!(f, "task panicked: {msg}"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

struct JoinState<T> {
    result: Option<Result<T, JoinError>>,
    waiter: Option<Waker>,
}

impl<T> JoinState<T> {
    fn finish(&mut self, result: Result<T, JoinError>) -> Option<Waker> {
        if self.result.is_none() {
            self.result = Some(result);
        }
        self.waiter.take()
    }
}

/// The future the loop stores: runs the user's future, catches its panics and stores
/// its result. Dropped unfinished (abort, destroyed loop), it records `Cancelled`.
struct TaskWrapper<F: Future> {
    future: Pin<Box<F>>,
    state: Rc<RefCell<JoinState<F::Output>>>,
    done: bool,
    /// Debug mode: where it was spawned, and the slow-step threshold.
    trace: Option<(&'static Location<'static>, Duration)>,
}

impl<F: Future> Future for TaskWrapper<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let future = &mut this.future;
        let outcome = catch_unwind(AssertUnwindSafe(|| match this.trace {
            None => future.as_mut().poll(cx),
            Some((origin, threshold)) => {
                timed("task step", origin, threshold, || future.as_mut().poll(cx))
            }
        }));
        let result = match outcome {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => {
                let panic = super::CallbackPanic::new(payload)
                    .with_origin(this.trace.map(|(origin, _)| origin));
                let error = JoinError::Panicked(panic.message().to_string());
                if let Ok(ev) = EventLoop::current() {
                    ev.report_panic(panic.into_payload());
                }
                Err(error)
            }
        };
        this.done = true;
        let waiter = this.state.borrow_mut().finish(result);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        Poll::Ready(())
    }
}

impl<F: Future> Drop for TaskWrapper<F> {
    fn drop(&mut self) {
        if !self.done {
            let waiter = self.state.borrow_mut().finish(Err(JoinError::Cancelled));
            if let Some(waiter) = waiter {
                waiter.wake();
            }
        }
    }
}

impl EventLoop {
    /// Starts running `future` on this loop. It is first polled in the next iteration.
    /// On a destroyed loop the future is dropped and the handle reports
    /// [`JoinError::Cancelled`].
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let ev = self;
        // Taken here: a closure would not see `#[track_caller]`.
        let caller = Location::caller();
        let state = Rc::new(RefCell::new(JoinState {
            result: None,
            waiter: None,
        }));
        let wrapper = TaskWrapper {
            future: Box::pin(future),
            state: state.clone(),
            done: false,
            trace: ev.debug_threshold().map(|threshold| (caller, threshold)),
        };
        let id = ev.spawn_raw(Box::pin(wrapper));
        JoinHandle {
            state,
            task: id.map(|(key, generation)| (ev.downgrade(), key, generation)),
        }
    }
}

/// Waits for a task's result: `Ok(output)`, or a [`JoinError`]. Dropping it lets the
/// task run on, detached.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
    task: Option<(Weak<Inner>, usize, u64)>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped now (or, if it is running, as soon as it
    /// yields) and the handle resolves to [`JoinError::Cancelled`]. Does nothing to a
    /// finished task.
    pub fn abort(&self) {
        if self.is_finished() {
            return;
        }
        if let Some((inner, key, generation)) = &self.task {
            if let Some(ev) = EventLoop::upgrade(inner) {
                ev.abort_task(*key, *generation);
            }
        }
        let waiter = self.state.borrow_mut().finish(Err(JoinError::Cancelled));
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    /// Whether the task has finished (with a result, a panic or by being cancelled).
    pub fn is_finished(&self) -> bool {
        self.state.borrow().result.is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.state.borrow_mut();
        match state.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                match &state.waiter {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.waiter = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

//! `spawn_blocking`: blocking work on a bounded pool of threads, awaited on the loop.
//!
//! Threads are started on demand up to [`MAX_THREADS`] and leave after
//! [`IDLE_TIMEOUT`] without work, so an idle process holds none. The result comes back
//! through the loop's thread-safe queue, which also wakes the awaiting task.

use super::JoinError;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// At most this many pool threads exist at once; more work waits in the queue.
pub const MAX_THREADS: usize = 16;
/// An idle pool thread exits after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: Mutex<PoolQueue>,
    available: Condvar,
}

#[derive(Default)]
struct PoolQueue {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static POOL: Pool = Pool {
    queue: Mutex::new(PoolQueue {
        jobs: VecDeque::new(),
        threads: 0,
        idle: 0,
    }),
    available: Condvar::new(),
};

fn submit(job: Job) {
    let mut queue = POOL.queue.lock().unwrap_or_else(|p| p.into_inner());
    queue.jobs.push_back(job);
    if queue.idle > 0 {
        POOL.available.notify_one();
    } else if queue.threads < MAX_THREADS {
        queue.threads += 1;
        let spawned = std::thread::Builder::new()
            .name("oxloop-blocking".into())
            .spawn(worker);
        if spawned.is_err() {
            // No thread could be started: the job waits for a running one; if there is
            // none it runs here, on the submitting thread, rather than being lost.
            queue.threads -= 1;
            if queue.threads == 0 {
                let job = queue.jobs.pop_back().expect("just pushed");
                drop(queue);
                job();
            }
        }
    }
}

fn worker() {
    let mut queue = POOL.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            drop(queue);
            job();
            queue = POOL.queue.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        queue.idle += 1;
        let (q, timeout) = POOL
            .available
            .wait_timeout(queue, IDLE_TIMEOUT)
            .unwrap_or_else(|p| p.into_inner());
        queue = q;
        queue.idle -= 1;
        if timeout.timed_out() && queue.jobs.is_empty() {
            queue.threads -= 1;
            return;
        }
    }
}

struct Slot<T> {
    result: Option<Result<T, JoinError>>,
    waker: Option<Waker>,
}

/// The future of [`spawn_blocking`].
pub struct BlockingTask<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// Runs `f` on the blocking pool and resolves to its result (or
/// [`JoinError::Panicked`]). The work runs to completion even if the future is dropped.
pub fn spawn_blocking<T, F>(f: F) -> BlockingTask<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
    }));
    let s = slot.clone();
    submit(Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
            JoinError::Panicked(crate::CallbackPanic::new(payload).message().to_string())
        });
        let waker = {
            let mut slot = s.lock().unwrap_or_else(|p| p.into_inner());
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }));
    BlockingTask { slot }
}

impl<T> Future for BlockingTask<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

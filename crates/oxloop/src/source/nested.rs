//! A second oxloop loop inside the first.
//!
//! One thread has at most one [`EventLoop`], so the inner loop lives on a helper
//! thread. It never blocks on its own: it waits for the outer loop's go-ahead, runs one
//! iteration (`run_once` with a zero timeout), reports how long it may sleep, and waits
//! again. The outer loop watches the inner loop's fd and deadline like any source and
//! steps it when either fires, waiting for the step to finish. So the two loops take
//! turns — one thread of control — and the outer decides when an inner iteration runs.
//! Removing or dropping the source stops the inner loop and joins its thread.

use super::{Event, EventSource, PostAction, Registration};
use crate::reactor::{Interest, Trigger};
use crate::{EventLoop, LoopRemote};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

enum Command {
    Step,
}

/// After each step: how long the inner loop may sleep.
type Reply = Option<Duration>;

/// An oxloop loop on a helper thread, stepped by the loop this source is inserted in.
///
/// ```
/// use oxloop::source::LoopSourceExt;
/// use oxloop::{source::Nested, EventLoop};
/// use std::time::Duration;
///
/// let ev = EventLoop::new()?;
/// let inner = Nested::spawn(|inner: &EventLoop| {
///     inner.call_later(Duration::from_millis(1), || println!("inner timer"));
/// })?;
/// let handle = ev.insert_source(inner)?;
/// ev.call_later(Duration::from_millis(20), move || drop(handle.remove()));
/// ev.run()?; // the inner timer fires while the outer loop runs
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Nested {
    fd: OwnedFd,
    remote: LoopRemote,
    commands: Option<mpsc::Sender<Command>>,
    replies: mpsc::Receiver<Reply>,
    deadline: Option<Instant>,
    thread: Option<JoinHandle<()>>,
}

impl Nested {
    /// Starts the inner loop on a new thread; `setup` runs there first, with the inner
    /// loop, to give it work.
    pub fn spawn(setup: impl FnOnce(&EventLoop) + Send + 'static) -> io::Result<Nested> {
        let (commands, command_rx) = mpsc::channel();
        let (reply_tx, replies) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("oxloop-nested".into())
            .spawn(move || {
                let ev = match EventLoop::new()
                    .and_then(|ev| Ok((ev.as_fd().try_clone_to_owned()?, ev)))
                {
                    Ok((fd, ev)) => {
                        let _ = ready_tx.send(Ok((fd, ev.remote())));
                        ev
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                setup(&ev);
                let _ = reply_tx.send(ev.prepare_wait());
                while let Ok(Command::Step) = command_rx.recv() {
                    if let Err(e) = ev.run_once(Some(Duration::ZERO)) {
                        tracing::error!(target: "oxloop", "nested loop failed: {e}");
                        break;
                    }
                    if reply_tx.send(ev.prepare_wait()).is_err() {
                        break;
                    }
                }
                ev.destroy();
            })?;
        let (fd, remote) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the nested loop's thread panicked"))??;
        let mut nested = Nested {
            fd,
            remote,
            commands: Some(commands),
            replies,
            deadline: None,
            thread: Some(thread),
        };
        nested.take_reply()?;
        Ok(nested)
    }

    /// A remote of the inner loop, to give it work from any thread (its closures run on
    /// the inner loop's thread).
    pub fn remote(&self) -> LoopRemote {
        self.remote.clone()
    }

    fn take_reply(&mut self) -> io::Result<()> {
        let wait = self
            .replies
            .recv()
            .map_err(|_| io::Error::other("the nested loop's thread has ended"))?;
        self.deadline = wait.map(|d| Instant::now() + d);
        Ok(())
    }

    /// Runs one iteration of the inner loop now and waits for it to finish.
    pub fn step(&mut self) -> io::Result<()> {
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|c| c.send(Command::Step).is_ok());
        if !sent {
            return Err(io::Error::other("the nested loop's thread has ended"));
        }
        self.take_reply()
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        // Closing the command channel ends the thread, which destroys the inner loop.
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for Nested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nested")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl EventSource for Nested {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        reg.watch(&self.fd, Interest::READ, Trigger::Level);
        Ok(())
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.deadline
    }

    fn dispatch(&mut self, _event: Event) -> PostAction {
        match self.step() {
            Ok(()) => PostAction::Continue,
            Err(_) => PostAction::Remove,
        }
    }
}

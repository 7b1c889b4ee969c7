//! A timer as an event source: a deadline and no fd.

use super::{Event, EventSource, PostAction, Registration};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// What a [`Timer`] does after its callback ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Remove the timer.
    Drop,
    /// Fire again at this instant.
    ToInstant(Instant),
    /// Fire again after this long (from now).
    ToDuration(Duration),
}

/// A timer source: runs its callback at a deadline, then as the callback says.
/// ([`EventLoop::call_later`](crate::EventLoop::call_later) is the lighter choice for a
/// one-off; this one can be disabled, re-enabled and handed around as a source.)
///
/// ```
/// use oxloop::source::LoopSourceExt;
/// use oxloop::source::{TimeoutAction, Timer};
/// use oxloop::EventLoop;
/// use std::time::Duration;
///
/// let ev = EventLoop::new()?;
/// let mut ticks = 0;
/// ev.insert_source(Timer::after(Duration::from_millis(1), move |_| {
///     ticks += 1;
///     if ticks < 3 { TimeoutAction::ToDuration(Duration::from_millis(1)) } else { TimeoutAction::Drop }
/// }))?;
/// ev.run()?; // three ticks, then nothing is left
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Timer {
    deadline: Option<Instant>,
    callback: Box<dyn FnMut(Instant) -> TimeoutAction>,
}

impl Timer {
    /// Fires at `when`; the callback gets the deadline it fired for.
    pub fn at(when: Instant, callback: impl FnMut(Instant) -> TimeoutAction + 'static) -> Timer {
        Timer {
            deadline: Some(when),
            callback: Box::new(callback),
        }
    }

    /// Fires once `delay` has passed.
    pub fn after(
        delay: Duration,
        callback: impl FnMut(Instant) -> TimeoutAction + 'static,
    ) -> Timer {
        Timer::at(Instant::now() + delay, callback)
    }

    /// The next deadline (`None` once dropped).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl EventSource for Timer {
    fn register(&mut self, _reg: &mut Registration) -> io::Result<()> {
        Ok(())
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.deadline
    }

    fn dispatch(&mut self, event: Event) -> PostAction {
        let Some(when) = self.deadline else {
            return PostAction::Remove;
        };
        if event != Event::Deadline {
            return PostAction::Continue;
        }
        self.deadline = match (self.callback)(when) {
            TimeoutAction::Drop => None,
            TimeoutAction::ToInstant(next) => Some(next),
            TimeoutAction::ToDuration(delay) => Some(Instant::now() + delay),
        };
        match self.deadline {
            Some(_) => PostAction::Continue,
            None => PostAction::Remove,
        }
    }
}

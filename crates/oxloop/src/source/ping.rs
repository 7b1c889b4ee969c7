//! A wake-up that any thread can send: an `eventfd` (a socket pair off Linux).

use super::{Event, EventSource, PostAction, Registration};
use crate::reactor::Waker;
use crate::reactor::{Interest, Trigger};
use std::fmt;
use std::io;
use std::sync::Arc;

/// Creates a ping: `callback` runs on the loop after one or more
/// [`PingSender::ping`]s (several pings before the loop wakes run it once).
///
/// ```
/// use oxloop::source::LoopSourceExt;
/// use oxloop::{source::ping, EventLoop};
///
/// let ev = EventLoop::new()?;
/// let (sender, source) = ping({
///     let ev = ev.clone();
///     move || ev.stop()
/// })?;
/// ev.insert_source(source)?;
/// std::thread::spawn(move || sender.ping()).join().unwrap();
/// ev.run_forever()?; // the ping stops it
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ping(callback: impl FnMut() + 'static) -> io::Result<(PingSender, Ping)> {
    let waker = Arc::new(Waker::new()?);
    Ok((
        PingSender {
            waker: waker.clone(),
        },
        Ping {
            waker,
            callback: Box::new(callback),
        },
    ))
}

/// The sending side of a [`ping`]: `Send`, `Sync`, cheap to clone.
#[derive(Clone)]
pub struct PingSender {
    waker: Arc<Waker>,
}

impl PingSender {
    /// Wakes the source. Async-signal-safe in effect: one `write(2)`.
    pub fn ping(&self) {
        self.waker.wake();
    }
}

impl fmt::Debug for PingSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingSender").finish_non_exhaustive()
    }
}

/// The loop side of a [`ping`]: an [`EventSource`].
pub struct Ping {
    waker: Arc<Waker>,
    callback: Box<dyn FnMut()>,
}

impl fmt::Debug for Ping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ping").finish_non_exhaustive()
    }
}

impl EventSource for Ping {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        reg.watch_raw(self.waker.read_fd(), Interest::READ, Trigger::Level);
        Ok(())
    }

    fn dispatch(&mut self, _event: Event) -> PostAction {
        self.waker.drain();
        (self.callback)();
        PostAction::Continue
    }
}

//! A signal as an event source, on top of the loop's own signal plumbing.

use super::ping::{ping, Ping};
use super::{Event, EventSource, PostAction, Registration};
use crate::{EventLoop, Handle};
use std::fmt;
use std::io;

/// Runs a callback on the loop each time signal `signum` arrives (several arrivals
/// before the loop wakes run it once).
///
/// The loop's signal handler ([`EventLoop::add_signal_handler`]) pings this source;
/// dropping the source removes the handler, and the signal's previous disposition comes
/// back when it was the last one. The same refusals apply (`SIGKILL`, `SIGSTOP`, the
/// fault signals).
///
/// ```no_run
/// use oxloop::source::LoopSourceExt;
/// use oxloop::{source::Signal, EventLoop};
///
/// let ev = EventLoop::new()?;
/// let stop = ev.clone();
/// ev.insert_source(Signal::new(&ev, libc::SIGTERM, move || stop.stop())?)?;
/// ev.run_forever()?; // until SIGTERM
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Signal {
    signum: i32,
    wake: Ping,
    handler: Handle,
}

impl Signal {
    /// Installs the loop's handler for `signum`; `callback` runs when the source is
    /// dispatched.
    pub fn new(
        ev: &EventLoop,
        signum: i32,
        callback: impl FnMut() + 'static,
    ) -> io::Result<Signal> {
        let (sender, wake) = ping(callback)?;
        let handler = ev.add_signal_handler(signum, move || sender.ping())?;
        Ok(Signal {
            signum,
            wake,
            handler,
        })
    }

    /// The signal number.
    pub fn signum(&self) -> i32 {
        self.signum
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.handler.cancel();
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("signum", &self.signum)
            .finish_non_exhaustive()
    }
}

impl EventSource for Signal {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        self.wake.register(reg)
    }

    fn dispatch(&mut self, event: Event) -> PostAction {
        self.wake.dispatch(event)
    }
}

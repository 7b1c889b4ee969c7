//! Any fd with a callback.

use super::{Event, EventSource, PostAction, Registration};
use crate::reactor::{Interest, Trigger};
use std::fmt;
use std::io;
use std::os::fd::AsFd;

type GenericCallback<F> = Box<dyn FnMut(Event, &mut F) -> PostAction>;

/// An fd-owning value (socket, pipe, device, a foreign library's fd…) and a callback
/// that runs when it is ready. The callback gets the event and the value, and answers
/// with a [`PostAction`].
///
/// ```
/// use oxloop::source::LoopSourceExt;
/// use oxloop::source::{Event, Generic, PostAction};
/// use oxloop::source::{Interest, Trigger};
/// use oxloop::EventLoop;
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let ev = EventLoop::new()?;
/// let (a, mut b) = UnixStream::pair()?;
/// b.write_all(b"x")?;
/// ev.insert_source(Generic::new(a, Interest::READ, Trigger::Oneshot, |_event, socket| {
///     let mut byte = [0];
///     socket.read_exact(&mut byte).unwrap();
///     PostAction::Remove
/// }))?;
/// ev.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Generic<F: AsFd> {
    io: F,
    interest: Interest,
    mode: Trigger,
    callback: GenericCallback<F>,
}

impl<F: AsFd + 'static> Generic<F> {
    /// Watches `io` for `interest`, triggered as `mode` says.
    pub fn new(
        io: F,
        interest: Interest,
        mode: Trigger,
        callback: impl FnMut(Event, &mut F) -> PostAction + 'static,
    ) -> Generic<F> {
        Generic {
            io,
            interest,
            mode,
            callback: Box::new(callback),
        }
    }

    /// The wrapped value.
    pub fn get_ref(&self) -> &F {
        &self.io
    }

    /// Hands back the wrapped value.
    pub fn into_inner(self) -> F {
        self.io
    }
}

impl<F: AsFd> fmt::Debug for Generic<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generic")
            .field("interest", &self.interest)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<F: AsFd + 'static> EventSource for Generic<F> {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        reg.watch(self.io.as_fd(), self.interest, self.mode);
        Ok(())
    }

    fn dispatch(&mut self, event: Event) -> PostAction {
        (self.callback)(event, &mut self.io)
    }
}

//! A channel whose messages, sent from any thread, are delivered on the loop.

use super::ping::{ping, Ping, PingSender};
use super::{Event, EventSource, PostAction, Registration};
use std::fmt;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;

/// What a [`Channel`]'s callback receives.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelEvent<T> {
    /// A message.
    Msg(T),
    /// Every [`Sender`] is gone; the source removes itself after this.
    Closed,
}

/// Creates an unbounded channel: [`Sender::send`] from any thread, `callback` runs on
/// the loop once per message, in order.
///
/// ```
/// use oxloop::source::LoopSourceExt;
/// use oxloop::source::{channel, ChannelEvent};
/// use oxloop::EventLoop;
///
/// let ev = EventLoop::new()?;
/// let (tx, source) = channel(|event: ChannelEvent<u32>| println!("{event:?}"))?;
/// ev.insert_source(source)?;
/// std::thread::spawn(move || tx.send(7).unwrap()).join().unwrap();
/// ev.run()?; // prints Msg(7) then Closed, and returns: the source removed itself
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn channel<T: 'static>(
    callback: impl FnMut(ChannelEvent<T>) + 'static,
) -> io::Result<(Sender<T>, Channel<T>)> {
    let (tx, rx) = mpsc::channel();
    let (pinger, wake) = ping(|| {})?;
    Ok((
        Sender {
            tx,
            guard: Arc::new(CloseGuard(pinger.clone())),
            ping: pinger,
        },
        Channel {
            rx,
            wake,
            callback: Box::new(callback),
        },
    ))
}

/// Wakes the loop when the last sender is dropped, so it sees the channel close.
struct CloseGuard(PingSender);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.ping();
    }
}

/// The sending side of a [`channel`]: `Send`, cheap to clone.
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    ping: PingSender,
    guard: Arc<CloseGuard>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            ping: self.ping.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<T> Sender<T> {
    /// Sends a message; fails (handing it back) once the [`Channel`] is dropped.
    pub fn send(&self, msg: T) -> Result<(), mpsc::SendError<T>> {
        self.tx.send(msg)?;
        self.ping.ping();
        Ok(())
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The loop side of a [`channel`]: an [`EventSource`].
pub struct Channel<T> {
    rx: mpsc::Receiver<T>,
    wake: Ping,
    callback: Box<dyn FnMut(ChannelEvent<T>)>,
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

impl<T: 'static> EventSource for Channel<T> {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        self.wake.register(reg)
    }

    fn dispatch(&mut self, event: Event) -> PostAction {
        // Clears the wake-up first, so a message sent meanwhile wakes the loop again.
        self.wake.dispatch(event);
        loop {
            match self.rx.try_recv() {
                Ok(msg) => (self.callback)(ChannelEvent::Msg(msg)),
                Err(mpsc::TryRecvError::Empty) => return PostAction::Continue,
                Err(mpsc::TryRecvError::Disconnected) => {
                    (self.callback)(ChannelEvent::Closed);
                    return PostAction::Remove;
                }
            }
        }
    }
}

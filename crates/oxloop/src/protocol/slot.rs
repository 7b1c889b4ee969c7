//! A transport's protocol: called without re-entering it, and told about flow-control
//! changes exactly once each. Shared by the stream and datagram transports.
//!
//! The protocol sits in a `RefCell`. A call made while it is already running further up
//! the stack (a transport method called from inside `data_received`, say) is skipped
//! rather than re-entering it. Flow control is two flags: whether the write buffer is
//! above its high-water mark (what the protocol should know) and whether that differs
//! from what it was last told (so the check after every call is one test). A change
//! made while the protocol runs is delivered when its call returns. At the
//! end the slot hands the protocol its `connection_lost`, exactly once.

use super::{Address, DatagramProtocol, DatagramTransport, Protocol, Transport};
use std::cell::{Cell, RefCell};
use std::io;

/// What the slot calls besides the transport-specific callbacks.
pub(crate) trait FlowControl {
    fn pause_writing(&mut self);
    fn resume_writing(&mut self);
    fn connection_lost(&mut self, err: Option<io::Error>);
    /// The stand-in a slot holds once its protocol is gone ([`Gone`]).
    fn gone() -> Box<Self>;
}

/// What a slot holds once its protocol was taken out for good: every call to it does
/// nothing. A zero-sized stand-in (its `Box` allocates nothing) instead of an
/// `Option`, so a call needs no test for the protocol's presence.
struct Gone;

impl Protocol for Gone {
    fn connection_made(&mut self, _transport: Transport) {}
    fn data_received(&mut self, _data: &[u8]) {}
    fn eof_received(&mut self) -> bool {
        false
    }
    fn connection_lost(&mut self, _err: Option<io::Error>) {}
}

impl DatagramProtocol for Gone {
    fn connection_made(&mut self, _transport: DatagramTransport) {}
    fn datagram_received(&mut self, _data: &[u8], _addr: Address) {}
    fn error_received(&mut self, _err: io::Error) {}
    fn connection_lost(&mut self, _err: Option<io::Error>) {}
}

impl FlowControl for dyn Protocol {
    fn pause_writing(&mut self) {
        Protocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        Protocol::resume_writing(self)
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        Protocol::connection_lost(self, err)
    }
    fn gone() -> Box<dyn Protocol> {
        Box::new(Gone)
    }
}

impl FlowControl for dyn DatagramProtocol {
    fn pause_writing(&mut self) {
        DatagramProtocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        DatagramProtocol::resume_writing(self)
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        DatagramProtocol::connection_lost(self, err)
    }
    fn gone() -> Box<dyn DatagramProtocol> {
        Box::new(Gone)
    }
}

/// A transport's protocol and its flow-control flags.
pub(crate) struct ProtocolSlot<P: ?Sized> {
    /// The protocol, or [`Gone`] once it was taken out for good.
    protocol: RefCell<Box<P>>,
    /// Whether the write buffer is above the high-water mark.
    paused: Cell<bool>,
    /// `paused` differs from what the protocol was last told.
    untold: Cell<bool>,
}

impl<P: ?Sized + FlowControl> ProtocolSlot<P> {
    pub fn new(protocol: Box<P>) -> ProtocolSlot<P> {
        ProtocolSlot {
            protocol: RefCell::new(protocol),
            paused: Cell::new(false),
            untold: Cell::new(false),
        }
    }

    /// Calls the protocol (unless it is already running further up the stack, or gone),
    /// then tells it about any flow-control change its call caused.
    pub fn call(&self, f: impl FnOnce(&mut P)) {
        if let Ok(mut guard) = self.protocol.try_borrow_mut() {
            f(&mut **guard);
        }
        self.sync();
    }

    /// Records whether the write buffer is above its high-water mark; the protocol
    /// learns it at the next [`sync`](Self::sync).
    pub fn set_paused(&self, paused: bool) {
        // What the protocol was told is `paused ^ untold`; it stays as it was.
        let changed = paused != self.paused.get();
        self.untold.set(self.untold.get() != changed);
        self.paused.set(paused);
    }

    /// Whether the write buffer is above its high-water mark.
    pub fn is_paused(&self) -> bool {
        self.paused.get()
    }

    /// Tells the protocol to pause or resume writing if that changed since it was last
    /// told. Deferred while the protocol is running (it is told when its call returns).
    pub fn sync(&self) {
        loop {
            if !self.untold.get() {
                return;
            }
            let Ok(mut guard) = self.protocol.try_borrow_mut() else {
                return;
            };
            self.untold.set(false);
            if self.paused.get() {
                guard.pause_writing();
            } else {
                guard.resume_writing();
            }
        }
    }

    /// Takes the protocol out for good and drops it without calling it (when the loop
    /// is destroyed). Nothing happens while it is running further up the stack.
    pub fn discard(&self) {
        let protocol = match self.protocol.try_borrow_mut() {
            Ok(mut guard) => Some(std::mem::replace(&mut *guard, P::gone())),
            Err(_) => None,
        };
        // Dropped here, outside the borrow: its captures may use the transport.
        drop(protocol);
    }

    /// Takes the protocol out for good and gives it `connection_lost(err)` (once: a
    /// protocol already taken is not called again). While the protocol is running
    /// further up the stack (a nested loop), `err` comes back for the caller to retry
    /// from a later loop callback.
    pub fn deliver_lost(&self, err: Option<io::Error>) -> Result<(), Option<io::Error>> {
        let Ok(mut guard) = self.protocol.try_borrow_mut() else {
            return Err(err);
        };
        let mut protocol = std::mem::replace(&mut *guard, P::gone());
        drop(guard);
        // `Gone` (the protocol was already taken) does nothing here.
        protocol.connection_lost(err);
        // Dropped here, outside every borrow: its captures may use the transport.
        drop(protocol);
        Ok(())
    }
}

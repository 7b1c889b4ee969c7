//! A transport's protocol: called without re-entering it, and told about flow-control
//! changes exactly once each. Shared by the stream and datagram transports.
//!
//! The protocol sits in a `RefCell`. A call made while it is already running further up
//! the stack (a transport method called from inside `data_received`, say) is skipped
//! rather than re-entering it. Flow control is two flags: whether the write buffer is
//! above its high-water mark (what the protocol should know) and what it was last told.
//! A change made while the protocol runs is delivered when its call returns.

use super::{DatagramProtocol, Protocol};
use std::cell::{Cell, RefCell};

/// What flow control needs from a protocol trait.
pub(crate) trait FlowControl {
    fn pause_writing(&mut self);
    fn resume_writing(&mut self);
}

impl FlowControl for dyn Protocol {
    fn pause_writing(&mut self) {
        Protocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        Protocol::resume_writing(self)
    }
}

impl FlowControl for dyn DatagramProtocol {
    fn pause_writing(&mut self) {
        DatagramProtocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        DatagramProtocol::resume_writing(self)
    }
}

/// A transport's protocol and its flow-control flags.
pub(crate) struct ProtocolSlot<P: ?Sized> {
    protocol: RefCell<Option<Box<P>>>,
    /// Whether the write buffer is above the high-water mark.
    paused: Cell<bool>,
    /// What the protocol was last told.
    told: Cell<bool>,
}

impl<P: ?Sized + FlowControl> ProtocolSlot<P> {
    pub fn new(protocol: Box<P>) -> ProtocolSlot<P> {
        ProtocolSlot {
            protocol: RefCell::new(Some(protocol)),
            paused: Cell::new(false),
            told: Cell::new(false),
        }
    }

    /// Calls the protocol (unless it is already running further up the stack, or gone),
    /// then tells it about any flow-control change its call caused.
    pub fn call(&self, f: impl FnOnce(&mut P)) {
        if let Ok(mut guard) = self.protocol.try_borrow_mut() {
            if let Some(p) = guard.as_mut() {
                f(&mut **p);
            }
        }
        self.sync();
    }

    /// Records whether the write buffer is above its high-water mark; the protocol
    /// learns it at the next [`sync`](Self::sync).
    pub fn set_paused(&self, paused: bool) {
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
            let pause = self.paused.get();
            if pause == self.told.get() {
                return;
            }
            let Ok(mut guard) = self.protocol.try_borrow_mut() else {
                return;
            };
            self.told.set(pause);
            if let Some(p) = guard.as_mut() {
                if pause {
                    p.pause_writing();
                } else {
                    p.resume_writing();
                }
            }
        }
    }

    /// Takes the protocol out for good (to deliver `connection_lost`). `Err` while it is
    /// running further up the stack: the caller retries later.
    pub fn try_take(&self) -> Result<Option<Box<P>>, ()> {
        self.protocol
            .try_borrow_mut()
            .map(|mut guard| guard.take())
            .map_err(|_| ())
    }
}

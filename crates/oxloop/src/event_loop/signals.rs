//! One loop's signal handlers: several per signal, each cancellable on its own.
//!
//! The process-wide part (sigaction, the async-signal-safe handler) is in
//! `reactor::signal`; this table only says which callbacks run when a signal is pending.

use super::watchers::FdCallback;
use crate::reactor::signal::{self, SignalSlot};
use slab::Slab;
use std::io;
use std::os::fd::RawFd;

/// Identifies one signal handler; the id makes reused slab keys safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SignalId {
    key: usize,
    id: u64,
}

impl SignalId {
    /// The slab key, for walking the handlers in order.
    pub fn key(self) -> usize {
        self.key
    }
}

struct Entry {
    signum: i32,
    id: u64,
    /// `None` while the callback runs.
    callback: Option<FdCallback>,
    referenced: bool,
}

#[derive(Default)]
pub(crate) struct SignalHandlers {
    slot: Option<SignalSlot>,
    handlers: Slab<Entry>,
    next_id: u64,
    unreferenced: usize,
}

impl SignalHandlers {
    /// Adds a handler for `signum`; signals are delivered by writing to `wake_fd`.
    pub fn add(
        &mut self,
        signum: i32,
        wake_fd: RawFd,
        callback: FdCallback,
    ) -> io::Result<SignalId> {
        signal::validate(signum)?;
        if self.slot.is_none() {
            self.slot = Some(SignalSlot::claim(wake_fd)?);
        }
        if let Some(slot) = &self.slot {
            slot.watch(signum)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let key = self.handlers.insert(Entry {
            signum,
            id,
            callback: Some(callback),
            referenced: true,
        });
        Ok(SignalId { key, id })
    }

    fn entry(&self, sid: SignalId) -> Option<&Entry> {
        self.handlers.get(sid.key).filter(|e| e.id == sid.id)
    }

    fn unwatch_if_unused(&mut self, signum: i32) {
        if !self.handlers.iter().any(|(_, e)| e.signum == signum) {
            if let Some(slot) = &self.slot {
                slot.unwatch(signum);
            }
        }
    }

    /// Removes one handler. Returns whether it existed, and its callback unless running.
    pub fn cancel(&mut self, sid: SignalId) -> (bool, Option<FdCallback>) {
        if self.entry(sid).is_none() {
            return (false, None);
        }
        let entry = self.handlers.remove(sid.key);
        if !entry.referenced {
            self.unreferenced -= 1;
        }
        self.unwatch_if_unused(entry.signum);
        (true, entry.callback)
    }

    /// Whether the handler still exists.
    pub fn contains(&self, sid: SignalId) -> bool {
        self.entry(sid).is_some()
    }

    /// Removes every handler of `signum`, handing back the callbacks to drop.
    pub fn remove_all(&mut self, signum: i32) -> Vec<FdCallback> {
        let keys: Vec<usize> = self
            .handlers
            .iter()
            .filter(|(_, e)| e.signum == signum)
            .map(|(k, _)| k)
            .collect();
        let mut dropped = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = self.handlers.remove(key);
            if !entry.referenced {
                self.unreferenced -= 1;
            }
            dropped.extend(entry.callback);
        }
        if let Some(slot) = &self.slot {
            slot.unwatch(signum);
        }
        dropped
    }

    /// Marks whether the handler keeps `run()` going.
    pub fn set_referenced(&mut self, sid: SignalId, referenced: bool) {
        let Some(entry) = self.handlers.get_mut(sid.key).filter(|e| e.id == sid.id) else {
            return;
        };
        if entry.referenced != referenced {
            entry.referenced = referenced;
            if referenced {
                self.unreferenced -= 1;
            } else {
                self.unreferenced += 1;
            }
        }
    }

    /// Whether any handler was added and the loop still watches signals for it (then
    /// signals may arrive at any time).
    pub fn has_handlers(&self) -> bool {
        self.slot.is_some()
    }

    /// Signals that arrived since the last call, as a bit set.
    pub fn take_pending(&self) -> u64 {
        self.slot.as_ref().map_or(0, SignalSlot::take_pending)
    }

    /// The first handler of `signum` at or after slab key `from`, taken out to run.
    pub fn begin_next(&mut self, signum: i32, from: usize) -> Option<(SignalId, FdCallback)> {
        let (key, entry) = self
            .handlers
            .iter_mut()
            .find(|(k, e)| *k >= from && e.signum == signum && e.callback.is_some())?;
        let callback = entry.callback.take()?;
        Some((SignalId { key, id: entry.id }, callback))
    }

    /// Puts a callback back after it ran; hands it back if its handler was removed.
    pub fn end(&mut self, sid: SignalId, callback: FdCallback) -> Option<FdCallback> {
        match self.handlers.get_mut(sid.key).filter(|e| e.id == sid.id) {
            Some(entry) if entry.callback.is_none() => {
                entry.callback = Some(callback);
                None
            }
            _ => Some(callback),
        }
    }

    /// Handlers that keep `run()` going.
    pub fn referenced(&self) -> usize {
        self.handlers.len() - self.unreferenced
    }

    /// Removes every handler and releases the process-wide slot (restoring dispositions).
    pub fn take_all(&mut self) -> Vec<FdCallback> {
        let handlers = std::mem::take(&mut self.handlers);
        self.unreferenced = 0;
        self.slot = None;
        handlers
            .into_iter()
            .filter_map(|(_, e)| e.callback)
            .collect()
    }
}

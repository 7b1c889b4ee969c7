//! The ready queue: callbacks given to `call_soon`, run in FIFO order.
//!
//! Each callback gets a sequence number; its position in the deque is that number minus
//! the number of the front entry, so cancelling is O(1): the entry is emptied in place
//! and skipped when it reaches the front.

use std::collections::VecDeque;

/// A callback the loop runs once.
pub(crate) type Callback = Box<dyn FnOnce() + 'static>;

#[derive(Default)]
pub(crate) struct ReadyQueue {
    queue: VecDeque<Option<Callback>>,
    /// Sequence number of `queue[0]`.
    front_seq: u64,
    /// Entries still holding a callback.
    live: usize,
}

impl ReadyQueue {
    /// Appends a callback; returns its sequence number.
    pub fn push(&mut self, callback: Callback) -> u64 {
        self.queue.push_back(Some(callback));
        self.live += 1;
        self.front_seq + self.queue.len() as u64 - 1
    }

    /// Empties the entry `seq` if it has not run yet, handing back its callback.
    pub fn cancel(&mut self, seq: u64) -> Option<Callback> {
        let index = seq.checked_sub(self.front_seq)? as usize;
        let callback = self.queue.get_mut(index)?.take()?;
        self.live -= 1;
        Some(callback)
    }

    /// Whether entry `seq` still waits to run.
    pub fn contains(&self, seq: u64) -> bool {
        seq.checked_sub(self.front_seq)
            .and_then(|i| self.queue.get(i as usize))
            .is_some_and(Option::is_some)
    }

    /// Removes the front entry: `Some(None)` for a cancelled one, `None` when empty.
    pub fn pop(&mut self) -> Option<Option<Callback>> {
        let entry = self.queue.pop_front()?;
        self.front_seq += 1;
        if entry.is_some() {
            self.live -= 1;
        }
        Some(entry)
    }

    /// Entries in the deque, cancelled ones included (they are still popped).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Callbacks still waiting to run.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Removes every callback, handing them back to drop.
    pub fn take_all(&mut self) -> Vec<Callback> {
        self.front_seq += self.queue.len() as u64;
        self.live = 0;
        self.queue.drain(..).flatten().collect()
    }
}

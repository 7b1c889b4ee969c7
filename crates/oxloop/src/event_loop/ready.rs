//! The ready queue: callbacks given to `call_soon` and woken tasks, run in FIFO order.
//!
//! Each entry gets a sequence number; its position in the deque is that number minus
//! the number of the front entry, so cancelling is O(1): the entry is emptied in place
//! and skipped when it reaches the front. A woken task is queued as its slab key and
//! generation, so waking allocates nothing.

use std::collections::VecDeque;

/// A callback the loop runs once.
pub(crate) type Callback = Box<dyn FnOnce() + 'static>;

/// One queued piece of work.
pub(crate) enum Entry {
    /// Cancelled: skipped when it reaches the front.
    Empty,
    Callback(Callback),
    /// A task to poll: slab key and generation.
    Task(usize, u64),
}

#[derive(Default)]
pub(crate) struct ReadyQueue {
    queue: VecDeque<Entry>,
    /// Sequence number of `queue[0]`.
    front_seq: u64,
    /// Entries still holding a callback.
    live: usize,
}

impl ReadyQueue {
    /// Appends a callback; returns its sequence number.
    pub fn push(&mut self, callback: Callback) -> u64 {
        self.queue.push_back(Entry::Callback(callback));
        self.live += 1;
        self.front_seq + self.queue.len() as u64 - 1
    }

    /// Queues a task to be polled.
    pub fn push_task(&mut self, key: usize, generation: u64) {
        self.queue.push_back(Entry::Task(key, generation));
        self.live += 1;
    }

    /// Empties the entry `seq` if it has not run yet, handing back its callback.
    pub fn cancel(&mut self, seq: u64) -> Option<Callback> {
        let index = seq.checked_sub(self.front_seq)? as usize;
        let entry = self.queue.get_mut(index)?;
        if !matches!(entry, Entry::Callback(_)) {
            return None;
        }
        let Entry::Callback(callback) = std::mem::replace(entry, Entry::Empty) else {
            unreachable!()
        };
        self.live -= 1;
        if self.live == 0 {
            // Only cancelled entries left: forget them now.
            self.front_seq += self.queue.len() as u64;
            self.queue.clear();
        }
        Some(callback)
    }

    /// Whether entry `seq` still waits to run.
    pub fn contains(&self, seq: u64) -> bool {
        seq.checked_sub(self.front_seq)
            .and_then(|i| self.queue.get(i as usize))
            .is_some_and(|e| matches!(e, Entry::Callback(_)))
    }

    /// Removes the front entry (`Entry::Empty` for a cancelled one); `None` when empty.
    pub fn pop(&mut self) -> Option<Entry> {
        let entry = self.queue.pop_front()?;
        self.front_seq += 1;
        if !matches!(entry, Entry::Empty) {
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
        self.queue
            .drain(..)
            .filter_map(|e| match e {
                Entry::Callback(callback) => Some(callback),
                _ => None,
            })
            .collect()
    }
}

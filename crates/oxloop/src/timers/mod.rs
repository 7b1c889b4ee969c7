//! Timers: a binary min-heap of deadlines over a slab of callbacks.
//!
//! - **Insert** is O(log n): push `(deadline, sequence, slot)` on the heap and the callback
//!   into a slab slot.
//! - **Cancel** is O(1): the slab slot is freed at once (the callback and whatever it
//!   captured are dropped then); the heap entry becomes *stale* and is recognised by its
//!   sequence number when it reaches the top.
//! - **Reclaiming**: when stale entries outnumber live ones the heap is rebuilt without
//!   them (O(n), at most once per n/2 cancels, so amortised O(1) per cancel), and memory is
//!   returned to the allocator once the queue is mostly empty. A million timers set and
//!   then cancelled leave nothing behind.
//!
//! Deadlines are nanoseconds since the loop's creation, so an entry is 24 bytes and
//! compares as two integers. Equal deadlines fire in the order they were set, because the
//! sequence number breaks the tie.
//!
//! `docs/design.md` explains why this beats a timer wheel for an event loop's workload.

use slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A callback a timer runs.
pub(crate) type TimerCallback = Box<dyn FnOnce() + 'static>;

/// Below this size the heap is never rebuilt: cheaper to let stale entries pop.
const COMPACT_MIN: usize = 1024;

/// Identifies one timer for cancellation; the sequence number makes reused slots safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerId {
    key: u32,
    seq: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: u64,
    seq: u64,
    key: u32,
}

struct Slot {
    seq: u64,
    callback: TimerCallback,
    referenced: bool,
}

/// The loop's timer queue.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    slots: Slab<Slot>,
    /// Heap entries whose slot was cancelled.
    stale: usize,
    /// Live timers that do not keep `run()` going.
    unreferenced: usize,
    next_seq: u64,
}

impl Timers {
    /// Schedules `callback` at `deadline` (nanoseconds on the loop's clock).
    pub fn insert(&mut self, deadline: u64, callback: TimerCallback) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = self.slots.insert(Slot {
            seq,
            callback,
            referenced: true,
        }) as u32;
        self.heap.push(Reverse(Entry { deadline, seq, key }));
        TimerId { key, seq }
    }

    fn slot(&self, id: TimerId) -> Option<&Slot> {
        self.slots
            .get(id.key as usize)
            .filter(|slot| slot.seq == id.seq)
    }

    fn is_live(&self, entry: &Entry) -> bool {
        self.slot(TimerId {
            key: entry.key,
            seq: entry.seq,
        })
        .is_some()
    }

    /// Cancels a pending timer, handing back its callback (for the caller to drop outside
    /// any borrow of the loop). `None` when it already ran or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<TimerCallback> {
        self.slot(id)?;
        let slot = self.slots.remove(id.key as usize);
        if !slot.referenced {
            self.unreferenced -= 1;
        }
        self.stale += 1;
        self.reclaim();
        Some(slot.callback)
    }

    /// Whether the timer `id` is still pending.
    pub fn contains(&self, id: TimerId) -> bool {
        self.slot(id).is_some()
    }

    /// Marks whether the timer keeps `run()` going.
    pub fn set_referenced(&mut self, id: TimerId, referenced: bool) {
        let Some(slot) = self
            .slots
            .get_mut(id.key as usize)
            .filter(|s| s.seq == id.seq)
        else {
            return;
        };
        if slot.referenced != referenced {
            slot.referenced = referenced;
            if referenced {
                self.unreferenced -= 1;
            } else {
                self.unreferenced += 1;
            }
        }
    }

    fn reclaim(&mut self) {
        if self.slots.is_empty() {
            // Everything left in the heap is stale: drop it all and give the memory back.
            self.heap = BinaryHeap::new();
            self.slots = Slab::new();
            self.stale = 0;
        } else if self.stale >= COMPACT_MIN && self.stale > self.heap.len() / 2 {
            let slots = &self.slots;
            self.heap.retain(|Reverse(e)| {
                slots
                    .get(e.key as usize)
                    .is_some_and(|slot| slot.seq == e.seq)
            });
            self.stale = 0;
            if self.heap.capacity() > 4 * self.heap.len() {
                self.heap.shrink_to_fit();
            }
            if self.slots.capacity() > 4 * self.slots.len() {
                // Frees the vacant slots at the end of the slab (the usual case: the
                // newest timers were the ones cancelled).
                self.slots.shrink_to_fit();
            }
        }
    }

    /// Drops stale entries from the top of the heap.
    fn skip_stale(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
            self.stale -= 1;
        }
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.skip_stale();
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// The sequence number the next timer will get: timers set from now on compare
    /// greater than or equal to it.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest timer whose deadline is at or before `now` and
    /// which was set before sequence number `before`.
    pub fn pop_expired(&mut self, now: u64, before: u64) -> Option<TimerCallback> {
        self.skip_stale();
        let Reverse(top) = *self.heap.peek()?;
        if top.deadline > now || top.seq >= before {
            return None;
        }
        self.heap.pop();
        let slot = self.slots.remove(top.key as usize);
        if !slot.referenced {
            self.unreferenced -= 1;
        }
        if self.slots.is_empty() {
            self.reclaim();
        }
        Some(slot.callback)
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Pending timers that keep `run()` going.
    pub fn referenced(&self) -> usize {
        self.slots.len() - self.unreferenced
    }

    /// Removes every timer, handing back the callbacks to drop.
    pub fn take_all(&mut self) -> Vec<TimerCallback> {
        let slots = std::mem::take(&mut self.slots);
        self.heap = BinaryHeap::new();
        self.stale = 0;
        self.unreferenced = 0;
        slots.into_iter().map(|(_, slot)| slot.callback).collect()
    }

    /// Bytes held by the heap and slab, for tests that check memory is reclaimed.
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Reverse<Entry>>()
            + self.slots.capacity() * (std::mem::size_of::<Slot>() + std::mem::size_of::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn recorder() -> (Rc<RefCell<Vec<u32>>>, impl Fn(u32) -> TimerCallback) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        (log, move |n| {
            let l = l.clone();
            Box::new(move || l.borrow_mut().push(n))
        })
    }

    #[test]
    fn fires_in_deadline_order_fifo_among_equals() {
        let (log, cb) = recorder();
        let mut t = Timers::default();
        t.insert(30, cb(3));
        t.insert(10, cb(1));
        t.insert(20, cb(2));
        t.insert(10, cb(11));
        while let Some(f) = t.pop_expired(100, u64::MAX) {
            f();
        }
        assert_eq!(*log.borrow(), vec![1, 11, 2, 3]);
    }

    #[test]
    fn never_pops_before_deadline_nor_new_timers() {
        let (log, cb) = recorder();
        let mut t = Timers::default();
        t.insert(50, cb(1));
        assert!(t.pop_expired(49, u64::MAX).is_none());
        let limit = t.next_seq();
        t.insert(0, cb(2));
        // Set after the phase began: waits for the next phase, and then, having the
        // earlier deadline, fires first.
        assert!(t.pop_expired(49, limit).is_none());
        let limit = t.next_seq();
        t.pop_expired(50, limit).expect("timer 2")();
        t.pop_expired(50, limit).expect("timer 1")();
        assert!(t.pop_expired(50, limit).is_none());
        assert_eq!(*log.borrow(), vec![2, 1]);
    }

    #[test]
    fn cancelled_slot_reuse_does_not_confuse_ids() {
        let (log, cb) = recorder();
        let mut t = Timers::default();
        t.insert(1_000, cb(0)); // keeps the slab non-empty
        let a = t.insert(10, cb(1));
        assert!(t.cancel(a).is_some());
        let b = t.insert(20, cb(2)); // reuses a's slot
        assert!(t.cancel(a).is_none());
        assert!(t.contains(b));
        while let Some(f) = t.pop_expired(100, u64::MAX) {
            f();
        }
        assert_eq!(*log.borrow(), vec![2]);
    }

    #[test]
    fn million_cancelled_timers_leave_nothing_behind() {
        let mut t = Timers::default();
        let keep = t.insert(u64::MAX, Box::new(|| {}));
        let ids: Vec<_> = (0..1_000_000u64)
            .map(|i| t.insert(i, Box::new(|| {})))
            .collect();
        let peak = t.allocated_bytes();
        for id in ids {
            t.cancel(id);
        }
        assert_eq!(t.len(), 1);
        assert!(
            t.heap.len() < 2 * COMPACT_MIN,
            "heap still has {}",
            t.heap.len()
        );
        assert!(t.allocated_bytes() < peak, "memory was not reclaimed");
        t.cancel(keep);
        assert_eq!(t.heap.capacity(), 0);
        assert_eq!(t.slots.capacity(), 0);
    }
}

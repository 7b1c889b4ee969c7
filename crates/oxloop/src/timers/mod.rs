//! Timers: callbacks in a slab, their order in a radix queue.
//!
//! - **Insert** is amortised O(1) (O(log f) when the deadline goes to the queue's front
//!   heap of f entries, see [`radix`]): the callback goes into a slab slot, and a 24-byte
//!   entry `(deadline, sequence, slot)` into the [`RadixQueue`].
//! - **Cancel** is O(1): the slab slot is freed at once (the callback and whatever it
//!   captured are dropped then); the queue's entry becomes *stale* and is recognised by its
//!   sequence number when the queue meets it (it is then dropped).
//! - **Firing** takes the earliest entry of the queue; equal deadlines fire in the order
//!   they were set, because the sequence number breaks the tie.
//! - **Reclaiming**: the queue holds one entry per pending timer plus the stale ones. When
//!   stale entries outnumber live ones they are all dropped (O(n), at most once per n/2
//!   cancels, so amortised O(1) per cancel), and the buffers are freed when the queue
//!   empties. A million timers set and then cancelled leave nothing behind.
//!
//! Deadlines are nanoseconds since the loop's creation. `docs/design.md` § Timers has the
//! measurements behind this design.

#[cfg(test)]
mod model_tests;
mod radix;

use radix::{Entry, RadixQueue};
use slab::Slab;

/// A callback a timer runs.
pub(crate) type TimerCallback = Box<dyn FnOnce() + 'static>;

/// Below this many stale entries the queue is never swept: cheaper to skip them when met.
const COMPACT_MIN: usize = 1024;

/// Identifies one timer for cancellation; the sequence number makes reused slots safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerId {
    key: u32,
    seq: u64,
}

struct Slot {
    seq: u64,
    callback: TimerCallback,
    referenced: bool,
}

/// The loop's timer queue.
#[derive(Default)]
pub(crate) struct Timers {
    queue: RadixQueue,
    slots: Slab<Slot>,
    /// Live timers that do not keep `run()` going.
    unreferenced: usize,
    next_seq: u64,
}

/// Whether `entry` still has its timer (it was neither cancelled nor fired, and its slot
/// was not reused by a later timer).
fn is_live(slots: &Slab<Slot>, entry: &Entry) -> bool {
    slots
        .get(entry.key as usize)
        .is_some_and(|slot| slot.seq == entry.seq)
}

/// [`is_live`] for the queue, skipping the slab look-up (a likely cache miss) when no
/// entry is stale: the queue then holds exactly one entry per slot.
fn liveness<'a>(queue: &RadixQueue, slots: &'a Slab<Slot>) -> impl Fn(&Entry) -> bool + 'a {
    let none_stale = queue.len() == slots.len();
    move |entry| none_stale || is_live(slots, entry)
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
        self.queue.push(Entry { deadline, seq, key });
        TimerId { key, seq }
    }

    fn slot(&self, id: TimerId) -> Option<&Slot> {
        self.slots
            .get(id.key as usize)
            .filter(|slot| slot.seq == id.seq)
    }

    /// Cancels a pending timer, handing back its callback (for the caller to drop outside
    /// any borrow of the loop). `None` when it already ran or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<TimerCallback> {
        self.slot(id)?;
        let slot = self.slots.remove(id.key as usize);
        if !slot.referenced {
            self.unreferenced -= 1;
        }
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

    /// Entries in the queue whose timer is gone: every live timer has exactly one entry.
    fn stale(&self) -> usize {
        self.queue.len() - self.slots.len()
    }

    fn reclaim(&mut self) {
        if self.slots.is_empty() {
            // Everything left in the queue is stale: drop it all and give the memory back.
            self.queue.clear();
            self.slots = Slab::new();
        } else if self.stale() >= COMPACT_MIN && self.stale() > self.queue.len() / 2 {
            let slots = &self.slots;
            self.queue.retain(|e| is_live(slots, e));
            if self.slots.capacity() > 4 * self.slots.len() {
                // Frees the vacant slots at the end of the slab (the usual case: the
                // newest timers were the ones cancelled).
                self.slots.shrink_to_fit();
            }
        }
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&mut self) -> Option<u64> {
        if self.slots.is_empty() {
            return None;
        }
        let is_live = liveness(&self.queue, &self.slots);
        self.queue.peek(is_live).map(|e| e.deadline)
    }

    /// The sequence number the next timer will get: timers set from now on compare
    /// greater than or equal to it.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest timer whose deadline is at or before `now` and
    /// which was set before sequence number `before`.
    pub fn pop_expired(&mut self, now: u64, before: u64) -> Option<TimerCallback> {
        self.queue.advance_floor(now);
        let is_live = liveness(&self.queue, &self.slots);
        let top = self.queue.peek(is_live)?;
        if top.deadline > now || top.seq >= before {
            return None;
        }
        self.queue.pop();
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
        self.queue = RadixQueue::default();
        self.unreferenced = 0;
        slots.into_iter().map(|(_, slot)| slot.callback).collect()
    }

    /// Bytes held by the queue and slab, for tests that check memory is reclaimed.
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        self.queue.capacity() * std::mem::size_of::<Entry>()
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
            t.queue.len() < 2 * COMPACT_MIN,
            "queue still has {}",
            t.queue.len()
        );
        assert!(t.allocated_bytes() < peak, "memory was not reclaimed");
        t.cancel(keep);
        assert_eq!(t.allocated_bytes(), 0);
    }

    #[test]
    fn million_fired_timers_leave_nothing_behind() {
        let mut t = Timers::default();
        for i in 0..1_000_000u64 {
            t.insert(1_000_000 + (i * 9) % 9_000_000, Box::new(|| {}));
        }
        // Half of them (the earlier deadlines) first, then the rest.
        let before = t.next_seq();
        let mut fired = 0;
        while t.pop_expired(5_500_000, before).is_some() {
            fired += 1;
        }
        assert!(t.next_deadline().unwrap() > 5_500_000);
        while t.pop_expired(u64::MAX, before).is_some() {
            fired += 1;
        }
        assert_eq!(fired, 1_000_000);
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.allocated_bytes(), 0);
    }

    /// Random operations against a simple model: a sorted map of the pending timers.
    #[test]
    fn matches_a_sorted_map_model() {
        use std::collections::BTreeMap;

        /// xorshift64*: deterministic, good enough to pick operations.
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
            fn below(&mut self, n: u64) -> u64 {
                self.next() % n
            }
        }

        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut t = Timers::default();
            // (deadline, seq) -> (id, label) of every pending timer.
            let mut model: BTreeMap<(u64, u64), (TimerId, u64)> = BTreeMap::new();
            let mut ids: Vec<(TimerId, u64, u64)> = Vec::new(); // id, deadline, label
            let fired = Rc::new(RefCell::new(Vec::new()));
            let mut now = 0u64;
            // Deadlines close together (ties) in some runs, spread out in others.
            let spread = [4u64, 1_000, 1 << 30, u64::MAX / 4][(seed % 4) as usize];
            let ops = 200 + rng.below(3_000);
            let mut next_label = 0u64;
            for _ in 0..ops {
                match rng.below(11) {
                    0..=4 | 10 => {
                        // One timer, or now and then a burst (large buckets get split).
                        let n = if rng.below(40) == 0 { 300 } else { 1 };
                        for _ in 0..n {
                            // Mostly in the future, sometimes already due.
                            let deadline = if rng.below(8) == 0 {
                                now.saturating_sub(rng.below(spread))
                            } else {
                                now.saturating_add(rng.below(spread))
                            };
                            let f = fired.clone();
                            let label = next_label;
                            next_label += 1;
                            let id =
                                t.insert(deadline, Box::new(move || f.borrow_mut().push(label)));
                            model.insert((deadline, id.seq), (id, label));
                            ids.push((id, deadline, label));
                        }
                    }
                    5 | 6 if !ids.is_empty() => {
                        let (id, deadline, _) = ids[rng.below(ids.len() as u64) as usize];
                        let expected = model.remove(&(deadline, id.seq)).is_some();
                        assert_eq!(t.cancel(id).is_some(), expected);
                        assert!(!t.contains(id));
                    }
                    7 => {
                        now = now.saturating_add(rng.below(spread));
                    }
                    _ => {
                        // A timer step: timers set from here on wait for the next one.
                        let before = t.next_seq();
                        let mut extra = rng.below(3);
                        loop {
                            let expected = model
                                .iter()
                                .next()
                                .filter(|((d, s), _)| *d <= now && *s < before)
                                .map(|(&k, &(_, label))| (k, label));
                            match t.pop_expired(now, before) {
                                Some(f) => {
                                    let (k, label) = expected.expect("fired a timer too early");
                                    model.remove(&k);
                                    f();
                                    assert_eq!(fired.borrow_mut().pop(), Some(label));
                                }
                                None => assert_eq!(expected, None, "missed a due timer"),
                            }
                            if expected.is_none() {
                                break;
                            }
                            // A callback setting a timer that is already due.
                            if extra > 0 && rng.below(4) == 0 {
                                extra -= 1;
                                let deadline = now.saturating_sub(rng.below(spread));
                                let f = fired.clone();
                                let id = t.insert(
                                    deadline,
                                    Box::new(move || f.borrow_mut().push(u64::MAX)),
                                );
                                model.insert((deadline, id.seq), (id, u64::MAX));
                                ids.push((id, deadline, u64::MAX));
                            }
                        }
                    }
                }
                assert_eq!(t.len(), model.len());
                assert_eq!(t.next_deadline(), model.keys().next().map(|&(d, _)| d));
            }
            // Everything left fires in (deadline, seq) order.
            let before = t.next_seq();
            let mut order = Vec::new();
            while let Some(f) = t.pop_expired(u64::MAX, before) {
                f();
                order.extend(fired.borrow_mut().pop());
            }
            let expected: Vec<u64> = model.values().map(|&(_, l)| l).collect();
            assert_eq!(order, expected, "seed {seed}");
            // Small buffers are kept for reuse; nothing else.
            assert!(t.allocated_bytes() <= radix::KEEP_CAPACITY * std::mem::size_of::<Entry>());
        }
    }
}

//! The order in which timers fire: a radix heap with a small binary heap in front.
//!
//! Every pending timer has one [`Entry`] here; the queue hands them out in
//! `(deadline, seq)` order. It knows nothing about callbacks: the caller says which
//! entries are still live (a cancelled timer's entry is left behind and skipped later).
//!
//! # How it works
//!
//! The queue keeps a number, `limit`, and splits the entries around it:
//!
//! - `front`, a binary min-heap, holds every entry whose deadline is `<= limit`. The
//!   earliest timer is always its top.
//! - `buckets[b]` holds the entries with a deadline `> limit` whose highest bit that
//!   differs from `limit` is bit `b`. Each bucket is a plain `Vec`, unsorted. Bucket `b`
//!   covers one aligned range of `2^b` deadlines just above `limit`'s, so every entry of
//!   bucket `b` is earlier than every entry of bucket `b + 1`.
//!
//! Inserting is O(1) into a bucket (one XOR, one `leading_zeros`, one `push`), or
//! O(log f) into the front heap of `f` entries when the deadline is not after `limit`.
//!
//! When the front heap runs dry, the lowest non-empty bucket is *refilled* into it:
//!
//! - a small bucket (up to [`SMALL_BUCKET`] entries) moves to the front as it is, and
//!   `limit` becomes its latest deadline;
//! - a larger bucket is split: `limit` becomes its earliest deadline, the entries at that
//!   deadline go to the front and the others to lower buckets, by their highest bit that
//!   differs from the new `limit`. The higher buckets stay as they are: they differ from
//!   the old and the new `limit` at the same bit.
//!
//! A refill only ever moves an entry to a lower bucket, so it moves at most 64 times, and
//! in practice a handful of times. Every move is a sequential read and append, which is what
//! makes this faster than a binary heap on a large queue: a heap pop walks from the root
//! to a leaf through a different cache line at every level. Cancelled entries met during
//! a refill are dropped instead of moved.
//!
//! A refill can raise `limit` far ahead of the loop's clock: to an hour from now when the
//! earliest timer is an hour away. Timers set for earlier than `limit` would all go to the
//! front heap, so the queue would work as a plain binary heap until it drains. Instead, a
//! timer set for earlier than `limit` but later than the loop's clock (the `floor`) first
//! *lowers* `limit` back to the clock, when that is cheap (see
//! [`RadixQueue::lower_limit`]); only a deadline that is already due, or a lowering that
//! would move too many entries, uses the front heap. Either way the order is exact.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A bucket of at most this many entries is moved to the front heap whole instead of
/// being split. Measured: 8, 64 and 512 perform alike on the timer benchmark.
const SMALL_BUCKET: usize = 64;

/// When the queue empties, its buffers are kept for reuse if they hold at most this many
/// entries in total, and freed otherwise.
pub(super) const KEEP_CAPACITY: usize = 1024;

/// One pending timer: fires in `(deadline, seq)` order; `key` finds its callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    pub deadline: u64,
    pub seq: u64,
    pub key: u32,
}

/// See the module documentation.
pub(super) struct RadixQueue {
    front: BinaryHeap<Reverse<Entry>>,
    buckets: [Vec<Entry>; 64],
    /// Bit `b` is set when `buckets[b]` is not empty.
    occupied: u64,
    limit: u64,
    /// The latest `now` the loop has asked about: deadlines set from now on are
    /// expected to be later (a timer set for an earlier time is already due).
    floor: u64,
    /// Entries `push` put in the front heap since `limit` was last lowered: they pay for
    /// the next lowering.
    front_pushes: usize,
    len: usize,
}

impl Default for RadixQueue {
    fn default() -> Self {
        RadixQueue {
            front: BinaryHeap::new(),
            buckets: std::array::from_fn(|_| Vec::new()),
            occupied: 0,
            limit: 0,
            floor: 0,
            front_pushes: 0,
            len: 0,
        }
    }
}

/// The bucket of `deadline` relative to `limit`; requires `deadline > limit`.
fn bucket_of(deadline: u64, limit: u64) -> usize {
    debug_assert!(deadline > limit);
    63 - (deadline ^ limit).leading_zeros() as usize
}

impl RadixQueue {
    /// Entries held, cancelled ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, entry: Entry) {
        if entry.deadline <= self.limit
            && !(entry.deadline > self.floor && self.lower_limit(self.floor))
        {
            self.front.push(Reverse(entry));
            self.front_pushes += 1;
        } else {
            self.push_bucket(entry);
        }
        self.len += 1;
    }

    /// Records the loop's clock; see `floor`.
    pub fn advance_floor(&mut self, now: u64) {
        self.floor = self.floor.max(now);
    }

    /// Lowers `limit` to `new`, if that is cheap; returns whether it did.
    ///
    /// A refill can raise `limit` far ahead: to an hour from now when the earliest timer
    /// is an hour away. Every timer set for earlier would then go to the front heap, and
    /// the queue would be a plain binary heap. Lowering `limit` back to the loop's clock
    /// sends them to the buckets again. With `j` the highest bit where the old and the new
    /// `limit` differ:
    ///
    /// - buckets above `j` stay as they are (their entries differ from both at the same
    ///   bit);
    /// - the entries of buckets below `j` all differ from the new `limit` first at bit
    ///   `j`: those buckets are appended to bucket `j` (which is empty: an entry there
    ///   would be below the old `limit`);
    /// - front entries later than the new `limit` go to their buckets.
    ///
    /// It is done only when those moves cost at most [`SMALL_BUCKET`] entries plus one
    /// per timer that went into the front heap since the last time, so inserting stays
    /// O(1) amortised. When it is not done, the timer goes to the front heap.
    fn lower_limit(&mut self, new: u64) -> bool {
        debug_assert!(new < self.limit);
        let j = bucket_of(self.limit, new);
        let below = self.occupied & ((1 << j) - 1);
        let moved: usize = bits(below).map(|c| self.buckets[c].len()).sum();
        if moved + self.front.len() > SMALL_BUCKET + self.front_pushes {
            return false;
        }
        self.front_pushes = 0;
        let mut merged = std::mem::take(&mut self.buckets[j]);
        debug_assert!(merged.is_empty());
        for c in bits(below) {
            merged.append(&mut self.buckets[c]);
        }
        self.occupied &= !below;
        if !merged.is_empty() {
            self.occupied |= 1 << j;
        }
        self.buckets[j] = merged;
        self.limit = new;

        let mut front = std::mem::take(&mut self.front).into_vec();
        front.retain(|&Reverse(entry)| {
            let keep = entry.deadline <= new;
            if !keep {
                self.push_bucket(entry);
            }
            keep
        });
        self.front = BinaryHeap::from(front);
        true
    }

    fn push_bucket(&mut self, entry: Entry) {
        let b = bucket_of(entry.deadline, self.limit);
        self.buckets[b].push(entry);
        self.occupied |= 1 << b;
    }

    /// The earliest live entry, left in place. Dead entries found on the way are dropped.
    pub fn peek(&mut self, mut is_live: impl FnMut(&Entry) -> bool) -> Option<Entry> {
        loop {
            while let Some(&Reverse(top)) = self.front.peek() {
                if is_live(&top) {
                    return Some(top);
                }
                self.front.pop();
                self.len -= 1;
            }
            if self.occupied == 0 {
                // Empty: any `limit` will do, and the loop's clock is the best one.
                debug_assert_eq!(self.len, 0);
                self.limit = self.floor;
                return None;
            }
            self.refill(&mut is_live);
        }
    }

    /// Removes the entry [`peek`](Self::peek) just returned.
    pub fn pop(&mut self) {
        if self.front.pop().is_some() {
            self.len -= 1;
        }
    }

    /// Moves the lowest non-empty bucket into the empty front heap (see the module
    /// documentation), dropping its dead entries.
    fn refill(&mut self, is_live: &mut impl FnMut(&Entry) -> bool) {
        debug_assert!(self.front.is_empty());
        let b = self.occupied.trailing_zeros() as usize;
        self.occupied &= !(1 << b);
        let mut bucket = std::mem::take(&mut self.buckets[b]);
        let before = bucket.len();
        bucket.retain(|e| is_live(e));
        self.len -= before - bucket.len();

        if bucket.len() <= SMALL_BUCKET {
            if let Some(latest) = bucket.iter().map(|e| e.deadline).max() {
                self.limit = latest;
            }
            self.front.extend(bucket.drain(..).map(Reverse));
        } else {
            // Not empty: it has more than SMALL_BUCKET entries.
            let earliest = bucket
                .iter()
                .map(|e| e.deadline)
                .min()
                .unwrap_or(self.limit);
            self.limit = earliest;
            for entry in bucket.drain(..) {
                if entry.deadline == earliest {
                    self.front.push(Reverse(entry));
                } else {
                    // Lands in a bucket below `b`: never the one being drained.
                    self.push_bucket(entry);
                }
            }
        }
        // Give the emptied vector back, so its allocation is reused.
        self.buckets[b] = bucket;
    }

    /// Keeps only the live entries, and shrinks buffers that became mostly empty.
    pub fn retain(&mut self, mut is_live: impl FnMut(&Entry) -> bool) {
        self.front.retain(|Reverse(e)| is_live(e));
        shrink_if_sparse_heap(&mut self.front);
        let mut len = self.front.len();
        for (b, bucket) in self.buckets.iter_mut().enumerate() {
            bucket.retain(|e| is_live(e));
            if bucket.is_empty() {
                self.occupied &= !(1 << b);
            }
            if bucket.capacity() > 4 * bucket.len() {
                bucket.shrink_to_fit();
            }
            len += bucket.len();
        }
        self.len = len;
        if len == 0 {
            self.limit = self.floor;
        }
    }

    /// Forgets every entry; frees the buffers unless they are small.
    pub fn clear(&mut self) {
        if self.capacity() > KEEP_CAPACITY {
            *self = RadixQueue {
                limit: self.floor,
                floor: self.floor,
                ..RadixQueue::default()
            };
        } else {
            self.front.clear();
            for bucket in &mut self.buckets {
                bucket.clear();
            }
            self.occupied = 0;
            self.limit = self.floor;
            self.front_pushes = 0;
            self.len = 0;
        }
    }

    /// Entries the buffers can hold without growing.
    pub fn capacity(&self) -> usize {
        self.front.capacity() + self.buckets.iter().map(Vec::capacity).sum::<usize>()
    }
}

/// The positions of the set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let b = mask.trailing_zeros() as usize;
        mask &= mask.wrapping_sub(1);
        (b < 64).then_some(b)
    })
}

fn shrink_if_sparse_heap(heap: &mut BinaryHeap<Reverse<Entry>>) {
    if heap.capacity() > 4 * heap.len() {
        heap.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(deadline: u64, seq: u64) -> Entry {
        Entry {
            deadline,
            seq,
            key: seq as u32,
        }
    }

    fn drain(q: &mut RadixQueue) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Some(e) = q.peek(|_| true) {
            q.pop();
            out.push((e.deadline, e.seq));
        }
        out
    }

    #[test]
    fn hands_out_in_deadline_then_seq_order() {
        let mut q = RadixQueue::default();
        let deadlines = [5u64, 3, 900, 3, 0, u64::MAX, 64, 65, 63, 5, 1 << 40];
        for (seq, &d) in deadlines.iter().enumerate() {
            q.push(entry(d, seq as u64));
        }
        let mut expected: Vec<(u64, u64)> = deadlines
            .iter()
            .enumerate()
            .map(|(s, &d)| (d, s as u64))
            .collect();
        expected.sort();
        assert_eq!(drain(&mut q), expected);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn large_buckets_are_split_and_stay_ordered() {
        let mut q = RadixQueue::default();
        // 10,000 entries spread over ~10 ms in ns, many sharing a deadline.
        for seq in 0..10_000u64 {
            q.push(entry(
                1_000_000 + (seq * 7_919) % 10_000_000 / 5_000 * 5_000,
                seq,
            ));
        }
        let out = drain(&mut q);
        assert_eq!(out.len(), 10_000);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn earlier_entries_after_a_refill_go_to_the_front() {
        let mut q = RadixQueue::default();
        q.push(entry(1_000, 0));
        q.push(entry(2_000, 1));
        assert_eq!(q.peek(|_| true).map(|e| e.seq), Some(0)); // limit is now >= 1_000
        q.push(entry(10, 2));
        q.push(entry(1_000, 3));
        assert_eq!(
            drain(&mut q),
            vec![(10, 2), (1_000, 0), (1_000, 3), (2_000, 1)]
        );
    }

    #[test]
    fn a_far_entry_does_not_turn_the_queue_into_a_heap() {
        let mut q = RadixQueue::default();
        q.push(entry(3_600_000_000_000, 0));
        assert_eq!(q.peek(|_| true).map(|e| e.seq), Some(0)); // limit: an hour
        q.advance_floor(1_000);
        for seq in 1..=1_000 {
            q.push(entry(1_000 + seq * 1_000, seq));
        }
        // `limit` went back to the floor: only the hour-long entry is in the front heap.
        assert_eq!(q.front.len(), 0);
        assert_eq!(q.limit, 1_000);
        // A deadline at or before the floor is due: it goes to the front.
        q.push(entry(500, 1_001));
        assert_eq!(q.front.len(), 1);
        let out = drain(&mut q);
        assert_eq!(out.len(), 1_002);
        assert_eq!(out[0], (500, 1_001));
        assert_eq!(out[1_001], (3_600_000_000_000, 0));
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn many_due_entries_in_front_are_not_moved_back_for_one_timer() {
        let mut q = RadixQueue::default();
        for seq in 0..10_000 {
            q.push(entry(1_000_000, seq));
        }
        q.peek(|_| true); // splits: all 10,000 go to the front, `limit` is 1,000,000
        assert_eq!(q.front.len(), 10_000);
        // Moving them back to a bucket would cost 10,000 for one timer: not done.
        q.push(entry(500_000, 10_000));
        assert_eq!(q.limit, 1_000_000);
        assert_eq!(q.front.len(), 10_001);
        let out = drain(&mut q);
        assert_eq!(out[0], (500_000, 10_000));
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn lowering_the_limit_keeps_the_order() {
        let mut q = RadixQueue::default();
        let mut expected = Vec::new();
        let mut seq = 0;
        for round in 0..50u64 {
            for i in 0..20u64 {
                let d = 1_000_000 - round * 10_000 + (i * 7_777) % 50_000;
                q.push(entry(d, seq));
                expected.push((d, seq));
                seq += 1;
            }
            // Raises `limit` to the earliest deadline; the next round sets earlier ones.
            q.peek(|_| true);
            q.advance_floor(round * 1_000);
        }
        expected.sort();
        assert_eq!(drain(&mut q), expected);
    }

    #[test]
    fn dead_entries_are_skipped_and_dropped() {
        let mut q = RadixQueue::default();
        for seq in 0..1_000 {
            q.push(entry(seq * 10, seq));
        }
        let first = q.peek(|e| e.seq % 2 == 1).unwrap();
        assert_eq!(first.seq, 1);
        q.retain(|e| e.seq % 2 == 1);
        assert_eq!(q.len(), 500);
        let out = drain(&mut q);
        assert_eq!(out.len(), 500);
        assert!(out.iter().all(|&(_, s)| s % 2 == 1));
    }
}

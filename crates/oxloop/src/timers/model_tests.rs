//! Property tests: the timer queue against a plain reference model (a sorted map of the
//! pending timers), over random sequences of inserts, cancels and clock advances,
//! including timers in the past, bursts large enough to make the queue sweep its stale
//! entries, and timers set while others fire.

use super::{TimerId, Timers};
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Debug, Clone)]
enum Op {
    /// A timer `delay` ns from now (or ago, with `past`).
    Insert { delay: u64, past: bool },
    /// `n` timers spread over `spread` ns from now.
    InsertMany { n: usize, spread: u64 },
    /// Cancels one timer ever set (pending, fired or cancelled).
    Cancel(prop::sample::Index),
    /// Cancels every pending timer but those whose tag is `r` modulo `k`: most of a
    /// burst, so that stale entries outnumber live ones and the queue sweeps them.
    CancelEvery { k: usize, r: usize },
    /// Moves the clock on by `delta` ns and fires what is due; with `set_during`, a timer
    /// due now is set after the first one fires (it must wait for the next pass).
    Advance { delta: u64, set_during: bool },
}

fn delay() -> impl Strategy<Value = u64> {
    prop_oneof![0..10u64, 0..1_000_000u64, 0..(1u64 << 40)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (delay(), any::<bool>()).prop_map(|(delay, past)| Op::Insert { delay, past }),
        1 => (1..3000usize, delay()).prop_map(|(n, spread)| Op::InsertMany { n, spread }),
        4 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        1 => (2..5usize, 0..2usize).prop_map(|(k, r)| Op::CancelEvery { k, r }),
        4 => (delay(), any::<bool>())
            .prop_map(|(delta, set_during)| Op::Advance { delta, set_during }),
    ]
}

/// The real queue, its model, and what fired.
struct Harness {
    timers: Timers,
    /// Pending timers by `(deadline, tag)`: tags grow with each insert, so this is also
    /// the order in which timers with equal deadlines must fire.
    model: BTreeMap<(u64, usize), TimerId>,
    /// Every timer ever set: its id, deadline, and tag.
    issued: Vec<(TimerId, u64)>,
    fired: Rc<RefCell<Vec<usize>>>,
    now: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            timers: Timers::default(),
            model: BTreeMap::new(),
            issued: Vec::new(),
            fired: Rc::default(),
            now: 0,
        }
    }

    fn insert(&mut self, deadline: u64) {
        let tag = self.issued.len();
        let fired = self.fired.clone();
        let id = self
            .timers
            .insert(deadline, Box::new(move || fired.borrow_mut().push(tag)));
        self.model.insert((deadline, tag), id);
        self.issued.push((id, deadline));
    }

    fn cancel(&mut self, tag: usize) {
        let (id, deadline) = self.issued[tag];
        let expected = self.model.remove(&(deadline, tag)).is_some();
        assert_eq!(
            self.timers.cancel(id).is_some(),
            expected,
            "cancel of timer {tag}"
        );
        assert!(!self.timers.contains(id));
    }

    fn advance(&mut self, delta: u64, set_during: bool) {
        self.now = self.now.saturating_add(delta);
        let now = self.now;
        let before = self.timers.next_seq();
        let due: Vec<(u64, usize)> = self
            .model
            .range(..=(now, usize::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut set_during_pass = None;
        while let Some(callback) = self.timers.pop_expired(now, before) {
            callback();
            if set_during && set_during_pass.is_none() {
                set_during_pass = Some(self.issued.len());
                self.insert(now);
            }
        }
        let fired = std::mem::take(&mut *self.fired.borrow_mut());
        let expected: Vec<usize> = due.iter().map(|&(_, tag)| tag).collect();
        assert_eq!(fired, expected, "timers fired at {now}");
        for key in &due {
            self.model.remove(key);
        }
        if let Some(tag) = set_during_pass {
            assert!(
                self.model.contains_key(&(now, tag)),
                "a timer set during a pass waits"
            );
        }
    }

    fn check(&mut self) {
        assert_eq!(self.timers.len(), self.model.len());
        let earliest = self.model.keys().next().map(|&(deadline, _)| deadline);
        assert_eq!(self.timers.next_deadline(), earliest);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn timers_match_the_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        for op in ops {
            match op {
                Op::Insert { delay, past } => {
                    let deadline =
                        if past { h.now.saturating_sub(delay) } else { h.now + delay };
                    h.insert(deadline);
                }
                Op::InsertMany { n, spread } => {
                    for i in 0..n {
                        h.insert(h.now + (i as u64).wrapping_mul(7919) % spread.max(1));
                    }
                }
                Op::Cancel(index) => {
                    if !h.issued.is_empty() {
                        h.cancel(index.index(h.issued.len()));
                    }
                }
                Op::CancelEvery { k, r } => {
                    let tags: Vec<usize> =
                        h.model.keys().map(|&(_, tag)| tag).filter(|t| t % k != r).collect();
                    for tag in tags {
                        h.cancel(tag);
                    }
                }
                Op::Advance { delta, set_during } => h.advance(delta, set_during),
            }
            h.check();
        }
        // Everything left fires, in order, when the clock runs far enough.
        h.advance(u64::MAX / 2, false);
        h.check();
        prop_assert_eq!(h.timers.len(), 0);
    }
}

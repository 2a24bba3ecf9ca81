//! The event queue: events ordered by (time, insertion sequence), stored as one FIFO per
//! distinct time.
//!
//! A binary heap of single events costs a cache-missing sift of log2(n) levels per pop. In a
//! simulation most events share their time with many others (every relay of one reception
//! arrives after the same link latency), so a map from time to a FIFO keeps the order exactly
//! (a later push at the same time goes behind the earlier ones, as its sequence number would
//! put it) while popping and pushing touch only the ends of a few hot queues.
//!
//! The FIFOs live in a slab indexed from the map, and the earliest time and the most recently
//! pushed times are remembered with their slots, so a pop and a push at a recent time touch no
//! map at all; the map is only consulted when a time first appears or its FIFO runs empty.

use std::collections::{BTreeMap, VecDeque};

/// Distinct times whose slots `push` remembers (a reception's relays and its timer).
const RECENT_TIMES: usize = 2;

/// Events ordered by (time, insertion order).
#[derive(Debug)]
pub struct EventQueue<T> {
    /// The slot of each time with events queued.
    by_time: BTreeMap<u64, u32>,
    /// FIFOs, one per time in `by_time`; emptied ones stay allocated for reuse.
    slots: Vec<VecDeque<T>>,
    /// Slots not in `by_time`.
    free: Vec<u32>,
    /// The earliest time in `by_time` and its slot.
    front: Option<(u64, u32)>,
    /// Times pushed to lately and their slots (each still in `by_time`), newest first.
    recent: [Option<(u64, u32)>; RECENT_TIMES],
    len: usize,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            by_time: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            front: None,
            recent: [None; RECENT_TIMES],
            len: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Queues `event` at time `at`, behind every event already queued at `at`.
    pub fn push(&mut self, at: u64, event: T) {
        let slot = match self.recent {
            [Some((t, s)), _] if t == at => s,
            [first, Some((t, s))] if t == at => {
                self.recent = [Some((t, s)), first];
                s
            }
            _ => {
                let slot = match self.by_time.get(&at) {
                    Some(&s) => s,
                    None => {
                        let s = self.free.pop().unwrap_or_else(|| {
                            self.slots.push(VecDeque::new());
                            (self.slots.len() - 1) as u32
                        });
                        self.by_time.insert(at, s);
                        if self.front.is_none_or(|(f, _)| at < f) {
                            self.front = Some((at, s));
                        }
                        s
                    }
                };
                self.recent = [Some((at, slot)), self.recent[0]];
                slot
            }
        };
        self.slots[slot as usize].push_back(event);
        self.len += 1;
    }

    /// The time of the earliest event.
    pub fn next_time(&self) -> Option<u64> {
        self.front.map(|(at, _)| at)
    }

    /// The event `n` places behind the earliest, if it shares the earliest event's time.
    pub fn peek_at_front_time(&self, n: usize) -> Option<&T> {
        let (_, slot) = self.front?;
        self.slots.get(slot as usize)?.get(n)
    }

    /// Removes and returns the earliest event (the first queued among the earliest).
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let (at, slot) = self.front?;
        let fifo = &mut self.slots[slot as usize];
        // Every slot in the map holds at least one event: emptied ones leave it below.
        let event = fifo.pop_front()?;
        if fifo.is_empty() {
            self.by_time.remove(&at);
            self.free.push(slot);
            for r in &mut self.recent {
                if r.is_some_and(|(_, s)| s == slot) {
                    *r = None;
                }
            }
            self.front = self.by_time.first_key_value().map(|(&t, &s)| (t, s));
        }
        self.len -= 1;
        Some((at, event))
    }

    /// Removes every event, in queue order.
    pub fn take_all(&mut self) -> Vec<(u64, T)> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(event) = self.pop() {
            all.push(event);
        }
        all
    }

    /// Events queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn peeking_sees_only_the_earliest_time() {
        let mut q = EventQueue::default();
        for (at, e) in [(5, 'a'), (9, 'x'), (5, 'b'), (5, 'c')] {
            q.push(at, e);
        }
        assert_eq!(q.pop(), Some((5, 'a')));
        let peeked: Vec<_> = (0..3).map(|n| q.peek_at_front_time(n).copied()).collect();
        assert_eq!(peeked, [Some('b'), Some('c'), None]);
        q.pop();
        q.pop();
        assert_eq!(q.peek_at_front_time(0), Some(&'x'));
        q.pop();
        assert_eq!(q.peek_at_front_time(0), None);
    }

    /// Runs `ops` (a push at a time, or a pop) on the queue and on a heap keyed by (time,
    /// insertion sequence), times taken modulo `times`; whether they agree throughout.
    fn agrees_with_a_time_sequence_heap(ops: Vec<Option<u8>>, times: u8) -> bool {
        let mut q = EventQueue::default();
        let mut heap = BinaryHeap::new();
        for (seq, op) in ops.into_iter().enumerate() {
            match op {
                Some(t) => {
                    let at = u64::from(t % times);
                    q.push(at, seq);
                    heap.push(Reverse((at, seq)));
                }
                None => {
                    let want = heap.pop().map(|Reverse(e)| e);
                    if q.pop() != want {
                        return false;
                    }
                }
            }
            if q.len() != heap.len() || q.next_time() != heap.peek().map(|r| r.0 .0) {
                return false;
            }
        }
        while let Some(Reverse(e)) = heap.pop() {
            if q.pop() != Some(e) {
                return false;
            }
        }
        q.is_empty() && q.pop().is_none()
    }

    quickcheck! {
        /// Any interleaving of pushes and pops over a few times (so the remembered times
        /// are hit, missed and emptied often) gives the order of a (time, sequence) heap.
        fn same_order_as_a_time_sequence_heap(ops: Vec<Option<u8>>) -> bool {
            agrees_with_a_time_sequence_heap(ops, 8)
        }

        /// The same over many times (most pushes miss the remembered times).
        fn same_order_as_a_time_sequence_heap_over_many_times(ops: Vec<Option<u8>>) -> bool {
            agrees_with_a_time_sequence_heap(ops, 255)
        }

        /// The same for runs of pushes at one time between pops, as a simulation makes them.
        fn same_order_for_runs_at_one_time(runs: Vec<(u8, u8, u8)>) -> bool {
            let mut ops = Vec::new();
            for (t, pushes, pops) in runs {
                ops.extend(std::iter::repeat_n(Some(t), usize::from(pushes % 16)));
                ops.extend(std::iter::repeat_n(None, usize::from(pops % 16)));
            }
            agrees_with_a_time_sequence_heap(ops, 16)
        }
    }
}

//! The event queue: events ordered by (time, insertion sequence), stored as one FIFO per
//! distinct time.
//!
//! A binary heap of single events costs a cache-missing sift of log2(n) levels per pop. In a
//! simulation most events share their time with many others (every relay of one reception
//! arrives after the same link latency), so a map from time to a FIFO keeps the order exactly
//! (a later push at the same time goes behind the earlier ones, as its sequence number would
//! put it) while popping and pushing touch only the ends of a few hot queues.

use std::collections::{BTreeMap, VecDeque};

/// Emptied FIFOs kept for reuse, so steady state allocates nothing.
const SPARE_QUEUES_MAX: usize = 64;

/// Events ordered by (time, insertion order).
#[derive(Debug)]
pub struct EventQueue<T> {
    by_time: BTreeMap<u64, VecDeque<T>>,
    spare: Vec<VecDeque<T>>,
    len: usize,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            by_time: BTreeMap::new(),
            spare: Vec::new(),
            len: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Queues `event` at time `at`, behind every event already queued at `at`.
    pub fn push(&mut self, at: u64, event: T) {
        let spare = &mut self.spare;
        self.by_time
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push_back(event);
        self.len += 1;
    }

    /// The time of the earliest event.
    pub fn next_time(&self) -> Option<u64> {
        self.by_time.first_key_value().map(|(&at, _)| at)
    }

    /// Removes and returns the earliest event (the first queued among the earliest).
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let mut first = self.by_time.first_entry()?;
        let at = *first.key();
        let event = first.get_mut().pop_front();
        if first.get().is_empty() {
            let fifo = first.remove();
            if self.spare.len() < SPARE_QUEUES_MAX {
                self.spare.push(fifo);
            }
        }
        // Every FIFO in the map holds at least one event: empty ones are removed above.
        let event = event?;
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

    quickcheck! {
        /// Any interleaving of pushes and pops gives the order of a heap keyed by (time,
        /// insertion sequence).
        fn same_order_as_a_time_sequence_heap(ops: Vec<Option<u8>>) -> bool {
            let mut q = EventQueue::default();
            let mut heap = BinaryHeap::new();
            for (seq, op) in ops.into_iter().enumerate() {
                match op {
                    Some(t) => {
                        q.push(u64::from(t % 8), seq);
                        heap.push(Reverse((u64::from(t % 8), seq)));
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
    }
}

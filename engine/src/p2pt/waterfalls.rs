//! py2p's "waterfalls": the broadcasts already seen, keyed by (message id, timestamp), each
//! forgotten once its timestamp is [`P2PT_WATERFALL_WINDOW_S`] old (SPEC.md §25.10).

use std::collections::BTreeSet;

/// How long a seen broadcast is remembered, and how old a broadcast may be and still be
/// relayed, in seconds: py2p's 60.
pub const P2PT_WATERFALL_WINDOW_S: u64 = 60;

/// Seen entries kept at most. Past it a new broadcast is refused (neither relayed nor
/// delivered) until entries leave the window: forgetting one still in the window would let
/// its next copy pass as new, relayed and delivered again (two nodes would pass it back and
/// forth for the whole window).
pub const P2PT_WATERFALLS_MAX: usize = 65_536;

/// The seen set. Ordered by timestamp first, so pruning takes from the front.
#[derive(Debug, Default)]
pub(super) struct Waterfalls {
    seen: BTreeSet<(u64, [u8; 32])>,
}

/// What [`Waterfalls::insert`] made of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not seen before: marked seen now.
    Fresh,
    /// Seen before.
    Again,
    /// Not seen before, and the set is full of entries still in the window.
    Full,
}

impl Waterfalls {
    /// Whether a broadcast with `timestamp` is outside the window at `now_s`: older than
    /// py2p takes (`msg.time < getUTC() - 60`), or as far in the future (py2p takes those,
    /// but each would hold its seen entry until its time has passed, and a flood of them
    /// would fill the set for as long as its sender likes).
    pub(super) fn is_expired(timestamp: u64, now_s: u64) -> bool {
        timestamp < now_s.saturating_sub(P2PT_WATERFALL_WINDOW_S)
            || timestamp > now_s.saturating_add(P2PT_WATERFALL_WINDOW_S)
    }

    /// Marks (id, timestamp) seen unless it was, or the set is full. Prunes first what the
    /// window has passed at `now_s` (py2p keeps entries whose timestamp is over `now - 60`);
    /// `None`, no wall clock yet: nothing is pruned (the time would be the message's own,
    /// and one stamped far ahead wiped the set, every duplicate then passing as new).
    pub(super) fn insert(&mut self, id: [u8; 32], timestamp: u64, now_s: Option<u64>) -> Seen {
        if let Some(now_s) = now_s {
            self.prune(now_s);
        }
        if self.seen.contains(&(timestamp, id)) {
            Seen::Again
        } else if self.seen.len() >= P2PT_WATERFALLS_MAX {
            Seen::Full
        } else {
            self.seen.insert((timestamp, id));
            Seen::Fresh
        }
    }

    /// Marks the node's own broadcast seen, forgetting another entry if the set is full
    /// (the oldest: its own is never refused, and coming back it must not pass as new).
    pub(super) fn insert_own(&mut self, id: [u8; 32], timestamp: u64, now_s: u64) {
        self.prune(now_s);
        self.seen.insert((timestamp, id));
        while self.seen.len() > P2PT_WATERFALLS_MAX {
            let other = self.seen.iter().find(|e| **e != (timestamp, id)).copied();
            match other {
                Some(e) => self.seen.remove(&e),
                None => break,
            };
        }
    }

    fn prune(&mut self, now_s: u64) {
        let floor = now_s.saturating_sub(P2PT_WATERFALL_WINDOW_S);
        // Strictly below, as `is_expired` refuses: a broadcast stamped exactly `now - 60`
        // is taken, so its entry must stay (pruned, each copy passed as new).
        while self.seen.first().is_some_and(|&(t, _)| t < floor) {
            self.seen.pop_first();
        }
        // Entries stamped further ahead than a broadcast is taken (marked before the node
        // had a wall clock): their copies are refused as expired now, and left in place
        // they would never leave, filling the set for good.
        let ceiling = now_s.saturating_add(P2PT_WATERFALL_WINDOW_S);
        while self.seen.last().is_some_and(|&(t, _)| t > ceiling) {
            self.seen.pop_last();
        }
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_seen_once_and_forgotten_after_the_window() {
        let mut w = Waterfalls::default();
        assert_eq!(w.insert([1; 32], 1000, Some(1000)), Seen::Fresh);
        assert_eq!(w.insert([1; 32], 1000, Some(1010)), Seen::Again);
        // Same id, another timestamp: another broadcast to py2p.
        assert_eq!(w.insert([1; 32], 1001, Some(1010)), Seen::Fresh);
        assert!(!Waterfalls::is_expired(940, 1000));
        assert!(Waterfalls::is_expired(939, 1000));
        assert!(!Waterfalls::is_expired(1060, 1000));
        assert!(Waterfalls::is_expired(1061, 1000), "as far in the future");
        // At 1061 the entry of 1000 is out of the window and pruned.
        w.insert([2; 32], 1061, Some(1061));
        assert_eq!(w.insert([1; 32], 1000, Some(1061)), Seen::Fresh);
        // One stamped exactly `now - 60` is taken, and seen once.
        assert!(!Waterfalls::is_expired(1001, 1061));
        assert_eq!(w.insert([3; 32], 1001, Some(1061)), Seen::Fresh);
        assert_eq!(w.insert([3; 32], 1001, Some(1061)), Seen::Again);
    }

    fn id(i: u64) -> [u8; 32] {
        let mut id = [0; 32];
        id[..8].copy_from_slice(&i.to_be_bytes());
        id
    }

    #[test]
    fn a_full_set_refuses_new_pairs_and_never_forgets_one_in_the_window() {
        let mut w = Waterfalls::default();
        for i in 0..P2PT_WATERFALLS_MAX as u64 {
            assert_eq!(w.insert(id(i), 5050, Some(5000)), Seen::Fresh);
        }
        // Full of entries still in the window: a new one is refused, every time, and the
        // ones held stay seen (evicting one made its next copy pass as new).
        let new = id(u64::MAX);
        assert_eq!(w.insert(new, 5000, Some(5000)), Seen::Full);
        assert_eq!(w.insert(new, 5000, Some(5000)), Seen::Full);
        assert_eq!(w.insert(id(0), 5050, Some(5000)), Seen::Again);
        assert_eq!(w.len(), P2PT_WATERFALLS_MAX);
        // The node's own broadcast takes the oldest entry's place.
        w.insert_own(new, 5000, 5000);
        assert_eq!(w.insert(new, 5000, Some(5001)), Seen::Again);
        assert_eq!(w.len(), P2PT_WATERFALLS_MAX);
        // Once the window has passed them, there is room again.
        assert_eq!(w.insert(id(1 << 40), 5111, Some(5111)), Seen::Fresh);
        assert_eq!(w.len(), 1);
    }

    /// Before the node's first wall clock nothing expires and nothing is pruned: a message
    /// stamped far ahead (its own time standing in for the clock) wiped the set.
    #[test]
    fn without_a_wall_clock_nothing_is_pruned() {
        let mut w = Waterfalls::default();
        assert_eq!(w.insert(id(1), 1000, None), Seen::Fresh);
        assert_eq!(w.insert(id(2), u64::MAX, None), Seen::Fresh);
        assert_eq!(w.insert(id(1), 1000, None), Seen::Again);
        assert_eq!(w.len(), 2);
        // Once the clock comes, the entry stamped beyond the window ahead goes (its copies
        // are refused as expired), the one in the window stays.
        assert_eq!(w.insert(id(3), 1010, Some(1010)), Seen::Fresh);
        assert_eq!(w.len(), 2);
        assert_eq!(w.insert(id(1), 1000, Some(1010)), Seen::Again);
    }
}

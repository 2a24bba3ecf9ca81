//! py2p's "waterfalls": the broadcasts already seen, keyed by (message id, timestamp), each
//! forgotten once its timestamp is [`P2PT_WATERFALL_WINDOW_S`] old (SPEC.md §25.10).

use std::collections::BTreeSet;

/// How long a seen broadcast is remembered, and how old a broadcast may be and still be
/// relayed, in seconds: py2p's 60.
pub const P2PT_WATERFALL_WINDOW_S: u64 = 60;

/// Seen entries kept at most; past it the oldest (by timestamp) are forgotten first.
pub const P2PT_WATERFALLS_MAX: usize = 65_536;

/// The seen set. Ordered by timestamp first, so pruning takes from the front.
#[derive(Debug, Default)]
pub(super) struct Waterfalls {
    seen: BTreeSet<(u64, [u8; 32])>,
}

impl Waterfalls {
    /// Whether a broadcast with `timestamp` is too old to take at `now_s` (py2p:
    /// `msg.time < getUTC() - 60`).
    pub(super) fn is_expired(timestamp: u64, now_s: u64) -> bool {
        timestamp < now_s.saturating_sub(P2PT_WATERFALL_WINDOW_S)
    }

    /// Marks (id, timestamp) seen; false if it already was. Prunes what the window has
    /// passed (py2p keeps entries whose timestamp is over `now - 60`).
    pub(super) fn insert(&mut self, id: [u8; 32], timestamp: u64, now_s: u64) -> bool {
        let fresh = self.seen.insert((timestamp, id));
        let floor = now_s.saturating_sub(P2PT_WATERFALL_WINDOW_S);
        while let Some(&(t, _)) = self.seen.first() {
            if t > floor && self.seen.len() <= P2PT_WATERFALLS_MAX {
                break;
            }
            self.seen.pop_first();
        }
        fresh
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
        assert!(w.insert([1; 32], 1000, 1000));
        assert!(!w.insert([1; 32], 1000, 1010));
        // Same id, another timestamp: another broadcast to py2p.
        assert!(w.insert([1; 32], 1001, 1010));
        assert!(!Waterfalls::is_expired(940, 1000));
        assert!(Waterfalls::is_expired(939, 1000));
        // At 1061 the entry of 1000 is out of the window and pruned.
        w.insert([2; 32], 1061, 1061);
        assert!(w.insert([1; 32], 1000, 1061));
    }

    #[test]
    fn the_set_is_bounded() {
        let mut w = Waterfalls::default();
        for i in 0..(P2PT_WATERFALLS_MAX as u64 + 10) {
            let mut id = [0; 32];
            id[..8].copy_from_slice(&i.to_be_bytes());
            w.insert(id, 5000, 5000);
        }
        assert_eq!(w.len(), P2PT_WATERFALLS_MAX);
    }
}

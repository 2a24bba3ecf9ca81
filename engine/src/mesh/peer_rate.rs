//! The per-peer broadcast rate limit (SPEC.md §11.9): a token bucket on the new broadcasts
//! each peer makes this node handle, and a second one on what it sends over that rate.

use std::collections::BTreeMap;

use weft_protocol::NodeId;

use crate::rate::{RateLimit, TokenBucket};
use crate::time::Instant;

/// What to do with a peer's new broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Within the peer's rate: handle it.
    Allowed,
    /// Over the rate: drop it.
    Dropped,
    /// Over the rate, and the peer's excess allowance is spent: drop it and disconnect.
    Offender,
}

#[derive(Debug)]
struct PeerBuckets {
    broadcasts: TokenBucket,
    excess: TokenBucket,
    last: Instant,
}

/// One pair of buckets per peer that sent a broadcast, made full when its first one arrives
/// and forgotten when its link goes down. At most `peers_max` (one per connection the node
/// may hold): past it, the peer heard from longest ago is forgotten (a peer whose dedicated
/// connection closed gets no link-down notice).
#[derive(Debug)]
pub(crate) struct PeerRates {
    rate: RateLimit,
    excess: RateLimit,
    peers_max: usize,
    peers: BTreeMap<NodeId, PeerBuckets>,
}

impl PeerRates {
    pub(crate) fn new(rate: RateLimit, excess: RateLimit, peers_max: usize) -> PeerRates {
        PeerRates {
            rate,
            excess,
            peers_max: peers_max.max(1),
            peers: BTreeMap::new(),
        }
    }

    /// Judges one new broadcast from `peer` at `now`; `own`: the peer is its origin. Only an
    /// own broadcast over the rate takes from the excess allowance: a relay passing on others'
    /// is dropped, and its allowance stays whole for its own.
    pub(crate) fn admit(&mut self, peer: NodeId, now: Instant, own: bool) -> Admission {
        let (rate, excess) = (self.rate, self.excess);
        if self.peers.len() >= self.peers_max && !self.peers.contains_key(&peer) {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(n, _)| *n);
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        let buckets = self.peers.entry(peer).or_insert_with(|| PeerBuckets {
            broadcasts: TokenBucket::new(rate, now),
            excess: TokenBucket::new(excess, now),
            last: now,
        });
        buckets.last = buckets.last.max(now);
        if buckets.broadcasts.take(rate, now) {
            Admission::Allowed
        } else if !own || buckets.excess.take(excess, now) {
            Admission::Dropped
        } else {
            Admission::Offender
        }
    }

    /// `peer`'s link went down.
    pub(crate) fn forget(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn a_peer_over_its_rate_is_dropped_then_disconnected() {
        let rate = RateLimit {
            per_second: 10,
            burst: 5,
        };
        let excess = RateLimit {
            per_second: 1,
            burst: 3,
        };
        let mut r = PeerRates::new(rate, excess, 2);
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let t = Instant::ZERO;
        let got: Vec<Admission> = (0..9).map(|_| r.admit(a, t, true)).collect();
        use Admission::*;
        assert_eq!(
            got,
            [Allowed, Allowed, Allowed, Allowed, Allowed, Dropped, Dropped, Dropped, Offender]
        );
        assert_eq!(
            r.admit(b, t, true),
            Allowed,
            "another peer has its own bucket"
        );
        assert_eq!(r.admit(a, t + Duration::from_millis(100), true), Allowed);
        r.forget(a);
        assert_eq!(r.len(), 1);
        r.admit(a, t, true);
        r.admit(NodeId([3; 32]), t + Duration::from_secs(1), true);
        assert_eq!(
            r.len(),
            2,
            "bounded: the peer heard from longest ago is forgotten"
        );
    }

    /// Others' broadcasts over the rate are dropped without touching the excess allowance:
    /// a relay's own broadcast after a relayed flood is dropped, not taken for an offence.
    #[test]
    fn a_relayed_flood_spends_no_excess_allowance() {
        let rate = RateLimit {
            per_second: 10,
            burst: 2,
        };
        let excess = RateLimit {
            per_second: 1,
            burst: 1,
        };
        let mut r = PeerRates::new(rate, excess, 2);
        let relay = NodeId([1; 32]);
        let t = Instant::ZERO;
        let got: Vec<Admission> = (0..100).map(|_| r.admit(relay, t, false)).collect();
        use Admission::*;
        assert_eq!(&got[..3], [Allowed, Allowed, Dropped]);
        assert!(got[2..].iter().all(|a| *a == Dropped));
        assert_eq!(
            r.admit(relay, t, true),
            Dropped,
            "its own: the allowance is whole"
        );
        assert_eq!(r.admit(relay, t, true), Offender);
    }
}

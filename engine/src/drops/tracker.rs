//! The drops tracker from a holder's and a subscriber's side (SPEC.md §24.6; the records and
//! what the ring admits are §20.9): a node that holds a drop announces a signed holder record
//! of it on the Chord ring, and a subscriber looks the drop's holders up there and dials them.
//!
//! This is bookkeeping only: which drops are due an announcement, which Chord requests are
//! under way and what each is for, the requests themselves, and the checks a holder record
//! must pass before its address is dialed. The drops protocol sends the requests (as
//! `Command::Chord`, their ends coming back through `DropsProtocol::handle_chord_answer`) and
//! the dials (`ProtocolOutput::Dial`).

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::rand_core::RngCore;
use weft_protocol::{
    holders_key, node_key_key, DropId, HolderRecord, NodeId, HOLDER_LIFETIME, HOLDER_LIFETIME_MAX,
};

use crate::chord::{ChordCommand, ChordItem, ChordRequest};
use crate::identity::Identity;

/// Most holders one lookup dials: the records a get returns (up to `tracker_holders_max`, 64,
/// of any ids, SPEC.md §20.9) are shuffled and this many of those not linked are dialed.
pub const DROP_HOLDERS_DIALED_MAX: usize = 8;

/// What a Chord request of the tracker's is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// This node's holder record of the drop.
    Announce(DropId),
    /// This node's key record.
    NodeKey,
    /// The drop's holders.
    Lookup(DropId),
}

/// One drop's tracker counters (`weft drop status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropTracker {
    /// Holder records of this node put on the ring (announcements sent).
    pub announces: u64,
    /// Lookups of the drop's holders.
    pub lookups: u64,
    /// Valid holder records lookups returned (this node's own not counted).
    pub holders_found: u64,
    /// Holders dialed from those records.
    pub holders_dialed: u64,
}

/// Why a node does not announce now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Skip {
    /// No wall clock yet (a record's expiry is calendar time): tried again at the next sync.
    NoWallClock,
    /// No address peers could dial (none, or an unspecified IP): never announced.
    NoAddress,
}

/// The tracker's state in the drops protocol. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Whether this node is a Chord ring member: nothing is announced or looked up otherwise.
    ring: bool,
    /// Drops due an announcement: at once when this node starts holding one, at every
    /// re-announcement, and again after a put that failed.
    due: BTreeSet<DropId>,
    /// Whether a drop became due since the last announcement try: the handlers of messages
    /// and commands try only then (a drop that waits for a wall clock is tried by the sync
    /// timer, and its skip counted once per try).
    fresh: bool,
    /// Whether the key record is due (with every round of announcements).
    node_key_due: bool,
    /// Whether its last put failed: then it goes again at the next sync, announcements or not.
    node_key_retry: bool,
    /// Chord requests under way, by the tracker's number for them: at most one announcement
    /// and one lookup per drop, and one key record.
    asks: BTreeMap<u64, Ask>,
    last_ask: u64,
}

impl Tracker {
    pub(super) fn new(ring: bool) -> Tracker {
        Tracker {
            ring,
            ..Tracker::default()
        }
    }

    /// Whether this node is a ring member.
    pub(super) fn ring(&self) -> bool {
        self.ring
    }

    /// `drop` is to be announced now (a node off the ring announces nothing).
    pub(super) fn mark_due(&mut self, drop: DropId) {
        if self.ring {
            self.due.insert(drop);
            self.node_key_due = true;
            self.fresh = true;
        }
    }

    /// `drop` is to be announced at the next sync (its put failed, or it waits for a wall
    /// clock or for its announcement under way).
    pub(super) fn retry(&mut self, drop: DropId) {
        if self.ring {
            self.due.insert(drop);
        }
    }

    /// Whether a drop became due since the last try.
    pub(super) fn fresh(&self) -> bool {
        self.fresh
    }

    /// The drops due an announcement, forgotten (the caller announces them or marks them
    /// again).
    pub(super) fn take_due(&mut self) -> Vec<DropId> {
        self.fresh = false;
        core::mem::take(&mut self.due).into_iter().collect()
    }

    /// Whether a request for `ask` is under way.
    pub(super) fn asking(&self, ask: Ask) -> bool {
        self.asks.values().any(|a| *a == ask)
    }

    /// What request `request` was for, forgotten.
    pub(super) fn answered(&mut self, request: u64) -> Option<Ask> {
        self.asks.remove(&request)
    }

    /// How many requests are under way.
    pub(super) fn asks_len(&self) -> usize {
        self.asks.len()
    }

    fn command(&mut self, ask: Ask, op: ChordRequest) -> ChordCommand {
        self.last_ask += 1;
        self.asks.insert(self.last_ask, ask);
        ChordCommand {
            request: self.last_ask,
            op,
        }
    }

    /// The put of this node's holder record of `drop`: reachable at `addr`, expiring
    /// [`HOLDER_LIFETIME`] after `wall_ms`, for as long on the ring.
    pub(super) fn announce(
        &mut self,
        drop: DropId,
        identity: &Identity,
        addr: &str,
        wall_ms: u64,
    ) -> ChordCommand {
        let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
        let record = HolderRecord::sign(
            drop.0,
            &identity.public_key(),
            addr.to_owned(),
            wall_ms.saturating_add(lifetime_ms),
            |m| identity.sign(m),
        );
        let op = ChordRequest::Put {
            key: holders_key(&drop.0),
            value: record.encode(),
            lifetime_ms: Some(lifetime_ms),
        };
        self.command(Ask::Announce(drop), op)
    }

    /// The put of this node's key record, if it is due and none is under way.
    pub(super) fn node_key(&mut self, identity: &Identity) -> Option<ChordCommand> {
        if !self.node_key_due || self.asking(Ask::NodeKey) {
            return None;
        }
        self.node_key_due = false;
        self.node_key_retry = false;
        let op = ChordRequest::Put {
            key: node_key_key(&identity.node_id()),
            value: identity.public_key().0.to_vec(),
            lifetime_ms: Some(HOLDER_LIFETIME.as_millis() as u64),
        };
        Some(self.command(Ask::NodeKey, op))
    }

    /// The key record's put failed: it goes again at the next sync.
    pub(super) fn node_key_failed(&mut self) {
        self.node_key_due = true;
        self.node_key_retry = true;
    }

    /// The put of this node's key record if its last one failed (and none is under way).
    pub(super) fn node_key_again(&mut self, identity: &Identity) -> Option<ChordCommand> {
        if !self.node_key_retry {
            return None;
        }
        self.node_key(identity)
    }

    /// The get of `drop`'s holders.
    pub(super) fn lookup(&mut self, drop: DropId) -> ChordCommand {
        let op = ChordRequest::Get {
            key: holders_key(&drop.0),
        };
        self.command(Ask::Lookup(drop), op)
    }

    /// Forgets every request under way (the node shuts down: none will end).
    pub(super) fn clear(&mut self) {
        self.asks.clear();
        self.due.clear();
    }
}

/// The address this node announces, or why there is none: its listen address (the
/// announced one, if configured), unless it has none or its IP is unspecified.
pub(super) fn announce_addr(listen: Option<&str>) -> Result<&str, Skip> {
    match listen {
        Some(addr) if !addr.is_empty() && !is_unspecified(addr) => Ok(addr),
        _ => Err(Skip::NoAddress),
    }
}

fn is_unspecified(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
}

/// The holders a lookup of `drop` answered that may be dialed, and how many records were
/// refused. A record counts only if it decodes, names `drop`, verifies under its writer's key
/// (so its holder is the writer's node id), and expires in (W, W + [`HOLDER_LIFETIME_MAX`]],
/// W = `wall_ms` (none known: every record is refused). This node's own record is skipped,
/// uncounted.
pub(super) fn holders(
    items: &[ChordItem],
    drop: &DropId,
    me: &NodeId,
    wall_ms: Option<u64>,
) -> (Vec<HolderRecord>, u64) {
    let mut valid = Vec::new();
    let mut refused = 0;
    for item in items {
        let record = HolderRecord::decode(&item.value).filter(|r| {
            let fresh = wall_ms.is_some_and(|w| {
                r.expires_unix_ms > w
                    && r.expires_unix_ms - w <= HOLDER_LIFETIME_MAX.as_millis() as u64
            });
            r.drop == drop.0 && fresh && r.verify(&item.writer)
        });
        match record {
            Some(r) if r.holder == *me => {}
            Some(r) => valid.push(r),
            None => refused += 1,
        }
    }
    (valid, refused)
}

/// At most [`DROP_HOLDERS_DIALED_MAX`] of `records` for which `skip` is false, drawn in an
/// order shuffled by `rng` (an attacker's many records do not always come first).
pub(super) fn pick(
    mut records: Vec<HolderRecord>,
    rng: &mut impl RngCore,
    skip: impl Fn(&NodeId) -> bool,
) -> Vec<HolderRecord> {
    records.retain(|r| !skip(&r.holder));
    // Fisher–Yates, from the protocol's own seeded stream: the same order on every replay.
    for i in (1..records.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        records.swap(i, j);
    }
    records.truncate(DROP_HOLDERS_DIALED_MAX);
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use weft_protocol::Signature;

    const WALL_MS: u64 = 1_800_000_000_000;

    fn item(writer: &Identity, record: &HolderRecord) -> ChordItem {
        ChordItem {
            writer: writer.public_key(),
            value: Bytes::from(record.encode()),
        }
    }

    fn record(signer: &Identity, drop: DropId, expires: u64) -> HolderRecord {
        HolderRecord::sign(
            drop.0,
            &signer.public_key(),
            format!("addr-of-{}", signer.node_id()),
            expires,
            |m| signer.sign(m),
        )
    }

    #[test]
    fn only_valid_fresh_records_of_the_drop_by_their_holder_are_kept() {
        let me = Identity::from_secret(&[1; 32]);
        let a = Identity::from_secret(&[2; 32]);
        let b = Identity::from_secret(&[3; 32]);
        let drop = DropId([7; 32]);
        let later = WALL_MS + HOLDER_LIFETIME.as_millis() as u64;
        let good = record(&a, drop, later);
        let mut forged = record(&b, drop, later);
        forged.signature = Signature([9; 64]);
        let items = vec![
            item(&a, &good),
            // b writes a's record: a's signature, b's entry.
            item(&b, &good),
            item(&b, &forged),
            item(&b, &record(&b, drop, WALL_MS)),
            item(&b, &record(&b, drop, WALL_MS - 1)),
            item(&b, &record(&b, DropId([8; 32]), later)),
            item(
                &b,
                &record(
                    &b,
                    drop,
                    WALL_MS + HOLDER_LIFETIME_MAX.as_millis() as u64 + 1,
                ),
            ),
            ChordItem {
                writer: b.public_key(),
                value: Bytes::from_static(b"not a record"),
            },
            item(&me, &record(&me, drop, later)),
        ];
        let (valid, refused) = holders(&items, &drop, &me.node_id(), Some(WALL_MS));
        assert_eq!(valid, vec![good.clone()]);
        assert_eq!(refused, 7);
        // Without a wall clock no expiry can be checked: nothing is taken.
        let (valid, refused) = holders(&items[..1], &drop, &me.node_id(), None);
        assert!(valid.is_empty());
        assert_eq!(refused, 1);
    }

    #[test]
    fn a_pick_skips_the_linked_is_bounded_and_replays_the_same() {
        let drop = DropId([7; 32]);
        let records: Vec<HolderRecord> = (10..40u8)
            .map(|s| record(&Identity::from_secret(&[s; 32]), drop, WALL_MS))
            .collect();
        let linked = records[0].holder;
        let one = pick(records.clone(), &mut ChaCha8Rng::seed_from_u64(5), |n| {
            *n == linked
        });
        let two = pick(records.clone(), &mut ChaCha8Rng::seed_from_u64(5), |n| {
            *n == linked
        });
        assert_eq!(one.len(), DROP_HOLDERS_DIALED_MAX);
        assert_eq!(one, two);
        assert!(one.iter().all(|r| r.holder != linked));
        let mut distinct: Vec<NodeId> = one.iter().map(|r| r.holder).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), DROP_HOLDERS_DIALED_MAX);
    }

    #[test]
    fn only_a_dialable_address_is_announced() {
        assert_eq!(announce_addr(Some("192.0.2.1:7000")), Ok("192.0.2.1:7000"));
        assert_eq!(announce_addr(Some("node1")), Ok("node1"));
        for bad in [None, Some(""), Some("0.0.0.0:7000"), Some("[::]:7000")] {
            assert_eq!(announce_addr(bad), Err(Skip::NoAddress), "{bad:?}");
        }
    }
}

//! The sync table: a dictionary kept alike on every node of a mesh (SPEC.md §19).
//!
//! Writes are stamped by a hybrid logical clock (`hlc`), flooded as TABLE_WRITE, and judged
//! per key in id order (`key`): last writer wins, and a write inside another node's lease is
//! refused, everywhere alike. Deletes leave tombstones, reclaimed past the reclaim horizon,
//! below which writes are refused. A link coming up, and the repair timer, run an
//! anti-entropy exchange (`sync`): bucket digests, then the writes of differing buckets.
//! Every write is signed by its writer (`sign`); a received write is checked against this
//! node's policy (`Table::admit`) and its signature before it is held.

mod hlc;
mod key;
mod persist;
mod protocol;
mod sign;
mod sync;

#[cfg(test)]
mod props;

use std::collections::{BTreeMap, VecDeque};

use weft_protocol::{NodeId, TableWrite, TABLE_KEY_BYTES_MAX, TABLE_VALUE_BYTES_MAX};

use crate::time::Duration;

use hlc::HlcClock;
pub use key::Lease;
use key::{KeyState, Offer};
pub(crate) use protocol::TableProtocol;
pub use protocol::{TableCommand, TableEvent, TableMetrics, TableRefusal};
pub(crate) use sign::Signer;

/// The table's bounds (from [`crate::Limits`] and [`crate::Timers`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableLimits {
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
    pub(crate) entries_max: usize,
    pub(crate) key_writes_max: usize,
    pub(crate) bytes_max: usize,
    pub(crate) lease_max: Duration,
    pub(crate) reclaim_horizon: Duration,
    pub(crate) clock_skew_max: Duration,
}

/// What became of a write received from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// New: held, judged, and to be relayed.
    New,
    /// Held already (or folded away): nothing to do.
    Duplicate,
    /// Older than the reclaim floor, or below the key's fold point: refused, not relayed.
    TooOld,
    /// Stamped more than `table_clock_skew_max` ahead of this node's wall clock (or received
    /// before it has one): refused, not observed by the clock, not relayed.
    TooNew,
    /// A lease longer than this node's `table_lease_max`: refused, not relayed.
    LeaseTooLong,
    /// Past this node's limits (a new key past twice `table_entries_max`, the table past
    /// twice `table_bytes_max`, or a key or value longer than this node allows): dropped.
    Dropped,
}

/// The table sub-machine and its read-only view for the application ([`crate::Node::table`]).
#[derive(Debug)]
pub struct Table {
    me: NodeId,
    signer: Signer,
    incarnation: u64,
    keys: BTreeMap<Vec<u8>, KeyState>,
    clock: HlcClock,
    /// Writes with `hlc.ms` below this are refused; tombstones below it are reclaimed.
    floor_ms: u64,
    limits: TableLimits,
    /// Encoded bytes of every held write.
    bytes: usize,
    events: VecDeque<TableEvent>,
}

impl Table {
    pub(crate) fn new(signer: Signer, incarnation: u64, limits: TableLimits) -> Table {
        Table {
            me: signer.node(),
            signer,
            incarnation,
            keys: BTreeMap::new(),
            clock: HlcClock::default(),
            floor_ms: 0,
            limits,
            bytes: 0,
            events: VecDeque::new(),
        }
    }

    // ----- reads --------------------------------------------------------------------------

    /// The value of `key`, if it is set.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.keys.get(key).and_then(|k| k.value())
    }

    /// Every set key and its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.keys
            .iter()
            .filter_map(|(k, s)| s.value().map(|v| (k.as_slice(), v)))
    }

    /// The lease in force on `key` after every write held: its owner and end (Unix ms).
    pub fn lease(&self, key: &[u8]) -> Option<Lease> {
        self.keys.get(key).and_then(|k| k.lease())
    }

    /// The write that set (or deleted) `key` last, if any is held.
    pub fn current(&self, key: &[u8]) -> Option<&TableWrite> {
        self.keys.get(key).and_then(|k| k.current())
    }

    /// Every held write of `key`, oldest first, each with the lease that refused it (`None`
    /// if accepted). The first may stand for writes folded away before it.
    pub fn writes<'a>(
        &'a self,
        key: &[u8],
    ) -> impl Iterator<Item = (&'a TableWrite, Option<Lease>)> + 'a {
        self.keys.get(key).into_iter().flat_map(|k| k.writes())
    }

    /// Keys held, tombstones included, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.keys.keys().map(Vec::as_slice)
    }

    /// Keys held, tombstones included.
    pub fn entries_len(&self) -> usize {
        self.keys.len()
    }

    /// Writes held over all keys.
    pub fn writes_len(&self) -> usize {
        self.keys.values().map(KeyState::held).sum()
    }

    /// Encoded bytes of every held write.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The reclaim floor: writes stamped before this Unix ms are refused.
    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }

    // ----- local writes -------------------------------------------------------------------

    /// A local set (`value`) or delete (`None`) at wall-clock `wall_ms`. Returns the write to
    /// flood, signed, or `None` if a lease held by another node refused it (a `TableRefused`
    /// event says so). A write the clock cannot stamp later than every write held, within
    /// `table_clock_skew_max` of the wall clock, is refused (`ClockAhead`): peers would
    /// refuse it, or it would lose to what is held.
    pub(crate) fn write(
        &mut self,
        wall_ms: Option<u64>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        lease: Option<Duration>,
    ) -> Result<Option<TableWrite>, TableRefusal> {
        let wall_ms = wall_ms.ok_or(TableRefusal::NoWallClock)?;
        let key_max = self.key_max();
        if key.is_empty() || key.len() > key_max {
            return Err(TableRefusal::KeyLength {
                len: key.len(),
                max: key_max,
            });
        }
        let value_max = self.value_max();
        if let Some(v) = value.as_ref().filter(|v| v.len() > value_max) {
            return Err(TableRefusal::ValueTooLarge {
                len: v.len(),
                max: value_max,
            });
        }
        if let Some(l) = lease {
            if l.as_millis() == 0 || l > self.limits.lease_max || value.is_none() {
                return Err(TableRefusal::Lease {
                    ms: l.as_millis(),
                    max_ms: self.limits.lease_max.as_millis(),
                });
            }
        }
        if !self.keys.contains_key(&key) && self.keys.len() >= self.limits.entries_max {
            return Err(TableRefusal::Full {
                max: self.limits.entries_max,
            });
        }
        let latest_ms = wall_ms.saturating_add(self.limits.clock_skew_max.as_millis());
        let clock_ahead = TableRefusal::ClockAhead {
            latest_ms: self.clock.last().ms,
        };
        let hlc = self
            .clock
            .peek(wall_ms)
            .filter(|hlc| hlc.ms <= latest_ms)
            .ok_or_else(|| clock_ahead.clone())?;
        let lease_until_ms = match lease {
            None => None,
            Some(l) => Some(
                hlc.ms
                    .checked_add(l.as_millis())
                    .ok_or_else(|| clock_ahead.clone())?,
            ),
        };
        let mut write = TableWrite {
            hlc,
            node: self.me,
            incarnation: self.incarnation,
            key,
            value,
            lease_until_ms,
            public_key: Default::default(),
            signature: Default::default(),
        };
        // A delete of a held key is never refused for bytes: it is what frees them (its
        // fold reclaims the key's writes), and a full table refused every delete for good.
        if !self.frees_bytes(&write) && self.bytes + write.encoded_len() > self.limits.bytes_max {
            return Err(TableRefusal::TooLarge {
                max: self.limits.bytes_max,
            });
        }
        self.clock.take(hlc);
        let key = write.key.clone();
        let in_force = self.lease(&key);
        if let Some((owner, until_ms)) = in_force.filter(|&(o, u)| o != self.me && hlc.ms < u) {
            self.events.push_back(TableEvent::Refused {
                key,
                owner,
                until_ms,
            });
            return Ok(None);
        }
        self.signer.sign(&mut write);
        self.apply(write.clone());
        Ok(Some(write))
    }

    /// Ends this node's lease on `key` early: writes the current value again without one.
    pub(crate) fn release(
        &mut self,
        wall_ms: Option<u64>,
        key: Vec<u8>,
    ) -> Result<Option<TableWrite>, TableRefusal> {
        let wall = wall_ms.ok_or(TableRefusal::NoWallClock)?;
        let owned = self
            .lease(&key)
            .is_some_and(|(owner, until)| owner == self.me && wall < until);
        let value = self.get(&key).map(<[u8]>::to_vec);
        if !owned || value.is_none() {
            return Err(TableRefusal::NotLeaseOwner);
        }
        self.write(wall_ms, key, value, None)
    }

    // ----- remote writes ------------------------------------------------------------------

    /// What becomes of a received write under this node's policy, without its signature:
    /// `None` if it is to be held (once its signature verifies), else why not. Cheap, so only
    /// writes to be held are verified. With `wall_ms` (the receiver's wall clock) a stamp
    /// more than `table_clock_skew_max` ahead of it is refused; `None` skips that check (a
    /// write loaded from the host, checked when it was first received).
    pub(crate) fn admit(&self, write: &TableWrite, wall_ms: Option<u64>) -> Option<Received> {
        if write.hlc.ms < self.floor_ms {
            return Some(Received::TooOld);
        }
        match self
            .keys
            .get(&write.key)
            .and_then(|k| k.classify(write.id()))
        {
            Some(Offer::Duplicate) => return Some(Received::Duplicate),
            Some(_) => return Some(Received::TooOld),
            None => {}
        }
        let skew = self.limits.clock_skew_max.as_millis();
        if wall_ms.is_some_and(|wall| write.hlc.ms > wall.saturating_add(skew)) {
            return Some(Received::TooNew);
        }
        let lease_max = self.limits.lease_max.as_millis();
        if write
            .lease_until_ms
            .is_some_and(|until| until.saturating_sub(write.hlc.ms) > lease_max)
        {
            return Some(Received::LeaseTooLong);
        }
        let new_key_over = !self.keys.contains_key(&write.key)
            && self.keys.len() >= self.limits.entries_max.saturating_mul(2);
        let bytes_over = !self.frees_bytes(write)
            && self.bytes + write.encoded_len() > self.limits.bytes_max.saturating_mul(2);
        let too_long = write.key.len() > self.key_max()
            || write
                .value
                .as_ref()
                .is_some_and(|v| v.len() > self.value_max());
        (new_key_over || bytes_over || too_long).then_some(Received::Dropped)
    }

    /// Whether `write` turns a key's live value into a tombstone: a delete newer than the
    /// key's current write, which holds a value. Exempt from the byte bounds (a full table
    /// refused every delete for good): at most one such delete per live key, as the next
    /// finds a tombstone, so they take the table at most [`DELETE_BYTES_OVER_KEY_MAX`] plus
    /// a key per key past its bound.
    fn frees_bytes(&self, write: &TableWrite) -> bool {
        write.value.is_none()
            && self
                .current(&write.key)
                .is_some_and(|c| c.value.is_some() && write.id() > c.id())
    }

    /// A write from a peer (flooded, from anti-entropy, or loaded from the host), its
    /// signature already verified: held, judged and observed by the clock if [`Self::admit`]
    /// lets it in.
    pub(crate) fn receive(&mut self, write: TableWrite, wall_ms: Option<u64>) -> Received {
        if let Some(refused) = self.admit(&write, wall_ms) {
            return refused;
        }
        self.clock.observe(write.hlc);
        self.apply(write)
    }

    /// Resumes the clock from a stamp it reached before a restart (SPEC.md §19.2): later
    /// local writes are stamped after it.
    pub(crate) fn restore_clock(&mut self, stamp: weft_protocol::Hlc) {
        self.clock.observe(stamp);
    }

    /// This node's signer, which verifies received writes.
    pub(crate) fn signer(&self) -> &Signer {
        &self.signer
    }

    fn key_max(&self) -> usize {
        self.limits.key_bytes_max.min(TABLE_KEY_BYTES_MAX)
    }

    fn value_max(&self) -> usize {
        self.limits.value_bytes_max.min(TABLE_VALUE_BYTES_MAX)
    }

    /// Holds and judges a write, and queues the events it causes.
    fn apply(&mut self, write: TableWrite) -> Received {
        let me = self.me;
        let key_hash = TableWrite::key_hash(&write.key);
        let state = self
            .keys
            .entry(write.key.clone())
            .or_insert_with(|| KeyState::new(key_hash));
        let old = state.value().map(<[u8]>::to_vec);
        let verdicts = state.own_verdicts(me);
        let key = write.key.clone();
        let bytes_before = state.bytes();
        match state.offer(write) {
            Offer::New => {}
            Offer::Duplicate => return Received::Duplicate,
            Offer::Late => {
                if state.held() == 0 {
                    self.keys.remove(&key);
                }
                return Received::TooOld;
            }
        }
        for (id, refused_by) in state.own_verdicts(me) {
            let was = verdicts.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
            if let (Some(None), Some((owner, until_ms))) = (was, refused_by) {
                self.events.push_back(TableEvent::Refused {
                    key: key.clone(),
                    owner,
                    until_ms,
                });
            }
        }
        let new = state.value().map(<[u8]>::to_vec);
        let by = state.current().map_or(me, |w| w.node);
        state.fold(self.limits.key_writes_max, self.floor_ms);
        self.bytes = self.bytes - bytes_before + state.bytes();
        if new != old {
            self.events
                .push_back(TableEvent::Changed { key, old, new, by });
        }
        Received::New
    }

    // ----- time ---------------------------------------------------------------------------

    /// Raises the reclaim floor to `wall_ms - reclaim_horizon`, folds writes below it and
    /// forgets keys whose last write is a delete below it.
    pub(crate) fn expire(&mut self, wall_ms: u64) {
        let floor = wall_ms.saturating_sub(self.limits.reclaim_horizon.as_millis());
        if floor <= self.floor_ms {
            return;
        }
        self.floor_ms = floor;
        let keep = self.limits.key_writes_max;
        self.keys.retain(|_, k| {
            k.fold(keep, floor);
            !k.reclaimable(floor)
        });
        self.bytes = self.keys.values().map(KeyState::bytes).sum();
    }

    /// The next event for the application.
    pub(crate) fn poll_event(&mut self) -> Option<TableEvent> {
        self.events.pop_front()
    }
}

/// Bytes a delete's encoding takes beyond its key, at most (SPEC.md §19.9: stamp, logical
/// count, node, incarnation, the key's length, the option tags, key, signature): the margin
/// per key by which deletes of live keys may take the table past its byte bound.
pub(crate) const DELETE_BYTES_OVER_KEY_MAX: usize = 160;

/// A table with small limits, for unit tests.
#[cfg(test)]
pub(crate) fn test_table(node: u8) -> Table {
    Table::new(test_signer(node), 1, tests::limits())
}

/// The signer of node `node` (its secret key all `node` bytes) on the test network.
#[cfg(test)]
pub(crate) fn test_signer(node: u8) -> Signer {
    Signer::new(
        crate::identity::Identity::from_secret(&[node; 32]),
        weft_protocol::NetworkId::from_name("t"),
    )
}

#[cfg(test)]
mod tests {
    use weft_protocol::Hlc;

    use super::*;

    pub(super) fn limits() -> TableLimits {
        TableLimits {
            key_bytes_max: 8,
            value_bytes_max: 8,
            entries_max: 64,
            key_writes_max: 4,
            bytes_max: 1 << 20,
            lease_max: Duration::from_secs(60),
            reclaim_horizon: Duration::from_secs(100),
            clock_skew_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn limits_are_refused_with_their_error() {
        let mut t = test_table(1);
        let w = |t: &mut Table, k: &[u8], v: Option<&[u8]>, l: Option<Duration>| {
            t.write(Some(1000), k.to_vec(), v.map(<[u8]>::to_vec), l)
        };
        assert_eq!(
            t.write(None, b"k".to_vec(), None, None),
            Err(TableRefusal::NoWallClock)
        );
        assert_eq!(
            w(&mut t, b"", None, None),
            Err(TableRefusal::KeyLength { len: 0, max: 8 })
        );
        assert_eq!(
            w(&mut t, b"123456789", None, None),
            Err(TableRefusal::KeyLength { len: 9, max: 8 })
        );
        assert_eq!(
            w(&mut t, b"k", Some(b"123456789"), None),
            Err(TableRefusal::ValueTooLarge { len: 9, max: 8 })
        );
        assert_eq!(
            w(&mut t, b"k", Some(b"v"), Some(Duration::from_secs(61))),
            Err(TableRefusal::Lease {
                ms: 61_000,
                max_ms: 60_000
            })
        );
        for i in 0..64u8 {
            assert!(w(&mut t, &[b'a', i], Some(b"v"), None).unwrap().is_some());
        }
        assert_eq!(
            w(&mut t, b"c", Some(b"v"), None),
            Err(TableRefusal::Full { max: 64 })
        );
        assert!(w(&mut t, &[b'a', 0], Some(b"w"), None).unwrap().is_some());
        assert_eq!(
            t.release(Some(1000), vec![b'a', 0]),
            Err(TableRefusal::NotLeaseOwner)
        );
    }

    #[test]
    fn the_byte_bound_refuses_local_writes_and_drops_received_ones_past_twice() {
        let mut l = limits();
        l.bytes_max = 200;
        let mut a = Table::new(test_signer(1), 1, l);
        let mut b = Table::new(
            test_signer(2),
            1,
            TableLimits {
                bytes_max: 1 << 20,
                ..l
            },
        );
        let mut sent = Vec::new();
        for i in 0..20u8 {
            match b.write(Some(1000), vec![b'k', i], Some(vec![i; 8]), None) {
                Ok(Some(w)) => sent.push(w),
                other => panic!("{other:?}"),
            }
        }
        let mut dropped = 0;
        for w in sent {
            if a.receive(w, None) == Received::Dropped {
                dropped += 1;
            }
        }
        assert!(dropped > 0 && a.bytes() <= 400, "{dropped} {}", a.bytes());
        assert_eq!(
            a.write(Some(1000), b"x".to_vec(), Some(vec![1]), None),
            Err(TableRefusal::TooLarge { max: 200 })
        );
        // A full table still takes a delete of a key it holds, its own and a received one
        // (refused, nothing could ever be deleted again), and frees the key's bytes.
        let held: Vec<Vec<u8>> = a.keys.keys().cloned().collect();
        assert!(held.len() >= 2);
        assert!(matches!(
            a.write(Some(1000), held[0].clone(), None, None),
            Ok(Some(_))
        ));
        let delete = b
            .write(Some(1000), held[1].clone(), None, None)
            .expect("b deletes")
            .expect("a delete to send");
        assert_ne!(a.receive(delete, None), Received::Dropped);
        assert!(a.current(&held[0]).is_some_and(|w| w.value.is_none()));
        assert!(a.current(&held[1]).is_some_and(|w| w.value.is_none()));
        // One per live key: deleting a tombstone again is bounded as any write (a peer's
        // repeated deletes of held keys took the table far past its bound).
        assert_eq!(
            a.write(Some(1000), held[0].clone(), None, None),
            Err(TableRefusal::TooLarge { max: 200 })
        );
        // A delete of a key it does not hold is a new key: bounded as before.
        assert_eq!(
            a.write(Some(1000), b"unheld".to_vec(), None, None),
            Err(TableRefusal::TooLarge { max: 200 })
        );
        let long = TableWrite {
            key: vec![b'k'; 9],
            ..b.current(&[b'k', 0]).expect("held").clone()
        };
        assert_eq!(
            b.receive(long, None),
            Received::Dropped,
            "key over this node's limit"
        );
    }

    #[test]
    fn horizon_reclaims_tombstones_and_refuses_older_writes() {
        let mut a = test_table(1);
        let set = a
            .write(Some(1_000), b"k".to_vec(), Some(b"v".to_vec()), None)
            .unwrap()
            .unwrap();
        a.write(Some(2_000), b"k".to_vec(), None, None).unwrap();
        a.expire(50_000);
        assert_eq!(a.entries_len(), 1, "the tombstone is within the horizon");
        a.expire(102_001);
        assert_eq!(a.entries_len(), 0, "reclaimed");
        assert_eq!(a.bytes(), 0);
        assert_eq!(
            a.receive(set, None),
            Received::TooOld,
            "the deleted key stays deleted"
        );
        assert_eq!(a.get(b"k"), None);
    }

    #[test]
    fn received_writes_past_the_lease_cap_or_the_skew_are_refused_and_not_observed() {
        let mut writer = test_table(2);
        let mut a = test_table(1);
        let wall = 1_000_000;
        let mut at = |ms: u64, lease_ms: Option<u64>| {
            let mut w = writer
                .write(
                    Some(ms),
                    b"k".to_vec(),
                    Some(b"v".to_vec()),
                    lease_ms.map(Duration::from_millis),
                )
                .unwrap()
                .unwrap();
            // As a peer with other limits might write it.
            w.lease_until_ms = lease_ms.map(|l| w.hlc.ms + l);
            writer.signer.sign(&mut w);
            w
        };
        let skew = 60_000;
        let too_new = at(wall + skew + 1, None);
        assert_eq!(a.receive(too_new, Some(wall)), Received::TooNew);
        assert_eq!(a.clock.last(), Hlc::default(), "not observed");
        assert_eq!(a.entries_len(), 0);
        let within = at(wall + skew + 2, None);
        assert_eq!(a.receive(within, Some(wall + 2)), Received::New);
        let mut long = at(wall + skew + 3, Some(1));
        long.lease_until_ms = Some(long.hlc.ms + 60_001);
        assert_eq!(a.receive(long, Some(wall + 3)), Received::LeaseTooLong);
        let longest = at(wall + skew + 4, Some(60_000));
        assert_eq!(a.receive(longest, Some(wall + 4)), Received::New);
    }

    #[test]
    fn a_local_write_the_clock_cannot_stamp_is_refused_not_lost() {
        let mut a = test_table(1);
        let end = Hlc {
            ms: u64::MAX,
            logical: u32::MAX,
        };
        // Only a wall clock at the end of time, or a write loaded without a wall clock, can
        // take the clock this far.
        let mut b = test_table(2);
        b.clock.observe(Hlc {
            ms: u64::MAX,
            logical: u32::MAX - 1,
        });
        let last = b
            .write(Some(u64::MAX), b"k".to_vec(), Some(b"b".to_vec()), None)
            .unwrap()
            .unwrap();
        assert_eq!(last.hlc, end);
        assert_eq!(a.receive(last, None), Received::New);
        assert_eq!(
            a.write(Some(1_000), b"k".to_vec(), Some(b"a".to_vec()), None),
            Err(TableRefusal::ClockAhead {
                latest_ms: u64::MAX
            })
        );
        assert_eq!(
            a.get(b"k"),
            Some(&b"b"[..]),
            "nothing claimed, nothing changed"
        );
        // A clock ahead of the wall clock by more than the skew refuses too; a lease whose
        // end would pass the largest u64 is refused, not cut short.
        let mut c = test_table(3);
        c.clock.observe(Hlc {
            ms: 200_000,
            logical: 0,
        });
        assert!(matches!(
            c.write(Some(100_000), b"k".to_vec(), None, None),
            Err(TableRefusal::ClockAhead { .. })
        ));
        assert!(c.write(Some(140_000), b"k".to_vec(), None, None).is_ok());
        let mut d = test_table(4);
        assert!(matches!(
            d.write(
                Some(u64::MAX - 10),
                b"k".to_vec(),
                Some(vec![1]),
                Some(Duration::from_millis(11))
            ),
            Err(TableRefusal::ClockAhead { .. })
        ));
        assert_eq!(d.entries_len(), 0);
    }
}

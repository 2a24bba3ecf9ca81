//! The records a node holds: signed entries of keys under ring positions, with lifetimes,
//! bounded per key, per writer and in total (SPEC.md §20.1, §20.6); a drops tracker's holders
//! key keeps one entry per holder (§20.9).

use std::collections::BTreeMap;

use weft_protocol::{
    ChordRecord, ChordValue, PublicKey, StoreOp, StoreOutcome, HOLDER_LIFETIME_MAX,
};

use crate::chord::persist::StoredEntry;
use crate::chord::ring::in_half_open;
use crate::chord::tracker::KeyRule;
use crate::time::{Duration, Instant};

/// Bytes an entry is counted for beyond its key and value: writer, seq, signature, lifetime
/// and bookkeeping.
pub const ENTRY_OVERHEAD_BYTES: usize = 128;

/// The bounds a store keeps.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Records (position, key).
    pub records_max: usize,
    /// Entries (values and tombstones) one record holds.
    pub values_per_key_max: usize,
    /// Entries (one per holder) one record of a drops tracker's holders key holds.
    pub tracker_holders_max: usize,
    /// Entries one writer holds here.
    pub writer_values_max: usize,
    /// Bytes one writer's entries take here.
    pub writer_bytes_max: usize,
    /// Bytes every entry takes.
    pub bytes_max: usize,
    /// Longest a tombstone is kept.
    pub tombstone_lifetime: Duration,
}

/// One held entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    entry: ChordValue,
    expires: Option<Instant>,
}

/// Records by (ring position, key); each holds a bounded set of signed entries, oldest first.
#[derive(Debug)]
pub struct Store {
    records: BTreeMap<(u64, Vec<u8>), Vec<Held>>,
    limits: StoreLimits,
    bytes: usize,
    /// Entries and bytes per writer.
    writers: BTreeMap<PublicKey, (usize, usize)>,
    /// Something changed since [`Store::take_changed`] last said.
    changed: bool,
}

/// The bytes an entry of `key` is counted for.
fn entry_bytes(key: &[u8], e: &ChordValue) -> usize {
    key.len() + e.value().map_or(0, <[u8]>::len) + ENTRY_OVERHEAD_BYTES
}

/// Whether `a` and `b` take the same slot of a key: under a holders key (`holders`) every
/// entry of one writer does (one record per holder); otherwise the same value of the same
/// writer does (a put or a delete of it; a writer's delete of every value is its own slot).
pub(super) fn same_slot(holders: bool, a: &ChordValue, b: &ChordValue) -> bool {
    a.writer == b.writer
        && (holders
            || (matches!(a.op, StoreOp::Delete(None)) == matches!(b.op, StoreOp::Delete(None))
                && a.value() == b.value()))
}

impl Store {
    /// An empty store with these bounds.
    pub fn new(limits: StoreLimits) -> Store {
        Store {
            records: BTreeMap::new(),
            limits,
            bytes: 0,
            writers: BTreeMap::new(),
            changed: false,
        }
    }

    /// Whether anything changed since the last call; forgets it.
    pub fn take_changed(&mut self) -> bool {
        core::mem::take(&mut self.changed)
    }

    /// Whether anything changed since [`Store::take_changed`] last said.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// Every held entry at `now` as the host stores it: its expiry turned into Unix ms by
    /// `wall_ms`, the calendar time at `now` (SPEC.md §20.8).
    pub fn stored_entries(&self, now: Instant, wall_ms: u64) -> Vec<StoredEntry> {
        let mut out = Vec::new();
        for ((position, key), values) in &self.records {
            for h in values {
                let expires_unix_ms = match h.expires {
                    Some(at) if at <= now => continue,
                    Some(at) => Some(wall_ms.saturating_add(at.saturating_since(now).as_millis())),
                    None => None,
                };
                out.push((*position, key.clone(), h.entry.clone(), expires_unix_ms));
            }
        }
        out
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes the held entries are counted for.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `key` has a record under `position`.
    pub fn holds(&self, position: u64, key: &[u8]) -> bool {
        self.records.contains_key(&(position, key.to_vec()))
    }

    fn account(&mut self, writer: PublicKey, bytes: usize, add: bool) {
        let w = self.writers.entry(writer).or_default();
        if add {
            w.0 += 1;
            w.1 += bytes;
            self.bytes += bytes;
        } else {
            w.0 = w.0.saturating_sub(1);
            w.1 = w.1.saturating_sub(bytes);
            self.bytes = self.bytes.saturating_sub(bytes);
            if w.0 == 0 {
                self.writers.remove(&writer);
            }
        }
    }

    /// Applies one entry whose signature, position and tracker rules the caller verified,
    /// kept by `rule`. A higher sequence number of the same writer and value (under a holders
    /// key: of the same writer) replaces the held entry; an equal one with the same op only
    /// refreshes its lifetime; a writer's delete of every value removes that writer's older
    /// entries of the key.
    pub fn apply(
        &mut self,
        now: Instant,
        position: u64,
        key: &[u8],
        rule: KeyRule,
        e: &ChordValue,
    ) -> StoreOutcome {
        let k = (position, key.to_vec());
        let holders = rule.is_holders();
        let tombstone = !e.is_put();
        let tombstone_lifetime = if holders {
            // A holder record never lives longer than this, so its tombstone need not either.
            let max = Duration::from_millis(HOLDER_LIFETIME_MAX.as_millis() as u64);
            self.limits.tombstone_lifetime.min(max)
        } else {
            self.limits.tombstone_lifetime
        };
        let lifetime = match (tombstone, e.lifetime_ms) {
            (false, l) => l.map(Duration::from_millis),
            (true, l) => Some(
                l.map(Duration::from_millis)
                    .unwrap_or(tombstone_lifetime)
                    .min(tombstone_lifetime),
            ),
        };
        let lifetime = match (lifetime, rule) {
            (
                Some(l),
                KeyRule::Holders {
                    record_left_ms: Some(left),
                },
            ) => Some(l.min(Duration::from_millis(left))),
            (
                None,
                KeyRule::Holders {
                    record_left_ms: Some(left),
                },
            ) => Some(Duration::from_millis(left)),
            (l, _) => l,
        };
        let expires = lifetime.map(|d| now + d);
        if holders {
            // Expired holder entries never count against the bound.
            self.remove_where(&k, |h| h.expires.is_some_and(|at| at <= now));
        }
        let held = self.records.get(&k).map(Vec::as_slice).unwrap_or_default();
        // The writer's delete of every value is a floor under its other entries.
        if let Some(floor) = held
            .iter()
            .find(|h| h.entry.writer == e.writer && matches!(h.entry.op, StoreOp::Delete(None)))
        {
            let same = matches!(e.op, StoreOp::Delete(None));
            if e.seq < floor.entry.seq || (e.seq == floor.entry.seq && !same) {
                return StoreOutcome::Stale;
            }
        }
        if let Some(i) = held.iter().position(|h| same_slot(holders, &h.entry, e)) {
            let old = &held[i];
            if old.entry.seq > e.seq || (old.entry.seq == e.seq && old.entry.op != e.op) {
                return StoreOutcome::Stale;
            }
            if old.entry.seq == e.seq {
                // The same entry again (a repair, a handover, a resend): keep the longer life.
                let expires = match (old.expires, expires) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ if tombstone => old.expires,
                    _ => None,
                };
                if let Some(values) = self.records.get_mut(&k) {
                    self.changed |= values[i].expires != expires;
                    values[i].expires = expires;
                }
                return StoreOutcome::Stored;
            }
        }
        // The entries `e` replaces: its slot, or the writer's older entries under a delete of
        // every value. All are the writer's. The bounds are judged as if they were gone, and
        // they go only if `e` is stored: a refusal evicts nothing.
        let delete_all = matches!(e.op, StoreOp::Delete(None));
        let replaced = |h: &Held| {
            if delete_all {
                h.entry.writer == e.writer && h.entry.seq < e.seq
            } else {
                same_slot(holders, &h.entry, e)
            }
        };
        let count_gone = held.iter().filter(|h| replaced(h)).count();
        let bytes_gone: usize = held
            .iter()
            .filter(|h| replaced(h))
            .map(|h| entry_bytes(key, &h.entry))
            .sum();
        let count = held.len() - count_gone;
        // A record the new entry empties and refills is not a new record.
        let records = self.records.len() - usize::from(!held.is_empty() && count == 0);
        let bytes = entry_bytes(key, e);
        let (w_count, w_bytes) = self.writers.get(&e.writer).copied().unwrap_or_default();
        let (w_count, w_bytes) = (
            w_count.saturating_sub(count_gone),
            w_bytes.saturating_sub(bytes_gone),
        );
        let key_max = if holders {
            self.limits.tracker_holders_max
        } else {
            self.limits.values_per_key_max
        };
        let outcome = if count == 0 && records >= self.limits.records_max {
            StoreOutcome::StoreFull
        } else if count >= key_max {
            StoreOutcome::KeyFull
        } else if w_count >= self.limits.writer_values_max
            || w_bytes + bytes > self.limits.writer_bytes_max
        {
            StoreOutcome::WriterFull
        } else if self.bytes.saturating_sub(bytes_gone) + bytes > self.limits.bytes_max {
            StoreOutcome::StoreFull
        } else {
            StoreOutcome::Stored
        };
        if outcome != StoreOutcome::Stored {
            return outcome;
        }
        self.remove_where(&k, replaced);
        self.account(e.writer, bytes, true);
        self.changed = true;
        let mut entry = e.clone();
        entry.lifetime_ms = None;
        self.records
            .entry(k)
            .or_default()
            .push(Held { entry, expires });
        StoreOutcome::Stored
    }

    fn remove_where(&mut self, k: &(u64, Vec<u8>), f: impl Fn(&Held) -> bool) {
        let Some(values) = self.records.get_mut(k) else {
            return;
        };
        let mut gone = Vec::new();
        values.retain(|h| {
            let drop = f(h);
            if drop {
                gone.push((h.entry.writer, entry_bytes(&k.1, &h.entry)));
            }
            !drop
        });
        if values.is_empty() {
            self.records.remove(k);
        }
        self.changed |= !gone.is_empty();
        for (w, b) in gone {
            self.account(w, b, false);
        }
    }

    /// The live entries of `key` under `position` (tombstones included), with the time each
    /// has left.
    pub fn get(&self, now: Instant, position: u64, key: &[u8]) -> Vec<ChordValue> {
        self.records
            .get(&(position, key.to_vec()))
            .map(|values| values.iter().filter_map(|h| live(now, h)).collect())
            .unwrap_or_default()
    }

    /// Drops expired entries and emptied records.
    pub fn expire(&mut self, now: Instant) {
        let keys: Vec<(u64, Vec<u8>)> = self.records.keys().cloned().collect();
        for k in keys {
            self.remove_where(&k, |h| h.expires.is_some_and(|at| at <= now));
        }
    }

    /// Copies of every record whose position is not in (`from`, `to`]: what a node owning
    /// (`from`, `to`] no longer owns. The records stay until [`Store::remove`].
    pub fn outside(&self, now: Instant, from: u64, to: u64) -> Vec<ChordRecord> {
        self.records
            .iter()
            .filter(|((p, _), _)| !in_half_open(from, *p, to))
            .filter_map(|(k, values)| record(now, k, values))
            .collect()
    }

    /// Removes the record (`position`, `key`).
    pub fn remove(&mut self, position: u64, key: &[u8]) {
        self.remove_where(&(position, key.to_vec()), |_| true);
    }

    /// Removes and returns every record.
    pub fn take_all(&mut self, now: Instant) -> Vec<ChordRecord> {
        let out: Vec<ChordRecord> = self
            .records
            .iter()
            .filter_map(|(k, values)| record(now, k, values))
            .collect();
        self.changed |= !self.records.is_empty();
        self.records.clear();
        self.writers.clear();
        self.bytes = 0;
        out
    }
}

fn record(now: Instant, k: &(u64, Vec<u8>), values: &[Held]) -> Option<ChordRecord> {
    let values: Vec<ChordValue> = values.iter().filter_map(|h| live(now, h)).collect();
    (!values.is_empty()).then(|| ChordRecord {
        position: k.0,
        key: k.1.clone(),
        values,
    })
}

fn live(now: Instant, h: &Held) -> Option<ChordValue> {
    let lifetime_ms = match h.expires {
        Some(at) if at <= now => return None,
        Some(at) => Some(at.saturating_since(now).as_millis()),
        None => None,
    };
    Some(ChordValue {
        lifetime_ms,
        ..h.entry.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn limits() -> StoreLimits {
        StoreLimits {
            records_max: 2,
            values_per_key_max: 2,
            tracker_holders_max: 3,
            writer_values_max: 100,
            writer_bytes_max: 1 << 20,
            bytes_max: 1 << 20,
            tombstone_lifetime: Duration::from_secs(3600),
        }
    }

    fn entry(w: &Identity, seq: u64, op: StoreOp, lifetime_ms: Option<u64>) -> ChordValue {
        let writer = w.public_key();
        let signature = w.sign(&ChordValue::signed_bytes(b"k", &writer, seq, &op));
        ChordValue {
            writer,
            seq,
            op,
            lifetime_ms,
            signature,
        }
    }

    #[test]
    fn entries_are_replaced_only_by_their_writer_with_a_higher_seq() {
        let a = Identity::from_secret(&[1; 32]);
        let b = Identity::from_secret(&[2; 32]);
        let mut s = Store::new(limits());
        let t0 = Instant::ZERO;
        let put = |w, seq, v: &[u8], l| entry(w, seq, StoreOp::Put(v.to_vec()), l);
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &put(&a, 5, b"x", None)),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &put(&b, 1, b"x", Some(10))),
            StoreOutcome::Stored
        );
        assert_eq!(s.get(t0, 1, b"k").len(), 2, "one entry per writer");
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &put(&a, 9, b"y", None)),
            StoreOutcome::KeyFull
        );
        // b's delete of every value takes only b's entry.
        let del_b = entry(&b, 2, StoreOp::Delete(None), None);
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &del_b),
            StoreOutcome::Stored
        );
        let got = s.get(t0, 1, b"k");
        assert!(got.iter().any(|e| e.writer == a.public_key() && e.is_put()));
        assert!(got
            .iter()
            .all(|e| e.writer != b.public_key() || !e.is_put()));
        // An older put of b cannot come back; a delete of a's value needs a higher seq.
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &put(&b, 1, b"x", None)),
            StoreOutcome::Stale
        );
        let old_del = entry(&a, 4, StoreOp::Delete(Some(b"x".to_vec())), None);
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &old_del),
            StoreOutcome::Stale
        );
        let del = entry(&a, 6, StoreOp::Delete(Some(b"x".to_vec())), None);
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &del),
            StoreOutcome::Stored
        );
        assert!(s.get(t0, 1, b"k").iter().all(|e| !e.is_put()));
        assert_eq!(
            s.apply(t0, 1, b"k", KeyRule::Plain, &put(&a, 5, b"x", None)),
            StoreOutcome::Stale
        );
        // Tombstones expire.
        let later = t0 + Duration::from_secs(3600);
        s.expire(later);
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn a_replacement_refused_for_space_keeps_the_entry_it_would_replace() {
        let a = Identity::from_secret(&[1; 32]);
        let short = entry(&a, 1, StoreOp::Put(b"10.0.0.1:7000".to_vec()), None);
        let long = entry(&a, 2, StoreOp::Put(vec![b'x'; 200]), None);
        let holders = KeyRule::Holders {
            record_left_ms: None,
        };
        for (bytes_max, writer_bytes_max, refusal) in [
            (
                1 << 20,
                entry_bytes(b"k", &short) + 50,
                StoreOutcome::WriterFull,
            ),
            (
                entry_bytes(b"k", &short) + 50,
                1 << 20,
                StoreOutcome::StoreFull,
            ),
        ] {
            let mut s = Store::new(StoreLimits {
                bytes_max,
                writer_bytes_max,
                ..limits()
            });
            assert_eq!(
                s.apply(Instant::ZERO, 1, b"k", holders, &short),
                StoreOutcome::Stored
            );
            // A holder's next record, too long for what is left: refused, and the one it
            // would have replaced is still held, its bytes still counted.
            assert_eq!(s.apply(Instant::ZERO, 1, b"k", holders, &long), refusal);
            let held = s.get(Instant::ZERO, 1, b"k");
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].seq, 1);
            assert_eq!(s.bytes(), entry_bytes(b"k", &short));
            // One that fits replaces it.
            let next = entry(&a, 3, StoreOp::Put(b"10.0.0.1:7001".to_vec()), None);
            assert_eq!(
                s.apply(Instant::ZERO, 1, b"k", holders, &next),
                StoreOutcome::Stored
            );
            assert_eq!(s.get(Instant::ZERO, 1, b"k")[0].seq, 3);
            assert_eq!(s.bytes(), entry_bytes(b"k", &next));
        }
    }

    #[test]
    fn outside_copies_what_a_range_no_longer_owns() {
        let a = Identity::from_secret(&[1; 32]);
        let mut s = Store::new(StoreLimits {
            records_max: 100,
            ..limits()
        });
        let e = entry(&a, 1, StoreOp::Put(b"v".to_vec()), None);
        for p in [5u64, 15, 25] {
            s.apply(Instant::ZERO, p, b"k", KeyRule::Plain, &e);
        }
        let moved = s.outside(Instant::ZERO, 10, 20);
        let positions: Vec<u64> = moved.iter().map(|r| r.position).collect();
        assert_eq!(positions, vec![5, 25]);
        assert_eq!(s.len(), 3, "copies stay until removed");
        s.remove(5, b"k");
        assert!(!s.holds(5, b"k") && s.len() == 2);
    }
}

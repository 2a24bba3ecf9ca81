//! The records a node holds: values of keys under ring positions, with lifetimes.

use std::collections::BTreeMap;

use weft_protocol::{ChordRecord, ChordValue, StoreOp};

use crate::chord::ring::in_half_open;
use crate::time::{Duration, Instant};

/// One held value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    value: Vec<u8>,
    expires: Option<Instant>,
}

/// Records by (ring position, key); each key holds a bounded set of values, oldest first.
#[derive(Debug)]
pub struct Store {
    records: BTreeMap<(u64, Vec<u8>), Vec<Held>>,
    records_max: usize,
    values_per_key_max: usize,
}

impl Store {
    /// An empty store with these bounds.
    pub fn new(records_max: usize, values_per_key_max: usize) -> Store {
        Store {
            records: BTreeMap::new(),
            records_max,
            values_per_key_max,
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether `key` has a record under `position`.
    pub fn holds(&self, position: u64, key: &[u8]) -> bool {
        self.records.contains_key(&(position, key.to_vec()))
    }

    /// Applies a CHORD_STORE. False if a new record would go over `records_max`.
    pub fn apply(&mut self, now: Instant, position: u64, key: &[u8], op: &StoreOp) -> bool {
        match op {
            StoreOp::Put(v) => self.put(now, position, key, v),
            StoreOp::Delete(which) => {
                let k = (position, key.to_vec());
                if let Some(values) = self.records.get_mut(&k) {
                    match which {
                        Some(value) => values.retain(|h| &h.value != value),
                        None => values.clear(),
                    }
                    if values.is_empty() {
                        self.records.remove(&k);
                    }
                }
                true
            }
        }
    }

    fn put(&mut self, now: Instant, position: u64, key: &[u8], v: &ChordValue) -> bool {
        let k = (position, key.to_vec());
        if !self.records.contains_key(&k) && self.records.len() >= self.records_max {
            return false;
        }
        let expires = v.lifetime_ms.map(|ms| now + Duration::from_millis(ms));
        let values = self.records.entry(k).or_default();
        values.retain(|h| h.value != v.value);
        if !values.is_empty() && values.len() >= self.values_per_key_max {
            values.remove(0);
        }
        values.push(Held {
            value: v.value.clone(),
            expires,
        });
        true
    }

    /// The live values of `key` under `position`, with the time each has left.
    pub fn get(&self, now: Instant, position: u64, key: &[u8]) -> Vec<ChordValue> {
        self.records
            .get(&(position, key.to_vec()))
            .map(|values| values.iter().filter_map(|h| live(now, h)).collect())
            .unwrap_or_default()
    }

    /// Drops expired values and emptied records.
    pub fn expire(&mut self, now: Instant) {
        self.records.retain(|_, values| {
            values.retain(|h| h.expires.is_none_or(|at| at > now));
            !values.is_empty()
        });
    }

    /// Removes and returns every record whose position is not in (`from`, `to`]: what a node
    /// owning (`from`, `to`] no longer owns.
    pub fn take_outside(&mut self, now: Instant, from: u64, to: u64) -> Vec<ChordRecord> {
        let keys: Vec<(u64, Vec<u8>)> = self
            .records
            .keys()
            .filter(|(p, _)| !in_half_open(from, *p, to))
            .cloned()
            .collect();
        self.take(now, keys)
    }

    /// Removes and returns every record.
    pub fn take_all(&mut self, now: Instant) -> Vec<ChordRecord> {
        let keys: Vec<(u64, Vec<u8>)> = self.records.keys().cloned().collect();
        self.take(now, keys)
    }

    fn take(&mut self, now: Instant, keys: Vec<(u64, Vec<u8>)>) -> Vec<ChordRecord> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(values) = self.records.remove(&k) {
                let values: Vec<ChordValue> = values.iter().filter_map(|h| live(now, h)).collect();
                if !values.is_empty() {
                    out.push(ChordRecord {
                        position: k.0,
                        key: k.1,
                        values,
                    });
                }
            }
        }
        out
    }

    /// Merges handed-over records. Returns how many values were refused for space.
    pub fn merge(&mut self, now: Instant, records: &[ChordRecord]) -> usize {
        let mut refused = 0;
        for r in records {
            for v in &r.values {
                refused += usize::from(!self.put(now, r.position, &r.key, v));
            }
        }
        refused
    }
}

fn live(now: Instant, h: &Held) -> Option<ChordValue> {
    let lifetime_ms = match h.expires {
        Some(at) if at <= now => return None,
        Some(at) => Some(at.saturating_since(now).as_millis()),
        None => None,
    };
    Some(ChordValue {
        value: h.value.clone(),
        lifetime_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: &[u8], lifetime_ms: Option<u64>) -> StoreOp {
        StoreOp::Put(ChordValue {
            value: value.to_vec(),
            lifetime_ms,
        })
    }

    #[test]
    fn values_form_a_bounded_set_with_lifetimes() {
        let mut s = Store::new(2, 2);
        let t0 = Instant::ZERO;
        assert!(s.apply(t0, 1, b"k", &put(b"a", None)));
        assert!(s.apply(t0, 1, b"k", &put(b"b", Some(1000))));
        assert!(s.apply(t0, 1, b"k", &put(b"a", None)));
        assert_eq!(s.get(t0, 1, b"k").len(), 2);
        assert!(s.apply(t0, 1, b"k", &put(b"c", None)));
        let values: Vec<Vec<u8>> = s.get(t0, 1, b"k").into_iter().map(|v| v.value).collect();
        assert_eq!(values, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(s.apply(t0, 2, b"k", &put(b"x", Some(10))));
        assert!(!s.apply(t0, 3, b"k", &put(b"y", None)), "records_max is 2");
        let later = t0 + Duration::from_millis(10);
        assert!(s.get(later, 2, b"k").is_empty());
        s.expire(later);
        assert_eq!(s.len(), 1);
        assert!(s.apply(later, 1, b"k", &StoreOp::Delete(Some(b"a".to_vec()))));
        assert_eq!(s.get(later, 1, b"k").len(), 1);
        assert!(s.apply(later, 1, b"k", &StoreOp::Delete(None)));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn take_outside_hands_over_what_a_range_no_longer_owns() {
        let mut s = Store::new(100, 4);
        for p in [5u64, 15, 25] {
            s.apply(Instant::ZERO, p, b"k", &put(b"v", None));
        }
        let moved = s.take_outside(Instant::ZERO, 10, 20);
        let positions: Vec<u64> = moved.iter().map(|r| r.position).collect();
        assert_eq!(positions, vec![5, 25]);
        assert!(s.holds(15, b"k") && s.len() == 1);
        assert_eq!(s.merge(Instant::ZERO, &moved), 0);
        assert_eq!(s.len(), 3);
    }
}

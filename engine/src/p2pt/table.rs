//! py2p's `SyncSocket` table: keys (bin) to msgpack values, each with the owner and time of
//! its last write, under py2p's lease rules (SPEC.md §25.11).

use std::collections::BTreeMap;
use std::ops::Bound;

use weft_protocol::p2pt::rmpv::Value;

/// How long a write leases its key on a leasing (`sync1`) network, in seconds: py2p's hour.
pub const P2PT_LEASE_S: u64 = 3600;

/// Keys the table holds at most; a write of a new key past it is dropped (and counted).
pub const P2PT_TABLE_KEYS_MAX: usize = 65_536;

/// Bytes the table's keys, values and owners take at most, each value counted as its msgpack
/// bytes plus [`P2PT_VALUE_NODE_BYTES`] for each value in it (a nil is one byte on the wire and a
/// whole `Value` in memory: counting the wire alone, a table at this limit could hold 40
/// times as much).
pub const P2PT_TABLE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What one value (a nil, a number, an array's element, a map's key or value) takes in
/// memory besides its bytes: the size of an `rmpv::Value`.
pub const P2PT_VALUE_NODE_BYTES: usize = std::mem::size_of::<Value>();

/// One key's value and the write that set it.
#[derive(Debug, Clone, PartialEq)]
pub struct P2ptEntry {
    /// The value.
    pub value: Value,
    /// The writer's node id (base58 text, as bytes).
    pub owner: Vec<u8>,
    /// The write's time, Unix seconds (the writer's clock).
    pub timestamp: u64,
}

/// Why a write did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotApplied {
    /// Another owner's lease covers the key: (owner, its write's time).
    Leased(Vec<u8>, u64),
    /// A delete of a key the table does not hold, or a delta onto a value that is no map.
    Nothing,
    /// The table is at [`P2PT_TABLE_KEYS_MAX`] or [`P2PT_TABLE_BYTES_MAX`].
    Full,
}

/// The table.
#[derive(Debug, Default)]
pub(super) struct SyncTable {
    entries: BTreeMap<Vec<u8>, P2ptEntry>,
    bytes: usize,
}

/// Python's truthiness of a msgpack value (py2p's catch-up store skips a key whose value is
/// truthy).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Nil => false,
        Value::Boolean(b) => *b,
        Value::Integer(i) => i.as_i64() != Some(0) && i.as_u64() != Some(0),
        Value::F32(f) => *f != 0.0,
        Value::F64(f) => *f != 0.0,
        Value::String(s) => !s.as_bytes().is_empty(),
        Value::Binary(b) => !b.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Ext(..) => true,
    }
}

/// What `key` and its entry `e` count against [`P2PT_TABLE_BYTES_MAX`]: the owner too, which
/// a peer names (a store's fourth element, or its sender) and the entry keeps.
fn size(key: &[u8], e: &P2ptEntry) -> usize {
    key.len() + e.owner.len() + encoded(&e.value).len() + nodes(&e.value) * P2PT_VALUE_NODE_BYTES
}

/// `v` as msgpack.
fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = weft_protocol::p2pt::rmpv::encode::write_value(&mut out, v);
    out
}

/// The values in `v`, itself included.
fn nodes(v: &Value) -> usize {
    let mut count = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Map(m) => stack.extend(m.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    count
}

impl SyncTable {
    /// py2p's `__check_lease`: may a write by `owner` at `timestamp` (a delta or not) change
    /// `key` at `now_s`?
    pub(super) fn check_lease(
        &self,
        key: &[u8],
        owner: &[u8],
        timestamp: u64,
        delta: bool,
        leasing: bool,
        now_s: u64,
    ) -> Result<(), NotApplied> {
        let Some(meta) = self.entries.get(key) else {
            return Ok(());
        };
        let ok = meta.owner == owner
            || (delta && !leasing)
            || meta.timestamp < now_s.saturating_sub(P2PT_LEASE_S)
            || (meta.timestamp == timestamp && meta.owner.as_slice() > owner)
            || (meta.timestamp < timestamp && !leasing);
        if ok {
            Ok(())
        } else {
            Err(NotApplied::Leased(meta.owner.clone(), meta.timestamp))
        }
    }

    /// py2p's `__store`: sets `key` to `value` (nil deletes) if the lease rules allow it.
    pub(super) fn store(
        &mut self,
        key: Vec<u8>,
        value: Value,
        owner: Vec<u8>,
        timestamp: u64,
        leasing: bool,
        now_s: u64,
    ) -> Result<(), NotApplied> {
        self.check_lease(&key, &owner, timestamp, false, leasing, now_s)?;
        if value.is_nil() {
            let old = self.entries.remove(&key).ok_or(NotApplied::Nothing)?;
            self.bytes -= size(&key, &old);
            return Ok(());
        }
        self.put(
            key,
            P2ptEntry {
                value,
                owner,
                timestamp,
            },
        )
    }

    /// A catch-up `whisper/store` with its write's owner and time: skipped when the table
    /// holds a truthy value at `key` (py2p's `if self.data.get(key): return`), else stored.
    pub(super) fn catch_up(
        &mut self,
        key: Vec<u8>,
        value: Value,
        owner: Vec<u8>,
        timestamp: u64,
        leasing: bool,
        now_s: u64,
    ) -> Result<(), NotApplied> {
        if self.entries.get(&key).is_some_and(|e| truthy(&e.value)) {
            return Err(NotApplied::Nothing);
        }
        self.store(key, value, owner, timestamp, leasing, now_s)
    }

    /// py2p's `__delta`: merges the map `delta` into the map at `key` (an absent key starts
    /// empty). Map keys are matched by their msgpack bytes, through an index (a linear
    /// search per pair made one delta of 30,000 new keys cost seconds).
    pub(super) fn delta(
        &mut self,
        key: Vec<u8>,
        delta: Vec<(Value, Value)>,
        owner: Vec<u8>,
        timestamp: u64,
        leasing: bool,
        now_s: u64,
    ) -> Result<(), NotApplied> {
        self.check_lease(&key, &owner, timestamp, true, leasing, now_s)?;
        let mut map = match self.entries.get(&key).map(|e| &e.value) {
            None => Vec::new(),
            Some(Value::Map(m)) => m.clone(),
            Some(_) => return Err(NotApplied::Nothing),
        };
        let mut index: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (i, (k, _)) in map.iter().enumerate() {
            // A key held twice: the first is the one a delta changes.
            index.entry(encoded(k)).or_insert(i);
        }
        for (k, v) in delta {
            match index.entry(encoded(&k)) {
                std::collections::btree_map::Entry::Occupied(at) => {
                    // Every index is a position of `map`, which only grows.
                    if let Some(slot) = map.get_mut(*at.get()) {
                        slot.1 = v;
                    }
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(map.len());
                    map.push((k, v));
                }
            }
        }
        self.put(
            key,
            P2ptEntry {
                value: Value::Map(map),
                owner,
                timestamp,
            },
        )
    }

    fn put(&mut self, key: Vec<u8>, entry: P2ptEntry) -> Result<(), NotApplied> {
        let new = size(&key, &entry);
        let old = self.entries.get(&key).map(|e| size(&key, e));
        let is_new = old.is_none();
        let bytes = self.bytes - old.unwrap_or(0) + new;
        if (is_new && self.entries.len() >= P2PT_TABLE_KEYS_MAX) || bytes > P2PT_TABLE_BYTES_MAX {
            return Err(NotApplied::Full);
        }
        self.bytes = bytes;
        self.entries.insert(key, entry);
        Ok(())
    }

    /// The value at `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<&P2ptEntry> {
        self.entries.get(key)
    }

    /// Every entry, by key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &P2ptEntry)> + '_ {
        self.entries.iter()
    }

    /// The first entry after `from`, by key.
    pub(super) fn first_after(&self, from: &Bound<Vec<u8>>) -> Option<(&Vec<u8>, &P2ptEntry)> {
        self.entries
            .range::<Vec<u8>, _>((from.as_ref(), Bound::Unbounded))
            .next()
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn leases_follow_py2p() {
        let mut t = SyncTable::default();
        let now = 10_000;
        t.store(b"k".to_vec(), s("a"), b"A".to_vec(), now, true, now)
            .unwrap();
        // Another owner within the hour: refused, even with a later time.
        assert_eq!(
            t.store(b"k".to_vec(), s("b"), b"B".to_vec(), now + 5, true, now + 5),
            Err(NotApplied::Leased(b"A".to_vec(), now))
        );
        // The same owner: allowed.
        t.store(
            b"k".to_vec(),
            s("a2"),
            b"A".to_vec(),
            now + 6,
            true,
            now + 6,
        )
        .unwrap();
        // Equal times: the lower owner id wins.
        assert!(t
            .store(b"k".to_vec(), s("0"), b"0".to_vec(), now + 6, true, now + 6)
            .is_ok());
        // After the hour anyone may write.
        let later = now + 6 + P2PT_LEASE_S + 1;
        t.store(b"k".to_vec(), s("z"), b"Z".to_vec(), later, true, later)
            .unwrap();
        assert_eq!(t.get(b"k").unwrap().value, s("z"));
        // Without leases a newer write wins.
        t.store(
            b"k".to_vec(),
            s("y"),
            b"Y".to_vec(),
            later + 1,
            false,
            later + 1,
        )
        .unwrap();
        assert_eq!(t.get(b"k").unwrap().owner, b"Y".to_vec());
    }

    #[test]
    fn a_delete_removes_and_a_catch_up_never_overwrites_a_truthy_value() {
        let mut t = SyncTable::default();
        t.catch_up(b"k".to_vec(), s("a"), b"A".to_vec(), 5, true, 10)
            .unwrap();
        assert_eq!(
            t.catch_up(b"k".to_vec(), s("b"), b"A".to_vec(), 6, true, 10),
            Err(NotApplied::Nothing)
        );
        t.store(b"k".to_vec(), Value::Nil, b"A".to_vec(), 7, true, 10)
            .unwrap();
        assert_eq!(t.len(), 0);
        assert_eq!(t.bytes, 0);
        assert_eq!(
            t.store(b"k".to_vec(), Value::Nil, b"A".to_vec(), 8, true, 10),
            Err(NotApplied::Nothing)
        );
        // A falsy value is replaced by a catch-up.
        t.store(b"e".to_vec(), s(""), b"A".to_vec(), 8, true, 10)
            .unwrap();
        t.catch_up(b"e".to_vec(), s("x"), b"A".to_vec(), 9, true, 10)
            .unwrap();
        assert_eq!(t.get(b"e").unwrap().value, s("x"));
    }

    #[test]
    fn a_delta_merges_maps() {
        let mut t = SyncTable::default();
        t.delta(
            b"m".to_vec(),
            vec![(s("a"), s("1"))],
            b"A".to_vec(),
            5,
            true,
            5,
        )
        .unwrap();
        t.delta(
            b"m".to_vec(),
            vec![(s("a"), s("2")), (s("b"), s("3"))],
            b"A".to_vec(),
            6,
            true,
            6,
        )
        .unwrap();
        assert_eq!(
            t.get(b"m").unwrap().value,
            Value::Map(vec![(s("a"), s("2")), (s("b"), s("3"))])
        );
        t.store(b"x".to_vec(), s("v"), b"A".to_vec(), 7, true, 7)
            .unwrap();
        assert_eq!(
            t.delta(b"x".to_vec(), vec![], b"A".to_vec(), 8, true, 8),
            Err(NotApplied::Nothing)
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = SyncTable::default();
        let big = Value::Binary(vec![0; P2PT_TABLE_BYTES_MAX]);
        assert_eq!(
            t.store(b"k".to_vec(), big, b"A".to_vec(), 1, true, 1),
            Err(NotApplied::Full)
        );
    }

    #[test]
    fn the_bound_counts_values_in_memory_not_only_on_the_wire() {
        let mut t = SyncTable::default();
        // 65,000 nils: 65 KiB of msgpack, about 2 MiB of values in memory.
        let nils = Value::Array(vec![Value::Nil; 65_000]);
        let per_key = size(
            b"k00000",
            &P2ptEntry {
                value: nils.clone(),
                owner: b"A".to_vec(),
                timestamp: 1,
            },
        );
        assert!(per_key > 65_000 * P2PT_VALUE_NODE_BYTES, "{per_key}");
        let mut stored = 0;
        for i in 0..P2PT_TABLE_KEYS_MAX {
            let key = format!("k{i:05}").into_bytes();
            match t.store(key, nils.clone(), b"A".to_vec(), 1, false, 1) {
                Ok(()) => stored += 1,
                Err(e) => {
                    assert_eq!(e, NotApplied::Full);
                    break;
                }
            }
        }
        // Counted by the wire alone, all 1,033 writes of 64 MiB would have been stored.
        assert_eq!(stored, P2PT_TABLE_BYTES_MAX / per_key);
        assert!(stored < 40, "{stored}");
    }

    #[test]
    fn the_bound_counts_the_owner_a_peer_names() {
        // A one-byte value under a 1 MiB owner (a store's fourth element, or its sender):
        // counted by key and value alone, 65,536 such writes would hold 64 GiB of owners.
        let mut t = SyncTable::default();
        let owner = vec![b'o'; 1024 * 1024];
        let mut stored = 0;
        for i in 0..P2PT_TABLE_KEYS_MAX {
            let key = format!("k{i:05}").into_bytes();
            match t.store(key, Value::from(1), owner.clone(), 1, false, 1) {
                Ok(()) => stored += 1,
                Err(e) => {
                    assert_eq!(e, NotApplied::Full);
                    break;
                }
            }
        }
        assert_eq!(stored, 63, "{stored}");
        assert!(t.bytes <= P2PT_TABLE_BYTES_MAX);
    }

    /// The plain merge: each pair looked for in the map so far.
    fn merged_plainly(
        mut map: Vec<(Value, Value)>,
        delta: Vec<(Value, Value)>,
    ) -> Vec<(Value, Value)> {
        for (k, v) in delta {
            match map.iter_mut().find(|(old, _)| *old == k) {
                Some(slot) => slot.1 = v,
                None => map.push((k, v)),
            }
        }
        map
    }

    quickcheck::quickcheck! {
        fn a_delta_merges_as_the_plain_merge_does(held: Vec<(u8, u8)>, delta: Vec<(u8, u8)>) -> bool {
            // Few distinct keys (so pairs meet), of two kinds that are never equal.
            let value = |k: u8| if k.is_multiple_of(2) { Value::from(k % 8) } else { s(&(k % 8).to_string()) };
            let pairs = |v: &[(u8, u8)]| -> Vec<(Value, Value)> {
                v.iter().map(|&(k, x)| (value(k), Value::from(x))).collect()
            };
            let mut t = SyncTable::default();
            t.store(b"m".to_vec(), Value::Map(pairs(&held)), b"A".to_vec(), 1, false, 1).is_ok()
                && t.delta(b"m".to_vec(), pairs(&delta), b"A".to_vec(), 2, false, 2).is_ok()
                && t.get(b"m").map(|e| &e.value)
                    == Some(&Value::Map(merged_plainly(pairs(&held), pairs(&delta))))
        }
    }

    #[test]
    fn a_delta_of_many_new_keys_is_merged_in_one_pass() {
        let mut t = SyncTable::default();
        let delta: Vec<_> = (0..30_000u32)
            .map(|i| (s(&format!("{:0>90}", i)), Value::from(i)))
            .collect();
        t.delta(b"m".to_vec(), delta.clone(), b"A".to_vec(), 1, false, 1)
            .unwrap();
        t.delta(b"m".to_vec(), delta, b"A".to_vec(), 2, false, 2)
            .unwrap();
        let Some(Value::Map(m)) = t.get(b"m").map(|e| &e.value) else {
            panic!("a map")
        };
        assert_eq!(m.len(), 30_000);
    }
}

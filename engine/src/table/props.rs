//! Property tests (quickcheck): any set of writes, delivered to any number of replicas in any
//! order with duplicates, leaves every replica with the same table, the one a plain reference
//! evaluation of the whole set gives; leases are never broken; once tombstones are reclaimed,
//! delivering every write again brings no deleted key back.

use quickcheck::{Arbitrary, Gen, QuickCheck};
use weft_protocol::{Hlc, NodeId, TableWrite};

use super::{Received, Table, TableLimits};
use crate::time::Duration;

const KEYS: [&[u8]; 3] = [b"a", b"b", b"c"];
const WRITERS: u8 = 3;
const REPLICAS: usize = 3;

/// A set of writes and, per replica, the order (with repeats) it receives them in.
#[derive(Debug, Clone)]
struct Scenario {
    writes: Vec<TableWrite>,
    orders: Vec<Vec<usize>>,
}

fn below(g: &mut Gen, n: u64) -> u64 {
    u64::arbitrary(g) % n
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Scenario {
        let n = 1 + below(g, 40) as usize;
        let mut writes: Vec<TableWrite> = Vec::with_capacity(n);
        while writes.len() < n {
            let ms = 1_000 + below(g, 100);
            let node = 1 + below(g, u64::from(WRITERS)) as u8;
            let value = match below(g, 4) {
                0 => None,
                _ => Some(vec![below(g, 256) as u8]),
            };
            let lease_until_ms = match (&value, below(g, 3)) {
                (Some(_), 0) => Some(ms + 1 + below(g, 40)),
                _ => None,
            };
            let w = TableWrite {
                hlc: Hlc {
                    ms,
                    logical: below(g, 2) as u32,
                },
                node: NodeId([node; 32]),
                incarnation: 1 + below(g, 2),
                key: g.choose(&KEYS).expect("non-empty").to_vec(),
                value,
                lease_until_ms,
            };
            // Ids are unique: one writer never stamps two writes alike.
            if writes.iter().all(|x| x.id() != w.id()) {
                writes.push(w);
            }
        }
        let orders = (0..REPLICAS)
            .map(|_| {
                let mut order: Vec<usize> = (0..n).collect();
                for _ in 0..below(g, n as u64 + 1) {
                    order.push(below(g, n as u64) as usize);
                }
                for i in (1..order.len()).rev() {
                    order.swap(i, below(g, i as u64 + 1) as usize);
                }
                order
            })
            .collect();
        Scenario { writes, orders }
    }
}

fn limits() -> TableLimits {
    TableLimits {
        key_bytes_max: 8,
        value_bytes_max: 8,
        entries_max: 16,
        key_writes_max: 64,
        bytes_max: 1 << 20,
        lease_max: Duration::from_secs(60),
        reclaim_horizon: Duration::from_secs(10),
    }
}

/// The reference: sort a key's writes by id, then accept each unless an accepted earlier
/// write by another node leased the key past the write's timestamp.
fn reference(writes: &[TableWrite], key: &[u8]) -> Option<TableWrite> {
    let mut mine: Vec<&TableWrite> = writes.iter().filter(|w| w.key == key).collect();
    mine.sort_by_key(|w| w.id());
    let mut current: Option<&TableWrite> = None;
    for w in mine {
        let blocked = current.is_some_and(|c| {
            c.node != w.node && c.lease_until_ms.is_some_and(|until| w.hlc.ms < until)
        });
        if !blocked {
            current = Some(w);
        }
    }
    current.cloned()
}

/// Table state as comparable data: per key, the current write and the lease.
type State = Vec<(Vec<u8>, Option<TableWrite>, Option<(NodeId, u64)>)>;

fn state(t: &Table) -> State {
    t.keys()
        .map(|k| (k.to_vec(), t.current(k).cloned(), t.lease(k)))
        .collect()
}

fn converges(s: Scenario) -> bool {
    let mut replicas: Vec<Table> = (0..REPLICAS)
        .map(|i| Table::new(NodeId([100 + i as u8; 32]), 1, limits()))
        .collect();
    for (t, order) in replicas.iter_mut().zip(&s.orders) {
        for &i in order {
            let r = t.receive(s.writes[i].clone());
            assert!(matches!(r, Received::New | Received::Duplicate), "{r:?}");
        }
    }
    let first = state(&replicas[0]);
    for t in &replicas[1..] {
        assert_eq!(state(t), first, "replicas differ");
        assert_eq!(t.digest(), replicas[0].digest(), "digests differ");
    }
    for key in KEYS {
        let expect = reference(&s.writes, key);
        assert_eq!(
            replicas[0].current(key),
            expect.as_ref(),
            "not the reference"
        );
        assert_eq!(
            replicas[0].get(key),
            expect.as_ref().and_then(|w| w.value.as_deref()),
            "a deleted key shows a value, or a set key none"
        );
        // No accepted write lies inside another node's accepted lease.
        let mut lease: Option<(NodeId, u64)> = None;
        for (w, refused_by) in replicas[0].writes(key) {
            if refused_by.is_none() {
                assert!(
                    lease.is_none_or(|(o, u)| o == w.node || w.hlc.ms >= u),
                    "lease broken by {w:?}"
                );
                lease = w.lease_until_ms.map(|u| (w.node, u));
            }
        }
    }
    // Past the horizon the tombstones go; every write delivered again brings nothing back.
    let t = &mut replicas[0];
    let before: Vec<(Vec<u8>, Vec<u8>)> = t.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    t.expire(1_000 + 200 + 10_000 + 1);
    for w in &s.writes {
        assert_eq!(t.receive(w.clone()), Received::TooOld);
    }
    let after: Vec<(Vec<u8>, Vec<u8>)> = t.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(
        after, before,
        "a reclaimed key came back or a live one went"
    );
    assert!(t.keys().all(|k| t.get(k).is_some()), "tombstones reclaimed");
    true
}

#[test]
fn any_delivery_order_with_duplicates_converges_to_the_reference() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(converges as fn(Scenario) -> bool);
}

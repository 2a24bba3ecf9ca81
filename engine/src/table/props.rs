//! Property tests (quickcheck): any set of writes, delivered to any number of replicas in any
//! order with duplicates, leaves every replica with the same table, the one a plain reference
//! evaluation of the whole set gives; leases are never broken; once tombstones are reclaimed,
//! delivering every write again brings no deleted key back. And the same through the writers'
//! side: nodes with skewed clocks writing through `Table::write` (their own lease checks and
//! clocks), their writes delivered late, out of order and twice, end alike.

use std::sync::atomic::{AtomicUsize, Ordering};

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
                public_key: Default::default(),
                signature: Default::default(),
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
        clock_skew_max: Duration::from_secs(60),
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
        .map(|i| Table::new(crate::table::test_signer(100 + i as u8), 1, limits()))
        .collect();
    for (t, order) in replicas.iter_mut().zip(&s.orders) {
        for &i in order {
            let r = t.receive(s.writes[i].clone(), None);
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
        assert_eq!(t.receive(w.clone(), None), Received::TooOld);
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

/// A step of a run of writers: a local write, or the delivery of one sent write to a node.
#[derive(Debug, Clone)]
enum Step {
    Write {
        node: usize,
        key: usize,
        kind: u8,
        lease_ms: u64,
    },
    Deliver {
        write: usize,
        to: usize,
    },
    Tick {
        ms: u64,
    },
}

/// Writers with skewed clocks writing through `Table::write` (so their own lease checks and
/// clocks take part), their writes delivered late, out of order and twice.
#[derive(Debug, Clone)]
struct Run {
    offsets_ms: Vec<u64>,
    steps: Vec<Step>,
}

impl Arbitrary for Run {
    fn arbitrary(g: &mut Gen) -> Run {
        let offsets_ms = (0..REPLICAS).map(|_| below(g, 20_000)).collect();
        let steps = (0..below(g, 80))
            .map(|_| match below(g, 3) {
                0 => Step::Write {
                    node: below(g, REPLICAS as u64) as usize,
                    key: below(g, KEYS.len() as u64) as usize,
                    kind: below(g, 5) as u8,
                    lease_ms: 1 + below(g, 5_000),
                },
                1 => Step::Deliver {
                    write: below(g, 64) as usize,
                    to: below(g, REPLICAS as u64) as usize,
                },
                _ => Step::Tick {
                    ms: below(g, 3_000),
                },
            })
            .collect();
        Run { offsets_ms, steps }
    }
}

fn writers_converge(run: Run) -> bool {
    let mut nodes: Vec<Table> = (0..REPLICAS)
        .map(|i| Table::new(crate::table::test_signer(100 + i as u8), 1, limits()))
        .collect();
    let mut sent: Vec<TableWrite> = Vec::new();
    let mut elapsed = 0;
    for step in &run.steps {
        match *step {
            Step::Tick { ms } => elapsed += ms,
            Step::Write {
                node,
                key,
                kind,
                lease_ms,
            } => {
                let wall = 1_000_000 + run.offsets_ms[node] + elapsed;
                let t = &mut nodes[node];
                let key = KEYS[key].to_vec();
                let result = match kind {
                    0 => t.write(Some(wall), key, None, None),
                    1 => t.release(Some(wall), key),
                    2 => t.write(
                        Some(wall),
                        key,
                        Some(vec![kind]),
                        Some(Duration::from_millis(lease_ms)),
                    ),
                    _ => t.write(Some(wall), key, Some(vec![kind, node as u8]), None),
                };
                match result {
                    Ok(Some(w)) => sent.push(w),
                    Ok(None) => {
                        REFUSED_AT_THE_WRITER.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
            Step::Deliver { write, to } => {
                if let Some(w) = sent.get(write) {
                    nodes[to].receive(w.clone(), None);
                }
            }
        }
    }
    // Everything reaches everyone in the end.
    for t in &mut nodes {
        for w in &sent {
            t.receive(w.clone(), None);
        }
    }
    let first = state(&nodes[0]);
    for t in &nodes[1..] {
        assert_eq!(state(t), first, "writers differ");
    }
    for key in KEYS {
        assert_eq!(
            nodes[0].current(key),
            reference(&sent, key).as_ref(),
            "not the reference"
        );
    }
    // Each writer's stamps strictly increase.
    for (i, w) in sent.iter().enumerate() {
        for later in &sent[i + 1..] {
            if later.node == w.node {
                assert!(later.hlc > w.hlc, "a writer's clock went back");
            }
        }
    }
    true
}

/// Local writes refused under another node's lease, over every run.
static REFUSED_AT_THE_WRITER: AtomicUsize = AtomicUsize::new(0);

#[test]
fn writers_with_skewed_clocks_converge_to_the_reference() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(writers_converge as fn(Run) -> bool);
    assert!(
        REFUSED_AT_THE_WRITER.load(Ordering::Relaxed) > 0,
        "no run had a writer refuse its own write under a lease"
    );
}

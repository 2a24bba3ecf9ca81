//! The drops tracker under a Sybil flood (`--tracker-flood N`, SPEC.md §20.7, §20.9): honest
//! holders announce a drop under its holders key and re-announce every `HOLDER_REANNOUNCE`;
//! one node floods the key's replicas with N valid holder records of fresh keys (expiring as
//! late as allowed) and with forged entries of every kind; a holder that announces after the
//! flood is refused only while the key is full. At the end a get must find every honest
//! holder, and no replica may hold a forged entry.

use std::collections::BTreeSet;

use weft_engine::chord::{ChordRequest, ChordResult};
use weft_engine::protocol::{
    holders_key, key_position, node_key_key, ChordMessage, ChordStore, ChordValue, HolderRecord,
    NodeId, Signature, StoreOp, TrackerKey, CHORD_REPLICAS, HOLDER_LIFETIME, HOLDER_LIFETIME_MAX,
    HOLDER_REANNOUNCE,
};
use weft_engine::Identity;

use super::{shuffle, S};
use crate::chord_net::ChordNet;
use crate::rng::SimRng;

/// Honest holders announcing before the flood.
const HOLDERS: usize = 4;

/// Forged entries of each kind the flooding node sends.
const FORGED_PER_KIND: u32 = 8;

/// Request numbers of the flooding node's own CHORD_STOREs start here (far above any its
/// machine uses).
const FLOOD_REQUEST_BASE: u64 = 1 << 41;

/// What the tracker phase found.
#[derive(Debug, Default)]
pub(super) struct TrackerOutcome {
    /// Honest holders that announced before the flood.
    pub holders: u64,
    /// Of them, those a get of the holders key returned at the end.
    pub holders_found: u64,
    /// Valid records of fresh keys the flooding node offered.
    pub flood: u64,
    /// Of them, the most any replica of the key held at the end.
    pub flood_held: u64,
    /// Forged entries the flooding node offered.
    pub forged: u64,
    /// Forged entries any honest node held at the end (0 unless the rules are broken).
    pub forged_held: u64,
    /// Replicas that stored the holder announcing after the flood (0 while the flood fills
    /// the key: SPEC.md §20.9).
    pub late_replicas: u64,
    /// The first broken promise.
    pub violation: Option<String>,
}

/// The fresh key of flood identity `j`.
fn sybil(seed: u64, j: u32) -> Identity {
    let mut h = blake3::Hasher::new();
    h.update(b"weft sim tracker sybil\0");
    h.update(&seed.to_le_bytes());
    h.update(&j.to_le_bytes());
    Identity::from_secret(h.finalize().as_bytes())
}

/// A Chord entry of `key` in `writer`'s name, signed by `writer`.
fn entry(writer: &Identity, key: &[u8], seq: u64, op: StoreOp) -> ChordValue {
    let w = writer.public_key();
    ChordValue {
        signature: writer.sign(&ChordValue::signed_bytes(key, &w, seq, &op)),
        writer: w,
        seq,
        op,
        lifetime_ms: None,
    }
}

/// `signer`'s holder record for `drop`, naming `holder_key`'s node (forged unless they match).
fn record(
    signer: &Identity,
    holder_key: &Identity,
    drop: [u8; 32],
    addr: String,
    expires_unix_ms: u64,
) -> HolderRecord {
    HolderRecord::sign(drop, &holder_key.public_key(), addr, expires_unix_ms, |m| {
        signer.sign(m)
    })
}

/// Whether a held entry of `key` keeps the tracker's rules (expiry is the replica's to check
/// on arrival, so it is not judged here).
fn keeps_the_rules(key: &[u8], e: &ChordValue) -> bool {
    match (TrackerKey::of(key), &e.op) {
        (TrackerKey::Holders(drop), StoreOp::Put(v)) => {
            HolderRecord::decode(v).is_some_and(|r| r.drop == drop && r.verify(&e.writer))
        }
        (TrackerKey::Holders(_), StoreOp::Delete(_)) | (TrackerKey::Other, _) => true,
        (TrackerKey::NodeKey(node), op) => {
            NodeId::from_public_key(&e.writer) == node
                && match op {
                    StoreOp::Put(v) => v[..] == e.writer.0[..],
                    StoreOp::Delete(_) => true,
                }
        }
        (TrackerKey::Malformed, _) => false,
    }
}

/// Node `i` announces itself as a holder of `drop` for `HOLDER_LIFETIME`; the request number.
fn announce(net: &mut ChordNet, i: usize, drop: [u8; 32], next: &mut u64) -> u64 {
    let me = net.identity(i);
    let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
    let addr = net.peer(i).addr.clone();
    let r = record(&me, &me, drop, addr, net.wall_ms() + lifetime_ms);
    let request = *next;
    *next += 1;
    let put = ChordRequest::Put {
        key: holders_key(&drop),
        value: r.encode(),
        lifetime_ms: Some(lifetime_ms),
    };
    net.request(i, request, put);
    request
}

/// The replicas (of `requests`) each put reached, in order, from the events so far.
fn replicas(net: &mut ChordNet, requests: &[u64]) -> Vec<u64> {
    let events: Vec<_> = net.app_events.drain(..).collect();
    requests
        .iter()
        .map(|r| {
            events
                .iter()
                .find(|(_, e)| e.request == *r)
                .map_or(0, |(_, e)| match e.result {
                    Ok(ChordResult::Put { replicas, .. }) => u64::from(replicas),
                    _ => 0,
                })
        })
        .collect()
}

/// Runs the tracker phase with `count` flood records; `strict` (no loss) makes every
/// announcement's 5 replicas and every honest holder found a promise (a forged entry held is
/// a violation either way).
pub(super) fn flood(
    net: &mut ChordNet,
    rng: &mut SimRng,
    seed: u64,
    count: u32,
    next: &mut u64,
    strict: bool,
) -> TrackerOutcome {
    let mut out = TrackerOutcome::default();
    let drop =
        *blake3::hash(&[b"weft sim drop\0".as_slice(), &seed.to_le_bytes()].concat()).as_bytes();
    let key = holders_key(&drop);
    let bad = net.malicious();
    let mut honest: Vec<usize> = net.live().into_iter().filter(|&i| Some(i) != bad).collect();
    shuffle(&mut honest, rng);
    if honest.len() < HOLDERS + 2 {
        out.violation = Some(format!(
            "tracker: {} honest nodes are too few",
            honest.len()
        ));
        return out;
    }
    let holders: Vec<usize> = honest[..HOLDERS].to_vec();
    let late = honest[HOLDERS];
    let flooder = bad.unwrap_or(honest[HOLDERS + 1]);
    let reader = honest[HOLDERS + 1];
    out.holders = holders.len() as u64;

    // The honest holders announce.
    let t0 = net.now_ns();
    let requests: Vec<u64> = holders
        .iter()
        .map(|&h| announce(net, h, drop, next))
        .collect();
    net.run_until(t0 + 10 * S);
    for (h, r) in holders.iter().zip(replicas(net, &requests)) {
        if r < CHORD_REPLICAS as u64 && strict {
            out.violation.get_or_insert_with(|| {
                format!("tracker: holder {h}'s announcement stored on {r} of 5 replicas")
            });
        }
    }

    // The flood: every entry to every replica of its key, from the flooding node.
    let ring = net.true_ring();
    let mut request = FLOOD_REQUEST_BASE;
    let mut send = |net: &mut ChordNet, key: &[u8], value: ChordValue| {
        for r in 0..CHORD_REPLICAS as u8 {
            let position = key_position(key, r);
            let Some(owner) = net.true_owner(&ring, position) else {
                continue;
            };
            request += 1;
            let msg = ChordMessage::Store(ChordStore {
                request,
                position,
                key: key.to_vec(),
                value: value.clone(),
            });
            net.inject(flooder, owner, msg);
        }
    };
    let wall = net.wall_ms();
    let max_ms = HOLDER_LIFETIME_MAX.as_millis() as u64;
    let addr = |j: u32| format!("10.255.{}.{}:7000", j >> 8 & 255, j & 255);
    for j in 0..count {
        let s = sybil(seed, j);
        let r = record(&s, &s, drop, addr(j), wall + max_ms);
        send(net, &key, entry(&s, &key, wall, StoreOp::Put(r.encode())));
        out.flood += 1;
    }
    let mut forged: BTreeSet<[u8; 64]> = BTreeSet::new();
    for j in 0..FORGED_PER_KIND {
        let s = sybil(seed, count + j);
        let h = net.identity(holders[j as usize % HOLDERS]);
        let mut bad_signature = record(&s, &s, drop, addr(j), wall + max_ms);
        bad_signature.signature = Signature([j as u8; 64]);
        let holder_records = [
            // Holder ≠ writer: the honest holder's own record, and one naming it.
            record(&h, &h, drop, addr(j), wall + max_ms),
            record(&s, &h, drop, addr(j), wall + max_ms),
            bad_signature,
            // Too far ahead, and expired.
            record(&s, &s, drop, addr(j), wall + max_ms + 60_000),
            record(&s, &s, drop, addr(j), wall - 1),
        ];
        let mut entries: Vec<(Vec<u8>, ChordValue)> = holder_records
            .into_iter()
            .map(|r| (key.clone(), entry(&s, &key, wall, StoreOp::Put(r.encode()))))
            .collect();
        // Node-key records that do not hash to the node: the holder's id with the Sybil's
        // key, the Sybil's id with the holder's key, and a Sybil's delete under the holder's.
        let holder_id = node_key_key(&h.node_id());
        let own_id = node_key_key(&s.node_id());
        let put = |k: &[u8], v: [u8; 32]| entry(&s, k, wall, StoreOp::Put(v.to_vec()));
        entries.push((holder_id.clone(), put(&holder_id, s.public_key().0)));
        entries.push((own_id.clone(), put(&own_id, h.public_key().0)));
        let delete = entry(&s, &holder_id, wall, StoreOp::Delete(None));
        entries.push((holder_id.clone(), delete));
        for (k, e) in entries {
            forged.insert(e.signature.0);
            send(net, &k, e);
            out.forged += 1;
        }
    }
    // Each honest holder publishes its key, so the forged node-key records have a rival.
    for &h in &holders {
        let me = net.identity(h);
        let put = ChordRequest::Put {
            key: node_key_key(&me.node_id()),
            value: me.public_key().0.to_vec(),
            lifetime_ms: None,
        };
        net.request(h, *next, put);
        *next += 1;
    }
    net.run_until(net.now_ns() + 20 * S);
    net.app_events.clear();

    // A holder announcing after the flood; then every holder re-announces twice.
    let late_request = announce(net, late, drop, next);
    net.run_until(net.now_ns() + 10 * S);
    out.late_replicas = replicas(net, &[late_request])[0];
    let mut late_in = out.late_replicas == CHORD_REPLICAS as u64;
    let period = HOLDER_REANNOUNCE.as_millis() as u64 * 1_000_000;
    for round in 1..=2 {
        net.run_until(t0 + round * period);
        let requests: Vec<u64> = holders
            .iter()
            .chain([&late])
            .map(|&h| announce(net, h, drop, next))
            .collect();
        net.run_until(net.now_ns() + 10 * S);
        let got = replicas(net, &requests);
        for (h, &r) in holders.iter().zip(&got) {
            if r < CHORD_REPLICAS as u64 && strict {
                out.violation.get_or_insert_with(|| {
                    format!("tracker: holder {h}'s re-announcement {round} stored on {r} of 5")
                });
            }
        }
        late_in = got[HOLDERS] == CHORD_REPLICAS as u64;
    }
    // Past the first announcements' expiry: only the re-announced records hold them up.
    net.run_until(t0 + HOLDER_LIFETIME.as_millis() as u64 * 1_000_000 + 20 * S);

    // Every honest holder is found, and the get returns nothing forged.
    let get = *next;
    *next += 1;
    net.request(reader, get, ChordRequest::Get { key: key.clone() });
    net.run_until(net.now_ns() + 15 * S);
    let events: Vec<_> = net.app_events.drain(..).collect();
    let found: Vec<NodeId> = match events.iter().find(|(_, e)| e.request == get) {
        Some((_, e)) => match &e.result {
            Ok(ChordResult::Get { values }) => values
                .iter()
                .filter_map(|v| {
                    let r = HolderRecord::decode(&v.value);
                    if !r
                        .as_ref()
                        .is_some_and(|r| r.drop == drop && r.verify(&v.writer))
                    {
                        out.violation.get_or_insert_with(|| {
                            "tracker: a get returned a forged holder record".into()
                        });
                    }
                    r.map(|r| r.holder)
                })
                .collect(),
            other if strict => {
                out.violation
                    .get_or_insert_with(|| format!("tracker: the get failed: {other:?}"));
                Vec::new()
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let mut wanted: Vec<usize> = holders.clone();
    if late_in {
        wanted.push(late);
    }
    for &h in &wanted {
        let id = net.identity(h).node_id();
        if found.contains(&id) {
            out.holders_found += u64::from(h != late);
        } else if strict {
            out.violation
                .get_or_insert_with(|| format!("tracker: honest holder {h} not found"));
        }
    }

    // No honest node holds a forged entry; the flood's share of each replica.
    let now = weft_engine::Instant(net.now_ns());
    let sybil_ids: Vec<Vec<u8>> = (0..FORGED_PER_KIND)
        .map(|j| node_key_key(&sybil(seed, count + j).node_id()))
        .collect();
    let node_keys = holders
        .iter()
        .map(|&h| node_key_key(&net.identity(h).node_id()))
        .chain(sybil_ids);
    let keys: Vec<Vec<u8>> = std::iter::once(key.clone()).chain(node_keys).collect();
    let honest_holders: BTreeSet<_> = holders
        .iter()
        .chain([&late])
        .map(|&h| net.identity(h).public_key())
        .collect();
    for i in net.live().into_iter().filter(|&i| Some(i) != bad) {
        let Some(c) = net.node(i) else { continue };
        for k in &keys {
            for r in 0..CHORD_REPLICAS as u8 {
                let held = c.entries(now, key_position(k, r), k);
                out.forged_held += held
                    .iter()
                    .filter(|e| forged.contains(&e.signature.0) || !keeps_the_rules(k, e))
                    .count() as u64;
                if *k == key {
                    let flood = held
                        .iter()
                        .filter(|e| !honest_holders.contains(&e.writer))
                        .count() as u64;
                    out.flood_held = out.flood_held.max(flood);
                }
            }
        }
    }
    if out.forged_held > 0 {
        out.violation
            .get_or_insert_with(|| format!("tracker: {} forged entries held", out.forged_held));
    }
    out
}

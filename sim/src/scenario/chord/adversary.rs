//! The Chord sweep's malicious member (SPEC.md §20.7): it joins after the puts with an id
//! ground to sit just below the node holding the most records (so that node hands it its
//! keys), sends every key's holders unsigned, forged and replayed stores and deletes, and
//! answers every get with forged, replayed or no values (`ChordNet::tamper`).

use weft_engine::protocol::{key_position, ChordMessage, ChordStore, ChordValue, StoreOp};
use weft_engine::Identity;

use super::{pick_live, S};
use crate::chord_net::ChordNet;
use crate::rng::SimRng;

/// An entry of `key` in `writer`'s name, signed by `signer` (forged unless they match).
fn entry(signer: &Identity, writer: &Identity, key: &[u8], seq: u64, op: StoreOp) -> ChordValue {
    let bytes = ChordValue::signed_bytes(key, &signer.public_key(), seq, &op);
    ChordValue {
        writer: writer.public_key(),
        seq,
        op,
        lifetime_ms: None,
        signature: signer.sign(&bytes),
    }
}

/// Node `m` (a free slot) joins as the malicious member and attacks every key.
pub(super) fn attack(
    net: &mut ChordNet,
    rng: &mut SimRng,
    m: usize,
    keys: &[Vec<u8>],
    writers: &[usize],
) {
    let ring = net.true_ring();
    let Some(&victim) = ring
        .iter()
        .max_by_key(|&&i| net.node(i).map_or(0, |c| c.records_len()))
    else {
        return;
    };
    net.set_malicious(m, net.peer(victim).ring_id().wrapping_sub(1));
    let via = pick_live(net, rng);
    net.start(m, Some(via));
    let t = net.now_ns() + 10 * S;
    net.run_until(t);
    let me = net.identity(m);
    let ring = net.true_ring();
    let mut request = 1u64 << 40;
    for (k, key) in keys.iter().enumerate() {
        let writer = net.identity(writers[k]);
        let replays: Vec<ChordValue> = net
            .captured
            .iter()
            .filter(|(_, ck, _)| ck == key)
            .map(|(_, _, e)| e.clone())
            .take(2)
            .collect();
        for r in 0..weft_engine::protocol::CHORD_REPLICAS as u8 {
            let position = key_position(key, r);
            let Some(owner) = net.true_owner(&ring, position) else {
                continue;
            };
            if owner == m {
                continue;
            }
            let mut entries = vec![
                // Its own delete of every value: touches only its own entries.
                entry(&me, &me, key, u64::MAX, StoreOp::Delete(None)),
                // A put and a delete in the writer's name, signed by itself.
                entry(
                    &me,
                    &writer,
                    key,
                    u64::MAX,
                    StoreOp::Put(b"forged".to_vec()),
                ),
                entry(&me, &writer, key, u64::MAX, StoreOp::Delete(None)),
                // A value of its own (legitimate: a get returns it under its key).
                entry(&me, &me, key, 1, StoreOp::Put(b"evil".to_vec())),
            ];
            // The writer's own puts seen on the wire, replayed (deleted since, for some).
            entries.extend(replays.iter().cloned());
            for value in entries {
                request += 1;
                let msg = ChordMessage::Store(ChordStore {
                    request,
                    position,
                    key: key.clone(),
                    value,
                });
                net.inject(m, owner, msg);
            }
        }
    }
    let t = net.now_ns() + 5 * S;
    net.run_until(t);
}

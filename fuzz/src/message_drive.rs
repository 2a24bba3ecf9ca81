//! The per-family message fuzz logic, shared by `fuzz_targets/{session,mesh,table,chord}_message.rs`
//! and the corpus replay test in `protocol/tests/fuzz_corpus.rs`.
//!
//! Each target hands its input, as a payload, to `Message::decode` under every code of one
//! family (SPEC.md §6 session and discovery, §6 mesh, §19 sync table, §20 Chord) and under
//! two unassigned codes of that family. Replication (family 0x04) has its own target,
//! `replica_message` (`replica_drive.rs`), since HEREIS is not a plain postcard message.
//!
//! Depends only on `weft-protocol` and `postcard`, so the test can include it with
//! `#[path = ...] mod` without pulling in libfuzzer.

use weft_protocol::{
    key_position, Broadcast, ChordMessage, ChordPeer, ChordValue, Code, Family, Frame, Message,
    PeerInfo, ProtocolError, StoreOp, TableWrite, ADDR_BYTES_MAX, BROADCAST_SIGNATURE_DOMAIN,
    CHORD_KEY_BYTES_MAX, CHORD_PEERS_MAX, CHORD_RECORD_DOMAIN, CHORD_REPLICAS, CHORD_VALUES_MAX,
    CHORD_VALUE_BYTES_MAX, DIGEST_ENTRIES_MAX, HANDOVER_RECORDS_MAX, HELLO_PAYLOAD_BYTES_MAX,
    PAYLOAD_BYTES_MAX, PEERS_PER_MESSAGE_MAX, RANGES_PER_ENTRY_MAX, TABLE_BUCKETS,
    TABLE_BUCKET_BITS_MAX, TABLE_KEY_BYTES_MAX, TABLE_OPS_PER_MESSAGE_MAX, TABLE_VALUE_BYTES_MAX,
    TABLE_WANT_HELD_MAX, TABLE_WRITE_DOMAIN, WANT_RANGES_MAX,
};

/// Handshake, liveness and discovery messages (family 0x00).
pub fn run_session_message(data: &[u8]) {
    run_family(Family::Session, data);
}

/// Mesh broadcast and repair messages (family 0x01).
pub fn run_mesh_message(data: &[u8]) {
    run_family(Family::Mesh, data);
}

/// Sync-table messages (family 0x02).
pub fn run_table_message(data: &[u8]) {
    run_family(Family::Table, data);
}

/// Chord messages (family 0x03).
pub fn run_chord_message(data: &[u8]) {
    run_family(Family::Chord, data);
}

/// The codes `data` is decoded under: every known code of `family`, the one after its last
/// known code and its `0x..ff` (both unassigned).
pub fn family_codes(family: Family) -> Vec<Code> {
    let mut codes: Vec<Code> = Code::ALL
        .iter()
        .copied()
        .filter(|c| c.family() == Some(family))
        .collect();
    let high = u16::from(family.high_byte()) << 8;
    let last = codes.last().map_or(high, |c| c.0);
    codes.push(Code(last + 1));
    codes.push(Code(high | 0xff));
    codes
}

/// Decodes `data` as the payload of every code of `family` (see [`family_codes`]). Panics
/// only if a property below is broken:
///
/// - an unassigned code is `UnknownCommand`; a known one decodes or fails with
///   `MalformedPayload` naming that code (or `DecompressedTooLarge` past
///   `PAYLOAD_BYTES_MAX`), never anything else;
/// - a decoded message has the code it was decoded under, keeps every limit of the SPEC
///   (checked here independently of the codec), and re-encodes (as a payload, and as a frame
///   plain and compressed) to bytes that decode to the same message; the re-encoding is no
///   longer than the input (postcard's shortest varints) and encoding is deterministic;
/// - decoding is strict: one trailing byte, or the input cut short, does not decode;
/// - BROADCAST and MESH_REPAIR, decoded field by field, agree with postcard's derived
///   decoding; the helpers over decoded fields (table fingerprints and signed bytes, Chord
///   key positions and signed bytes, a broadcast's signed message) do not panic and have
///   the lengths the SPEC gives them.
pub fn run_family(family: Family, data: &[u8]) {
    for code in family_codes(family) {
        let decoded = Message::decode(code, data);
        if code == Code::BROADCAST || code == Code::MESH_REPAIR {
            check_broadcast_matches_serde(code, data, &decoded);
        }
        match decoded {
            Ok(msg) => check(code, data, &msg),
            Err(ProtocolError::UnknownCommand(c)) => {
                assert_eq!(c, code.0);
                assert!(!code.is_known(), "{code:?} is known but refused");
            }
            Err(ProtocolError::MalformedPayload { code: c, .. }) => {
                assert_eq!(c, code);
                assert!(code.is_known(), "{code:?} is unknown but malformed");
            }
            Err(ProtocolError::DecompressedTooLarge { .. }) => {
                assert!(data.len() > PAYLOAD_BYTES_MAX)
            }
            Err(e) => panic!("{code:?}: unexpected error {e:?}"),
        }
    }
}

fn check(code: Code, data: &[u8], msg: &Message<'_>) {
    assert!(code.is_known());
    assert_eq!(msg.code(), code);
    check_limits(msg);

    // Payload round trip; encoding is deterministic and uses the shortest varints.
    let payload = msg.encode_payload();
    assert!(
        payload.len() <= data.len(),
        "{code:?} re-encodes longer ({} bytes) than its input ({} bytes)",
        payload.len(),
        data.len()
    );
    let again = Message::decode(code, &payload).expect("a re-encoded message decodes");
    assert_eq!(&again, msg, "payload round trip");
    assert_eq!(again.encode_payload(), payload, "encoding is deterministic");

    // Frame round trip, plain and compressed.
    for compress in [false, true] {
        let frame =
            Frame::parse(msg.to_frame(compress).into_bytes()).expect("an encoded frame parses");
        assert_eq!(frame.code(), code);
        let inflated = frame.payload().expect("an encoded payload inflates");
        assert_eq!(inflated.as_ref(), payload.as_slice());
        let decoded = Message::decode(frame.code(), &inflated).expect("an encoded frame decodes");
        assert_eq!(&decoded, msg, "frame round trip (compress: {compress})");
    }

    // Strict: a trailing byte, or a cut, is refused.
    let refused = |bytes: &[u8], what: &str| {
        assert!(
            matches!(
                Message::decode(code, bytes),
                Err(ProtocolError::MalformedPayload { .. }
                    | ProtocolError::DecompressedTooLarge { .. })
            ),
            "{code:?}: {what} is accepted"
        )
    };
    let mut longer = data.to_vec();
    longer.push(0);
    refused(&longer, "a trailing byte");
    if !data.is_empty() {
        refused(&data[..data.len() - 1], "the input less its last byte");
        refused(&data[..data.len() / 2], "the input's first half");
    }

    check_helpers(msg);
}

/// BROADCAST and MESH_REPAIR are decoded field by field (`Broadcast::decode`) instead of by
/// serde: the same value, or an error, as the derived decoding with the same checks.
fn check_broadcast_matches_serde(
    code: Code,
    data: &[u8],
    decoded: &Result<Message<'_>, ProtocolError>,
) {
    let derived = match postcard::take_from_bytes::<Broadcast<'_>>(data) {
        Ok((b, [])) if b.seq != 0 && data.len() <= PAYLOAD_BYTES_MAX => Some(b),
        _ => None,
    };
    match (decoded, derived) {
        (Ok(Message::Broadcast(b) | Message::MeshRepair(b)), Some(d)) => assert_eq!(*b, d),
        (Err(_), None) => {}
        (got, derived) => panic!("{code:?}: field decoding {got:?}, serde {derived:?}"),
    }
}

/// What the SPEC promises of a message `Message::decode` returns, checked without the codec.
fn check_limits(msg: &Message<'_>) {
    let addr = |a: &str| assert!(a.len() <= ADDR_BYTES_MAX, "address over ADDR_BYTES_MAX");
    let peers = |p: &[PeerInfo]| {
        assert!(p.len() <= PEERS_PER_MESSAGE_MAX);
        p.iter().for_each(|p| addr(&p.addr));
    };
    let range = |first: u64, last: u64| assert!(1 <= first && first <= last, "invalid range");
    match msg {
        Message::Hello(h) => {
            h.listen_addr.as_deref().map(addr);
            assert!(msg.encode_payload().len() <= HELLO_PAYLOAD_BYTES_MAX);
        }
        Message::HelloAck(_) | Message::Ping(_) | Message::Pong(_) | Message::Bye(_) => {}
        Message::ICanSee(m) => {
            m.origin_addr.as_deref().map(addr);
            peers(&m.peers);
        }
        Message::IKnowAbout(m) => peers(&m.peers),
        Message::ICantSee(_) => {}
        Message::Broadcast(b) | Message::MeshRepair(b) => assert!(b.seq >= 1),
        Message::MeshDigest(d) => {
            assert!(d.entries.len() <= DIGEST_ENTRIES_MAX);
            for e in &d.entries {
                assert!(e.ranges.len() <= RANGES_PER_ENTRY_MAX);
                e.ranges.iter().for_each(|r| range(r.first, r.last));
            }
        }
        Message::MeshWant(w) => {
            assert!(w.wants.len() <= WANT_RANGES_MAX);
            w.wants
                .iter()
                .for_each(|w| range(w.range.first, w.range.last));
        }
        Message::TableWrite(w) => write_ok(w),
        Message::TableDigest(d) => {
            assert!(d.bits <= TABLE_BUCKET_BITS_MAX);
            assert!(d.buckets.len() <= usize::from(TABLE_BUCKETS));
            ascending_below(d.bits, d.buckets.iter().map(|b| b.bucket));
        }
        Message::TableWant(w) => {
            assert!(w.bits <= TABLE_BUCKET_BITS_MAX);
            assert!(w.buckets.len() <= usize::from(TABLE_BUCKETS));
            assert!(w.held.len() <= TABLE_WANT_HELD_MAX);
            ascending_below(w.bits, w.buckets.iter().copied());
        }
        Message::TableEntries(e) => {
            assert!(e.writes.len() <= TABLE_OPS_PER_MESSAGE_MAX);
            e.writes.iter().for_each(write_ok);
        }
        Message::Chord(c) => chord_limits(c),
        Message::Replica(r) => panic!("a replication message outside family 0x04: {r:?}"),
        other => panic!("a message this target does not know: {other:?}"),
    }
}

/// SPEC.md §19.2: a write's node is its key's hash; key 1..=1024 bytes; value within its
/// bound; a lease only on a set, and after the write's time.
fn write_ok(w: &TableWrite) {
    assert_eq!(
        w.node,
        weft_protocol::NodeId::from_public_key(&w.public_key)
    );
    assert!((1..=TABLE_KEY_BYTES_MAX).contains(&w.key.len()));
    assert!(w
        .value
        .as_ref()
        .is_none_or(|v| v.len() <= TABLE_VALUE_BYTES_MAX));
    if let Some(until) = w.lease_until_ms {
        assert!(w.value.is_some() && until > w.hlc.ms);
    }
}

/// Buckets ascending, each once, each below `2^bits`.
fn ascending_below(bits: u8, buckets: impl Iterator<Item = u16>) {
    let count = 1u32 << bits;
    let mut last = None;
    for b in buckets {
        assert!(u32::from(b) < count, "bucket {b} not below 2^{bits}");
        assert!(last.is_none_or(|l| l < b), "buckets not ascending");
        last = Some(b);
    }
}

fn chord_limits(c: &ChordMessage) {
    let peers = |p: &[ChordPeer]| {
        assert!(p.len() <= CHORD_PEERS_MAX);
        assert!(p.iter().all(|p| p.addr.len() <= ADDR_BYTES_MAX));
    };
    let value =
        |v: &ChordValue| assert!(v.value().is_none_or(|v| v.len() <= CHORD_VALUE_BYTES_MAX));
    let values = |v: &[ChordValue]| {
        assert!(v.len() <= CHORD_VALUES_MAX);
        v.iter().for_each(value);
    };
    let key = |k: &[u8]| assert!(k.len() <= CHORD_KEY_BYTES_MAX);
    match c {
        ChordMessage::Found(m) => peers(&m.peers),
        ChordMessage::State(m) => {
            peers(&m.successors);
            peers(m.predecessor.as_slice());
        }
        ChordMessage::Store(m) => {
            key(&m.key);
            value(&m.value);
        }
        ChordMessage::Fetch(m) => key(&m.key),
        ChordMessage::Values(m) => values(&m.values),
        ChordMessage::Handover(m) => {
            assert!(m.records.len() <= HANDOVER_RECORDS_MAX);
            for r in &m.records {
                key(&r.key);
                values(&r.values);
            }
        }
        ChordMessage::Find(_)
        | ChordMessage::GetState(_)
        | ChordMessage::Notify
        | ChordMessage::Stored(_) => {}
    }
}

/// The helpers the engine runs over decoded fields: no panic, and the lengths of SPEC.md
/// §6.9 (broadcast signatures), §19.7 and §19.9 (table fingerprints and signatures) and
/// §20.1 (Chord positions and record signatures).
fn check_helpers(msg: &Message<'_>) {
    let network = weft_protocol::NetworkId::from_name("fuzz");
    match msg {
        Message::Broadcast(b) | Message::MeshRepair(b) => {
            let mut out = vec![1, 2, 3];
            b.signed_message(&network, &mut out);
            assert_eq!(
                out.len(),
                BROADCAST_SIGNATURE_DOMAIN.len() + 32 + 32 + 8 + 8 + b.payload.len()
            );
            assert!(out.ends_with(b.payload));
        }
        Message::TableWrite(w) => table_write_helpers(w, &network),
        Message::TableEntries(e) => e
            .writes
            .iter()
            .for_each(|w| table_write_helpers(w, &network)),
        Message::Chord(ChordMessage::Store(s)) => chord_value_helpers(&s.key, &s.value),
        Message::Chord(ChordMessage::Fetch(f)) => chord_key_helpers(&f.key),
        Message::Chord(ChordMessage::Handover(h)) => {
            for r in &h.records {
                r.values.iter().for_each(|v| chord_value_helpers(&r.key, v));
            }
        }
        Message::Chord(ChordMessage::Found(f)) => f.peers.iter().for_each(|p| {
            p.ring_id();
        }),
        _ => {}
    }
}

fn table_write_helpers(w: &TableWrite, network: &weft_protocol::NetworkId) {
    let encoded = postcard::to_allocvec(w).expect("a write encodes");
    assert_eq!(w.encoded_len(), encoded.len(), "TableWrite::encoded_len");
    let hash = TableWrite::key_hash(&w.key);
    for bits in 0..=TABLE_BUCKET_BITS_MAX {
        assert!(u32::from(TableWrite::bucket_of(hash, bits)) < 1u32 << bits);
    }
    let _ = w.fingerprint(u64::MAX);
    let signed = w.signed_bytes(network);
    let value = w.value.as_ref().map_or(0, |v| 8 + v.len());
    let lease = if w.lease_until_ms.is_some() { 8 } else { 0 };
    assert_eq!(
        signed.len(),
        TABLE_WRITE_DOMAIN.len() + 32 + 12 + 32 + 8 + 8 + w.key.len() + 1 + value + 1 + lease
    );
    assert!(signed.starts_with(TABLE_WRITE_DOMAIN));
}

fn chord_key_helpers(key: &[u8]) {
    let positions: Vec<u64> = (0..CHORD_REPLICAS as u8)
        .map(|r| key_position(key, r))
        .collect();
    assert_eq!(positions.len(), CHORD_REPLICAS);
}

fn chord_value_helpers(key: &[u8], v: &ChordValue) {
    chord_key_helpers(key);
    let signed = ChordValue::signed_bytes(key, &v.writer, v.seq, &v.op);
    let value = match &v.op {
        StoreOp::Put(b) | StoreOp::Delete(Some(b)) => 4 + b.len(),
        StoreOp::Delete(None) => 0,
    };
    assert_eq!(
        signed.len(),
        CHORD_RECORD_DOMAIN.len() + 32 + 4 + key.len() + 1 + value + 8
    );
    assert_eq!(v.is_put(), matches!(v.op, StoreOp::Put(_)));
}

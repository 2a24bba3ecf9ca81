//! The codec: weft's frame encode and decode of three messages, each beside raw `postcard` on
//! the same message (its limit: postcard into a reused slice and back, no frame header, no
//! allocation, no checks).
//!
//! - `codec_broadcast_64B`: a BROADCAST of a 64-byte payload as the mesh sends it by default
//!   (origin proof included: 205 bytes a frame); messages per second. Issue 19's target:
//!   `frame_encode_decode` at most 100 ns. `codec_broadcast_64B_unsigned`: the same without
//!   the proof (a network with `--unsigned-broadcasts`; 109 bytes a frame).
//! - `codec_table_write_1KiB`: a TABLE_WRITE whose payload is 1 KiB (a 16-byte key, a JSON-ish
//!   value, lease, key and signature); bytes of payload per second. This one takes the
//!   serde-derived `strict` path and its limit checks (one BLAKE3 of the writer's key).
//! - `codec_hereis_128KiB`: a HEREIS of 128 KiB of block data; bytes of payload per second.
//!
//! In each group: `frame_encode` is what the engine does to send (`Message::to_frame`: the
//! postcard payload, then the frame around it), `frame_decode` what it does on reception (the
//! frame through a `FrameDecoder`, its payload borrowed, `Message::decode`), `frame_encode_decode`
//! both; `postcard_encode`, `postcard_decode` and `postcard_encode_decode` the same message
//! through postcard alone.
//!
//! `cargo bench -p weft-benches --bench codec`

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput,
};
use serde::{Deserialize, Serialize};
use weft_benches::pseudo_random;
use weft_protocol::{
    BlockHash, Broadcast, Code, FolderId, FrameDecoder, HereIs, Hlc, Message, NodeId, OriginProof,
    PublicKey, ReplicaMessage, Signature, TableWrite,
};

/// The engine's reception path for one frame: decoder, payload (borrowed from the frame, as
/// the engine's readers that only decode take it), message; returns a value read from the
/// message so nothing is optimised away.
fn frame_decode(decoder: &mut FrameDecoder, bytes: Bytes, read: impl Fn(&Message) -> u64) -> u64 {
    decoder.push(bytes);
    let frame = decoder
        .next_frame()
        .expect("a valid frame")
        .expect("a whole frame");
    let payload = frame.payload_ref().expect("an uncompressed payload");
    let msg = Message::decode(frame.code(), &payload).expect("a valid message");
    read(&msg)
}

/// The six benches of one message: weft's frame path and raw postcard, encode, decode and both.
fn group<'m, T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    message: &Message<'m>,
    raw: &T,
    read: impl Fn(&Message) -> u64 + Copy,
    raw_read: impl Fn(&[u8]) -> u64 + Copy,
) where
    T: Serialize,
{
    let frame = message.to_frame(false).into_bytes();
    let mut decoder = FrameDecoder::new();
    let mut slice = vec![0u8; frame.len() + 64];
    let encoded_len = postcard::to_slice(raw, &mut slice).expect("room").len();
    let raw_bytes = slice[..encoded_len].to_vec();

    group.bench_function("frame_encode", |b| {
        b.iter(|| black_box(black_box(message).to_frame(false)))
    });
    group.bench_function("frame_decode", |b| {
        // The clone shares the buffer, as a driver's reads are shared.
        b.iter(|| frame_decode(&mut decoder, black_box(&frame).clone(), read))
    });
    group.bench_function("frame_encode_decode", |b| {
        b.iter(|| {
            let bytes = black_box(message).to_frame(false).into_bytes();
            frame_decode(&mut decoder, bytes, read)
        })
    });
    group.bench_function("postcard_encode", |b| {
        b.iter(|| {
            let n = postcard::to_slice(black_box(raw), &mut slice)
                .expect("room")
                .len();
            black_box(n)
        })
    });
    group.bench_function("postcard_decode", |b| {
        b.iter(|| raw_read(black_box(&raw_bytes)))
    });
    group.bench_function("postcard_encode_decode", |b| {
        b.iter(|| {
            let n = postcard::to_slice(black_box(raw), &mut slice)
                .expect("room")
                .len();
            raw_read(&slice[..n])
        })
    });
}

/// HEREIS's fields in postcard's own layout (the data as one length-prefixed byte string;
/// weft's HEREIS carries it raw after the header instead).
#[derive(Serialize, Deserialize)]
struct RawHereIs<'a> {
    folder: FolderId,
    hash: BlockHash,
    offset: u32,
    #[serde(borrow, serialize_with = "bytes_at_once")]
    data: &'a [u8],
}

fn bytes_at_once<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

fn broadcast_64(c: &mut Criterion) {
    let payload = pseudo_random(64);
    let proof = OriginProof {
        public_key: PublicKey([8; 32]),
        signature: Signature([9; 64]),
    };
    for (name, proof) in [
        ("codec_broadcast_64B", Some(proof)),
        ("codec_broadcast_64B_unsigned", None),
    ] {
        let broadcast = Broadcast {
            origin: NodeId([7; 32]),
            incarnation: 3,
            seq: 123_456,
            payload: &payload,
            proof,
        };
        let message = Message::Broadcast(broadcast.clone());
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        group(
            &mut g,
            &message,
            &broadcast,
            |m| match m {
                Message::Broadcast(b) => b.seq,
                _ => 0,
            },
            |bytes| {
                postcard::from_bytes::<Broadcast>(bytes)
                    .expect("a valid broadcast")
                    .seq
            },
        );
        g.finish();
    }
}

fn table_write_1k(c: &mut Criterion) {
    let identity = weft_engine::Identity::from_secret(&[5; 32]);
    let mut write = TableWrite {
        hlc: Hlc {
            ms: 1_764_800_000_000,
            logical: 2,
        },
        node: identity.node_id(),
        incarnation: 4,
        key: b"users/4711/prefs".to_vec(),
        value: None,
        lease_until_ms: Some(1_764_800_060_000),
        public_key: identity.public_key(),
        signature: Signature([3; 64]),
    };
    let fixed = Message::TableWrite(write.clone()).encode_payload().len();
    // The value makes the payload 1 KiB: its length prefix takes 2 bytes, the option tag 1.
    let json = br#"{"theme":"dark","lang":"en","notify":true,"n":12345},"#;
    let value: Vec<u8> = json
        .iter()
        .copied()
        .cycle()
        .take(1024 - fixed - 2)
        .collect();
    write.value = Some(value);
    let message = Message::TableWrite(write.clone());
    let len = message.encode_payload().len();
    assert_eq!(len, 1024, "a 1 KiB payload");
    let mut g = c.benchmark_group("codec_table_write_1KiB");
    g.throughput(Throughput::Bytes(len as u64));
    group(
        &mut g,
        &message,
        &write,
        |m| match m {
            Message::TableWrite(w) => w.hlc.ms,
            _ => 0,
        },
        |bytes| {
            postcard::from_bytes::<TableWrite>(bytes)
                .expect("a valid write")
                .hlc
                .ms
        },
    );
    g.finish();
}

fn hereis_128k(c: &mut Criterion) {
    let data = pseudo_random(128 * 1024);
    let here = HereIs {
        folder: FolderId([1; 16]),
        hash: [2; 32],
        offset: 1024 * 1024,
        data: &data,
    };
    let raw = RawHereIs {
        folder: here.folder,
        hash: here.hash,
        offset: here.offset,
        data: &data,
    };
    let message = Message::Replica(ReplicaMessage::HereIs(here));
    assert_eq!(message.code(), Code::HEREIS);
    let len = message.encode_payload().len();
    let mut g = c.benchmark_group("codec_hereis_128KiB");
    g.throughput(Throughput::Bytes(len as u64));
    group(
        &mut g,
        &message,
        &raw,
        |m| match m {
            Message::Replica(ReplicaMessage::HereIs(h)) => h.data.len() as u64,
            _ => 0,
        },
        |bytes| {
            postcard::from_bytes::<RawHereIs>(bytes)
                .expect("a valid piece")
                .data
                .len() as u64
        },
    );
    g.finish();
}

criterion_group!(benches, broadcast_64, table_write_1k, hereis_128k);
criterion_main!(benches);

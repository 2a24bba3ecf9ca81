//! Frame decoding throughput: a stream of BROADCAST frames read in 64 KiB pieces, each frame
//! decoded to its message (what every reception costs before the mesh looks at it).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weft_protocol::{Broadcast, FrameDecoder, Message, NodeId};

const FRAMES: u64 = 10_000;

fn stream(payload_len: usize) -> Bytes {
    let mut all = Vec::new();
    for seq in 1..=FRAMES {
        let payload = vec![(seq % 251) as u8; payload_len];
        let msg = Message::Broadcast(Broadcast {
            origin: NodeId([7; 32]),
            incarnation: 1,
            seq,
            payload: &payload,
            proof: None,
        });
        all.extend_from_slice(msg.to_frame(false).bytes());
    }
    Bytes::from(all)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_broadcast_frames");
    for payload_len in [64usize, 1024] {
        let input = stream(payload_len);
        group.throughput(Throughput::Elements(FRAMES));
        group.bench_function(format!("payload_{payload_len}"), |b| {
            b.iter(|| {
                let mut dec = FrameDecoder::new();
                let mut seqs = 0u64;
                for start in (0..input.len()).step_by(64 * 1024) {
                    dec.push(input.slice(start..(start + 64 * 1024).min(input.len())));
                    while let Ok(Some(frame)) = dec.next_frame() {
                        let payload = frame.payload().unwrap_or_default();
                        if let Ok(Message::Broadcast(b)) = Message::decode(frame.code(), &payload) {
                            seqs += b.seq;
                        }
                    }
                }
                black_box(seqs)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);

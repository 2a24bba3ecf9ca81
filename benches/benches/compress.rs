//! Where lz4 starts to pay: `compress_if_smaller` (and the receiver's `decompress`) on the
//! payloads weft really sends, at sizes from 64 B to 64 KiB.
//!
//! Kinds: BROADCAST carrying random bytes, English-like text and JSON-like records; a
//! TABLE_WRITE with a text key and a JSON value; a MESH_DIGEST; a CHORD_FOUND with its peer
//! list. Each payload is the real `encode_payload()` output, built to the nominal size (lists
//! grow by whole entries, so their size is the nearest reachable; kinds a protocol limit keeps
//! smaller than a size are skipped).
//!
//! Before timing, one table goes to stderr: per kind and size, the encoded and compressed
//! lengths, a rough self-timed compress and decompress cost, and the link rate below which
//! compressing saves time on one hop (saved bits / (compress + decompress ns)); then a sweep
//! below 1 KiB in 32-byte steps over 32 samples each (how often lz4 shrinks the payload, mean
//! ratio), and with `WEFT_COMPRESS_CORPUS=FILE` the same sweep over slices of a real file, to
//! check the generated kinds against real prose or JSON. Criterion's figures that follow are
//! the ones to quote for time.
//!
//! `cargo bench -p weft-benches --bench compress -- --noplot`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};
use weft_protocol::compress::{compress_if_smaller, decompress};
use weft_protocol::{
    Broadcast, ChordFound, ChordMessage, ChordPeer, DigestEntry, Hlc, MeshDigest, Message, NodeId,
    PublicKey, SeqRange, Signature, TableWrite, CHORD_PEERS_MAX, DIGEST_ENTRIES_MAX,
};

const SIZES: [usize; 9] = [64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536];

/// A fixed xorshift generator: the same payloads every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 32) as u8).collect()
    }
    fn node(&mut self) -> NodeId {
        let mut id = [0u8; 32];
        id.copy_from_slice(&self.bytes(32));
        NodeId(id)
    }
    /// An index in `0..n` drawn roughly by Zipf's law (weight 1/rank), as words in prose are.
    fn zipf(&mut self, n: usize) -> usize {
        // Inverse of the continuous CDF ln(1 + x) / ln(1 + n).
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (((1.0 + n as f64).powf(u) - 1.0) as usize).min(n - 1)
    }
}

/// Common English words, most frequent first.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has",
    "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "she", "other",
    "its", "may", "these", "what", "them", "than", "some", "him", "time", "into", "only", "do",
    "could", "new", "about", "two", "first", "then", "also", "any", "my", "now", "such", "like",
    "our", "over", "man", "me", "even", "most", "made", "after", "many", "must", "before",
    "years", "where", "through", "back", "much", "should", "well", "people", "down", "own",
    "just", "because", "good", "each", "those", "how", "too", "little", "state", "very", "make",
    "world", "still", "see", "work", "long", "get", "here", "between", "both", "life", "being",
    "under", "never", "day", "same", "another", "know", "while", "last", "might", "us", "great",
    "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
    "three", "himself", "few", "house", "use", "during", "without", "again", "place", "around",
    "however", "home", "small", "found", "thought", "went", "say", "part", "once", "general",
    "high", "upon", "school", "every", "don't", "does", "got", "united", "left", "number",
    "course", "war", "until", "always", "away", "something", "fact", "though", "water", "less",
    "public", "put", "think", "almost", "hand", "enough", "far", "took", "head", "yet",
    "government", "system", "better", "set", "told", "nothing", "night", "end", "why", "called",
    "didn't", "eyes", "find", "going", "look", "asked", "later", "knew", "point", "next",
    "program", "city", "business", "give", "group", "toward", "young", "days", "let", "room",
    "president", "side", "social", "given", "present", "several", "order", "national",
    "possible", "rather", "second", "face", "per", "among", "form", "important", "often",
    "things", "looked", "early", "white", "case", "john", "become", "large", "big", "need",
    "four", "within", "felt", "along", "children", "saw", "best", "church", "ever", "least",
    "power", "development", "light", "thing", "seemed", "family", "interest", "want", "members",
    "mind", "country", "area", "others", "done", "turned", "although", "open", "god", "service",
    "certain", "kind", "problem", "began", "different", "door", "thus", "help", "sense",
    "means", "whole", "matter", "perhaps", "itself", "york", "times", "law", "human", "line",
    "above", "name", "example", "action", "company", "hands", "local", "show", "whether",
    "five", "history", "gave", "today", "either", "act", "feet", "across", "taken", "past",
    "quite", "anything", "seen", "having", "death", "week", "experience", "body", "word",
    "half", "really", "field", "market", "network", "message", "peer", "node", "storage",
    "request", "answer", "clock",
];

/// English-like prose of exactly `len` bytes: Zipf-drawn words, sentences, capitals.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 16);
    let mut start = true;
    while out.len() < len {
        let w = WORDS[rng.zipf(WORDS.len())];
        if start {
            let mut c = w.chars();
            let first = c.next().unwrap_or('a').to_ascii_uppercase();
            out.push(first);
            out.push_str(c.as_str());
            start = false;
        } else {
            out.push_str(w);
        }
        match rng.below(14) {
            0 => {
                out.push_str(". ");
                start = true;
            }
            1 => out.push_str(", "),
            _ => out.push(' '),
        }
    }
    out.truncate(len);
    out.into_bytes()
}

/// JSON-like application records of exactly `len` bytes (an event log, a status object).
fn json(rng: &mut Rng, len: usize) -> Vec<u8> {
    const KINDS: &[&str] = &["message", "join", "leave", "update", "heartbeat", "metric"];
    const TAGS: &[&str] = &[
        "alpha", "beta", "prod", "eu-west", "us-east", "canary", "batch",
    ];
    let mut out = String::from("[");
    let mut ts = 1_732_400_000_000u64 + rng.below(1_000_000);
    while out.len() < len {
        ts += rng.below(5000);
        let words = 2 + rng.below(8) as usize;
        let mut t = String::from_utf8(text(rng, words * 6)).unwrap_or_default();
        t.retain(|c| c != '"');
        out.push_str(&format!(
            "{{\"id\":{},\"user\":\"user_{:04}\",\"ts\":{},\"kind\":\"{}\",\"score\":{}.{:02},\
             \"tags\":[\"{}\",\"{}\"],\"text\":\"{}\"}},",
            rng.below(1_000_000),
            rng.below(5000),
            ts,
            KINDS[rng.zipf(KINDS.len())],
            rng.below(100),
            rng.below(100),
            TAGS[rng.zipf(TAGS.len())],
            TAGS[rng.zipf(TAGS.len())],
            t
        ));
    }
    out.truncate(len);
    out.into_bytes()
}

/// The largest `inner` content length whose encoding is at most `target` bytes, and that
/// encoding (one byte short of `target` where a varint length boundary is in the way).
fn fit(target: usize, mut encode: impl FnMut(usize) -> Vec<u8>) -> Option<Vec<u8>> {
    let mut k = target;
    loop {
        let e = encode(k);
        if e.len() <= target {
            return Some(e);
        }
        let over = e.len() - target;
        if k == 0 {
            return None;
        }
        k = k.saturating_sub(over);
    }
}

fn broadcast(origin: NodeId, app: &[u8]) -> Vec<u8> {
    Message::Broadcast(Broadcast {
        origin,
        incarnation: 1_732_398_112_345,
        seq: 4711,
        payload: app,
        proof: None,
    })
    .encode_payload()
}

/// One payload of kind `kind` and (about) `size` bytes, or None if the protocol's limits keep
/// that kind smaller.
fn payload(kind: &str, size: usize) -> Option<Vec<u8>> {
    payload_seeded(kind, size, 0)
}

/// [`payload`] from sample number `seed`.
fn payload_seeded(kind: &str, size: usize, seed: u64) -> Option<Vec<u8>> {
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64 ^ seed.wrapping_mul(0xA24B_AED4_963E_E407));
    let origin = rng.node();
    match kind {
        "bcast_random" => {
            let app = rng.bytes(size);
            fit(size, |k| broadcast(origin, &app[..k.min(size)]))
        }
        "bcast_text" => {
            let app = text(&mut rng, size);
            fit(size, |k| broadcast(origin, &app[..k.min(size)]))
        }
        "bcast_json" => {
            let app = json(&mut rng, size);
            fit(size, |k| broadcast(origin, &app[..k.min(size)]))
        }
        "table_write" => {
            let key = format!("services/checkout-{}/config/endpoints", rng.below(100));
            let value = json(&mut rng, size);
            // A key and signature are incompressible: random-looking bytes.
            let public_key = PublicKey(rng.node().0);
            let node = NodeId::from_public_key(&public_key);
            let mut signature = Signature([0; 64]);
            signature.0.copy_from_slice(&rng.bytes(64));
            fit(size, |k| {
                Message::TableWrite(TableWrite {
                    hlc: Hlc {
                        ms: 1_732_400_123_456,
                        logical: 3,
                    },
                    node,
                    incarnation: 1_732_398_112_345,
                    key: key.as_bytes().to_vec(),
                    value: Some(value[..k.min(size)].to_vec()),
                    lease_until_ms: Some(1_732_400_153_456),
                    public_key,
                    signature,
                })
                .encode_payload()
            })
        }
        "mesh_digest" => {
            // One entry per recent origin: its incarnation (a start time in ms) and one to
            // three held ranges of sequence numbers.
            let mut entries = Vec::new();
            let mut best = None;
            while entries.len() < DIGEST_ENTRIES_MAX {
                let mut ranges = Vec::new();
                let mut seq = 1 + rng.below(5000);
                for _ in 0..1 + rng.below(3) {
                    let last = seq + rng.below(64);
                    ranges.push(SeqRange { first: seq, last });
                    seq = last + 2 + rng.below(20);
                }
                entries.push(DigestEntry {
                    origin: rng.node(),
                    incarnation: 1_732_300_000_000 + rng.below(100_000_000),
                    ranges,
                });
                let e = Message::MeshDigest(MeshDigest {
                    entries: entries.clone(),
                })
                .encode_payload();
                if e.len() > size {
                    break;
                }
                best = Some(e);
            }
            best.filter(|e| e.len() * 10 >= size * 7)
        }
        "chord_found" => {
            let mut peers = Vec::new();
            let mut best = None;
            while peers.len() < CHORD_PEERS_MAX {
                peers.push(ChordPeer {
                    node: rng.node(),
                    addr: format!("10.0.{}.{}:7000", rng.below(256), 1 + rng.below(254)),
                });
                let e = Message::Chord(ChordMessage::Found(ChordFound {
                    request: 91_823,
                    done: true,
                    peers: peers.clone(),
                }))
                .encode_payload();
                if e.len() > size {
                    break;
                }
                best = Some(e);
            }
            best.filter(|e| e.len() * 10 >= size * 7)
        }
        _ => None,
    }
}

const KINDS: [&str; 6] = [
    "bcast_random",
    "bcast_text",
    "bcast_json",
    "table_write",
    "mesh_digest",
    "chord_found",
];

/// Median ns per call of `f` over a few rounds: rough, for the stderr table only.
fn quick_ns(mut f: impl FnMut()) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut n = 0u32;
        while t.elapsed() < Duration::from_millis(4) {
            f();
            n += 1;
        }
        rounds.push(t.elapsed().as_nanos() as f64 / f64::from(n));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn print_table() {
    eprintln!(
        "{:<13} {:>6} {:>6} {:>7} {:>6} {:>10} {:>10} {:>14}",
        "kind", "size", "len", "packed", "ratio", "comp_ns", "decomp_ns", "pays_below"
    );
    for kind in KINDS {
        for size in SIZES {
            let Some(p) = payload(kind, size) else {
                continue;
            };
            let packed = compress_if_smaller(&p);
            let c = quick_ns(|| {
                black_box(compress_if_smaller(black_box(&p)));
            });
            let (plen, ratio, d, pays) = match &packed {
                Some(z) => {
                    let d = quick_ns(|| {
                        black_box(decompress(black_box(z)).ok());
                    });
                    let saved_bits = 8.0 * (p.len() - z.len()) as f64;
                    // Gbit/s at which the saved bits take as long to send as lz4 costs.
                    let gbps = saved_bits / (c + d);
                    (
                        z.len().to_string(),
                        z.len() as f64 / p.len() as f64,
                        format!("{d:.0}"),
                        format!("{gbps:.2} Gbit/s"),
                    )
                }
                None => ("-".into(), 1.0, "-".into(), "never".into()),
            };
            eprintln!(
                "{:<13} {:>6} {:>6} {:>7} {:>6.3} {:>10.0} {:>10} {:>14}",
                kind,
                size,
                p.len(),
                plen,
                ratio,
                c,
                d,
                pays
            );
        }
    }
}

/// Below 1 KiB in 32-byte steps, over 32 samples each: how often lz4 shrinks a payload at all
/// and the mean size ratio (1 where it does not). Locates where compression starts to win.
fn print_sweep() {
    const SAMPLES: u64 = 32;
    eprintln!("\nsweep: kind size -> compressed/samples mean_ratio");
    for kind in KINDS {
        let mut line = format!("{kind:<13}");
        for size in (64..=1024).step_by(32) {
            let mut hits = 0;
            let mut sum = 0.0;
            let mut n = 0;
            for seed in 0..SAMPLES {
                let Some(p) = payload_seeded(kind, size, seed) else {
                    continue;
                };
                n += 1;
                sum += match compress_if_smaller(&p) {
                    Some(z) => {
                        hits += 1;
                        z.len() as f64 / p.len() as f64
                    }
                    None => 1.0,
                };
            }
            if n > 0 {
                line.push_str(&format!(" {size}:{hits}/{n},{:.3}", sum / n as f64));
            }
        }
        eprintln!("{line}");
    }
}

/// With `WEFT_COMPRESS_CORPUS=FILE`, the same question for slices of a real file (prose, JSON)
/// sent as a BROADCAST: a check that the generated kinds compress like real data.
fn print_corpus() {
    let Ok(path) = std::env::var("WEFT_COMPRESS_CORPUS") else {
        return;
    };
    let Ok(data) = std::fs::read(&path) else {
        eprintln!("cannot read {path}");
        return;
    };
    eprintln!(
        "\ncorpus {path} ({} bytes): size -> compressed/samples mean_ratio",
        data.len()
    );
    let origin = Rng(7).node();
    let mut line = String::new();
    for size in (64..=1024)
        .step_by(32)
        .chain(SIZES.into_iter().filter(|s| *s > 1024))
    {
        if size > data.len() {
            break;
        }
        let (mut hits, mut sum, samples) = (0, 0.0, 32);
        for i in 0..samples {
            let at = (data.len() - size) * i / samples;
            let Some(p) = fit(size, |k| broadcast(origin, &data[at..at + k.min(size)])) else {
                continue;
            };
            sum += match compress_if_smaller(&p) {
                Some(z) => {
                    hits += 1;
                    z.len() as f64 / p.len() as f64
                }
                None => 1.0,
            };
        }
        line.push_str(&format!(
            " {size}:{hits}/{samples},{:.3}",
            sum / samples as f64
        ));
    }
    eprintln!("{line}");
}

fn bench(c: &mut Criterion) {
    print_table();
    print_sweep();
    print_corpus();
    let mut group = c.benchmark_group("compress_if_smaller");
    for kind in KINDS {
        for size in SIZES {
            let Some(p) = payload(kind, size) else {
                continue;
            };
            group.throughput(Throughput::Bytes(p.len() as u64));
            group.bench_with_input(BenchmarkId::new(kind, size), &p, |b, p| {
                b.iter(|| compress_if_smaller(black_box(p)))
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("decompress");
    for kind in KINDS {
        for size in SIZES {
            let Some(p) = payload(kind, size) else {
                continue;
            };
            let Some(z) = compress_if_smaller(&p) else {
                continue;
            };
            group.throughput(Throughput::Bytes(p.len() as u64));
            group.bench_with_input(BenchmarkId::new(kind, size), &z, |b, z| {
                b.iter(|| decompress(black_box(z)))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

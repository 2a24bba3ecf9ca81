//! The floor under the mesh bench: the same flood (N = 10,000, degree 8, the simulator's topology,
//! event queue and no-fault latency) with no engine at all. A reception pops an event, touches
//! its link direction, reads origin, incarnation and seq from the frame bytes, looks them up in
//! the receiver's seen map and, if new, queues a copy on every other link. Its figure is what
//! the machine allows for this memory-access pattern before any engine work, so the real
//! bench's receptions per second can be read against it.

use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use weft_sim::faults::{FaultConfig, Latency};
use weft_sim::queue::EventQueue;
use weft_sim::rng::SimRng;
use weft_sim::topology::{edges, Topology};

use super::{DEGREE, NODES};

/// Frame header before the body: u32 length, version, flags, u16 code.
const HEADER_BYTES: usize = 8;
/// Frame length: header, origin, incarnation, seq and a short payload.
const FRAME_LEN: usize = 60;

/// Hashes the one word `OriginKey` writes: a multiply spreads it into the bits the table
/// uses (the word is already eight uniform bytes of a node id).
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}

/// An (origin, incarnation), hashed by eight bytes of the origin, as the engine's seen map is.
#[derive(Clone, Copy, PartialEq, Eq)]
struct OriginKey {
    origin: [u8; 32],
    incarnation: u64,
}

impl Hash for OriginKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let prefix = u64::from_le_bytes(std::array::from_fn(|i| self.origin[i]));
        state.write_u64(prefix ^ self.incarnation.rotate_left(32));
    }
}

/// Sequence numbers (from 1) seen from one origin incarnation: the highest and the 63 below it
/// (bit k is `high - k`); anything older counts as seen.
#[derive(Default)]
struct Window {
    high: u64,
    bits: u64,
}

impl Window {
    /// Records `seq`; true if it was new.
    fn insert(&mut self, seq: u64) -> bool {
        // A shift of 64 or more leaves nothing of the window.
        let shift = |word: u64, by: u64| word.checked_shl(u32::try_from(by).unwrap_or(64));
        if seq > self.high {
            self.bits = shift(self.bits, seq - self.high).unwrap_or(0) | 1;
            self.high = seq;
            return true;
        }
        let bit = shift(1, self.high - seq).unwrap_or(0);
        let new = bit != 0 && self.bits & bit == 0;
        self.bits |= bit;
        new
    }
}

struct NodeState {
    /// Outgoing link directions; direction `d` is answered by direction `d ^ 1`.
    out: Vec<u32>,
    seen: HashMap<OriginKey, Window, BuildHasherDefault<WordHasher>>,
}

impl NodeState {
    /// Records (origin, incarnation, seq); true if it is new.
    fn see(&mut self, key: OriginKey, seq: u64) -> bool {
        self.seen.entry(key).or_default().insert(seq)
    }
}

struct Direction {
    to_node: u32,
    in_flight_bytes: u64,
}

/// A deterministic xorshift64 for the latency's exponential part, as the simulator draws it.
struct XorShift(u64);

impl XorShift {
    fn exp(&mut self, mean: u64) -> u64 {
        if mean == 0 {
            return 0;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let u = 1.0 - (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        (-(u.ln()) * mean as f64) as u64
    }
}

pub struct Flood {
    nodes: Vec<NodeState>,
    dirs: Vec<Direction>,
    ids: Vec<[u8; 32]>,
    seqs: Vec<u64>,
    queue: EventQueue<(u32, Bytes)>,
    latency: Latency,
    rng: XorShift,
    now_ns: u64,
}

impl Flood {
    /// The network, joined, with nothing seen.
    pub fn new() -> Flood {
        let edges = edges(
            &Topology::Regular { degree: DEGREE },
            NODES,
            &mut SimRng::child(1, "topology", 0),
        );
        let mut nodes: Vec<NodeState> = (0..NODES)
            .map(|_| NodeState {
                out: Vec::with_capacity(DEGREE as usize),
                seen: HashMap::default(),
            })
            .collect();
        let mut dirs = Vec::with_capacity(2 * edges.len());
        for &(a, b) in &edges {
            for (from, to_node) in [(a, b), (b, a)] {
                nodes[from as usize].out.push(dirs.len() as u32);
                dirs.push(Direction {
                    to_node,
                    in_flight_bytes: 0,
                });
            }
        }
        let mut id_rng = SimRng::child(1, "ids", 0);
        let ids = (0..NODES)
            .map(|_| std::array::from_fn(|_| id_rng.next_u64() as u8))
            .collect();
        Flood {
            nodes,
            dirs,
            ids,
            seqs: vec![0; NODES as usize],
            queue: EventQueue::default(),
            latency: FaultConfig::none().latency,
            rng: XorShift(0x9e37_79b9_7f4a_7c15),
            now_ns: 0,
        }
    }

    /// Queues `frame` on every outgoing direction of `node` but `except`.
    fn relay(&mut self, node: u32, except: u32, frame: &Bytes) {
        for &d in &self.nodes[node as usize].out {
            if d == except {
                continue;
            }
            self.dirs[d as usize].in_flight_bytes += frame.len() as u64;
            let latency_us = self.latency.min_us + self.rng.exp(self.latency.mean_extra_us);
            self.queue
                .push(self.now_ns + latency_us * 1_000, (d, frame.clone()));
        }
    }

    /// Broadcasts from `origin` and runs the flood to its end; the receptions.
    pub fn broadcast(&mut self, origin: u32) -> u64 {
        let seq = &mut self.seqs[origin as usize];
        *seq += 1;
        let key = OriginKey {
            origin: self.ids[origin as usize],
            incarnation: 1,
        };
        let mut frame = [0u8; FRAME_LEN];
        frame[HEADER_BYTES..HEADER_BYTES + 32].copy_from_slice(&key.origin);
        frame[HEADER_BYTES + 32..HEADER_BYTES + 40].copy_from_slice(&key.incarnation.to_be_bytes());
        frame[HEADER_BYTES + 40..HEADER_BYTES + 48].copy_from_slice(&seq.to_be_bytes());
        let seq = *seq;
        let frame = Bytes::copy_from_slice(&frame);
        self.nodes[origin as usize].see(key, seq);
        self.relay(origin, u32::MAX, &frame);
        let mut receptions = 0;
        while let Some((at, (d, frame))) = self.queue.pop() {
            self.now_ns = at;
            receptions += 1;
            let dir = &mut self.dirs[d as usize];
            dir.in_flight_bytes = dir.in_flight_bytes.saturating_sub(frame.len() as u64);
            let to = dir.to_node;
            let Some((key, seq)) = decode(&frame) else {
                continue;
            };
            if self.nodes[to as usize].see(key, seq) {
                self.relay(to, d ^ 1, &frame);
            }
        }
        receptions
    }
}

/// Origin, incarnation and seq read from a frame's body.
fn decode(frame: &[u8]) -> Option<(OriginKey, u64)> {
    let (origin, rest) = frame.get(HEADER_BYTES..)?.split_first_chunk::<32>()?;
    let (incarnation, rest) = rest.split_first_chunk::<8>()?;
    let (seq, _) = rest.split_first_chunk::<8>()?;
    let key = OriginKey {
        origin: *origin,
        incarnation: u64::from_be_bytes(*incarnation),
    };
    Some((key, u64::from_be_bytes(*seq)))
}

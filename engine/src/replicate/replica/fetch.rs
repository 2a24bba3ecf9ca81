//! Fetching and serving blocks: the blocks files being fetched lack, asked rarest first of
//! the peers that hold them (IWANT), bounded in bytes in flight per peer; HEREIS pieces
//! hashed as they come and handed out as `WriteTemp` at once; a block present in the local
//! folder copied locally instead; IWANT answered from a local file whose bytes still match,
//! in HEREIS pieces of at most [`HEREIS_PIECE_BYTES`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use smallvec::{smallvec, SmallVec};
use weft_protocol::{BlockHash, HereIs, IWant, NodeId, ReplicaMessage, HEREIS_DATA_BYTES_MAX};

use super::{Peer, Purpose, Replica};
use crate::replicate::index::HOLDERS_MAX;
use crate::replicate::plan::BlockState;
use crate::replicate::types::{
    Expect, Recipient, ReplicaEvent, ReplicaFault, StorageRequest, StorageResult, TempId,
};
use crate::time::Instant;

/// Files whose blocks one scheduling pass considers, at most, per linked source (the oldest
/// fetches first, as a file completes the next one joins): many small files go out in
/// parallel, and a pass costs the blocks of these files, not of every file still to come.
/// A file counts against each linked source that may be asked for one of its missing blocks
/// now (one that neither answered NOTFOUND for it nor is excluded for it), or while one of
/// its blocks is in flight; one that would count against full sources only is left for a
/// later pass.
pub(crate) const FETCHING_FILES_MAX: usize = 256;

/// Places (file and block) one fetch or local read of a block fills, at most: each piece of
/// it is one `WriteTemp` a place. The places past it (a file of many equal blocks: zeros, or
/// a peer's record naming one hash 262,144 times) wait for a later pass, so one piece
/// queues at most this many writes for the host (it queued one for every place: 33 million
/// for one 16 MiB block named 262,144 times).
pub(crate) const BLOCK_WAITERS_MAX: usize = 64;

/// Timed-out blocks remembered per peer (their late pieces are ignored), at most.
pub(crate) const EXPIRED_MAX: usize = 4096;

/// `ReadBlock` steps serving one peer, at most; beyond it a peer's IWANT is answered
/// NOTFOUND.
pub(crate) const SERVING_PER_PEER_MAX: usize = 1024;

/// Bytes the outstanding `ReadBlock` steps serving one peer read, at most (four times the
/// default `bytes_in_flight_per_peer_max` a fetching peer keeps asked); a block past it is
/// answered NOTFOUND, as past [`SERVING_PER_PEER_MAX`]. Without it, one IWANT of ~8 KB (256
/// hashes of 16 MiB blocks) had this node read 4 GiB, again for each IWANT.
pub(crate) const SERVING_BYTES_PER_PEER_MAX: u64 = 64 * 1024 * 1024;

/// The data of one HEREIS served, at most: a power of two, so each piece is whole blake3
/// subtrees and the receiver hashes it at full SIMD width (benches/replicate: 4.28 GiB/s
/// with 128 KiB pieces, 3.81 with 255 KiB ones). Within the wire's `HEREIS_DATA_BYTES_MAX`.
pub(crate) const HEREIS_PIECE_BYTES: usize = 128 * 1024;

const _: () = assert!(HEREIS_PIECE_BYTES <= HEREIS_DATA_BYTES_MAX);

/// A block asked of a peer counts at least this many bytes against
/// `bytes_in_flight_per_peer_max` (16 KiB): each request in flight holds state (its
/// incremental hasher, about 2 KiB) whatever its length, so a peer announcing files of
/// 1-byte blocks makes at most `bytes_in_flight_per_peer_max / 16 KiB` = 1024 of them.
pub(crate) const BLOCK_CHARGE_BYTES_MIN: u64 = 16 * 1024;

/// What a block of `len` bytes in flight counts against a peer's bytes in flight.
pub(super) fn charge(len: u32) -> u64 {
    u64::from(len).max(BLOCK_CHARGE_BYTES_MIN)
}

/// A block asked of a peer.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// Who was asked.
    pub(crate) peer: NodeId,
    /// Its length.
    pub(crate) len: u32,
    /// Bytes received so far (pieces come in order).
    pub(crate) received: u32,
    /// The hash of what was received so far.
    pub(crate) hasher: blake3::Hasher,
    /// The blocks of files being fetched that it fills: (temp, block number).
    pub(crate) waiters: Vec<(TempId, u32)>,
    /// Asked of another peer if not complete by then.
    pub(crate) deadline: Instant,
}

/// The blocks of files a candidate fills: (temp, block number); mostly one.
type Waiters = SmallVec<[(TempId, u32); 2]>;

/// The peers a candidate may be asked of, ascending; mostly one or two.
type Sources = SmallVec<[NodeId; 2]>;

/// A block asked of no peer yet, in the queue the scheduler keeps between two full passes
/// (rarest first): what the last full pass found and could not place for want of room.
#[derive(Debug)]
pub(crate) struct Candidate {
    hash: BlockHash,
    len: u32,
    waiters: Waiters,
    sources: Sources,
}

/// The candidates left by the last full pass, in order, and how many of them each peer is
/// a source of. Between two full passes only room is freed (a block arrived, a peer's bulk
/// queue drained): nothing is added, so the queue's valid entries are exactly what a full
/// pass would find, in the same order. Every change that can add a wanted block or a source
/// (`fetch_dirty`) asks for a full pass instead.
#[derive(Debug, Default)]
pub(crate) struct FetchQueue {
    candidates: VecDeque<Candidate>,
    per_source: BTreeMap<NodeId, usize>,
    /// Blocks the last full pass passed over because they were in flight for other files:
    /// when such a request ends, they are wanted again, so a full pass is due. At most the
    /// blocks in flight.
    shadowed: BTreeSet<BlockHash>,
}

impl FetchQueue {
    fn forget(&mut self, c: &Candidate) {
        for s in &c.sources {
            if let Some(n) = self.per_source.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(s);
                }
            }
        }
    }

    fn keep(&mut self, c: &Candidate) {
        for s in &c.sources {
            *self.per_source.entry(*s).or_default() += 1;
        }
    }

    /// Whether no source of a queued candidate may still take one: each is unlinked, out of
    /// room, or `full` (a candidate in this pass did not fit it).
    fn blocked(&self, peers: &BTreeMap<NodeId, Peer>, max: u64, full: &[NodeId]) -> bool {
        !self.per_source.keys().any(|s| {
            !full.contains(s)
                && peers
                    .get(s)
                    .is_some_and(|p| p.linked && p.bytes_in_flight < max)
        })
    }
}

impl Replica {
    /// Sets the state of the waiters' blocks. A block missing again asks for a full
    /// scheduling pass.
    fn set_blocks(&mut self, waiters: &[(TempId, u32)], from: BlockState, to: BlockState) {
        for (temp, i) in waiters {
            let Some(path) = self.temps.get(temp) else {
                continue;
            };
            let Some(f) = self.applies.get_mut(path).and_then(|a| a.fetch.as_mut()) else {
                continue;
            };
            if f.temp != *temp {
                continue;
            }
            if let Some(b) = f.blocks.get_mut(*i as usize) {
                if b.state == from {
                    b.state = to;
                }
            }
        }
        if to == BlockState::Missing {
            self.fetch_dirty = true;
        }
    }

    /// Whether the block `i` of `temp` is one the scheduler may ask for: missing, in a file
    /// being fetched that no storage step holds.
    fn block_wanted(&self, temp: TempId, i: u32) -> bool {
        let Some(a) = self.temps.get(&temp).and_then(|p| self.applies.get(p)) else {
            return false;
        };
        if !a.is_fetching() || a.stale || a.outstanding {
            return false;
        }
        a.fetch.as_ref().is_some_and(|f| {
            f.temp == temp
                && f.blocks
                    .get(i as usize)
                    .is_some_and(|b| b.state == BlockState::Missing)
        })
    }

    /// Whether the file the records show at `path` has blocks to give another file being
    /// fetched: a local read of it is under way, or a block that the next scheduling round
    /// would copy locally (missing, not asked of a peer, not a local miss, in a fetch the
    /// round looks at) has a hash the file holds. A step that removes or replaces the file
    /// waits for those copies: the file may hold the last copy of that content here (a
    /// conflict copy of it being fetched, whose only other holder serves corrupt blocks).
    pub(super) fn feeds_a_fetch(&self, path: &str) -> bool {
        let Some(record) = self.index.get(path).filter(|r| !r.deleted) else {
            return false;
        };
        if record.entry.blocks.is_empty() || self.disk.get(path) == Some(&Expect::Nothing) {
            return false;
        }
        let reading = self
            .pending
            .values()
            .any(|p| matches!(p, Purpose::ReadLocal { from, .. } if from == path));
        if reading {
            return true;
        }
        // Blocks feed another fetch only at the length it wants (a local copy is read only
        // at that length).
        let held: BTreeSet<(&BlockHash, u32)> = record
            .entry
            .blocks
            .iter()
            .map(|b| (&b.hash, b.len))
            .collect();
        self.temps.iter().any(|(temp, other)| {
            let Some(a) = self.applies.get(other).filter(|_| other != path) else {
                return false;
            };
            if !a.is_fetching() || a.stale || a.outstanding {
                return false;
            }
            a.fetch.as_ref().is_some_and(|f| {
                f.temp == *temp
                    && f.entry.blocks.iter().zip(&f.blocks).any(|(b, slot)| {
                        slot.state == BlockState::Missing
                            && held.contains(&(&b.hash, b.len))
                            && !self.inflight.contains_key(&b.hash)
                            && !self.local_misses.contains(&b.hash)
                    })
            })
        })
    }

    /// Asks for the blocks files lack: locally where the folder holds them, else of peers,
    /// rarest first. A full pass over every file being fetched; what finds no room is kept
    /// in the queue for [`Self::place`].
    pub(super) fn schedule(&mut self) {
        let now = self.now;
        // Exclusions that ran out (a block that never arrives, from a peer that never
        // answers, would otherwise keep its entry for good).
        self.excluded.retain(|_, peers| {
            peers.retain(|(_, until)| *until > now);
            !peers.is_empty()
        });
        // (hash, length, temp, block number, file) of every missing block of the files
        // looked at, and each file's sources.
        let mut blocks: Vec<(BlockHash, u32, TempId, u32, usize)> = Vec::new();
        let mut file_sources: Vec<Sources> = Vec::new();
        let mut shadowed = BTreeSet::new();
        // Files counted this pass against each linked source, and how many of the folder's
        // linked peers have their `fetching_files_max`: once all have, no file is left that
        // could count against one (those with no linked source only wait).
        let cap = self.fetching_files_max;
        let mut counted: BTreeMap<NodeId, usize> = BTreeMap::new();
        let linked_peers = self.peers.values().filter(|p| p.linked).count();
        let mut full_peers = 0usize;
        for (temp, path) in &self.temps {
            if linked_peers > 0 && full_peers == linked_peers {
                break;
            }
            let Some(a) = self.applies.get(path) else {
                continue;
            };
            if !a.is_fetching() || a.stale || a.outstanding {
                continue;
            }
            let Some(f) = a.fetch.as_ref().filter(|f| f.temp == *temp) else {
                continue;
            };
            let linked: SmallVec<[NodeId; 4]> = a
                .sources
                .iter()
                .filter(|s| self.peers.get(s).is_some_and(|p| p.linked))
                .copied()
                .collect();
            // Each linked source has at most `cap` files considered a pass (the oldest first:
            // as one completes, the next joins), and one peer's backlog never holds up the
            // files other peers serve. A file counts against each linked source that may be
            // asked for one of its blocks now, or while one of its blocks is in flight: one
            // whose sources answered NOTFOUND for every block (it waits for their next
            // announcement) or are excluded for it (they timed out, or sent bad bytes) must not
            // crowd out the fetches behind it. A file that would count against full sources
            // only waits for a later pass, its blocks not looked at.
            let full = |s: &NodeId| counted.get(s).is_some_and(|n| *n >= cap);
            if !linked.is_empty() && linked.iter().all(full) {
                continue;
            }
            let in_flight = f.blocks.iter().any(|slot| slot.state == BlockState::Busy);
            let askable: SmallVec<[NodeId; 4]> = linked
                .iter()
                .filter(|s| {
                    in_flight
                        || f.entry.blocks.iter().zip(&f.blocks).any(|(b, slot)| {
                            let key = (b.hash, b.len);
                            slot.state == BlockState::Missing
                                && !self.inflight.contains_key(&b.hash)
                                && !self.not_found.get(&key).is_some_and(|n| n.contains(*s))
                                && !self
                                    .excluded
                                    .get(&key)
                                    .is_some_and(|e| e.iter().any(|(p, _)| p == *s))
                        })
                })
                .copied()
                .collect();
            if !askable.is_empty() && askable.iter().all(full) {
                continue;
            }
            for s in &askable {
                let n = counted.entry(*s).or_default();
                *n += 1;
                if *n == cap {
                    full_peers += 1;
                }
            }
            let file = file_sources.len();
            file_sources.push(a.sources.iter().copied().collect());
            for (i, (b, slot)) in f.entry.blocks.iter().zip(&f.blocks).enumerate() {
                if slot.state != BlockState::Missing {
                    continue;
                }
                if self.inflight.contains_key(&b.hash) {
                    shadowed.insert(b.hash);
                    continue;
                }
                // At most FILE_BLOCKS_MAX blocks a file.
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                blocks.push((b.hash, b.len, *temp, i, file));
            }
        }
        // Equal hashes and lengths gathered, their waiters in file order. A hash named at
        // two lengths (a record claims a length its content does not have) is two
        // candidates: the one at the wrong length never holds up the other.
        blocks.sort_unstable_by_key(|b| (b.0, b.1, b.2, b.3));
        let mut wanted: Vec<Candidate> = Vec::new();
        for (hash, len, temp, i, file) in blocks {
            let sources = &file_sources[file];
            match wanted.last_mut() {
                Some(c) if c.hash == hash && c.len == len => {
                    if c.waiters.len() < BLOCK_WAITERS_MAX {
                        c.waiters.push((temp, i));
                    } else {
                        // Filled by a later pass, once this fetch of the hash is done. Its
                        // file's sources still count: any of them serves the same bytes, so
                        // a first file with no reachable source never holds up the others.
                        shadowed.insert(hash);
                    }
                    for s in sources {
                        if let Err(at) = c.sources.binary_search(s) {
                            c.sources.insert(at, *s);
                        }
                    }
                }
                _ => wanted.push(Candidate {
                    hash,
                    len,
                    waiters: smallvec![(temp, i)],
                    sources: sources.clone(),
                }),
            }
        }
        self.fetch_queue = FetchQueue {
            shadowed,
            ..FetchQueue::default()
        };
        if wanted.is_empty() {
            return;
        }
        // Local copies first.
        let mut remote: Vec<(usize, Candidate)> = Vec::new();
        let mut wake: Option<Instant> = None;
        for mut w in wanted {
            let hash = w.hash;
            if !self.local_misses.contains(&hash) {
                // Not from a path a rename step has emptied (its record stays until its
                // apply installs): the content is at the rename's target.
                let emptied = |p: &str| self.disk.get(p) == Some(&Expect::Nothing);
                let holder = self
                    .index
                    .locate_except(&hash, emptied)
                    .or_else(|| self.index.locate(&hash))
                    .filter(|(_, block)| block.len == w.len);
                if let Some((path, block)) = holder {
                    let req = StorageRequest::ReadBlock {
                        path: path.to_string(),
                        offset: block.offset,
                        len: block.len,
                    };
                    let from = path.to_string();
                    let waiters = w.waiters.into_vec();
                    self.set_blocks(&waiters, BlockState::Missing, BlockState::Busy);
                    self.request(
                        Purpose::ReadLocal {
                            hash,
                            len: w.len,
                            waiters,
                            from,
                        },
                        req,
                    );
                    continue;
                }
            }
            let excluded = self.excluded.get(&(hash, w.len));
            let not_found = self.not_found.get(&(hash, w.len));
            w.sources.retain(|s| {
                self.peers.get(s).is_some_and(|p| p.linked)
                    && !not_found.is_some_and(|n| n.contains(s))
                    && !excluded.is_some_and(|e| {
                        e.iter().any(|(p, until)| {
                            let out = p == s && *until > now;
                            if out {
                                wake = Some(wake.map_or(*until, |x: Instant| x.min(*until)));
                            }
                            out
                        })
                    })
            });
            if !w.sources.is_empty() {
                remote.push((w.sources.len(), w));
            }
        }
        if wake.is_some() {
            self.fetch_wake = wake;
        }
        remote.sort_by_key(|(n, c)| (*n, c.hash));
        for (_, c) in remote {
            self.fetch_queue.keep(&c);
            self.fetch_queue.candidates.push_back(c);
        }
        self.place();
    }

    /// Asks each queued candidate, in order, of its least loaded source with room for it;
    /// drops candidates no longer wanted. After a full pass, and alone when only room was
    /// freed since (nothing can have been added: the queue is what a full pass would find). A source that a candidate does not fit takes no
    /// later candidate in this pass (each peer's requests go in queue order, at the cost of
    /// less than one block of its room), and the pass ends when no source may take more.
    pub(super) fn place(&mut self) {
        let now = self.now;
        let max = self.config.bytes_in_flight_per_peer_max;
        let mut salt: Option<u64> = None;
        let mut kept: Vec<Candidate> = Vec::new();
        let mut full: Vec<NodeId> = Vec::new();
        let mut batches: BTreeMap<NodeId, Vec<BlockHash>> = BTreeMap::new();
        while let Some(mut c) = self.fetch_queue.candidates.pop_front() {
            if self.fetch_queue.blocked(&self.peers, max, &full) {
                self.fetch_queue.candidates.push_front(c);
                break;
            }
            let linked = |s: &NodeId| self.peers.get(s).is_some_and(|p| p.linked);
            let wanted = !self.inflight.contains_key(&c.hash) && c.sources.iter().any(linked) && {
                c.waiters.retain(|(t, i)| self.block_wanted(*t, *i));
                !c.waiters.is_empty()
            };
            if !wanted {
                if self.inflight.contains_key(&c.hash) {
                    self.fetch_queue.shadowed.insert(c.hash);
                }
                self.fetch_queue.forget(&c);
                continue;
            }
            let salt = *salt.get_or_insert_with(|| self.rng_salt());
            let pick = c
                .sources
                .iter()
                .filter(|s| !full.contains(s))
                .filter_map(|s| self.peers.get(s).filter(|p| p.linked).map(|p| (s, p)))
                .filter(|(_, p)| {
                    p.bytes_in_flight == 0 || p.bytes_in_flight.saturating_add(charge(c.len)) <= max
                })
                .min_by_key(|(s, p)| (p.bytes_in_flight, u64::from_le_bytes(salt_of(s)) ^ salt))
                .map(|(s, _)| *s);
            let Some(peer) = pick else {
                for s in &c.sources {
                    if !full.contains(s) {
                        full.push(*s);
                    }
                }
                kept.push(c);
                continue;
            };
            self.fetch_queue.forget(&c);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.bytes_in_flight += charge(c.len);
            }
            self.set_blocks(&c.waiters, BlockState::Missing, BlockState::Busy);
            let deadline = now + self.config.block_request_timeout;
            let asked = InFlight {
                peer,
                len: c.len,
                received: 0,
                hasher: blake3::Hasher::new(),
                waiters: c.waiters.into_vec(),
                deadline,
            };
            if let Some(was) = self.inflight.insert(c.hash, asked) {
                self.deadlines.remove(&(was.deadline, c.hash));
            }
            self.deadlines.insert((deadline, c.hash));
            let batch = batches.entry(peer).or_default();
            batch.push(c.hash);
            if batch.len() == weft_protocol::WANT_HASHES_MAX {
                let hashes = core::mem::take(batch);
                self.send_want(peer, hashes);
            }
        }
        for c in kept.into_iter().rev() {
            self.fetch_queue.candidates.push_front(c);
        }
        for (peer, hashes) in batches {
            if !hashes.is_empty() {
                self.send_want(peer, hashes);
            }
        }
    }

    fn rng_salt(&mut self) -> u64 {
        use rand_chacha::rand_core::RngCore;
        self.rng.next_u64()
    }

    fn send_want(&mut self, peer: NodeId, hashes: Vec<BlockHash>) {
        let m = ReplicaMessage::IWant(IWant {
            folder: self.config.folder,
            hashes,
        });
        self.send(Recipient::Peer(peer), m, false);
    }

    /// Stops asking `peer` for `hash` (for a while, if `exclude`): its waiters are missing
    /// again.
    fn drop_request(&mut self, hash: &BlockHash, exclude: bool) {
        let Some(f) = self.inflight.remove(hash) else {
            return;
        };
        self.deadlines.remove(&(f.deadline, *hash));
        if let Some(p) = self.peers.get_mut(&f.peer) {
            p.bytes_in_flight = p.bytes_in_flight.saturating_sub(charge(f.len));
        }
        if exclude {
            let until = self.now + self.config.block_request_timeout;
            let list = self.excluded.entry((*hash, f.len)).or_default();
            list.retain(|(p, _)| *p != f.peer);
            list.push((f.peer, until));
        }
        self.set_blocks(&f.waiters, BlockState::Busy, BlockState::Missing);
    }

    /// The link to `peer` is down: what was asked of it is missing again.
    pub(super) fn release_peer(&mut self, peer: NodeId) {
        let mut asked: Vec<BlockHash> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.peer == peer)
            .map(|(h, _)| *h)
            .collect();
        asked.sort_unstable();
        for h in asked {
            self.drop_request(&h, false);
        }
        self.fetch_dirty = true;
    }

    /// Requests past their deadline move to other peers.
    pub(super) fn expire_requests(&mut self) {
        let now = self.now;
        let mut late: Vec<(BlockHash, NodeId)> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(h, f)| (*h, f.peer))
            .collect();
        late.sort_unstable();
        for (h, peer) in late {
            self.drop_request(&h, true);
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.expired.len() >= EXPIRED_MAX {
                    p.expired.pop_front();
                }
                p.expired.push_back(h);
            }
        }
    }

    /// A piece of a block.
    pub(super) fn on_here_is(
        &mut self,
        from: NodeId,
        m: HereIs<'_>,
        payload: &Bytes,
    ) -> Result<(), ReplicaFault> {
        let n = m.data.len() as u64;
        let asked = self.inflight.get(&m.hash).is_some_and(|f| f.peer == from);
        if !asked {
            let expired = self
                .peers
                .get(&from)
                .is_some_and(|p| p.expired.contains(&m.hash));
            if expired {
                self.metrics.block_bytes_received += n;
                return Ok(());
            }
            return Err(ReplicaFault::Unexpected(
                "HEREIS for a block not asked of this peer",
            ));
        }
        let Some(f) = self.inflight.get_mut(&m.hash) else {
            return Ok(());
        };
        if m.offset != f.received {
            // A copy of the block that broke off: the sender's bulk queue dropped a piece
            // before this one, or the block was asked again of the same peer after a
            // timeout while the first answer's pieces were still on their way. An honest
            // peer does both, so neither is a fault: the piece is ignored, and the block
            // completes from the pieces that continue it (every copy of it holds the same
            // bytes) or times out and is asked again.
            self.metrics.block_bytes_received += n;
            return Ok(());
        }
        let end = u64::from(m.offset) + n;
        let ends_early = (n as usize) < HEREIS_PIECE_BYTES && end < u64::from(f.len);
        if end > u64::from(f.len) || ends_early {
            // The block this hash names at the sender is longer, or shorter (its last
            // piece, the only one under HEREIS_PIECE_BYTES, ends before), than the length
            // asked: a record claimed a length its content does not have, and the sender
            // serves the block by hash as it holds it. No fault of the sender's: it does
            // not hold the block at that length, as if it had answered NOTFOUND.
            let len = f.len;
            self.metrics.block_bytes_received += n;
            self.drop_request(&m.hash, false);
            self.not_held_by(from, m.hash, len);
            self.fetch_dirty = true;
            return Ok(());
        }
        self.metrics.block_bytes_received += n;
        f.hasher.update(m.data);
        // n <= HEREIS_DATA_BYTES_MAX, and offset + n <= len (a u32), checked above.
        f.received += n as u32;
        let done = f.received == f.len;
        if !done && *f.hasher.finalize().as_bytes() == m.hash {
            // The bytes so far hash to the block: it ends here, before the length asked (one
            // the heuristic above misses, a multiple of HEREIS_PIECE_BYTES). Proven: not held
            // at that length, as above.
            let len = f.len;
            self.drop_request(&m.hash, false);
            self.not_held_by(from, m.hash, len);
            self.fetch_dirty = true;
            return Ok(());
        }
        let data = slice_of(payload, m.data);
        let waiters = f.waiters.clone();
        for (temp, i) in &waiters {
            let Some(path) = self.temps.get(temp) else {
                continue;
            };
            let Some(fe) = self.applies.get_mut(path).and_then(|a| a.fetch.as_mut()) else {
                continue;
            };
            let (Some(b), Some(slot)) = (
                fe.entry.blocks.get(*i as usize),
                fe.blocks.get_mut(*i as usize),
            ) else {
                continue;
            };
            if slot.state != BlockState::Busy {
                continue;
            }
            slot.writes += 1;
            let req = StorageRequest::WriteTemp {
                temp: *temp,
                offset: b.offset + u64::from(m.offset),
                data: data.clone(),
            };
            self.request(
                Purpose::Write {
                    temp: *temp,
                    block: *i,
                },
                req,
            );
        }
        if !done {
            return Ok(());
        }
        let Some(f) = self.inflight.remove(&m.hash) else {
            return Ok(());
        };
        self.deadlines.remove(&(f.deadline, m.hash));
        if let Some(p) = self.peers.get_mut(&from) {
            p.bytes_in_flight = p.bytes_in_flight.saturating_sub(charge(f.len));
        }
        if self.fetch_queue.shadowed.remove(&m.hash) {
            self.fetch_dirty = true;
        } else {
            self.fetch_room = true;
        }
        if *f.hasher.finalize().as_bytes() == m.hash {
            self.set_blocks(&f.waiters, BlockState::Busy, BlockState::Verified);
            self.excluded.remove(&(m.hash, f.len));
            self.advance_waiters(&f.waiters);
            return Ok(());
        }
        self.metrics.blocks_corrupt += 1;
        self.set_blocks(&f.waiters, BlockState::Busy, BlockState::Missing);
        let until = self.now + self.config.block_request_timeout;
        self.excluded
            .entry((m.hash, f.len))
            .or_default()
            .push((from, until));
        self.event(ReplicaEvent::CorruptBlock {
            peer: from,
            hash: m.hash,
        });
        let p = self.peers.entry(from).or_default();
        p.mismatches += 1;
        if p.mismatches >= self.config.mismatches_before_disconnect {
            return Err(ReplicaFault::CorruptBlocks);
        }
        Ok(())
    }

    fn advance_waiters(&mut self, waiters: &[(TempId, u32)]) {
        let mut paths: Vec<String> = waiters
            .iter()
            .filter_map(|(t, _)| self.temps.get(t).cloned())
            .collect();
        paths.dedup();
        for p in paths {
            // A file still being fetched has nothing more to do for a block that arrived
            // (`advance` would only ask for a full scheduling pass, and nothing was added).
            let fetching = self.applies.get(&p).is_some_and(|a| {
                a.outstanding
                    || (!a.stale
                        && a.retry_at.is_none()
                        && a.is_fetching()
                        && a.fetch
                            .as_ref()
                            .is_some_and(|f| f.created && !f.is_complete()))
            });
            if !fetching {
                self.advance(&p);
            }
        }
    }

    /// A peer no longer has these blocks: asked elsewhere, not held against it.
    pub(super) fn on_not_found(&mut self, from: NodeId, hashes: &[BlockHash]) {
        for h in hashes {
            if let Some(len) = self
                .inflight
                .get(h)
                .filter(|f| f.peer == from)
                .map(|f| f.len)
            {
                self.drop_request(h, false);
                self.not_held_by(from, *h, len);
            }
        }
    }

    /// `peer` does not hold the block `hash` at `len` bytes: not asked for it again until it
    /// announces a change.
    fn not_held_by(&mut self, peer: NodeId, hash: BlockHash, len: u32) {
        if self.not_found.len() >= super::NOT_FOUND_MAX {
            self.not_found.clear();
            self.not_found_by_peer.clear();
        }
        self.not_found.entry((hash, len)).or_default().insert(peer);
        self.not_found_by_peer
            .entry(peer)
            .or_default()
            .insert((hash, len));
    }

    /// A peer asks for blocks.
    pub(super) fn on_want(&mut self, from: NodeId, hashes: Vec<BlockHash>) {
        let mut missing = Vec::new();
        let mut asked = BTreeSet::new();
        for hash in hashes {
            // A hash asked twice in one IWANT is served once.
            if !asked.insert(hash) {
                continue;
            }
            let serving = self.peers.get(&from).map_or(0, |p| p.serving);
            if !(self.ready && serving < SERVING_PER_PEER_MAX && self.serve(from, hash, Vec::new()))
            {
                missing.push(hash);
            }
        }
        if !missing.is_empty() {
            self.not_found(from, missing);
        }
    }

    /// Reads a local copy of `hash` to serve `peer`, from a file not in `tried` (one no
    /// apply holds first: an apply may have moved its file's content away). False if there
    /// is none.
    fn serve(&mut self, peer: NodeId, hash: BlockHash, tried: Vec<String>) -> bool {
        let was_tried = |p: &str| tried.iter().any(|t| t == p);
        let found = self
            .index
            .locate_except(&hash, |p| was_tried(p) || self.is_busy(p))
            .or_else(|| self.index.locate_except(&hash, was_tried))
            .map(|(path, b)| (path.to_string(), b));
        let Some((path, b)) = found else {
            return false;
        };
        let p = self.peers.entry(peer).or_default();
        let bytes = p.serving_bytes.saturating_add(u64::from(b.len));
        if p.serving > 0 && bytes > SERVING_BYTES_PER_PEER_MAX {
            return false;
        }
        p.serving += 1;
        p.serving_bytes = bytes;
        let req = StorageRequest::ReadBlock {
            path: path.clone(),
            offset: b.offset,
            len: b.len,
        };
        let mut tried = tried;
        tried.push(path);
        self.request(
            Purpose::Serve {
                peer,
                hash,
                len: b.len,
                tried,
            },
            req,
        );
        true
    }

    /// A block read to serve `peer` (from the files `tried`, the last one this read).
    pub(super) fn on_served(
        &mut self,
        peer: NodeId,
        hash: BlockHash,
        len: u32,
        tried: Vec<String>,
        r: StorageResult,
    ) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.serving = p.serving.saturating_sub(1);
            p.serving_bytes = p.serving_bytes.saturating_sub(u64::from(len));
        }
        let linked = self.peers.get(&peer).is_some_and(|p| p.linked);
        let bytes = match r {
            StorageResult::Block(b)
                if b.len() == len as usize && *blake3::hash(&b).as_bytes() == hash =>
            {
                b
            }
            _ => {
                // The file changed under the reader: another local copy, if any, else
                // NOTFOUND (a block in no file is never held against the asker).
                if linked && tried.len() <= HOLDERS_MAX && self.serve(peer, hash, tried) {
                    return;
                }
                if linked {
                    self.not_found(peer, vec![hash]);
                }
                return;
            }
        };
        if !linked {
            return;
        }
        let mut offset = 0usize;
        while offset < bytes.len() {
            let end = (offset + HEREIS_PIECE_BYTES).min(bytes.len());
            let m = ReplicaMessage::HereIs(HereIs {
                folder: self.config.folder,
                hash,
                // offset < len <= BLOCK_BYTES_MAX, a u32.
                offset: offset as u32,
                data: &bytes[offset..end],
            });
            self.metrics.block_bytes_sent += (end - offset) as u64;
            self.send(Recipient::Peer(peer), m, true);
            offset = end;
        }
    }

    /// A local block read to copy into files being fetched.
    pub(super) fn on_read_local(
        &mut self,
        hash: BlockHash,
        len: u32,
        waiters: Vec<(TempId, u32)>,
        r: StorageResult,
    ) {
        let bytes = match r {
            StorageResult::Block(b)
                if b.len() == len as usize && *blake3::hash(&b).as_bytes() == hash =>
            {
                b
            }
            _ => {
                self.local_misses.insert(hash);
                self.set_blocks(&waiters, BlockState::Busy, BlockState::Missing);
                if self.fetch_queue.shadowed.remove(&hash) {
                    self.fetch_dirty = true;
                }
                return;
            }
        };
        for (temp, i) in &waiters {
            let Some(path) = self.temps.get(temp) else {
                continue;
            };
            let Some(f) = self.applies.get_mut(path).and_then(|a| a.fetch.as_mut()) else {
                continue;
            };
            let (Some(b), Some(slot)) = (
                f.entry.blocks.get(*i as usize),
                f.blocks.get_mut(*i as usize),
            ) else {
                continue;
            };
            if slot.state != BlockState::Busy {
                continue;
            }
            slot.state = BlockState::Verified;
            slot.writes += 1;
            let req = StorageRequest::WriteTemp {
                temp: *temp,
                offset: b.offset,
                data: bytes.clone(),
            };
            self.metrics.blocks_copied_locally += 1;
            self.request(
                Purpose::Write {
                    temp: *temp,
                    block: *i,
                },
                req,
            );
        }
        // More places wait for this block than one read fills: a pass for them.
        if self.fetch_queue.shadowed.remove(&hash) {
            self.fetch_dirty = true;
        }
    }

    /// A `WriteTemp` answered.
    pub(super) fn on_written(&mut self, temp: TempId, block: u32, r: StorageResult) {
        let Some(path) = self.temps.get(&temp).cloned() else {
            return;
        };
        let Some(f) = self.applies.get_mut(&path).and_then(|a| a.fetch.as_mut()) else {
            return;
        };
        if f.temp != temp {
            return;
        }
        let i = if block == u32::MAX { 0 } else { block as usize };
        if let Some(slot) = f.blocks.get_mut(i) {
            slot.writes = slot.writes.saturating_sub(1);
            if r != StorageResult::Done {
                slot.state = BlockState::Missing;
            }
        }
        if block == u32::MAX && r != StorageResult::Done {
            // An empty file's temp was not made: no block arrives to try again, so its
            // apply backs off and makes it again at its retry (`advance`).
            f.created = false;
            self.fetch_dirty = true;
            self.backoff(&path);
            return;
        }
        if r != StorageResult::Done {
            self.fetch_dirty = true;
        }
        if f.is_complete() {
            self.mark_dirty();
            self.advance(&path);
        } else if f.blocks.get(i).is_some_and(|b| b.is_written()) {
            self.mark_dirty();
        }
    }
}

/// `data` as a slice of `payload` without a copy if it lies inside it, else copied.
fn slice_of(payload: &Bytes, data: &[u8]) -> Bytes {
    let p = payload.as_ptr() as usize;
    let d = data.as_ptr() as usize;
    if d >= p && d + data.len() <= p + payload.len() {
        payload.slice_ref(data)
    } else {
        Bytes::copy_from_slice(data)
    }
}

fn salt_of(peer: &NodeId) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&peer.0[..8]);
    b
}

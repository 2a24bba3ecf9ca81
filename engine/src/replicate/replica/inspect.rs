//! What the folder tells about itself: readiness, idleness, transfers, records, counters,
//! and the bounds it promises (`check_invariants`).

use weft_protocol::NodeId;

use super::{Purpose, Replica, DEFERRED_PER_PATH_MAX, NOT_FOUND_MAX};
use crate::replicate::plan::{BlockState, Step};
use crate::replicate::types::{Record, ReplicaMetrics, TempId, Transfer};

impl Replica {
    /// Whether the state is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The sequence number of the newest record in the index (0 if it is empty): a peer
    /// that has seen this far of this node's index (under [`Replica::index_id`]) has been
    /// told of every record (a remote run's sync point, SPEC.md §23.2).
    pub fn newest_sequence(&self) -> u64 {
        self.index
            .iter()
            .map(|r| r.entry.sequence)
            .max()
            .unwrap_or(0)
    }

    /// The peers this folder holds its next index batches to
    /// ([`hold_index`](Self::hold_index)).
    pub fn index_holds(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.index_held)
            .map(|(id, _)| *id)
    }

    /// The linked peers that asked for this copy's index (LIST), each with its cursor: the
    /// sequence of the last record sent to it.
    pub fn listeners(&self) -> Vec<(NodeId, u64)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.linked)
            .filter_map(|(id, p)| p.cursor.map(|c| (*id, c)))
            .collect()
    }

    /// Whether this copy has caught up with `peer`'s up to its sync point: the state is
    /// loaded, every record of `peer`'s index `index_id` up to `sequence` has arrived
    /// (`sequence` 0: none is waited for), and no apply, deferred record, block request or
    /// storage step is outstanding (an apply stalled for want of a source does not hold it).
    pub fn caught_up(&self, peer: &NodeId, index_id: u64, sequence: u64) -> bool {
        let seen = sequence == 0
            || self
                .peers
                .get(peer)
                .is_some_and(|p| p.index_id == index_id && p.seen >= sequence);
        self.ready
            && seen
            && self.applies.values().all(|a| self.is_stalled(a))
            && self.deferred.keys().all(|p| self.held_by_stalled(p))
            && self.inflight.is_empty()
            && self
                .pending
                .values()
                .all(|p| matches!(p, Purpose::Persist(_)))
    }

    /// Whether this copy holds everything of `peer`'s up to its sync point: caught up
    /// ([`Replica::caught_up`]) with no apply or deferred record left at all, stalled ones
    /// included (what a remote run wrote is all back, SPEC.md §23.6).
    pub fn holds_all_of(&self, peer: &NodeId, index_id: u64, sequence: u64) -> bool {
        self.caught_up(peer, index_id, sequence)
            && self.applies.is_empty()
            && self.deferred.is_empty()
    }

    /// Whether nothing is left to do: every version known from a peer that is newer than
    /// the local one is in place, and no storage step or block request is outstanding.
    pub fn is_idle(&self) -> bool {
        let announced = self
            .peers
            .values()
            .all(|p| !p.linked || p.cursor.is_none_or(|c| c >= self.index.sequence()));
        self.ready
            && self.applies.values().all(|a| self.is_stalled(a))
            && self.deferred.keys().all(|p| self.held_by_stalled(p))
            && self.inflight.is_empty()
            && self
                .pending
                .values()
                .all(|p| matches!(p, Purpose::Persist(_)))
            && self.out.is_empty()
            && announced
    }

    /// What keeps the folder busy, in one line (for a simulator's report when it does not
    /// settle): each apply's path, front step and retry time, deferred records, blocks in
    /// flight, outstanding storage steps, peers not yet told of every record.
    pub fn busy(&self) -> String {
        let mut out = Vec::new();
        for (path, a) in &self.applies {
            let step = a.steps.front().map_or("-".to_string(), |s| match s {
                Step::Remove { .. } => "Remove".into(),
                Step::Rename { from, to, .. } => format!("Rename {from} -> {to}"),
                Step::Replace { from, .. } => format!("Replace with {from}"),
                Step::MakeDir { .. } => "MakeDir".into(),
                Step::MakeSymlink { target } => format!("MakeSymlink -> {target}"),
                Step::SetMode { .. } => "SetMode".into(),
                Step::Fetch { .. } => "Fetch".into(),
            });
            let blocks = a.fetch.as_ref().map_or(String::new(), |f| {
                let count = |st| f.blocks.iter().filter(|b| b.state == st).count();
                format!(
                    ", blocks missing {} busy {} verified {}",
                    count(BlockState::Missing),
                    count(BlockState::Busy),
                    count(BlockState::Verified)
                )
            });
            let sources: Vec<String> = a
                .sources
                .iter()
                .map(|s| {
                    let linked = self.peers.get(s).is_some_and(|p| p.linked);
                    format!("{s}{}", if linked { "" } else { " (unlinked)" })
                })
                .collect();
            if self.is_stalled(a) {
                continue;
            }
            out.push(format!(
                "apply {path}: {step} (outstanding {}, retry {:?}, stale {}, sources {sources:?}{blocks})",
                a.outstanding, a.retry_at, a.stale
            ));
        }
        for (path, d) in &self.deferred {
            if self.held_by_stalled(path) {
                continue;
            }
            out.push(format!("deferred {path}: {}", d.len()));
        }
        if !self.inflight.is_empty() {
            out.push(format!("{} blocks in flight", self.inflight.len()));
        }
        for p in self.pending.values() {
            if !matches!(p, Purpose::Persist(_)) {
                out.push(format!("pending {p:?}"));
            }
        }
        for (node, p) in &self.peers {
            if p.linked && p.cursor.is_some_and(|c| c < self.index.sequence()) {
                out.push(format!(
                    "peer {node} at {:?} of {}",
                    p.cursor,
                    self.index.sequence()
                ));
            }
        }
        out.join("; ")
    }

    /// Whether an apply holds `path` (as its path, or locked: a move's source, a resolve's
    /// kept copy): what is on disk there is the apply's business until it ends.
    pub fn is_held(&self, path: &str) -> bool {
        self.is_busy(path)
    }

    /// The index, by path (deletion records included).
    pub fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        let mut all: Vec<&Record> = self.index.iter().collect();
        all.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        all.into_iter()
    }

    /// The temporary files the folder's applies use (any other in the host's temporary
    /// folder is left over from before a crash, and may go).
    pub fn temps_in_use(&self) -> Vec<TempId> {
        self.temps.keys().copied().collect()
    }

    /// The files being fetched, by path: bytes written so far of each one's size.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.applies
            .iter()
            .filter_map(|(path, a)| {
                let f = a.fetch.as_ref()?;
                let done = f
                    .entry
                    .blocks
                    .iter()
                    .zip(&f.blocks)
                    .filter(|(_, slot)| slot.is_written())
                    .map(|(b, _)| u64::from(b.len))
                    .sum();
                Some(Transfer {
                    path: path.clone(),
                    bytes_done: done,
                    bytes_total: f.entry.size,
                })
            })
            .collect()
    }

    /// The record at `path`, if any.
    pub fn record(&self, path: &str) -> Option<&Record> {
        self.index.get(path)
    }

    /// This folder's index id (drawn when its state was first created).
    pub fn index_id(&self) -> u64 {
        self.index_id
    }

    /// An IWANT from a peer too far behind was passed over (see
    /// [`ReplicaMetrics::wants_behind`]).
    pub(crate) fn count_want_behind(&mut self) {
        self.metrics.wants_behind += 1;
    }

    /// The folder's counters.
    pub fn metrics(&self) -> ReplicaMetrics {
        self.metrics
    }

    /// Checks every bound it promises.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.not_found.len() > NOT_FOUND_MAX {
            return Err(format!(
                "{} blocks remembered as not found",
                self.not_found.len()
            ));
        }
        // The by-peer index holds exactly the pairs the by-block map does.
        let pairs: usize = self.not_found.values().map(|p| p.len()).sum();
        let indexed: usize = self.not_found_by_peer.values().map(|b| b.len()).sum();
        let consistent = pairs == indexed
            && self.not_found_by_peer.iter().all(|(peer, blocks)| {
                blocks
                    .iter()
                    .all(|b| self.not_found.get(b).is_some_and(|p| p.contains(peer)))
            });
        if !consistent {
            return Err("the not-found index by peer differs from the map by block".into());
        }
        for (path, a) in &self.applies {
            // A landed apply holds its path only while its step is with the host.
            if a.landed && !a.outstanding {
                return Err(format!("{path}: landed, no step out"));
            }
            // An apply waiting for a persist has one out, or asked for, or due.
            let due = self.persist_outstanding || self.persist_wanted || self.persist_at.is_some();
            if a.gated && !due {
                return Err(format!("{path}: waits for a persist nobody asked for"));
            }
        }
        let outstanding = self.outstanding();
        if outstanding > self.config.requests_outstanding_max {
            return Err(format!(
                "{outstanding} storage requests outstanding, over {}",
                self.config.requests_outstanding_max
            ));
        }
        for (id, p) in &self.peers {
            let sum: u64 = self
                .inflight
                .values()
                .filter(|f| f.peer == *id)
                .map(|f| super::fetch::charge(f.len))
                .sum();
            if sum != p.bytes_in_flight {
                return Err(format!(
                    "peer {id}: {} bytes in flight counted, {sum} asked",
                    p.bytes_in_flight
                ));
            }
            let single = self.inflight.values().filter(|f| f.peer == *id).count() <= 1;
            if p.bytes_in_flight > self.config.bytes_in_flight_per_peer_max && !single {
                return Err(format!(
                    "peer {id}: {} bytes in flight, over the bound",
                    p.bytes_in_flight
                ));
            }
            if p.expired.len() > super::fetch::EXPIRED_MAX {
                return Err(format!(
                    "peer {id}: {} expired blocks kept",
                    p.expired.len()
                ));
            }
        }
        if let Some(f) = self
            .inflight
            .values()
            .find(|f| !self.peers.get(&f.peer).is_some_and(|p| p.linked))
        {
            return Err(format!(
                "a block is asked of {}, which is not linked",
                f.peer
            ));
        }
        self.index.check()?;
        for (temp, path) in &self.temps {
            if self
                .applies
                .get(path)
                .and_then(|a| a.fetch.as_ref())
                .map(|f| f.temp)
                != Some(*temp)
            {
                return Err(format!(
                    "temp {temp:?} names {path}, which is not fetching it"
                ));
            }
        }
        for (l, owner) in &self.locks {
            if !self.applies.get(owner).is_some_and(|a| a.locks.contains(l)) {
                return Err(format!("{l} is locked by {owner}, which does not hold it"));
            }
        }
        if self
            .deferred
            .values()
            .any(|d| d.len() > DEFERRED_PER_PATH_MAX)
        {
            return Err("more remote records deferred for a path than the bound".into());
        }
        Ok(())
    }
}

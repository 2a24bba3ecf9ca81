//! The folder's state in the host's store: loaded once at the start (the numbering jumped
//! past anything given before a crash), persisted after `persist_delay` once it changes.

use bytes::Bytes;
use rand_chacha::rand_core::RngCore;

use super::{
    raised_high, Purpose, Replica, COUNTER_HIGH_MAX, COUNTER_RESTART_GAP, COUNTER_VALUE_MAX,
    SEQUENCE_RESTART_GAP,
};
use crate::replicate::paths::IgnoreRules;
use crate::replicate::plan::Persisted;
use crate::replicate::state::{PersistedState, STATE_FORMAT};
use crate::replicate::types::{Record, ReplicaEvent, StorageRequest, StorageResult};
use crate::time::{Duration, Instant};

impl Replica {
    pub(super) fn on_loaded(&mut self, result: StorageResult) {
        let state = match result {
            StorageResult::Loaded(Some(b)) => PersistedState::decode(&b),
            StorageResult::Loaded(None) => None,
            _ => {
                self.load_retry_at = Some(self.now + Duration::from_secs(1));
                return;
            }
        };
        match state {
            Some(s) => {
                self.index_id = s.index_id;
                self.next_temp = s.next_temp.max(1);
                for (entry, deleted, moved) in s.records {
                    self.counter_high = raised_high(self.counter_high, entry.version.get(self.me));
                    self.index.restore(Record { entry, deleted }, moved);
                }
                for (id, index_id, seen) in s.peers {
                    let p = self.peers.entry(id).or_default();
                    p.index_id = index_id;
                    p.seen = seen;
                }
                // The rules in force before the stop: the host's rules, given since the start
                // or later, are told apart from these (`set_ignore_rules`).
                let (before, _) = IgnoreRules::parse(&s.ignore_lines.join("\n"));
                if self.ignore_given {
                    let given = core::mem::replace(&mut self.ignore, before);
                    self.ignore_given = false;
                    self.set_ignore_rules(given);
                } else {
                    self.ignore = before;
                }
                for (path, mut a) in s.applies {
                    if let Some(f) = a.fetch.as_mut() {
                        f.settle();
                        self.next_temp = self.next_temp.max(f.temp.0 + 1);
                        self.temps.insert(f.temp, path.clone());
                    }
                    for l in &a.locks {
                        self.locks.insert(l.clone(), path.clone());
                    }
                    if let Some(t) = a.retry_at {
                        self.retries.insert((t, path.clone()));
                    }
                    self.applies.insert(path, a);
                }
                self.deferred = s.deferred.into_iter().collect();
                // A counter past COUNTER_VALUE_MAX was a forged one's, taken before peers'
                // records were checked for it: it would leave no counter peers take.
                let persisted = Some(s.counter_high).filter(|&c| c <= COUNTER_VALUE_MAX);
                self.counter_high = self
                    .counter_high
                    .max(persisted.unwrap_or(0))
                    .saturating_add(COUNTER_RESTART_GAP);
                // Changes made after the last persist may have been announced with sequence
                // numbers the restored index would give again; peers that saw them would
                // skip the new changes. New changes start far above anything given before.
                let restored = s.sequence.max(self.index.sequence());
                self.index
                    .skip_to(restored.saturating_add(SEQUENCE_RESTART_GAP));
                self.mark_dirty();
            }
            None => {
                self.index_id = self.rng.next_u64().max(1);
                // Peers may hold versions with this node's counters from its earlier runs
                // (a store reset, a state another format wrote): counting again from 0, a
                // new change would look older than theirs and be overwritten.
                let floor = self
                    .incarnation
                    .saturating_mul(COUNTER_RESTART_GAP)
                    .min(COUNTER_HIGH_MAX);
                self.counter_high = self.counter_high.max(floor);
                self.mark_dirty();
            }
        }
        self.ready = true;
        self.event(ReplicaEvent::Ready);
        for peer in self.linked_peers() {
            self.send_list(peer);
        }
        for change in core::mem::take(&mut self.early_local) {
            self.handle_local(self.now, change);
        }
        let paths: Vec<String> = self.applies.keys().cloned().collect();
        for p in paths {
            self.advance(&p);
        }
        // Deferred records whose path is free (its apply was not persisted, or has ended).
        let deferred: Vec<String> = self.deferred.keys().cloned().collect();
        for p in deferred {
            self.redo_deferred(&p);
        }
        // Nothing is announced until the state is persisted with the numbering jumped: a
        // crash before that would restore the same numbering and jump to the same numbers
        // again, and peers that saw this life's changes would skip the next life's.
        self.persist_at = None;
        if !self.persist_outstanding {
            self.persist();
        }
        self.fetch_dirty = true;
    }

    /// The node is shutting down: a change not yet persisted is persisted now rather than
    /// after `persist_delay`, even while an earlier persist is still out (hosts store a
    /// folder's blobs in the order asked, so this one lands last), and so is every change
    /// from now on, once the input that made it has been handled (a storage step that ends
    /// during the shutdown). A node stopped just after an apply would otherwise find the
    /// applied file at its next start as a local change of its own, a conflict.
    pub fn persist_now(&mut self, now: Instant) {
        self.now = now;
        self.stopping = true;
        if self.ready && self.persist_dirty {
            self.persist_at = None;
            self.persist();
        }
    }

    /// The folder is being removed from the node: a change not yet persisted is persisted
    /// now, even while an earlier persist is still out (hosts store a folder's blobs in the
    /// order asked, so this one lands last).
    pub fn persist_final(&mut self, now: Instant) {
        self.now = now;
        if self.ready && self.persist_dirty {
            self.persist_at = None;
            self.persist();
        }
    }

    pub(super) fn persist(&mut self) {
        self.persist_dirty = false;
        self.persist_wanted = false;
        self.persists_asked += 1;
        let number = self.persists_asked;
        for a in self.applies.values_mut() {
            if a.persisted != Persisted::Yes {
                a.persisted = Persisted::Asked(number);
            }
        }
        let state = PersistedState {
            format: STATE_FORMAT,
            index_id: self.index_id,
            sequence: self.index.sequence(),
            next_temp: self.next_temp,
            counter_high: self.counter_high,
            records: self
                .index
                .since(0)
                .map(|(r, m)| (r.entry.clone(), r.deleted, m.cloned()))
                .collect(),
            peers: self
                .peers
                .iter()
                .filter(|(_, p)| p.index_id != 0)
                .map(|(id, p)| (*id, p.index_id, p.seen))
                .collect(),
            applies: self
                .applies
                .iter()
                .map(|(p, a)| (p.clone(), a.clone()))
                .collect(),
            deferred: self
                .deferred
                .iter()
                .map(|(p, list)| (p.clone(), list.clone()))
                .collect(),
            ignore_lines: self.ignore.lines().to_vec(),
        };
        self.persist_outstanding = true;
        let bytes = Bytes::from(state.encode());
        self.last_persist = Some((self.now, bytes.len()));
        self.request(
            Purpose::Persist(number),
            StorageRequest::PersistState { bytes },
        );
    }

    /// When the store an apply waits for may be asked for: not before 1 ms per
    /// `write_ahead_bytes_per_ms` of the last store's blob after it was asked for (at most
    /// `persist_delay`).
    pub(super) fn write_ahead_at(&self) -> Instant {
        let rate = self.config.write_ahead_bytes_per_ms.max(1);
        let gap = self.last_persist.map(|(at, bytes)| {
            let ms = (bytes / rate) as u64;
            at + Duration::from_millis(ms).min(self.config.persist_delay)
        });
        gap.unwrap_or(self.now)
    }

    /// The host stored the persist numbered `number`: the applies it holds may change the
    /// folder now.
    pub(super) fn on_persisted(&mut self, number: u64) {
        let mut held = Vec::new();
        for (path, a) in &mut self.applies {
            if matches!(a.persisted, Persisted::Asked(n) if n <= number) {
                a.persisted = Persisted::Yes;
                if core::mem::take(&mut a.gated) {
                    held.push(path.clone());
                }
            }
        }
        for path in held {
            self.advance(&path);
        }
    }

    /// Whether the apply at `path` must wait before its next step, which changes the folder:
    /// no stored state holds it yet. A crash after the step would leave the restarted node
    /// a file its restored index does not explain, taken for a local edit (a version of its
    /// own, concurrent with whatever the peers did since); a restored apply tells it apart
    /// ([`Replica::lands`]). A persist is asked for once the input is handled.
    pub(super) fn waits_for_persist(&mut self, path: &str) -> bool {
        let Some(a) = self
            .applies
            .get_mut(path)
            .filter(|a| a.persisted != Persisted::Yes)
        else {
            return false;
        };
        a.gated = true;
        // One out that holds it frees it when answered.
        if a.persisted == Persisted::No {
            self.persist_wanted = true;
        }
        self.persist_dirty = true;
        // The storage room its step would take stays free meanwhile: a full scheduling pass
        // may give it to the blocks that wait (as a commit's answer would have).
        self.fetch_dirty = true;
        true
    }

    /// The state changed: persist it after `persist_delay`.
    pub(super) fn mark_dirty(&mut self) {
        if !self.ready {
            return;
        }
        self.persist_dirty = true;
        self.persist_failed = false;
        if self.persist_at.is_none() && !self.persist_outstanding {
            self.persist_at = Some(self.now + self.config.persist_delay);
        }
    }
}

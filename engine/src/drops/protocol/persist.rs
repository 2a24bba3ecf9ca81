//! The drops' state blob: held drops stored with the host after a change, and restored at
//! the start (every version checked again, parents first).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{DropsProtocol, Held, Stored, LOAD, STATE_FORMAT, STORE};
use crate::drops::{Chain, DROPS_MAX, DROPS_STATE_NAME};
use crate::io::{HostRequest, HostResult};
use crate::machine::ProtocolOutput;

impl DropsProtocol {
    /// The held drops changed: counted, and stored.
    pub(super) fn changed(&mut self) {
        self.persist.durability.changes += 1;
        self.store();
    }

    /// Hands the drops to the host, unless a store is under way (then once it is done).
    pub(super) fn store(&mut self) {
        if !self.persist.loaded {
            return;
        }
        if self.persist.unreadable || self.persist.stores_blocked {
            // Never stored in this run: every change so far has failed to be.
            let d = &mut self.persist.durability;
            d.failed_through = d.changes;
            d.failure = Some(if self.persist.unreadable {
                "the stored drops could not be read; they are kept as they are, and nothing is stored over them".into()
            } else {
                "this node keeps no state (its store could not be read)".into()
            });
            return;
        }
        if self.persist.outstanding {
            self.persist.dirty = true;
            return;
        }
        let stored: Vec<Stored> = self
            .drops
            .iter()
            .map(|(drop, h)| Stored {
                drop: *drop,
                created: h.created,
                versions: h.chain.versions().cloned().collect(),
                shown: h
                    .shown
                    .and_then(|v| h.files.get(&v).map(|list| (v, list.clone()))),
            })
            .collect();
        // Ids, integers, strings and sequences: nothing here can fail to encode.
        let bytes = postcard::to_allocvec(&(STATE_FORMAT, stored)).expect("the drops encode");
        self.persist.outstanding = true;
        self.persist.dirty = false;
        self.persist
            .storing
            .push_back(self.persist.durability.changes);
        self.outputs.push_back(ProtocolOutput::Request {
            token: STORE,
            request: HostRequest::StoreState {
                name: DROPS_STATE_NAME.into(),
                bytes: Bytes::from(bytes),
            },
        });
    }

    /// The stored drops, back: each chain rebuilt (every version checked again, parents
    /// first), its folder added with the gate of the version it showed.
    pub(super) fn restore(&mut self, blob: &[u8]) {
        // Unreadable (damaged, or another format): kept as it is, never stored over, and
        // no drop changes in this run (a near-empty store over it lost every drop held).
        let Ok((format, stored)) = postcard::from_bytes::<(u32, Vec<Stored>)>(blob) else {
            self.metrics.state_failures += 1;
            self.persist.unreadable = true;
            return;
        };
        if format != STATE_FORMAT {
            self.metrics.state_failures += 1;
            self.persist.unreadable = true;
            return;
        }
        for s in stored.into_iter().take(DROPS_MAX) {
            let mut chain = Chain::new(s.drop);
            let mut versions = s.versions;
            versions.sort_by_key(|m| m.counter);
            for m in versions {
                let _ = chain.offer(m);
            }
            let mut files = BTreeMap::new();
            let mut shown = None;
            if let Some((v, list)) = s.shown {
                if chain.get(&v).is_some() {
                    files.insert(v, list);
                    shown = Some(v);
                }
            }
            let mut held = Held::new(s.drop, s.created);
            held.chain = chain;
            held.files = files;
            held.shown = shown;
            if s.created.is_some() || !held.chain.is_empty() {
                // Held across the restart: announced again at once.
                self.tracker.mark_due(s.drop);
            }
            self.drops.insert(s.drop, held);
            self.add_folder(s.drop);
            self.update_shown(s.drop, None);
        }
    }

    /// The host finished a request: the stored drops loaded, or a store done.
    pub(super) fn on_completed(&mut self, token: u64, result: HostResult) {
        match (token, result) {
            (LOAD, result) => {
                self.persist.loaded = true;
                match result {
                    HostResult::Loaded(Some(blob)) => {
                        self.restore(&blob);
                        self.persist.durability.restored = !self.persist.unreadable;
                    }
                    HostResult::Loaded(None) => self.persist.durability.restored = true,
                    // The host read nothing (a node without a store answers every load so):
                    // the drops work in memory, and nothing is stored over what the store
                    // may still hold (a read that failed once).
                    _ => {
                        self.metrics.state_failures += 1;
                        self.persist.stores_blocked = true;
                    }
                }
            }
            (STORE, result) => {
                let through = self.persist.storing.pop_front().unwrap_or_default();
                self.persist.outstanding = !self.persist.storing.is_empty();
                let d = &mut self.persist.durability;
                // A failed store is tried again at the next sync, not at once (a host that
                // fails every store would be asked without end).
                if let HostResult::Stored = result {
                    d.stored_through = d.stored_through.max(through);
                    if self.persist.dirty {
                        self.store();
                    }
                } else {
                    d.failed_through = d.failed_through.max(through);
                    d.failure = Some(match result {
                        HostResult::Failed(why) => why,
                        other => format!("the host answered {other:?}"),
                    });
                    self.metrics.state_failures += 1;
                    self.persist.dirty = true;
                }
            }
            _ => self.metrics.state_failures += 1,
        }
    }
}

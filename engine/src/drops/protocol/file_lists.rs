//! File lists (SPEC.md §24.3): the folder moved to the current head once its list is
//! fetched (batch by batch, checked against the version's root) and verified; lists served
//! to peers, and a holder that lacks one replaced by another.

use std::collections::BTreeSet;

use weft_protocol::{
    DropFile, DropFiles, DropGetFiles, DropId, DropMessage, DropNotFound, NodeId, RootHasher,
    VersionId, DROP_FILES_BATCH_BYTES_MAX, DROP_FILES_BATCH_MAX,
};

use super::{Assembly, DropsProtocol, DROP_SYNC_INTERVAL};
use crate::drops::{check_paths, check_symlink_chains, DropsEventKind};
use crate::machine::PeerFault;

impl DropsProtocol {
    /// Moves the folder to the current head once its file list is verified; asks for the
    /// list (of `prefer`, else another holder) when it is not.
    pub(super) fn update_shown(&mut self, drop: DropId, prefer: Option<NodeId>) {
        // The owners in force changed without the current version changing (the primary
        // removed or added an owner on a branch that is not the highest): the gate goes by
        // them.
        if self
            .drops
            .get(&drop)
            .is_some_and(|h| h.gate_owners.as_ref() != h.chain.owners())
        {
            self.set_gate(drop);
        }
        let now = self.now;
        let linked = self.linked.clone();
        let Some(held) = self.drops.get_mut(&drop) else {
            return;
        };
        let Some((current, m)) = held.chain.current() else {
            return;
        };
        let counter = m.counter;
        // Lists of versions that are no longer heads are not kept, but for the one shown: the
        // gate stands on it until the current version's list is verified (and it is stored,
        // and served, meanwhile).
        let heads: BTreeSet<VersionId> = held.chain.heads().copied().collect();
        let shown = held.shown;
        held.files
            .retain(|v, _| heads.contains(v) || Some(*v) == shown);
        if held.files.contains_key(&current) {
            held.assembly = None;
            if held.shown != Some(current) {
                held.shown = Some(current);
                held.files.retain(|v, _| heads.contains(v) || *v == current);
                let branches = heads.len();
                // A peer that asked for this list before it was held here (and heard
                // NOTFOUND) takes this node as a holder again and asks it now, not at its
                // next sync.
                let subscribers: Vec<NodeId> = held
                    .subscribers
                    .iter()
                    .copied()
                    .filter(|s| linked.contains(s))
                    .collect();
                let heads_message = self.heads_of(&drop);
                for s in subscribers {
                    self.send(s, DropMessage::Heads(heads_message.clone()));
                }
                self.set_gate(drop);
                self.event(
                    drop,
                    DropsEventKind::Current {
                        version: current,
                        counter,
                        branches,
                    },
                );
                self.changed();
            }
            return;
        }
        let fresh = |a: &Assembly| a.asked_at + DROP_SYNC_INTERVAL > now;
        if held
            .assembly
            .as_ref()
            .is_some_and(|a| a.version == current && fresh(a))
        {
            return;
        }
        // A timed-out assembly's peer is no holder any more (it may send its heads again),
        // and is tried last: holders that do not answer are not asked in turn for good while
        // one that would answer waits.
        let displaced = held.assembly.take();
        let stale = displaced.as_ref().map(|a| a.peer);
        if let Some(a) = displaced.filter(|a| a.version == current) {
            // Timed out (not displaced by a newer version, whose peer was answering).
            held.holders.remove(&a.peer);
        }
        let peer = prefer
            .filter(|p| linked.contains(p) && Some(*p) != stale)
            .or_else(|| {
                held.holders
                    .iter()
                    .find(|h| linked.contains(h) && Some(**h) != stale)
                    .copied()
            })
            .or_else(|| stale.filter(|p| linked.contains(p)));
        let Some(peer) = peer else {
            held.assembly = None;
            return;
        };
        held.assembly = Some(Assembly {
            version: current,
            peer,
            asked_at: now,
            hasher: RootHasher::new(),
            files: Vec::new(),
            thin_before: false,
        });
        self.send(
            peer,
            DropMessage::GetFiles(DropGetFiles {
                drop,
                version: current,
                from: 0,
            }),
        );
    }

    /// A batch of a file list from `peer`.
    pub(super) fn on_files(&mut self, peer: NodeId, m: DropFiles) -> Result<(), PeerFault> {
        let drop = m.drop;
        let Some(held) = self.drops.get_mut(&drop) else {
            return Ok(());
        };
        let Some(a) = held.assembly.as_mut() else {
            return Ok(());
        };
        if a.peer != peer || a.version != m.version || a.files.len() != m.from as usize {
            return Ok(());
        }
        let Some(manifest) = held.chain.get(&a.version) else {
            held.assembly = None;
            return Ok(());
        };
        let total = manifest.files as usize;
        // §22.3's path rules first: a list with one path they refuse is refused whole. A
        // list past the manifest's files or bytes is refused at once, not once it has all
        // come (a holder could make this node keep far more than the manifest says).
        let result = if m.files.is_empty() && a.files.len() < total {
            Err(weft_protocol::DropError::RootMismatch)
        } else {
            check_paths(&m.files)
                .and_then(|()| a.hasher.push_batch(&m.files))
                .and_then(|()| within(&a.hasher, manifest))
        };
        if let Err(error) = result {
            held.assembly = None;
            held.holders.remove(&peer);
            self.metrics.file_lists_refused += 1;
            if matches!(error, weft_protocol::DropError::BadPath { .. }) {
                self.metrics.file_lists_bad_path += 1;
            }
            self.event(drop, DropsEventKind::FilesRefused { peer, error });
            return Err(PeerFault::Unexpected("a drop file list that breaks a rule"));
        }
        // A batch that ends no list holds DROP_FILES_BATCH_MAX files, or stopped short of
        // DROP_FILES_BATCH_BYTES_MAX only because the next file would pass it. So a thin one
        // (fewer files, under half the bytes) is followed by a batch that starts with a file
        // of over half the bytes: a holder serving two thin batches in a row is dripping the
        // list (one file every few seconds kept the assembly alive for good), and another
        // holder is asked.
        let thin = m.files.len() < DROP_FILES_BATCH_MAX
            && m.files.iter().map(DropFile::encoded_len).sum::<usize>()
                < DROP_FILES_BATCH_BYTES_MAX / 2;
        let ends = a.files.len() + m.files.len() >= total;
        if thin && !ends && a.thin_before {
            held.assembly = None;
            held.holders.remove(&peer);
            self.metrics.file_lists_too_slow += 1;
            self.update_shown(drop, None);
            return Ok(());
        }
        a.thin_before = thin;
        a.files.extend(m.files);
        // A list coming in batch after batch is not fetched again from its start: it is
        // stale only once no batch has come for a sync interval.
        a.asked_at = self.now;
        if a.files.len() < total {
            let from = a.files.len() as u32;
            let version = a.version;
            self.send(
                peer,
                DropMessage::GetFiles(DropGetFiles {
                    drop,
                    version,
                    from,
                }),
            );
            return Ok(());
        }
        let Some(a) = held.assembly.take() else {
            return Ok(());
        };
        // The root first: it settles a list that is not the signed one at little cost, before
        // the walk of its symlinks.
        let whole = a
            .hasher
            .finish(manifest)
            .and_then(|()| check_symlink_chains(&a.files));
        if let Err(error) = whole {
            held.holders.remove(&peer);
            self.metrics.file_lists_refused += 1;
            if matches!(error, weft_protocol::DropError::BadPath { .. }) {
                self.metrics.file_lists_bad_path += 1;
            }
            self.event(drop, DropsEventKind::FilesRefused { peer, error });
            return Err(PeerFault::Unexpected("a drop file list that breaks a rule"));
        }
        held.files.insert(a.version, a.files);
        self.update_shown(drop, Some(peer));
        Ok(())
    }

    /// DROP_FILES for a held list, from `from`: as many files as fit a batch.
    pub(super) fn serve_files(&mut self, peer: NodeId, m: DropGetFiles) {
        let files = self
            .drops
            .get(&m.drop)
            .and_then(|h| h.files.get(&m.version))
            .map(|list| {
                let mut batch = Vec::new();
                let mut bytes = 0;
                for f in list.iter().skip(m.from as usize) {
                    let len = f.encoded_len();
                    if batch.len() == DROP_FILES_BATCH_MAX
                        || (!batch.is_empty() && bytes + len > DROP_FILES_BATCH_BYTES_MAX)
                    {
                        break;
                    }
                    bytes += len;
                    batch.push(f.clone());
                }
                batch
            });
        let message = match files {
            Some(files) => DropMessage::Files(DropFiles {
                drop: m.drop,
                version: m.version,
                from: m.from,
                files,
            }),
            None => DropMessage::NotFound(DropNotFound {
                drop: m.drop,
                version: m.version,
            }),
        };
        self.send(peer, message);
    }

    /// The holder a file list was asked of lacks it: another is asked.
    pub(super) fn on_not_found(&mut self, peer: NodeId, m: DropNotFound) {
        let Some(held) = self.drops.get_mut(&m.drop) else {
            return;
        };
        if held
            .assembly
            .as_ref()
            .is_some_and(|a| a.peer == peer && a.version == m.version)
        {
            held.assembly = None;
            held.holders.remove(&peer);
            self.update_shown(m.drop, None);
        }
    }
}

/// Whether the files pushed so far are within what `manifest` says: no more files, no more
/// bytes.
fn within(
    hasher: &RootHasher,
    manifest: &weft_protocol::DropManifest,
) -> Result<(), weft_protocol::DropError> {
    if hasher.files() > manifest.files {
        return Err(weft_protocol::DropError::FileCountMismatch {
            expected: manifest.files,
            got: hasher.files(),
        });
    }
    if hasher.bytes() > manifest.bytes {
        return Err(weft_protocol::DropError::ByteCountMismatch {
            expected: manifest.bytes,
            got: hasher.bytes(),
        });
    }
    Ok(())
}

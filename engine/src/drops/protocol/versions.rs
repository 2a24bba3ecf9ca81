//! Versions (SPEC.md §24.2, §24.6): publishing the drop folder's index as a version after
//! every head, judging a version from a peer or this node (accepted ones pushed to the
//! subscribers, missing parents asked for), and the heads told to links.

use weft_protocol::{
    DropFile, DropGetVersion, DropHeads, DropId, DropManifest, DropMessage, DropOwners,
    ManifestFields, NodeId, PublicKey, RootHasher, VersionId, DROP_HEADS_MAX, DROP_PARENTS_MAX,
    DROP_SECONDARY_OWNERS_MAX,
};

use super::DropsProtocol;
use crate::drops::{
    check_paths, check_symlink_chains, DropsEventKind, DropsRefusal, Offer, DROP_VERSIONS_MAX,
};
use crate::machine::{Context, PeerFault};
use crate::time::Instant;

impl DropsProtocol {
    /// Publishes `files` (the drop folder's index) as a version after every head.
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        drop: DropId,
        secondary: Option<Vec<PublicKey>>,
        files: Option<Vec<DropFile>>,
    ) -> Result<(), DropsRefusal> {
        self.now = now;
        let result = self.publish_files(drop, secondary, files);
        self.announce_fresh(now, cx);
        result
    }

    pub(super) fn publish_files(
        &mut self,
        drop: DropId,
        secondary: Option<Vec<PublicKey>>,
        files: Option<Vec<DropFile>>,
    ) -> Result<(), DropsRefusal> {
        if !self.persist.loaded {
            return Err(DropsRefusal::Loading);
        }
        if self.persist.unreadable {
            return Err(DropsRefusal::StateUnreadable);
        }
        let Some(held) = self.drops.get(&drop) else {
            return Err(DropsRefusal::UnknownDrop(drop));
        };
        if !self.is_owner(held) {
            return Err(DropsRefusal::NotAnOwner(drop));
        }
        let Some(mut files) = files else {
            return Err(DropsRefusal::NoFolder(drop));
        };
        if held.chain.len() >= DROP_VERSIONS_MAX {
            return Err(DropsRefusal::HistoryFull(drop));
        }
        let me = self.identity.public_key();
        let in_force = held.chain.owners().cloned();
        let primary = in_force.as_ref().is_none_or(|o| o.primary == me);
        // The new version merges the heads, at most `DROP_PARENTS_MAX` of them (the highest
        // counters, then ids): any more stay branches, merged by the next publishes. A
        // secondary owner may not change the owner list (rule 12), so it follows only the
        // heads that list the owners in force (the current version is one); the others (a
        // removed owner's branch, one from before the list changed) wait for the primary.
        let mut heads: Vec<&DropManifest> = held
            .chain
            .heads()
            .filter_map(|h| held.chain.get(h))
            .filter(|m| primary || in_force.as_ref() == Some(&m.owners))
            .collect();
        heads.sort_by_key(|m| (std::cmp::Reverse(m.counter), m.version_id()));
        heads.truncate(DROP_PARENTS_MAX);
        // Every owner goes by the owners in force: the primary's newest version's (an owner
        // it removed stays removed, whatever a branch still lists).
        let mut owners = in_force.unwrap_or(DropOwners {
            primary: me,
            secondary: Vec::new(),
        });
        if let Some(mut secondary) = secondary {
            if owners.primary != me {
                return Err(DropsRefusal::NotPrimary(drop));
            }
            secondary.sort();
            secondary.dedup();
            secondary.retain(|k| *k != me);
            if secondary.len() > DROP_SECONDARY_OWNERS_MAX {
                return Err(DropsRefusal::TooManyOwners(drop));
            }
            owners.secondary = secondary;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        check_paths(&files)
            .and_then(|()| check_symlink_chains(&files))
            .map_err(|e| DropsRefusal::Invalid(drop, e))?;
        let mut hasher = RootHasher::new();
        hasher
            .push_batch(&files)
            .map_err(|e| DropsRefusal::Invalid(drop, e))?;
        let mut parents: Vec<VersionId> = heads.iter().map(|m| m.version_id()).collect();
        parents.sort();
        let counter = heads.iter().map(|m| m.counter).max().unwrap_or(0) + 1;
        let nonce = match (held.chain.current(), held.created) {
            (Some((_, m)), _) => m.nonce,
            (None, Some(nonce)) => nonce,
            // `is_owner` holds: a drop with no version was created here.
            (None, None) => return Err(DropsRefusal::NotAnOwner(drop)),
        };
        let fields = ManifestFields {
            drop,
            nonce,
            counter,
            parents,
            owners,
            root: hasher.root(),
            files: hasher.files(),
            bytes: hasher.bytes(),
        };
        let manifest = DropManifest::sign(fields, &self.secret_key);
        let version = manifest.version_id();
        if let Some(held) = self.drops.get_mut(&drop) {
            held.files.insert(version, files);
        }
        self.offer(drop, None, manifest)
            .map_err(|_| DropsRefusal::NotAnOwner(drop))
    }

    /// Judges a version from `peer` (`None`: this node's own): accepted versions are pushed
    /// to the subscribers, missing parents asked of the peer, a broken rule is the peer's
    /// fault.
    pub(super) fn offer(
        &mut self,
        drop: DropId,
        peer: Option<NodeId>,
        manifest: DropManifest,
    ) -> Result<(), PeerFault> {
        let Some(held) = self.drops.get_mut(&drop) else {
            return Ok(());
        };
        if let Some(p) = peer {
            held.add_holder(p, &self.linked);
        }
        let first = held.chain.is_empty();
        match held.chain.offer(manifest) {
            Offer::Accepted(ids) => {
                if first {
                    // A subscriber holds the drop from its first accepted version.
                    self.tracker.mark_due(drop);
                }
                let accepted: Vec<DropManifest> = ids
                    .iter()
                    .filter_map(|id| held.chain.get(id).cloned())
                    .collect();
                let subscribers: Vec<NodeId> = held
                    .subscribers
                    .iter()
                    .copied()
                    .filter(|s| Some(*s) != peer)
                    .collect();
                self.metrics.versions_accepted += accepted.len() as u64;
                for m in &accepted {
                    self.event(
                        drop,
                        DropsEventKind::Accepted {
                            version: m.version_id(),
                            counter: m.counter,
                            signer: m.signer,
                        },
                    );
                }
                for s in subscribers {
                    for m in &accepted {
                        self.send(s, DropMessage::Version(Box::new(m.clone())));
                    }
                    let heads = self.heads_of(&drop);
                    self.send(s, DropMessage::Heads(heads));
                }
                self.update_shown(drop, peer);
                self.changed();
                Ok(())
            }
            Offer::Known => {
                self.metrics.versions_known += 1;
                Ok(())
            }
            Offer::Waiting(missing) => {
                if let Some(p) = peer {
                    for version in missing {
                        self.send(p, DropMessage::GetVersion(DropGetVersion { drop, version }));
                    }
                }
                Ok(())
            }
            Offer::Refused(error) => {
                self.metrics.versions_refused += 1;
                let Some(p) = peer else {
                    return Err(PeerFault::Unexpected("own drop version refused"));
                };
                self.event(drop, DropsEventKind::Refused { peer: p, error });
                Err(PeerFault::Unexpected("a drop version that breaks a rule"))
            }
            Offer::HistoryFull => {
                self.event(drop, DropsEventKind::HistoryFull);
                Ok(())
            }
        }
    }

    /// DROP_HEADS for `drop`: its heads, at most [`DROP_HEADS_MAX`] (the highest counters).
    pub(super) fn heads_of(&self, drop: &DropId) -> DropHeads {
        // Heads signed by an owner in force first (the current version is the first of
        // them), then the highest counters: a removed owner signing many heads above the
        // primary's newest hid it from every subscriber that had not seen it yet.
        let mut heads: Vec<(bool, u64, VersionId)> = self
            .drops
            .get(drop)
            .map(|h| {
                h.chain
                    .heads()
                    .filter_map(|id| {
                        let m = h.chain.get(id)?;
                        Some((h.chain.signed_by_an_owner(m), m.counter, *id))
                    })
                    .collect()
            })
            .unwrap_or_default();
        heads.sort_by(|a, b| b.cmp(a));
        heads.truncate(DROP_HEADS_MAX);
        let mut heads: Vec<VersionId> = heads.into_iter().map(|(_, _, id)| id).collect();
        heads.sort();
        DropHeads { drop: *drop, heads }
    }
}

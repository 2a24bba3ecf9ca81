//! One drop's versions as this node knows them: the accepted ones, their heads (branches
//! not yet merged), and those whose signature holds but whose parents have not arrived yet
//! (SPEC.md §24.5).
//!
//! A version is accepted only by the rules of `weft_protocol::check_version`, against its
//! parents, which must have been accepted first: so every accepted version descends, owner
//! signature by owner signature, from a first version signed by the key the drop's id
//! derives from. A replay of a version already held changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use weft_protocol::{check_version, DropError, DropId, DropManifest, DropOwners, VersionId};

/// Most versions of one drop a node keeps; a version beyond it is refused
/// ([`Offer::HistoryFull`]). Versions are never forgotten, so a replayed old one is always
/// recognised.
pub const DROP_VERSIONS_MAX: usize = 65_536;

/// Most versions of one drop waiting for a parent; beyond it a new one is not kept (it is
/// asked for again when a head names it), unless it is signed by a known owner and takes the
/// place of one that is not.
pub const DROP_WAITING_MAX: usize = 64;

/// What became of an offered version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Accepted, with every waiting version it let in, in the order accepted.
    Accepted(Vec<VersionId>),
    /// Held already: a replay.
    Known,
    /// Its signature holds; these parents are missing (ask for them).
    Waiting(Vec<VersionId>),
    /// It breaks a rule.
    Refused(DropError),
    /// [`DROP_VERSIONS_MAX`] versions are held.
    HistoryFull,
}

/// One drop's versions. See the module documentation.
#[derive(Debug, Clone)]
pub struct Chain {
    drop: DropId,
    versions: BTreeMap<VersionId, DropManifest>,
    heads: BTreeSet<VersionId>,
    waiting: BTreeMap<VersionId, DropManifest>,
    /// The primary's newest version: the highest counter, then id, of those it signed.
    primary_newest: Option<VersionId>,
}

impl Chain {
    /// No version of `drop` yet.
    pub fn new(drop: DropId) -> Chain {
        Chain {
            drop,
            versions: BTreeMap::new(),
            heads: BTreeSet::new(),
            waiting: BTreeMap::new(),
            primary_newest: None,
        }
    }

    /// The drop.
    pub fn drop_id(&self) -> DropId {
        self.drop
    }

    /// Judges a version that arrived (or that this node signed).
    pub fn offer(&mut self, m: DropManifest) -> Offer {
        if m.drop != self.drop {
            return Offer::Refused(DropError::WrongDropId);
        }
        let id = match m.verify() {
            Ok(id) => id,
            Err(e) => return Offer::Refused(e),
        };
        if self.versions.contains_key(&id) {
            return Offer::Known;
        }
        let missing: Vec<VersionId> = m
            .parents
            .iter()
            .filter(|p| !self.versions.contains_key(p))
            .copied()
            .collect();
        if !missing.is_empty() {
            self.keep_waiting(id, m);
            return Offer::Waiting(missing);
        }
        match self.accept(id, m) {
            Ok(()) => {}
            Err(offer) => return offer,
        }
        let mut accepted = vec![id];
        // Waiting versions whose parents are all held now, until none is left.
        loop {
            let ready = self.waiting.iter().find_map(|(w, m)| {
                m.parents
                    .iter()
                    .all(|p| self.versions.contains_key(p))
                    .then_some(*w)
            });
            let Some(w) = ready else { break };
            let Some(m) = self.waiting.remove(&w) else {
                break;
            };
            if self.accept(w, m).is_ok() {
                accepted.push(w);
            }
        }
        Offer::Accepted(accepted)
    }

    /// Keeps `m` (`id`) until its parents arrive, while fewer than [`DROP_WAITING_MAX`]
    /// wait. Once full, it takes the place of a waiting version whose signer is not known to
    /// own the drop, if its own is: anybody can sign a version with a key of their own naming
    /// parents that never come, and such versions must not keep the owners' out. With none
    /// such, it takes the place of the waiting version of the highest counter, if its own is
    /// lower: a walk down a chain comes from the head, and the lowest versions are the ones
    /// that connect to what is held (keeping the first met, the newest, took in one version
    /// per walk).
    fn keep_waiting(&mut self, id: VersionId, m: DropManifest) {
        if self.waiting.len() >= DROP_WAITING_MAX {
            if !self.signed_by_known_owner(&m) {
                return;
            }
            let stranger = self
                .waiting
                .iter()
                .find(|(_, w)| !self.signed_by_known_owner(w))
                .map(|(w, _)| *w);
            let highest = self
                .waiting
                .iter()
                .max_by_key(|(w, v)| (v.counter, **w))
                .filter(|(_, v)| v.counter > m.counter)
                .map(|(w, _)| *w);
            let Some(out) = stranger.or(highest) else {
                return;
            };
            self.waiting.remove(&out);
        }
        self.waiting.insert(id, m);
    }

    /// Whether `m`'s signer is the drop's primary owner (the key its id derives from, which
    /// [`DropManifest::verify`] checked) or an owner in a held head.
    fn signed_by_known_owner(&self, m: &DropManifest) -> bool {
        m.signer == m.owners.primary
            || self
                .heads
                .iter()
                .filter_map(|h| self.versions.get(h))
                .any(|h| h.owners.contains(&m.signer))
    }

    /// Checks `m` against its parents (all held) and takes it in.
    fn accept(&mut self, id: VersionId, m: DropManifest) -> Result<(), Offer> {
        if self.versions.len() >= DROP_VERSIONS_MAX {
            return Err(Offer::HistoryFull);
        }
        let parents: Vec<&DropManifest> = m
            .parents
            .iter()
            .filter_map(|p| self.versions.get(p))
            .collect();
        check_version(&m, &parents).map_err(Offer::Refused)?;
        for p in &m.parents {
            self.heads.remove(p);
        }
        // No held version names `id` as a parent: a child is accepted only after it.
        self.heads.insert(id);
        if m.signer == m.owners.primary {
            let newer = self
                .primary_newest
                .and_then(|p| self.versions.get(&p).map(|n| (n.counter, p)))
                .is_none_or(|newest| (m.counter, id) > newest);
            if newer {
                self.primary_newest = Some(id);
            }
        }
        self.versions.insert(id, m);
        Ok(())
    }

    /// The owners every copy goes by: those of the primary's newest version (the highest
    /// counter, then id, of the versions the primary signed; the first version is one). The
    /// primary alone adds and removes secondary owners, so an owner it removed stays removed
    /// whatever versions it signs on another branch, from a version that still listed it.
    pub fn owners(&self) -> Option<&DropOwners> {
        let newest = self.primary_newest?;
        self.versions.get(&newest).map(|m| &m.owners)
    }

    /// Whether `m` was signed by the primary or by an owner [`owners`](Self::owners) lists.
    pub(crate) fn signed_by_an_owner(&self, m: &DropManifest) -> bool {
        m.signer == m.owners.primary || self.owners().is_some_and(|o| o.contains(&m.signer))
    }

    /// A held version.
    pub fn get(&self, id: &VersionId) -> Option<&DropManifest> {
        self.versions.get(id)
    }

    /// The heads: one, or more while concurrent versions wait for a merge.
    pub fn heads(&self) -> impl Iterator<Item = &VersionId> + '_ {
        self.heads.iter()
    }

    /// The head a copy shows: of the heads signed by the primary or an owner
    /// [`owners`](Self::owners) lists, the highest counter, then the highest id (the same
    /// choice at every node holding the same versions); the primary's newest version if no
    /// head is (a removed owner's branch is never shown).
    pub fn current(&self) -> Option<(VersionId, &DropManifest)> {
        self.heads
            .iter()
            .filter_map(|h| self.versions.get(h).map(|m| (*h, m)))
            .filter(|(_, m)| self.signed_by_an_owner(m))
            .max_by_key(|(h, m)| (m.counter, *h))
            .or_else(|| {
                let newest = self.primary_newest?;
                self.versions.get(&newest).map(|m| (newest, m))
            })
    }

    /// How many versions are held.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether no version is held yet.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Every held version, in id order (for persisting).
    pub fn versions(&self) -> impl Iterator<Item = &DropManifest> + '_ {
        self.versions.values()
    }

    /// Checks what it promises: every head is held and no held version names a head as a
    /// parent; every held version's parents are held.
    pub fn check_invariants(&self) -> Result<(), String> {
        for h in &self.heads {
            if !self.versions.contains_key(h) {
                return Err(format!("head {h} not held"));
            }
        }
        for (id, m) in &self.versions {
            for p in &m.parents {
                if !self.versions.contains_key(p) {
                    return Err(format!("{id}: parent {p} not held"));
                }
                if self.heads.contains(p) {
                    return Err(format!("{id}: parent {p} is a head"));
                }
            }
        }
        if self.waiting.len() > DROP_WAITING_MAX {
            return Err("too many waiting".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::{DropOwners, ManifestFields, PublicKey};

    const PRIMARY: [u8; 32] = [1; 32];
    const SECOND: [u8; 32] = [2; 32];
    const STRANGER: [u8; 32] = [3; 32];
    const NONCE: [u8; 16] = [9; 16];

    fn public(secret: &[u8; 32]) -> PublicKey {
        PublicKey(
            ed25519_dalek::SigningKey::from_bytes(secret)
                .verifying_key()
                .to_bytes(),
        )
    }

    fn owners(secondary: &[[u8; 32]]) -> DropOwners {
        let mut secondary: Vec<PublicKey> = secondary.iter().map(public).collect();
        secondary.sort();
        DropOwners {
            primary: public(&PRIMARY),
            secondary,
        }
    }

    fn drop_id() -> DropId {
        DropId::derive(&public(&PRIMARY), &NONCE)
    }

    /// A version signed by `by`, after `parents`, with a root of `content`.
    fn version(
        by: &[u8; 32],
        counter: u64,
        parents: &[&DropManifest],
        owners: DropOwners,
        content: u8,
    ) -> DropManifest {
        let mut parents: Vec<VersionId> = parents.iter().map(|m| m.version_id()).collect();
        parents.sort();
        let fields = ManifestFields {
            drop: drop_id(),
            nonce: NONCE,
            counter,
            parents,
            owners,
            root: [content; 32],
            files: 1,
            bytes: 10,
        };
        DropManifest::sign(fields, by)
    }

    #[test]
    fn owners_versions_are_accepted_and_a_replay_changes_nothing() {
        let mut chain = Chain::new(drop_id());
        let v1 = version(&PRIMARY, 1, &[], owners(&[SECOND]), 1);
        let id1 = v1.version_id();
        assert_eq!(chain.offer(v1.clone()), Offer::Accepted(vec![id1]));
        // A secondary owner's content change.
        let v2 = version(&SECOND, 2, &[&v1], owners(&[SECOND]), 2);
        let id2 = v2.version_id();
        assert_eq!(chain.offer(v2.clone()), Offer::Accepted(vec![id2]));
        assert_eq!(chain.offer(v1), Offer::Known);
        assert_eq!(chain.offer(v2), Offer::Known);
        assert_eq!(chain.current().map(|(h, _)| h), Some(id2));
        assert_eq!(chain.heads().count(), 1);
        chain.check_invariants().expect("invariants");
    }

    /// An owner the primary removed may still sign versions after one that listed it (the
    /// rules check each version against its parents only), on a branch of its own with higher
    /// counters: that branch is never shown, and the owners every copy goes by are the
    /// primary's newest version's.
    #[test]
    fn a_removed_owners_branch_is_never_current() {
        let mut chain = Chain::new(drop_id());
        let v1 = version(&PRIMARY, 1, &[], owners(&[SECOND]), 1);
        let v2 = version(&PRIMARY, 2, &[&v1], owners(&[]), 2);
        let f2 = version(&SECOND, 2, &[&v1], owners(&[SECOND]), 3);
        let f3 = version(&SECOND, 3, &[&f2], owners(&[SECOND]), 4);
        for v in [&v1, &v2, &f2, &f3] {
            assert!(matches!(chain.offer(v.clone()), Offer::Accepted(_)));
        }
        assert_eq!(chain.heads().count(), 2);
        assert_eq!(chain.owners(), Some(&owners(&[])));
        assert_eq!(chain.current().map(|(h, _)| h), Some(v2.version_id()));
        // Added again by the primary: its branch counts again.
        let v3 = version(&PRIMARY, 3, &[&v2], owners(&[SECOND]), 5);
        assert!(matches!(chain.offer(v3.clone()), Offer::Accepted(_)));
        assert_eq!(chain.owners(), Some(&owners(&[SECOND])));
        let highest = v3.version_id().max(f3.version_id());
        assert_eq!(chain.current().map(|(h, _)| h), Some(highest));
        chain.check_invariants().expect("invariants");
    }

    #[test]
    fn every_forgery_is_refused() {
        let mut chain = Chain::new(drop_id());
        let v1 = version(&PRIMARY, 1, &[], owners(&[SECOND]), 1);
        assert!(matches!(chain.offer(v1.clone()), Offer::Accepted(_)));
        // Signed by a node that is no owner.
        let v = version(&STRANGER, 2, &[&v1], owners(&[SECOND]), 2);
        assert!(matches!(
            chain.offer(v),
            Offer::Refused(DropError::SignerNotOwner(_))
        ));
        // A secondary owner changing the owner list.
        let v = version(&SECOND, 2, &[&v1], owners(&[SECOND, STRANGER]), 2);
        assert!(matches!(
            chain.offer(v),
            Offer::Refused(DropError::OwnersChangedBySecondary(_))
        ));
        // A field changed after signing.
        let mut v = version(&PRIMARY, 2, &[&v1], owners(&[SECOND]), 2);
        v.root = [7; 32];
        assert_eq!(chain.offer(v), Offer::Refused(DropError::BadSignature));
        // A first version of this drop by anybody but the key its id derives from.
        let mut fake = Chain::new(drop_id());
        let v = version(&SECOND, 1, &[], owners(&[SECOND]), 1);
        assert!(matches!(fake.offer(v), Offer::Refused(_)));
        assert_eq!(fake.len(), 0);
        // Another drop's version.
        let other = Chain::new(DropId([5; 32])).offer(v1);
        assert_eq!(other, Offer::Refused(DropError::WrongDropId));
        assert_eq!(chain.len(), 1);
        chain.check_invariants().expect("invariants");
    }

    #[test]
    fn a_version_waits_for_its_parent_and_concurrent_ones_stay_branches_until_a_merge() {
        let mut chain = Chain::new(drop_id());
        let v1 = version(&PRIMARY, 1, &[], owners(&[SECOND]), 1);
        let a = version(&PRIMARY, 2, &[&v1], owners(&[SECOND]), 2);
        let b = version(&SECOND, 2, &[&v1], owners(&[SECOND]), 3);
        // `a` before its parent: it waits, then comes in with it.
        assert_eq!(
            chain.offer(a.clone()),
            Offer::Waiting(vec![v1.version_id()])
        );
        assert_eq!(
            chain.offer(v1.clone()),
            Offer::Accepted(vec![v1.version_id(), a.version_id()])
        );
        assert!(matches!(chain.offer(b.clone()), Offer::Accepted(_)));
        assert_eq!(chain.heads().count(), 2);
        let highest = a.version_id().max(b.version_id());
        assert_eq!(chain.current().map(|(h, _)| h), Some(highest));
        // A merge naming both ends the branches; a secondary may sign it.
        let m = version(&SECOND, 3, &[&a, &b], owners(&[SECOND]), 4);
        assert_eq!(
            chain.offer(m.clone()),
            Offer::Accepted(vec![m.version_id()])
        );
        assert_eq!(chain.heads().collect::<Vec<_>>(), vec![&m.version_id()]);
        // A stale version replayed after the merge is known, and never a head again.
        assert_eq!(chain.offer(a), Offer::Known);
        assert_eq!(chain.heads().count(), 1);
        chain.check_invariants().expect("invariants");
    }

    #[test]
    fn versions_strangers_sign_cannot_keep_an_owners_version_from_waiting() {
        let mut chain = Chain::new(drop_id());
        let v1 = version(&PRIMARY, 1, &[], owners(&[SECOND]), 1);
        let v2 = version(&SECOND, 2, &[&v1], owners(&[SECOND]), 2);
        assert!(matches!(chain.offer(v1.clone()), Offer::Accepted(_)));
        // A stranger fills the pool with versions naming a parent that never comes (each
        // verifies: the stranger signs with its own key and names itself an owner).
        let never = version(&STRANGER, 5, &[], owners(&[STRANGER]), 0);
        for i in 0..DROP_WAITING_MAX + 10 {
            let forged = version(&STRANGER, 6, &[&never], owners(&[STRANGER]), i as u8);
            assert!(matches!(chain.offer(forged), Offer::Waiting(_)));
        }
        assert_eq!(chain.waiting.len(), DROP_WAITING_MAX);
        // An owner's version arriving before its parent still waits, and comes in with it.
        let v3 = version(&SECOND, 3, &[&v2], owners(&[SECOND]), 3);
        assert_eq!(
            chain.offer(v3.clone()),
            Offer::Waiting(vec![v2.version_id()])
        );
        assert_eq!(
            chain.offer(v2.clone()),
            Offer::Accepted(vec![v2.version_id(), v3.version_id()])
        );
        assert_eq!(chain.waiting.len(), DROP_WAITING_MAX - 1);
        chain.check_invariants().expect("invariants");
    }
}

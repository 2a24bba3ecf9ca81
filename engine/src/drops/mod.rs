//! Drops: folders only their owners may change (SPEC.md §24).
//!
//! A drop's files travel as folder replication (SPEC.md §22) under the drop's folder id;
//! what may land is decided here. [`Chain`] holds a drop's signed versions and accepts a
//! version only by the rules of `weft_protocol::check_version`; the protocol pushes new
//! versions to every linked holder that subscribed, fetches missing parents and the chosen
//! head's file list (checked against its signed root), and sets the drop folder's
//! [`crate::replicate::Gate`] to that list, so a block or a file lands only if an owner
//! signed it. A subscriber's copy is read-only: its local edits are reported, never
//! published. On a Chord ring member, every held drop is announced on the drops tracker and
//! a subscription looks its holders up there and dials them (`tracker`).

mod chain;
mod protocol;
mod tracker;

pub use chain::{Chain, Offer, DROP_VERSIONS_MAX, DROP_WAITING_MAX};
pub(crate) use protocol::{drop_files, DropsProtocol};
pub use protocol::{DROP_LOOKUP_BACKOFF_MAX, DROP_SYNC_INTERVAL};
pub use tracker::{DropTracker, DROP_HOLDERS_DIALED_MAX};

use weft_protocol::{DropError, DropFile, DropId, FileKind, NodeId, PublicKey, VersionId};

/// Most drops one node holds.
pub const DROPS_MAX: usize = 32;

/// Most peers subscribed to one drop at this node.
pub const DROP_SUBSCRIBERS_MAX: usize = 256;

/// The state blob the drops are persisted in.
pub const DROPS_STATE_NAME: &str = "drops";

/// What the application asks of drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropsCommand {
    /// Create a drop owned by this node, with no version yet: its folder is added (the host
    /// maps the folder id, [`DropId::folder_id`], to a directory first).
    Create,
    /// Hold `drop` as a subscriber: its folder is added read-only and every linked holder is
    /// asked for its versions.
    Subscribe {
        /// The drop.
        drop: DropId,
    },
    /// Publish the drop's folder, as it is indexed now, as a version after every head (a
    /// merge when there are several). `secondary`: the new secondary owners (the primary
    /// alone may change them), else those in force (`Chain::owners`: the primary's newest
    /// version's, which a branch of a removed owner's cannot bring back).
    Publish {
        /// The drop.
        drop: DropId,
        /// The secondary owners from this version on, if they change.
        secondary: Option<Vec<PublicKey>>,
    },
}

/// Why drops refuse a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropsRefusal {
    /// The stored drops are not loaded yet.
    #[error("the stored drops are not loaded yet")]
    Loading,
    /// The stored drops could not be read (damaged, or from a newer version): they are kept
    /// as they are, nothing is stored over them, and no drop is created, subscribed to or
    /// published in this run.
    #[error("the stored drops could not be read (damaged, or from a newer weft); they are kept as they are and no drop can change in this run")]
    StateUnreadable,
    /// No such drop is held.
    #[error("no drop {0}")]
    UnknownDrop(DropId),
    /// The drop is held already.
    #[error("drop {0} is held already")]
    Exists(DropId),
    /// [`DROPS_MAX`] drops are held.
    #[error("too many drops")]
    TooManyDrops,
    /// This node is not an owner of the drop's current version.
    #[error("this node is not an owner of drop {0}")]
    NotAnOwner(DropId),
    /// Only the primary owner may change the owners.
    #[error("only the primary owner may change the owners of drop {0}")]
    NotPrimary(DropId),
    /// The drop's folder is not replicated here (yet).
    #[error("the folder of drop {0} is not loaded")]
    NoFolder(DropId),
    /// The version broke a rule (a file list over a limit, say).
    #[error("the new version of drop {0} breaks a rule: {1}")]
    Invalid(DropId, DropError),
    /// [`DROP_VERSIONS_MAX`] versions are held: no more can be published.
    #[error("drop {0} holds {max} versions, as many as it may", max = DROP_VERSIONS_MAX)]
    HistoryFull(DropId),
    /// More secondary owners than a version may name.
    #[error("a version of drop {0} names at most {max} secondary owners", max = weft_protocol::DROP_SECONDARY_OWNERS_MAX)]
    TooManyOwners(DropId),
}

/// How far this node's changes to its held drops (a creation, a subscription, a version
/// published or taken in, the version a folder shows) are in the host's store: a host
/// answers a command that changed them once `stored_through` reaches the count of changes
/// after it (SPEC.md §24.8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropsDurability {
    /// Changes made so far.
    pub changes: u64,
    /// The changes up to this one are stored.
    pub stored_through: u64,
    /// The changes up to this one failed to be stored (when above `stored_through`, they
    /// are not durable until a later store succeeds).
    pub failed_through: u64,
    /// Why the last store failed (or why none is made in this run).
    pub failure: Option<String>,
    /// The stored drops were loaded (or there were none): the drops held are all this node
    /// holds. False while loading, and for good when the blob could not be read.
    pub restored: bool,
}

/// Something about one drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropsEvent {
    /// The drop.
    pub drop: DropId,
    /// What happened.
    pub kind: DropsEventKind,
}

/// What happened to a drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropsEventKind {
    /// This node created it.
    Created,
    /// A version was accepted (this node's own included).
    Accepted {
        /// The version.
        version: VersionId,
        /// Its counter.
        counter: u64,
        /// Who signed it.
        signer: PublicKey,
    },
    /// A peer sent a version that breaks a rule: refused, and the peer disconnected.
    Refused {
        /// The peer.
        peer: NodeId,
        /// The rule.
        error: DropError,
    },
    /// A peer sent a file list that does not match its version's signed root: refused, and
    /// the peer disconnected.
    FilesRefused {
        /// The peer.
        peer: NodeId,
        /// The rule.
        error: DropError,
    },
    /// The folder now shows this version (its file list verified): `branches` heads are held
    /// (more than one: concurrent versions wait for an owner's merge).
    Current {
        /// The version.
        version: VersionId,
        /// Its counter.
        counter: u64,
        /// How many heads are held.
        branches: usize,
    },
    /// [`DROP_VERSIONS_MAX`] versions are held: no more are accepted.
    HistoryFull,
}

/// Counters of drops' work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropsMetrics {
    /// Versions accepted.
    pub versions_accepted: u64,
    /// Versions refused by a rule.
    pub versions_refused: u64,
    /// Versions that arrived again (replays).
    pub versions_known: u64,
    /// File lists refused (they did not match their root, or broke a path rule).
    pub file_lists_refused: u64,
    /// Of those, lists refused for a path or symlink target §22.3's rules refuse
    /// ([`DropError::BadPath`]).
    pub file_lists_bad_path: u64,
    /// File lists asked of another holder because theirs came in two thin batches in a row
    /// (SPEC.md §24.3).
    pub file_lists_too_slow: u64,
    /// State blobs that failed to load or store.
    pub state_failures: u64,
    /// Holder records of this node put on the tracker (SPEC.md §24.6).
    pub tracker_announces: u64,
    /// Announcements not made: no wall clock yet (counted at each try) or no address peers
    /// could dial.
    pub tracker_announces_skipped: u64,
    /// Puts of holder or key records that failed (tried again at the next sync).
    pub tracker_puts_failed: u64,
    /// Lookups of a drop's holders.
    pub tracker_lookups: u64,
    /// Records a lookup returned that were refused: forged, expired, of another drop.
    pub tracker_records_refused: u64,
    /// Holders dialed from records a lookup returned.
    pub tracker_holders_dialed: u64,
}

/// Checks a whole list's symlinks against each other (SPEC.md §24.3): a symlink target that
/// goes up (`..`) after passing through a symlink the list holds is refused
/// (`SymlinkEscapes`). Each target was checked alone to stay inside the folder, read as
/// text; through another link (`a/up -> ../..`, then `x -> a/up/../..`) it could lead out
/// of it, for any program that follows them (weft follows none).
pub(crate) fn check_symlink_chains(files: &[DropFile]) -> Result<(), DropError> {
    let links = LinkTree::of(files);
    if links.is_empty() {
        return Ok(());
    }
    for f in files.iter().filter(|f| f.kind == FileKind::Symlink) {
        let Some(target) = &f.target else { continue };
        // The link's directory, then the target's components, as a path is walked, by the
        // tree of the links' paths: each step costs its component alone (comparing the whole
        // path so far with the links' paths, or joining it again, cost a 2,048-component
        // path millions of component copies per link).
        let mut walk = Walk::default();
        let mut through_a_link = false;
        let dir = f.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            through_a_link |= walk.push(&links, part);
        }
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." if through_a_link => {
                    return Err(DropError::BadPath {
                        path: f.path.clone(),
                        refusal: weft_protocol::PathRefusal::SymlinkEscapes,
                    });
                }
                ".." => walk.pop(),
                name => through_a_link |= walk.push(&links, name),
            }
        }
    }
    Ok(())
}

/// The paths of a list's symlinks as a tree of components: node 0 is the root; each edge is
/// (parent node, component); a node is marked where a link's path ends.
#[derive(Default)]
struct LinkTree<'a> {
    edges: std::collections::BTreeMap<(u32, &'a str), u32>,
    is_link: Vec<bool>,
}

impl<'a> LinkTree<'a> {
    fn of(files: &'a [DropFile]) -> LinkTree<'a> {
        let mut tree = LinkTree {
            edges: std::collections::BTreeMap::new(),
            is_link: vec![false],
        };
        for f in files.iter().filter(|f| f.kind == FileKind::Symlink) {
            let mut at = 0u32;
            for part in f.path.split('/') {
                let next = tree.is_link.len() as u32;
                at = *tree.edges.entry((at, part)).or_insert(next);
                if at == next {
                    tree.is_link.push(false);
                }
            }
            tree.is_link[at as usize] = true;
        }
        tree
    }

    fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The node under `at` along `part`, if the tree has it.
    fn child(&self, at: u32, part: &str) -> Option<u32> {
        self.edges.get(&(at, part)).copied()
    }
}

/// A path walked one component at a time ([`check_symlink_chains`]): where each step left it
/// in the links' tree (`None`: off it, as is everything below).
#[derive(Default)]
struct Walk {
    at: Vec<Option<u32>>,
}

impl Walk {
    /// Down into `name`; whether the path so far is a link's.
    fn push(&mut self, links: &LinkTree<'_>, name: &str) -> bool {
        let here = match self.at.last() {
            None => Some(0),
            Some(here) => *here,
        };
        let next = here.and_then(|h| links.child(h, name));
        self.at.push(next);
        next.is_some_and(|n| links.is_link[n as usize])
    }

    /// Up one component (nothing at the root).
    fn pop(&mut self) {
        self.at.pop();
    }
}

/// Checks every file of a list against the path rules of folder replication (SPEC.md §22.3):
/// its path, and a symlink's target. The first file refused refuses the list, whole.
pub(crate) fn check_paths(files: &[DropFile]) -> Result<(), DropError> {
    use crate::replicate::paths::{check_path, check_symlink_target};
    for f in files {
        let target = match (f.kind, &f.target) {
            (FileKind::Symlink, Some(t)) => check_symlink_target(&f.path, t),
            _ => Ok(()),
        };
        if let Err(refusal) = check_path(&f.path).and(target) {
            return Err(DropError::BadPath {
                path: f.path.clone(),
                refusal,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`check_symlink_chains`] as first written: the walked path joined again at each step.
    fn plain_check_symlink_chains(files: &[DropFile]) -> Result<(), DropError> {
        let links: std::collections::BTreeSet<&str> = files
            .iter()
            .filter(|f| f.kind == FileKind::Symlink)
            .map(|f| f.path.as_str())
            .collect();
        for f in files.iter().filter(|f| f.kind == FileKind::Symlink) {
            let Some(target) = &f.target else { continue };
            let mut at: Vec<&str> = f.path.split('/').collect();
            at.pop();
            let mut through_a_link =
                (0..at.len()).any(|i| links.contains(at[..=i].join("/").as_str()));
            for part in target.split('/') {
                match part {
                    "" | "." => {}
                    ".." if through_a_link => {
                        return Err(DropError::BadPath {
                            path: f.path.clone(),
                            refusal: weft_protocol::PathRefusal::SymlinkEscapes,
                        });
                    }
                    ".." => {
                        at.pop();
                    }
                    name => {
                        at.push(name);
                        through_a_link |= links.contains(at.join("/").as_str());
                    }
                }
            }
        }
        Ok(())
    }

    /// The incremental walk decides every list as the plain one does (paths and targets
    /// from a few names, `.` and `..`, so links often pass through each other).
    #[test]
    fn the_chain_check_agrees_with_the_plain_one() {
        fn prop(specs: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
            let name = |b: &u8| ["a", "b", "up", "..", ".", "c"][*b as usize % 6];
            let list: Vec<DropFile> = specs
                .iter()
                .take(8)
                .map(|(path, target)| {
                    let path: Vec<&str> = path
                        .iter()
                        .take(4)
                        .map(name)
                        .filter(|n| *n != ".." && *n != ".")
                        .collect();
                    let path = if path.is_empty() {
                        "x".to_string()
                    } else {
                        path.join("/")
                    };
                    let target: Vec<&str> = target.iter().take(6).map(name).collect();
                    link(&path, &target.join("/"))
                })
                .collect();
            check_symlink_chains(&list) == plain_check_symlink_chains(&list)
        }
        quickcheck::QuickCheck::new()
            .tests(2000)
            .quickcheck(prop as fn(Vec<(Vec<u8>, Vec<u8>)>) -> bool);
    }

    fn link(path: &str, target: &str) -> DropFile {
        DropFile {
            path: path.into(),
            kind: FileKind::Symlink,
            mode: 7,
            size: 0,
            target: Some(target.into()),
            blocks: Vec::new(),
        }
    }

    /// Symlinks through symlinks are fine while they do not go up after one; going up after
    /// one is refused, wherever in the target.
    #[test]
    fn a_symlink_goes_up_only_before_it_passes_through_another() {
        let fine = [
            vec![link("a/up", ".."), link("x", "a/up/file")],
            vec![link("a/up", ".."), link("y", "a/../b")],
            vec![link("b", "c"), link("c", "d")],
        ];
        for list in fine {
            assert_eq!(check_symlink_chains(&list), Ok(()), "{list:?}");
        }
        let refused = [
            vec![link("a/up", ".."), link("x", "a/up/..")],
            vec![link("a/up", ".."), link("x", "a/up/f/../..")],
            vec![link("a/up", ".."), link("a/up2", "up/../..")],
        ];
        for list in refused {
            assert!(
                matches!(
                    check_symlink_chains(&list),
                    Err(DropError::BadPath {
                        refusal: weft_protocol::PathRefusal::SymlinkEscapes,
                        ..
                    })
                ),
                "{list:?}"
            );
        }
    }
}

//! What applying one record takes: the storage steps in order, then the records to install.
//! An [`Apply`] holds one path (and the paths it locks) until its steps are done.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use weft_protocol::{FileEntry, NodeId, Version};

use super::types::{Expect, Record, TempId};
use crate::time::Instant;

/// One storage step of an [`Apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Step {
    /// Remove what is at the apply's path.
    Remove {
        /// What must be there.
        expect: Expect,
    },
    /// Rename `from` to `to`, then install `install` (a conflict copy) if any.
    Rename {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
        /// What must be at `from`.
        expect: Expect,
        /// The record of `to` once renamed.
        install: Option<Box<Install>>,
    },
    /// Make the apply's path a directory.
    MakeDir {
        /// Owner mode bits.
        mode: u8,
    },
    /// Make the apply's path a symlink.
    MakeSymlink {
        /// Its target.
        target: String,
    },
    /// Set the mode of what is at the apply's path.
    SetMode {
        /// Owner mode bits.
        mode: u8,
        /// What must be there.
        expect: Expect,
    },
    /// Fetch the file's blocks into a temp and commit it.
    Fetch {
        /// What must be at the path when committing.
        expect: Expect,
    },
    /// Rename `from` onto the apply's path in one rename, replacing what is there (a
    /// resolve). Last of the variants: a persisted apply's steps keep their encoding.
    Replace {
        /// The path whose content takes the apply's path.
        from: String,
        /// What must be at `from`.
        expect: Expect,
        /// What must be at the apply's path.
        over: Expect,
    },
}

/// A record to put into the index once its steps are done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Install {
    /// The entry.
    pub(crate) entry: FileEntry,
    /// Whether it is a deletion record.
    pub(crate) deleted: bool,
    /// A rename of this path (announced as IMOVED).
    pub(crate) moved_from: Option<(String, Version)>,
    /// Whether it is a remote version (an `Updated` event).
    pub(crate) remote: bool,
}

impl Install {
    /// The record.
    pub(crate) fn record(&self) -> Record {
        Record {
            entry: self.entry.clone(),
            deleted: self.deleted,
        }
    }
}

/// Where one block of a file being fetched stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BlockState {
    /// Not asked for.
    Missing,
    /// Asked of a peer or read locally.
    Busy,
    /// Its bytes verified and handed out (written once `writes` is 0).
    Verified,
}

/// One block of a file being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlockSlot {
    /// Where it stands.
    pub(crate) state: BlockState,
    /// `WriteTemp` steps for it not yet answered.
    pub(crate) writes: u32,
}

impl BlockSlot {
    /// Verified and every write answered.
    pub(crate) fn is_written(&self) -> bool {
        self.state == BlockState::Verified && self.writes == 0
    }
}

/// A file being fetched into a temp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fetch {
    /// The content to commit (its path is the apply's).
    pub(crate) entry: FileEntry,
    /// The temp.
    pub(crate) temp: TempId,
    /// One per block of `entry`.
    pub(crate) blocks: Vec<BlockSlot>,
    /// Whether the temp exists (an empty file has no block to create it).
    pub(crate) created: bool,
}

impl Fetch {
    /// Whether every block is written.
    pub(crate) fn is_complete(&self) -> bool {
        self.created && self.blocks.iter().all(BlockSlot::is_written)
    }

    /// As loaded after a restart: what was in progress is missing again.
    pub(crate) fn settle(&mut self) {
        for b in &mut self.blocks {
            if !b.is_written() {
                b.state = BlockState::Missing;
            }
            b.writes = 0;
        }
    }
}

/// Whether an apply is in the state the host stored (SPEC.md §22.8, "Persisted before
/// it acts"): a step that changes the folder waits for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Persisted {
    /// In a persist the host completed (or loaded from the stored state).
    #[default]
    Yes,
    /// In no persist asked for yet.
    No,
    /// In the persist numbered so, not answered yet.
    Asked(u64),
}

/// Applying one record to one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Apply {
    /// The steps left, first first.
    pub(crate) steps: VecDeque<Step>,
    /// The records installed when the steps are done, in order.
    pub(crate) installs: Vec<Install>,
    /// The remote records this apply carries out, applied again if a local change
    /// overtakes it.
    pub(crate) origin: Vec<Record>,
    /// Peers that hold the blocks.
    pub(crate) sources: BTreeSet<NodeId>,
    /// The file being fetched, for a `Fetch` step.
    pub(crate) fetch: Option<Fetch>,
    /// Other paths it holds.
    pub(crate) locks: Vec<String>,
    /// A storage step is outstanding.
    #[serde(skip)]
    pub(crate) outstanding: bool,
    /// Not before then (a failed step's backoff).
    #[serde(skip)]
    pub(crate) retry_at: Option<Instant>,
    /// The backoff, ms.
    #[serde(skip)]
    pub(crate) backoff_ms: u64,
    /// A local change overtook it: cancel and apply the origin again.
    #[serde(skip)]
    pub(crate) stale: bool,
    /// Whether the stored state holds it.
    #[serde(skip)]
    pub(crate) persisted: Persisted,
    /// Its next step waits for a persist that holds it.
    #[serde(skip)]
    pub(crate) gated: bool,
    /// The scanner found at its path what it installs (its steps were done before a
    /// crash): its records are in, and it holds the path only until the host answers its
    /// step.
    #[serde(skip)]
    pub(crate) landed: bool,
}

impl Apply {
    /// An apply of `steps`, then `installs`.
    pub(crate) fn new(steps: Vec<Step>, installs: Vec<Install>, origin: Vec<Record>) -> Apply {
        Apply {
            steps: steps.into(),
            installs,
            origin,
            sources: BTreeSet::new(),
            fetch: None,
            locks: Vec::new(),
            outstanding: false,
            retry_at: None,
            backoff_ms: 0,
            stale: false,
            persisted: Persisted::No,
            gated: false,
            landed: false,
        }
    }

    /// The version this apply installs at its own path, if any.
    pub(crate) fn target_version(&self, path: &str) -> Option<&Version> {
        self.installs
            .iter()
            .find(|i| i.entry.path == path)
            .map(|i| &i.entry.version)
    }

    /// Whether its fetch is under way: a `Fetch` step is to come and every step before it
    /// only clears the path (`Rename`, `Remove`). Those wait until the temp is complete, so
    /// a fetch that never completes (its only source serves corrupt blocks, a newer version
    /// supersedes it) leaves the local content where its record says it is.
    pub(crate) fn is_fetching(&self) -> bool {
        for step in &self.steps {
            match step {
                Step::Fetch { .. } => return true,
                Step::Rename { .. } | Step::Remove { .. } => {}
                _ => return false,
            }
        }
        false
    }

    /// Whether the front step must wait for the fetch: it clears the path for a file whose
    /// temp is not complete yet.
    pub(crate) fn clearing_waits_for_fetch(&self) -> bool {
        !matches!(self.steps.front(), Some(Step::Fetch { .. }))
            && self.is_fetching()
            && self.fetch.as_ref().is_some_and(|f| !f.is_complete())
    }
}

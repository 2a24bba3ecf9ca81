//! A simulated node's disk: the state blobs its engine asked its host to store (SPEC.md
//! §8.1), kept across the node's crashes, as a real disk keeps them, and its folders (an
//! in-memory [`Folder`] per folder id, made at the first step that names it), which answer
//! replication's storage steps without faults.

use std::collections::BTreeMap;

use bytes::Bytes;
use weft_engine::protocol::FolderId;
use weft_engine::{HostRequest, HostResult};

use crate::folder::{Answer, Folder};

/// One node's stored blobs, by name.
#[derive(Debug, Default)]
pub struct Disk {
    blobs: BTreeMap<String, Bytes>,
    folders: BTreeMap<FolderId, Folder>,
}

impl Disk {
    /// Carries out a request as a host must: a name that is not a valid state name is
    /// refused; a store replaces the blob whole (this disk never tears a write).
    pub fn carry_out(&mut self, request: HostRequest) -> HostResult {
        match request {
            HostRequest::LoadState { name } | HostRequest::StoreState { name, .. }
                if !HostRequest::is_valid_state_name(&name) =>
            {
                HostResult::Failed(format!("bad state name {name:?}"))
            }
            HostRequest::LoadState { name } => HostResult::Loaded(self.blobs.get(&name).cloned()),
            HostRequest::StoreState { name, bytes } => {
                self.blobs.insert(name, bytes);
                HostResult::Stored
            }
            HostRequest::Storage { folder, request } => {
                match self.folder(folder).answer(&request) {
                    Answer::Result(r) => HostResult::Storage(r),
                    Answer::Crash => HostResult::Failed("the folder crashed".into()),
                }
            }
            other => HostResult::Failed(format!("the simulated disk cannot carry out {other:?}")),
        }
    }

    /// The folder `id`, made empty (with no storage faults) if it was never named.
    pub fn folder(&mut self, id: FolderId) -> &mut Folder {
        let seed = u64::from_be_bytes([
            id.0[0], id.0[1], id.0[2], id.0[3], id.0[4], id.0[5], id.0[6], id.0[7],
        ]);
        self.folders.entry(id).or_insert_with(|| Folder::new(seed))
    }

    /// The folder `id`, if a step or a test named it.
    pub fn get_folder(&self, id: &FolderId) -> Option<&Folder> {
        self.folders.get(id)
    }

    /// Blobs stored.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is stored.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

//! A simulated node's disk: the state blobs its engine asked its host to store (SPEC.md
//! §8.1), kept across the node's crashes, as a real disk keeps them.

use std::collections::BTreeMap;

use bytes::Bytes;
use weft_engine::{HostRequest, HostResult};

/// One node's stored blobs, by name.
#[derive(Debug, Default)]
pub struct Disk {
    blobs: BTreeMap<String, Bytes>,
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
            other => HostResult::Failed(format!("the simulated disk cannot carry out {other:?}")),
        }
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

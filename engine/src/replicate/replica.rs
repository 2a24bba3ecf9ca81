//! One node's copy of one folder: the replication sub-machine (SPEC.md §22). Stub: the API
//! the simulator and the node adapter code against; the machine fills it in.

use bytes::Bytes;
use weft_protocol::{NodeId, ReplicaMessage};

use super::types::{
    LocalChange, Record, ReplicaCommand, ReplicaConfig, ReplicaFault, ReplicaMetrics,
    ReplicaOutput, ReplicaRefusal, StorageResult,
};
use crate::time::Instant;

/// One node's copy of one folder. See the module documentation.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
}

impl Replica {
    /// A folder that first loads its state ([`super::StorageRequest::LoadState`]); `seed`
    /// drives every choice it makes (its index id, tie-breaks among peers).
    pub fn new(config: ReplicaConfig, seed: [u8; 32]) -> Replica {
        let _ = seed;
        Replica { config }
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// A link to `peer` (which holds this folder) is up: the folder asks for its index.
    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        let _ = (now, peer);
        todo!()
    }

    /// The link to `peer` went away: what was asked of it is asked of others.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        let _ = (now, peer);
        todo!()
    }

    /// `peer` has room for more bulk data.
    pub fn handle_room(&mut self, now: Instant, peer: NodeId) {
        let _ = (now, peer);
        todo!()
    }

    /// A message about this folder from `from`. `payload` is the frame's payload `message`
    /// was decoded from (HEREIS data is sliced from it without a copy). An `Err` closes the
    /// peer's connection.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: ReplicaMessage<'_>,
        payload: &Bytes,
    ) -> Result<(), ReplicaFault> {
        let _ = (now, from, message, payload);
        todo!()
    }

    /// The host's scanner found a change.
    pub fn handle_local(&mut self, now: Instant, change: LocalChange) {
        let _ = (now, change);
        todo!()
    }

    /// The host finished the storage step sent with `token`.
    pub fn handle_completed(&mut self, now: Instant, token: u64, result: StorageResult) {
        let _ = (now, token, result);
        todo!()
    }

    /// An application command.
    pub fn handle_command(
        &mut self,
        now: Instant,
        command: ReplicaCommand,
    ) -> Result<(), ReplicaRefusal> {
        let _ = (now, command);
        todo!()
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// The next thing to do, or `None`.
    pub fn poll_output(&mut self) -> Option<ReplicaOutput> {
        todo!()
    }

    /// When it next wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Whether the state is loaded.
    pub fn is_ready(&self) -> bool {
        todo!()
    }

    /// Whether nothing is left to do: every version known from a peer that is newer than
    /// the local one is in place, and no storage step or block request is outstanding.
    pub fn is_idle(&self) -> bool {
        todo!()
    }

    /// The index, by path (deletion records included).
    pub fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        core::iter::empty()
    }

    /// The counters.
    pub fn metrics(&self) -> ReplicaMetrics {
        todo!()
    }

    /// Checks every bound it promises.
    pub fn check_invariants(&self) -> Result<(), String> {
        todo!()
    }
}

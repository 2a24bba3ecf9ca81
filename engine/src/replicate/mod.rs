//! Folder replication: the ploppy protocol as a sans-IO sub-machine (SPEC.md §22).
//!
//! A [`Replica`] is one node's copy of one folder. It announces its index (IHAVE, IMOVED,
//! IDELETED), asks peers for theirs (LIST), fetches the blocks it lacks (IWANT, HEREIS) and
//! asks the host to carry out every storage step ([`StorageRequest`]); it never touches a
//! file. [`blocks`] is the chunk-and-hash function the hosts' scanners share; [`paths`] holds
//! the path rules.

mod announce;
pub mod blocks;
mod conflict;
mod gate;
mod index;
pub mod paths;
mod plan;
mod protocol;
mod replica;
mod state;
#[cfg(test)]
mod tests;
mod types;

pub use conflict::conflict_origin;
pub use gate::Gate;
pub(crate) use protocol::ReplicateProtocol;
pub use protocol::{
    ReplicateCommand, ReplicateEvent, ReplicateRefusal, BULK_QUEUE_BYTES_MAX, FOLDERS_MAX,
};
pub use replica::Replica;
pub use types::{
    short_id, Expect, Lane, LocalChange, Recipient, Record, ReplicaCommand, ReplicaConfig,
    ReplicaEvent, ReplicaFault, ReplicaMetrics, ReplicaOutput, ReplicaRefusal, StorageError,
    StorageRequest, StorageResult, TempId, Transfer,
};

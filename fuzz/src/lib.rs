//! weft's fuzz targets' logic. The targets in `fuzz_targets/` are one-line wrappers around
//! these functions; the corpus replay tests (`protocol/tests/fuzz_corpus.rs`,
//! `engine/tests/fuzz_corpus.rs`) include the same modules by path, so they run the very same
//! code without libfuzzer.
#![forbid(unsafe_code)]

mod decoder_drive;
mod drop_drive;
mod message_drive;
mod node_drive;
mod noise_drive;
mod p2pt_drive;
mod p2pt_node_drive;
mod replica_drive;
mod run_drive;

pub use decoder_drive::run_frame_decoder;
pub use drop_drive::run_drop_message;
pub use message_drive::{
    run_chord_message, run_mesh_message, run_session_message, run_table_message,
};
pub use node_drive::{
    default_config, run_node, run_node_metrics, run_node_small_limits, run_node_with,
    small_limits_config, NodeSummary,
};
pub use noise_drive::run_noise_link;
pub use p2pt_drive::run_p2pt_frame;
pub use p2pt_node_drive::{run_p2pt_node, P2ptSummary};
pub use replica_drive::run_replica_message;
pub use run_drive::run_run_message;

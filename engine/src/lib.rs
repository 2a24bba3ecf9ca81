//! weft's sans-IO node.
//!
//! A [`Node`] is a pure state machine: it consumes [`Input`]s (bytes arrived, a connection
//! opened or closed, a host request completed, a command from the application) and the
//! current time, and emits [`Output`]s (bytes to send, connections to open or close, requests
//! to the host, events for the application). It never touches a socket, a clock, a file or
//! the OS's randomness.
//!
//! The contract, after every `handle_*` call: drain [`Node::poll_output`] until it returns
//! `None`, then sleep until [`Node::poll_timeout`] (or the next input) and call
//! [`Node::handle_timeout`].
//!
//! Inside: the session layer (`session`: connections, handshake, liveness, send queues,
//! links, the address book) hosts the protocols (`discovery`, `mesh`, `table`, `chord`), each
//! a sub-machine of one shape (`machine`), registered in one place (`node/protocols.rs`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chord;
pub mod config;
mod connection;
mod discovery;
pub mod drops;
mod hasher;
pub mod identity;
pub mod io;
pub mod link_key;
mod machine;
pub mod mesh;
pub mod metrics;
mod node;
pub mod noise;
pub mod p2pt;
pub mod rate;
pub mod replicate;
pub mod run;
mod seen;
mod sending;
mod session;
mod state_blob;
pub mod table;
pub mod time;
mod timer;

pub use config::{Config, Limits, Timers};
pub use identity::Identity;
pub use io::{
    CloseReason, Command, ConnId, Direction, Event, HostRequest, HostResult, Input, InputError,
    Misuse, Output, Refusal, RequestId, SessionRefusal,
};
pub use link_key::{LinkEncryption, NetworkKey};
pub use mesh::{MeshCommand, MeshEvent, MeshMetrics, MeshRefusal};
pub use metrics::{ByProtocol, ConnStats, NodeMetrics, SessionMetrics, Traffic};
pub use node::Node;
pub use replicate::{ReplicateCommand, ReplicateEvent, ReplicateRefusal};
pub use run::{RunCommand, RunConfig, RunEvent, RunRefusal};
pub use session::HostInfo;
pub use table::{Lease, Table, TableCommand, TableEvent, TableMetrics, TableRefusal};
pub use time::{Duration, Instant};
pub use weft_protocol as protocol;
pub use weft_protocol::NodeId;

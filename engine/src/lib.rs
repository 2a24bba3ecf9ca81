//! weft's sans-IO node.
//!
//! A [`Node`] is a pure state machine: it consumes [`Input`]s (bytes arrived, a connection
//! opened or closed, a command from the application) and the current time, and emits
//! [`Output`]s (bytes to send, connections to open or close, events for the application). It
//! never touches a socket, a clock or the OS's randomness.
//!
//! The contract, after every `handle_*` call: drain [`Node::poll_output`] until it returns
//! `None`, then sleep until [`Node::poll_timeout`] (or the next input) and call
//! [`Node::handle_timeout`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chord;
pub mod config;
mod conn;
mod discovery;
mod handshake;
mod hasher;
pub mod identity;
pub mod io;
mod links;
mod mesh;
pub mod metrics;
mod node;
mod seen;
pub mod table;
pub mod time;
mod timer;
mod transport;

pub use config::{Config, Limits, Timers};
pub use identity::Identity;
pub use io::{CloseReason, Command, ConnId, Direction, Event, Input, InputError, Output};
pub use metrics::{ByProtocol, ConnStats, NodeMetrics, Traffic};
pub use node::{HostInfo, Node};
pub use table::{Lease, Table};
pub use time::{Duration, Instant};
pub use weft_protocol as protocol;
pub use weft_protocol::NodeId;

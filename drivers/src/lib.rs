//! Drivers that run weft nodes over real sockets, and the `weft` command-line program.
//!
//! A driver owns one [`weft_engine::Node`] and does its I/O: it listens, dials, reads into the
//! node, writes what the node emits under the back-pressure contract, keeps time, and shuts
//! down cleanly. Two drivers share everything but the I/O library:
//!
//! - [`mio_driver`] (feature `mio`): a hand-run poll loop whose timeout is the node's deadline;
//! - [`tokio_driver`] (feature `tokio`): one task per node, sleeping until the deadline.
//!
//! The application talks to a running driver through a [`Handle`]; the `weft` binary also
//! serves it on a Unix socket in the node's state folder ([`control`]). The engine's requests
//! to load and store its state are carried out in the node's embedded store, a redb database
//! in that folder ([`storage`]).
//!
//! Both drivers fail loudly: an output they do not handle, or a sign that their connection
//! table and the engine disagree, ends the run with a [`RunError`] rather than a log line.
#![warn(missing_docs)]

#[cfg(not(any(feature = "mio", feature = "tokio")))]
compile_error!("enable at least one driver feature: `mio` or `tokio`");

pub mod accept;
pub mod cli;
pub mod clock;
pub mod conform;
mod conns;
pub mod control;
mod dial_log;
pub mod folder;
pub mod handle;
mod host;
#[cfg(feature = "mio")]
pub mod mio_driver;
pub mod outbox;
pub mod peer_log;
pub mod process;
pub mod report;
pub mod setup;
pub mod small_file;
pub mod state;
mod state_writer;
pub mod storage;
#[cfg(feature = "tokio")]
pub mod tokio_driver;
#[cfg(feature = "ui")]
pub mod ui;

pub use handle::{
    Backlog, Delivery, DropAnswer, DropOp, Handle, HandleError, RunSession, Subscription, TableOp,
};
pub use host::{Exit, FirstContact, RunError, StopSignal};
pub use setup::Setup;

//! weft's deterministic network simulator: real [`weft_engine::Node`]s, virtual time,
//! simulated byte streams and injected faults. One root seed gives one byte-identical run.
//!
//! - [`world`]: the event loop, links and faults; [`faults`]: what can go wrong and how often;
//!   [`links`]: how links are protected (Noise keys, wrong-secret nodes, plaintext);
//!   [`topology`]: network shapes; [`tracker`]: the invariant checkers; [`durable`]: what a
//!   node acknowledged as committed outlives its crash; [`trace`]: the digest.
//! - [`scenario`]: what a run does and reports; [`cli`]: `weft sim`.
//! - [`queue`]: the event queue, one FIFO per distinct time.
//! - [`net`]: a smaller zero-latency harness for focused tests of a few nodes.
//!
//! Unsafe code is denied, with one exception: the cache prefetch hint the event loop gives
//! for the next events (`prefetch.rs`), which reads nothing and cannot fault.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod chord_net;
pub mod cli;
pub mod disk;
pub mod durable;
pub mod faults;
pub mod folder;
pub mod links;
pub mod net;
pub mod p2pt_net;
mod prefetch;
pub mod process;
pub mod queue;
pub mod replica_net;
pub mod rng;
pub mod scenario;
pub mod sweep;
pub mod tamper;
pub mod topology;
pub mod trace;
pub mod tracker;
pub mod world;

pub use net::Net;

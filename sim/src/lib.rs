//! weft's deterministic in-process network: real [`weft_engine::Node`]s joined by in-memory
//! byte pipes, driven by the engine's contract. One set of seeds gives one byte-identical run.
//!
//! This is the seed of the full simulator (virtual latency, faults, phases and checkers come
//! with it); today it runs small networks for tests and the demo.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod demo;
pub mod net;

pub use net::Net;

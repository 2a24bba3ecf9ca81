//! Drivers that run weft nodes and the `weft` command-line program.
//!
//! Today the binary runs the in-process demo; the mio and tokio drivers come next.
#![warn(missing_docs)]

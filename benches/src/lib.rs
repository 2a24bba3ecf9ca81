//! weft benches.

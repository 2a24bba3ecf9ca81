//! weft drivers.

//! weft engine.

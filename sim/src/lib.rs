//! weft sim.

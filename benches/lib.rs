//! criterion benches over weft's protocol, engine and simulator; see `benches/`.

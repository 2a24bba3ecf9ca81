//! One `weft_engine::Node` driven by an arbitrary sequence of inputs, commands (mesh, sync
//! table, Chord), peers' frames and timeouts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_node(data));

//! One p2p.today session (`weft_engine::p2pt::P2ptNode`) driven by arbitrary bytes, frames of
//! any flags and args, handshakes, commands, closes and time.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_fuzz::run_p2pt_node(data);
});

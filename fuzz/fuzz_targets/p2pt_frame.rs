//! One p2p.today frame through `decode_frame` (every decompressor), with round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_p2pt_frame(data));

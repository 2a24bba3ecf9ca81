//! Bytes into a Noise link: as a responder's first read, as an initiator's answer, and as an
//! established link's transport stream with one byte flipped.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_noise_link(data));

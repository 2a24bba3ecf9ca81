//! Bytes as the payload of every remote-run code (0x0600–0x0606) and of 0x0607, through
//! `Message::decode`; decoded messages must keep their limits and round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_run_message(data));

//! Bytes as the payload of every drop code (0x0500–0x0507) and of 0x0508, through
//! `Message::decode`; decoded messages must keep their limits and round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_drop_message(data));

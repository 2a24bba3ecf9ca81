//! Bytes as the payload of every replication code (0x0400–0x0407) and of 0x0408, through
//! `Message::decode`; decoded messages must keep their limits and round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_replica_message(data));

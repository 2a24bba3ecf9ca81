//! Bytes as the payload of every Chord code (0x0300-0x0309) and of two unassigned 0x03xx
//! codes, through `Message::decode`; decoded messages must keep their limits, round-trip,
//! refuse a trailing byte or a cut, and a record's key positions and signed bytes must agree
//! with the SPEC.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_chord_message(data));

//! Bytes as the payload of every mesh code (BROADCAST, MESH_DIGEST, MESH_WANT, MESH_REPAIR)
//! and of two unassigned 0x01xx codes, through `Message::decode`; decoded messages must keep
//! their limits, round-trip, refuse a trailing byte or a cut, and BROADCAST's field-by-field
//! decoding must agree with postcard's derived one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_mesh_message(data));

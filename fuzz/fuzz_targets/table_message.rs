//! Bytes as the payload of every sync-table code (TABLE_WRITE, TABLE_DIGEST, TABLE_WANT,
//! TABLE_ENTRIES) and of two unassigned 0x02xx codes, through `Message::decode`; decoded
//! messages must keep their limits, round-trip, refuse a trailing byte or a cut, and a write's
//! `encoded_len`, fingerprint, bucket and signed bytes must agree with the SPEC.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_table_message(data));

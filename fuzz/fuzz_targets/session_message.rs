//! Bytes as the payload of every session code (HELLO, HELLO_ACK, PING, PONG, BYE and the
//! discovery cascade ICANSEE, IKNOWABOUT, ICANTSEE) and of two unassigned 0x00xx codes,
//! through `Message::decode`; decoded messages must keep their limits, round-trip as a payload
//! and as a frame, and refuse a trailing byte or a cut.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_session_message(data));

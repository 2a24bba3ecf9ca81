//! Bytes in any chunking through `FrameDecoder`, `Frame::parse` and `Message::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_frame_decoder(data));

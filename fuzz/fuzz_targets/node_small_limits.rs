//! The `node` target's ops against a node with tiny limits (8 KiB send queue, 2 KiB relay
//! queue, 1 KiB transmit window, 3 inbound / 2 outbound connections, small caches, a small
//! sync table and Chord store), so that slow-peer disconnects, relay drops, repair-store
//! eviction, connection caps and the table's and Chord's bounds are reached.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::run_node_small_limits(data));

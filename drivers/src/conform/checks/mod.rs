//! The checks, each tagged with the SPEC.md section it tests, and what they share.

pub mod acceptor;
pub mod chord;
pub mod drops;
pub mod frames;
pub mod mesh;
pub mod replicate;
pub mod run;
pub mod session;
pub mod states;
pub mod table;
pub mod timers;

use weft_engine::protocol::{Broadcast, Code, Frame, Message, OriginProof};

use super::hello::Me;
use super::report::Section;
use super::{Check, Ctx};

/// The timer checks of `--timers` (SPEC.md §8.1, §9 at their §13 defaults), run after the
/// others, all at once: each waits out a timer on a connection of its own.
pub fn timed() -> Vec<Check> {
    use Section::*;
    let c = |section, name, run| Check { section, name, run };
    vec![
        c(
            Liveness,
            "an idle link gets a PING after ping_interval",
            timers::idle_link_pinged,
        ),
        c(
            Liveness,
            "a silent link is closed after peer_timeout",
            timers::silent_link_closed,
        ),
        c(
            Connections,
            "an unfinished handshake is closed after handshake_timeout",
            timers::stalled_handshake_closed,
        ),
    ]
}

/// Every check of the initiator script, in the order they run.
pub fn all() -> Vec<Check> {
    use Section::*;
    let c = |section, name, run| Check { section, name, run };
    vec![
        // §21 first: every other check runs over it.
        c(
            Noise,
            "the handshake binds the HELLO's key",
            session::noise_binds_identity,
        ),
        c(
            Noise,
            "another network key",
            session::noise_other_key_gets_silence,
        ),
        c(
            Noise,
            "an unbound static key",
            session::noise_unbound_static_key,
        ),
        c(
            Noise,
            "a HELLO with another key",
            session::noise_hello_key_mismatch,
        ),
        c(
            Noise,
            "a tampered transport message",
            session::noise_tampered_message,
        ),
        c(
            Noise,
            "a replayed transport message",
            session::noise_replayed_message,
        ),
        c(
            Handshake,
            "HELLO without waiting",
            session::hello_first_without_waiting,
        ),
        c(
            Handshake,
            "no HELLO_ACK before our HELLO",
            session::no_ack_before_our_hello,
        ),
        c(
            Handshake,
            "its HELLO_ACK verifies",
            session::hello_ack_verifies,
        ),
        c(Handshake, "a bad signature", session::bad_signature),
        c(
            Handshake,
            "a signature over the wrong nonce",
            session::signature_over_wrong_nonce,
        ),
        c(
            Handshake,
            "a signature with the wrong role",
            session::signature_with_wrong_role,
        ),
        c(Handshake, "another network", session::wrong_network),
        c(
            Handshake,
            "the other signing mode",
            session::other_signing_mode,
        ),
        c(Handshake, "a second HELLO", session::second_hello),
        c(
            Handshake,
            "HELLO_ACK before HELLO",
            session::ack_before_hello,
        ),
        c(Handshake, "a stale incarnation", session::stale_incarnation),
        c(
            Handshake,
            "unknown bits and incarnation 0",
            session::unknown_bits_ignored,
        ),
        c(
            Liveness,
            "PING answered with its nonce",
            session::ping_answered,
        ),
        c(
            Connections,
            "BYE on a link",
            session::bye_on_link_closes_silently,
        ),
        c(
            Connections,
            "BYE in the handshake",
            session::bye_in_handshake_closes_silently,
        ),
        c(
            Connections,
            "a large frame before the handshake",
            session::oversized_handshake_frame,
        ),
        c(
            Connections,
            "a dedicated connection of no family",
            session::dedicated_unknown_family,
        ),
        c(
            Connections,
            "a dedicated connection's families",
            states::dedicated_families,
        ),
        c(
            Connections,
            "a family it does not run",
            states::family_not_run,
        ),
        c(Frame, "invalid frame vectors", frames::invalid_frames),
        c(
            Frame,
            "an oversized length prefix",
            frames::oversized_length_prefix,
        ),
        c(Frame, "a frame in one-byte pieces", frames::split_frame),
        c(Frame, "frames joined in one message", frames::joined_frames),
        c(Frame, "a frame over several messages", frames::large_frame),
        c(
            Compression,
            "invalid compression vectors",
            frames::invalid_compression,
        ),
        c(
            Compression,
            "a compressed frame",
            frames::compressed_frame_taken,
        ),
        c(
            Payload,
            "malformed payload vectors",
            frames::invalid_payloads,
        ),
        c(
            States,
            "vectors before the handshake",
            states::vectors_before_handshake,
        ),
        c(
            States,
            "HELLO and HELLO_ACK on a link",
            states::handshake_messages_on_link,
        ),
        c(States, "vectors on a link", states::vectors_on_link),
        c(
            Discovery,
            "cascade relay and hop limit",
            mesh::cascade_relay,
        ),
        c(Mesh, "relay once, unchanged", mesh::relay_once),
        c(
            Compression,
            "no lz4 to a peer without it",
            mesh::no_lz4_without_cap,
        ),
        c(Mesh, "a forged broadcast", mesh::forged_broadcast),
        c(Mesh, "repair: digest, want, repair", mesh::repair_served),
        c(Mesh, "repair: asks for what it missed", mesh::repair_asked),
        c(Table, "a write flooded once", table::write_flooded),
        c(Table, "a forged write", table::forged_write),
        c(
            Table,
            "anti-entropy digest and entries",
            table::anti_entropy,
        ),
        c(Chord, "state and a lookup", chord::state_and_lookup),
        c(Chord, "store, fetch and refusals", chord::store_and_fetch),
        c(
            Replication,
            "LIST answered by IHAVE batches",
            replicate::list_answered,
        ),
        c(
            Replication,
            "IWANT, HEREIS and NOTFOUND",
            replicate::blocks_served,
        ),
        c(
            Replication,
            "blocks with wrong hashes",
            replicate::corrupt_blocks_close,
        ),
        c(Remote, "a stranger's run is refused", run::stranger_refused),
        c(
            Remote,
            "signals and acks for no run",
            run::signals_for_no_run_ignored,
        ),
        c(
            Remote,
            "an answer to a run never asked",
            run::answer_not_asked_closes,
        ),
        c(
            DropMessages,
            "requests for a drop it does not hold",
            drops::unknown_drop_requests,
        ),
        c(
            DropMessages,
            "news of a drop it does not hold",
            drops::unknown_drop_news,
        ),
        c(
            DropMessages,
            "malformed drop payloads",
            drops::malformed_drop_payloads,
        ),
        c(
            DropMessages,
            "a held drop's heads, versions and NOTFOUND",
            drops::held_drop_served,
        ),
        c(
            DropAcceptance,
            "the versions it serves follow the rules",
            drops::served_versions_follow_rules,
        ),
        c(
            DropAcceptance,
            "forged versions are refused",
            drops::forged_versions_refused,
        ),
        c(
            DropFiles,
            "its file list hashes to the root",
            drops::file_list_matches_root,
        ),
    ]
}

/// A BROADCAST frame from `me`, seq `seq`, carrying `payload`: signed unless the network is
/// unsigned, compressed if `compress` and that makes it smaller.
pub fn broadcast_frame(ctx: &Ctx, me: &Me, seq: u64, payload: &[u8], compress: bool) -> Vec<u8> {
    let payload = broadcast_payload(ctx, me, seq, payload);
    Frame::build(Code::BROADCAST, &payload, compress)
        .into_bytes()
        .to_vec()
}

/// The BROADCAST payload (also a MESH_REPAIR's) from `me`.
pub fn broadcast_payload(ctx: &Ctx, me: &Me, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Broadcast {
        origin: me.node_id(),
        incarnation: me.incarnation,
        seq,
        payload,
        proof: None,
    };
    if !ctx.unsigned() {
        let mut signed = Vec::new();
        b.signed_message(&ctx.network, &mut signed);
        b.proof = Some(OriginProof {
            public_key: me.public_key(),
            signature: me.identity.sign(&signed),
        });
    }
    Message::Broadcast(b).encode_payload()
}

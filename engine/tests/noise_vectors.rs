//! SPEC.md §21.9's test vectors: a whole handshake from fixed keys and the first transport
//! message each way, computed here and compared with the block in SPEC.md.
//! `WEFT_WRITE_VECTORS=1 cargo test -p weft-engine --test noise_vectors` rewrites the block.

use std::fmt::Write as _;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole, Rekey, STATIC_SECRET_CONTEXT};
use weft_engine::protocol::{ByeReason, Message};
use weft_engine::NetworkKey;

const BEGIN: &str = "<!-- noise vectors: begin (engine/tests/noise_vectors.rs) -->\n";
const END: &str = "<!-- noise vectors: end -->\n";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// `bytes` as lines of at most 64 hex digits under `name`.
fn field(out: &mut String, name: &str, bytes: &[u8]) {
    writeln!(out, "{name} ({} bytes):", bytes.len()).unwrap();
    for chunk in bytes.chunks(32) {
        writeln!(out, "  {}", hex(chunk)).unwrap();
    }
}

fn vectors() -> String {
    let secret_i = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let secret_r = [0x33; 32];
    let network_key = NetworkKey::derive(b"example secret").unwrap();
    let (seed_i, seed_r) = ([0x01; 32], [0x02; 32]);
    let keys_i = NoiseKeys::new(&secret_i, network_key, Rekey::default());
    let keys_r = NoiseKeys::new(&secret_r, network_key, Rekey::default());
    let ephemeral = |seed: [u8; 32]| {
        let mut e = [0u8; 32];
        ChaCha8Rng::from_seed(seed).fill_bytes(&mut e);
        e
    };
    let mut out = String::new();
    out.push_str("```text\n");
    field(
        &mut out,
        "network secret \"example secret\", argon2id key (psk)",
        network_key.as_bytes(),
    );
    field(&mut out, "initiator ed25519 secret", &secret_i);
    field(
        &mut out,
        "initiator static secret = BLAKE3 derive_key(STATIC_SECRET_CONTEXT, ed25519 secret)",
        &blake3::derive_key(STATIC_SECRET_CONTEXT, &secret_i),
    );
    field(&mut out, "initiator static public", &keys_i.static_public());
    field(&mut out, "initiator ephemeral secret", &ephemeral(seed_i));
    field(
        &mut out,
        "initiator identity payload",
        &keys_i.identity_payload(),
    );
    field(&mut out, "responder ed25519 secret", &secret_r);
    field(
        &mut out,
        "responder static secret",
        &blake3::derive_key(STATIC_SECRET_CONTEXT, &secret_r),
    );
    field(&mut out, "responder static public", &keys_r.static_public());
    field(&mut out, "responder ephemeral secret", &ephemeral(seed_r));
    field(
        &mut out,
        "responder identity payload",
        &keys_r.identity_payload(),
    );

    let mut i = NoiseLink::new(&keys_i, NoiseRole::Initiator, seed_i);
    let mut r = NoiseLink::new(&keys_r, NoiseRole::Responder, seed_r);
    let m1 = i.poll_transmit().unwrap();
    r.push(&m1);
    let m2 = r.poll_transmit().unwrap();
    i.push(&m2);
    let m3 = i.poll_transmit().unwrap();
    r.push(&m3);
    assert!(i.is_established() && r.is_established());
    field(
        &mut out,
        "message 1, initiator -> responder, length prefix included",
        &m1,
    );
    field(&mut out, "message 2, responder -> initiator", &m2);
    field(&mut out, "message 3, initiator -> responder", &m3);
    let bye = Message::Bye(ByeReason::Requested).to_frame(false);
    let t1 = i.seal(bye.bytes());
    r.push(&t1);
    assert_eq!(&r.poll_plaintext().unwrap()[..], &bye.bytes()[..]);
    let t2 = r.seal(bye.bytes());
    i.push(&t2);
    assert_eq!(&i.poll_plaintext().unwrap()[..], &bye.bytes()[..]);
    field(&mut out, "plaintext: the frame BYE(Requested)", bye.bytes());
    field(
        &mut out,
        "first transport message, initiator -> responder (nonce 0)",
        &t1,
    );
    field(
        &mut out,
        "first transport message, responder -> initiator (nonce 0)",
        &t2,
    );

    // The same initiator on an open network: message 1 under the all-zero key.
    let open_i = NoiseKeys::new(&secret_i, NetworkKey::OPEN, Rekey::default());
    let m1_open = NoiseLink::new(&open_i, NoiseRole::Initiator, seed_i)
        .poll_transmit()
        .unwrap();
    field(
        &mut out,
        "message 1 of the same initiator on an open network",
        &m1_open,
    );
    out.push_str("```\n");
    out
}

#[test]
fn specs_noise_vectors_are_what_the_engine_computes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md");
    let spec = std::fs::read_to_string(path).unwrap();
    let start = spec
        .find(BEGIN)
        .expect("SPEC.md has the noise vectors' begin marker")
        + BEGIN.len();
    let end = spec[start..].find(END).expect("and their end marker") + start;
    let computed = vectors();
    if std::env::var_os("WEFT_WRITE_VECTORS").is_some() {
        let rewritten = format!("{}{}{}", &spec[..start], computed, &spec[end..]);
        std::fs::write(path, rewritten).unwrap();
        return;
    }
    assert!(
        spec[start..end] == computed,
        "SPEC.md §21.9 differs from the engine; rerun with WEFT_WRITE_VECTORS=1 if the change \
         is meant:\n{computed}"
    );
}

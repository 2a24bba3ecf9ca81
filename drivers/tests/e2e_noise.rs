//! Noise on the wire between real `weft node` processes (SPEC.md §21), seen through a TCP
//! relay that records, tampers with, replays or cuts what it forwards (`common::relay`), and
//! against in-test clients that speak Noise through the engine's public API to claim an
//! identity they do not hold.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::relay::{Capture, Dir, Relay};
use common::{ok, run, scratch, wait_until, NodeProc, WAIT};
use weft_engine::identity::{Role, Transcript};
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole, Rekey, IDENTITY_PAYLOAD_BYTES};
use weft_engine::protocol::{
    Code, Family, Frame, FrameDecoder, Hello, HelloAck, Message, NetworkId, PublicKey,
};
use weft_engine::{Identity, NetworkKey, Timers};

/// A broadcast from A, 40 bytes that occur nowhere else.
const FROM_A: &str = "a-to-b:Qx9#Lm2!vR8kZ4pW1sT6yN3cJ0hF5gD&X";
/// A broadcast from B, 40 bytes that occur nowhere else.
const FROM_B: &str = "b-to-a:Hs3@Kd7$wE1qP9xV5nB2mT8rY4uL6jZ%X";
/// Table keys and values, written at A and at B, that occur nowhere else.
const TABLE_AT_A: (&str, &str) = ("key:Wc4^Tn8*Gf2", "value:Zp6!Rq1?Jv9+Mx3=Bk7~Dh5]Ls0");
const TABLE_AT_B: (&str, &str) = ("key:Yb1&Se5(Na3", "value:Cu8)Io2<Ft4>Gw7{Ej6}Hr9|Kq1");

/// Message 1 of XXpsk0: the ephemeral key (32) and the tag of its empty payload (16).
const MESSAGE_1_BYTES: usize = 48;
/// Message 2: the ephemeral key (32), the sealed static key (32 + 16), the sealed identity
/// payload (96 + 16).
const MESSAGE_2_BYTES: usize = 192;
/// Message 3: the sealed static key (32 + 16), the sealed identity payload (96 + 16).
const MESSAGE_3_BYTES: usize = 160;

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of 64 hex digits.
fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The ed25519 secret key in `node`'s state folder.
fn secret_of(node: &NodeProc) -> [u8; 32] {
    weft_drivers::state::read_key(&node.state)
        .expect("read the key")
        .expect("a key")
}

/// `node`'s ed25519 public key.
fn public_key_of(node: &NodeProc) -> PublicKey {
    Identity::from_secret(&secret_of(node)).public_key()
}

/// How many connections `node` logged as closed for `reason` (its `{:?}`).
fn closes_logged(node: &NodeProc, reason: &str) -> usize {
    node.log_text()
        .lines()
        .filter(|l| l.contains("closed ConnId") && l.contains(reason))
        .count()
}

fn table(node: &NodeProc, op: &str, extra: &[&str]) -> Output {
    let state = node.state.display().to_string();
    let mut args = vec!["table", op, "--name", &node.net, "--state", &state];
    args.extend_from_slice(extra);
    run(&args)
}

/// The ids of the connections `node` holds to `peer` (64 hex digits).
fn conns_to(node: &NodeProc, peer: &str) -> Vec<u64> {
    node.stats()
        .connections
        .iter()
        .filter(|c| c.peer.as_deref() == Some(peer))
        .map(|c| c.conn)
        .collect()
}

/// B and C broadcast to each other and each hears the other: B carries on.
fn b_and_c_still_talk(b: &NodeProc, c: &NodeProc, tag: &str) {
    let (at_b, at_c) = (b.listen(), c.listen());
    let (from_b, from_c) = (format!("{tag}: from b"), format!("{tag}: from c"));
    b.send(&from_b);
    c.send(&from_c);
    let heard = |listener: &common::ListenProc, text: &str| {
        listener
            .deliveries()
            .iter()
            .any(|d| d.payload.as_deref() == Some(text))
    };
    wait_until("b and c hear each other", || {
        heard(&at_c, &from_b) && heard(&at_b, &from_c)
    });
}

#[test]
fn the_wire_carries_no_broadcast_table_value_name_or_id_in_the_clear() {
    assert_eq!((FROM_A.len(), FROM_B.len()), (40, 40));
    let (dir, net) = scratch("noise-capture");
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[]);
    let relay = Relay::start(&b.addr);
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[&relay.addr]);
    let (a_id, b_id) = (a.id(), b.id());
    wait_until("a and b link through the relay", || {
        a.links_to(&b_id) && b.links_to(&a_id)
    });
    let (at_a, at_b) = (a.listen(), b.listen());
    a.send(FROM_A);
    b.send(FROM_B);
    assert_eq!(at_b.wait_for(1)[0].payload.as_deref(), Some(FROM_A));
    assert_eq!(at_a.wait_for(1)[0].payload.as_deref(), Some(FROM_B));
    // A few more each way, for a capture of some size.
    for n in 1..=3 {
        a.send(&format!("more from a, {n}"));
        b.send(&format!("more from b, {n}"));
    }
    at_a.wait_for(4);
    at_b.wait_for(4);
    for ((key, value), from, to) in [(TABLE_AT_A, &a, &b), (TABLE_AT_B, &b, &a)] {
        ok(&table(from, "set", &[key, value]));
        wait_until("the other node has the table value", || {
            let out = table(to, "get", &[key]);
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim_end() == value
        });
    }

    // Everything went through the relay: one relayed connection, B's only one, and A's.
    let captures = relay.captures();
    assert_eq!(captures.len(), 1, "one relayed connection");
    let capture = &captures[0];
    let b_conns = b.stats().connections;
    assert_eq!(b_conns.len(), 1, "{b_conns:?}");
    assert_eq!(b_conns[0].addr, capture.target_side);
    assert_eq!(b_conns[0].peer.as_deref(), Some(a_id.as_str()));
    let a_conns = a.stats().connections;
    assert_eq!(a_conns.len(), 1, "{a_conns:?}");
    assert_eq!(a_conns[0].addr, relay.addr);

    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("A's broadcast", FROM_A.into()),
        ("B's broadcast", FROM_B.into()),
        ("A's table key", TABLE_AT_A.0.into()),
        ("A's table value", TABLE_AT_A.1.into()),
        ("B's table key", TABLE_AT_B.0.into()),
        ("B's table value", TABLE_AT_B.1.into()),
        ("the network name", net.clone().into()),
        ("the network id", NetworkId::from_name(&net).0.to_vec()),
        ("A's id in hex", a_id.clone().into()),
        ("B's id in hex", b_id.clone().into()),
        ("A's id", unhex(&a_id)),
        ("B's id", unhex(&b_id)),
        ("A's public key", public_key_of(&a).0.to_vec()),
        ("B's public key", public_key_of(&b).0.to_vec()),
    ];
    for dir in [Dir::ToTarget, Dir::ToClient] {
        let bytes = capture.bytes(dir);
        assert!(bytes.len() > 1024, "{dir:?}: only {} bytes", bytes.len());
        for (what, plain) in &secrets {
            assert!(!contains(bytes, plain), "{what} in the clear {dir:?}");
        }
    }
    check_handshake_shape(capture);
    eprintln!(
        "capture: {} bytes in {} messages to B, {} bytes in {} messages to A",
        capture.bytes(Dir::ToTarget).len(),
        capture.messages(Dir::ToTarget).len(),
        capture.bytes(Dir::ToClient).len(),
        capture.messages(Dir::ToClient).len(),
    );
}

/// The connection opens with XXpsk0's three handshake messages, each of its exact length,
/// and every later message carries at least a tag.
fn check_handshake_shape(capture: &Capture) {
    let to_b = capture.bytes(Dir::ToTarget);
    assert_eq!(to_b[..2], [0, 48], "message 1's length prefix");
    let lens = |dir| -> Vec<usize> {
        capture
            .messages(dir)
            .iter()
            .map(|m| usize::from(u16::from_be_bytes([m[0], m[1]])))
            .collect()
    };
    let (to_b, to_a) = (lens(Dir::ToTarget), lens(Dir::ToClient));
    assert_eq!(to_b[..2], [MESSAGE_1_BYTES, MESSAGE_3_BYTES]);
    assert_eq!(to_a[0], MESSAGE_2_BYTES);
    for len in to_b[2..].iter().chain(&to_a[1..]) {
        assert!(*len > 16, "a transport message of {len} bytes");
    }
}

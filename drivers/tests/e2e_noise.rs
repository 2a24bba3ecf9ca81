//! Noise on the wire between real `weft node` processes (SPEC.md §21), seen through a TCP
//! relay that records, tampers with, replays or cuts what it forwards (`common::relay`), and
//! against in-test clients that speak Noise through the engine's public API to claim an
//! identity they do not hold.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::relay::{Capture, Dir, Relay};
use common::{ok, scratch, wait_until, NodeProc, WAIT};
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

/// `weft table OP --name NET --state DIR EXTRA...` against `node`.
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
        ok(&from.table("set", &[key, value]));
        wait_until("the other node has the table value", || {
            let out = to.table("get", &[key]);
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
        // The name and the hex ids are not in weft's frames even unencrypted (HELLO carries
        // the network's hash, frames raw ids): these two guard against a frame that would.
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

/// B, C linked to B, and A linked to B through a relay (A may link C too, by discovery).
struct Trio {
    _dir: tempfile::TempDir,
    a: NodeProc,
    b: NodeProc,
    c: NodeProc,
    relay: Relay,
    c_id: String,
}

fn trio(test: &str) -> Trio {
    let (dir, net) = scratch(test);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[]);
    let c = NodeProc::start(dir.path(), &net, "c", "mio", "127.0.0.1:0", &[&b.addr]);
    let relay = Relay::start(&b.addr);
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[&relay.addr]);
    let (a_id, b_id, c_id) = (a.id(), b.id(), c.id());
    wait_until("a links b through the relay, and b links c", || {
        a.links_to(&b_id) && b.links_to(&a_id) && b.links_to(&c_id) && c.links_to(&b_id)
    });
    assert_eq!(relay.captures().len(), 1, "one relayed connection");
    Trio {
        _dir: dir,
        a,
        b,
        c,
        relay,
        c_id,
    }
}

/// Waits until the target closes relayed connection 0 after its fault; checks B reported
/// it as `reason` and kept its link to C; the time from the fault to the close.
fn b_closes_the_faulted_connection(t: &Trio, failed_before: u64, reason: &str) -> Duration {
    wait_until("b closes the relayed connection", || {
        t.relay.capture(0).ended(Dir::ToClient).is_some()
    });
    let capture = t.relay.capture(0);
    assert!(capture.closed_by_target(), "b closed it, not a");
    let took = capture.ended(Dir::ToClient).unwrap() - capture.faulted.expect("a fault");
    wait_until("b logs the close", || closes_logged(&t.b, reason) == 1);
    assert!(
        t.b.stats().counters.connections_failed > failed_before,
        "b counts the failed connection"
    );
    assert!(t.b.links_to(&t.c_id), "b keeps its link to c");
    took
}

#[test]
fn a_flipped_byte_closes_the_link_and_the_node_carries_on() {
    let t = trio("noise-flip");
    let failed_before = t.b.stats().counters.connections_failed;
    let c_conns = conns_to(&t.b, &t.c_id);
    // The 6th byte of the next message A sends B: inside its ciphertext.
    t.relay.flip_next_message(0, Dir::ToTarget, 5);
    t.a.send("a broadcast to carry the flip");
    let took = b_closes_the_faulted_connection(&t, failed_before, "Noise(Decrypt)");
    assert_eq!(conns_to(&t.b, &t.c_id), c_conns, "the same link to c");
    b_and_c_still_talk(&t.b, &t.c, "after the flip");
    eprintln!("b closed the tampered connection {took:?} after the flip");
}

#[test]
fn a_replayed_message_closes_the_link_and_the_node_carries_on() {
    let t = trio("noise-replay");
    let failed_before = t.b.stats().counters.connections_failed;
    let c_conns = conns_to(&t.b, &t.c_id);
    let sent = t.relay.capture(0).messages(Dir::ToTarget).len();
    // Past the two handshake messages: a transport message B has already opened.
    assert!(sent > 2, "{sent} messages");
    let len = t.relay.replay(0, Dir::ToTarget, sent - 1);
    let took = b_closes_the_faulted_connection(&t, failed_before, "Noise(Decrypt)");
    assert_eq!(conns_to(&t.b, &t.c_id), c_conns, "the same link to c");
    b_and_c_still_talk(&t.b, &t.c, "after the replay");
    eprintln!("b closed the connection {took:?} after A's message {sent} ({len} bytes) came again");
}

#[test]
fn a_truncated_handshake_is_closed_within_the_handshake_timeout() {
    let (dir, net) = scratch("noise-cut");
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[]);
    let c = NodeProc::start(dir.path(), &net, "c", "mio", "127.0.0.1:0", &[&b.addr]);
    let c_id = c.id();
    wait_until("b and c link", || b.links_to(&c_id));
    // Message 1 whole (B answers it, and waits for message 3), and part of message 1.
    let whole = Relay::cutting(&b.addr, Dir::ToTarget, 2 + MESSAGE_1_BYTES);
    let part = Relay::cutting(&b.addr, Dir::ToTarget, 20);
    let _a1 = NodeProc::start(dir.path(), &net, "a1", "mio", "127.0.0.1:0", &[&whole.addr]);
    let _a2 = NodeProc::start(
        dir.path(),
        &net,
        "a2",
        "tokio",
        "127.0.0.1:0",
        &[&part.addr],
    );
    let timers = Timers::default();
    // The timeout is checked on each tick; a second more for the processes to run.
    let bound_ms = timers.handshake_timeout.as_millis() + timers.tick.as_millis() + 1000;
    let bound = Duration::from_millis(bound_ms);
    let closed = |relay: &Relay| {
        relay
            .captures()
            .first()
            .is_some_and(|c| c.ended(Dir::ToClient).is_some())
    };
    let deadline = Instant::now() + bound + Duration::from_secs(2);
    while !(closed(&whole) && closed(&part)) {
        assert!(
            Instant::now() < deadline,
            "b did not close the cut handshakes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // B answered the whole message 1 and nothing else; A's message 3 (and its HELLO) were
    // held back. Part of message 1 got no answer; A waited for one.
    for (relay, sent, answered, held_back) in [
        (
            &whole,
            2 + MESSAGE_1_BYTES,
            2 + MESSAGE_2_BYTES,
            2 + MESSAGE_3_BYTES,
        ),
        (&part, 20, 0, 2 + MESSAGE_1_BYTES - 20),
    ] {
        let capture = relay.capture(0);
        assert_eq!(capture.bytes(Dir::ToTarget).len(), sent);
        assert_eq!(capture.bytes(Dir::ToClient).len(), answered);
        assert!(capture.dropped(Dir::ToTarget) >= held_back);
        let took = capture.ended(Dir::ToClient).unwrap() - capture.opened;
        assert!(took <= bound, "closed after {took:?}");
        eprintln!("b closed a handshake cut after {sent} bytes in {took:?}");
    }
    wait_until("b logs both closes", || {
        closes_logged(&b, "HandshakeTimeout") >= 2
    });
    assert!(b.stats().counters.connections_failed >= 2);
    let hosts = b.hosts();
    let direct: Vec<&str> = hosts
        .iter()
        .filter(|h| h.direct)
        .map(|h| h.node.as_str())
        .collect();
    assert_eq!(direct, [c_id.as_str()], "b links c only");
    b_and_c_still_talk(&b, &c, "after the cut handshakes");
    drop(dir);
}

#[test]
fn nodes_with_different_secrets_never_link_and_the_answer_is_silence() {
    let (dir, net) = scratch("noise-secret");
    let b = NodeProc::start_with(
        dir.path(),
        &net,
        "b",
        "tokio",
        "127.0.0.1:0",
        &[],
        &["--secret", "two"],
    );
    let relay = Relay::start(&b.addr);
    let a = NodeProc::start_with(
        dir.path(),
        &net,
        "a",
        "mio",
        "127.0.0.1:0",
        &[&relay.addr],
        &["--secret", "one"],
    );
    // A redials its configured peer: let B refuse it twice.
    wait_until("b closes two of a's dials", || {
        relay
            .captures()
            .iter()
            .filter(|c| c.ended(Dir::ToClient).is_some())
            .count()
            >= 2
    });
    for capture in relay.captures().iter().filter(|c| c.closed_by_target()) {
        assert_eq!(capture.bytes(Dir::ToClient), b"", "b wrote nothing");
        let to_b = capture.bytes(Dir::ToTarget);
        assert_eq!(to_b.len(), 2 + MESSAGE_1_BYTES, "message 1 only");
        assert_eq!(to_b[..2], [0, 48]);
        let took = capture.ended(Dir::ToClient).unwrap() - capture.opened;
        eprintln!("b closed a dial from another secret's node in {took:?}");
    }
    wait_until("b logs the closes", || {
        closes_logged(&b, "Noise(Handshake)") >= 2
    });
    let (a_id, b_id) = (a.id(), b.id());
    for (node, other) in [(&a, &b_id), (&b, &a_id)] {
        let stats = node.stats();
        assert_eq!(stats.counters.handshakes_completed, 0);
        assert!(
            !node.hosts().iter().any(|h| &h.node == other),
            "never heard of the other"
        );
    }
    assert!(b.stats().counters.connections_failed >= 2);
}

/// One end of a Noise connection, driven by the engine's public Noise API.
struct NoiseEnd {
    socket: TcpStream,
    link: NoiseLink,
    closed: bool,
}

impl NoiseEnd {
    /// Noise over `socket` as `role`, with `keys`; an initiator's message 1 goes at once.
    fn new(socket: TcpStream, keys: &NoiseKeys, role: NoiseRole, seed: u8) -> NoiseEnd {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut end = NoiseEnd {
            socket,
            link: NoiseLink::new(keys, role, [seed; 32]),
            closed: false,
        };
        end.flush();
        end
    }

    fn dial(addr: &str, keys: &NoiseKeys, seed: u8) -> NoiseEnd {
        let socket = TcpStream::connect(addr).expect("dial the node");
        NoiseEnd::new(socket, keys, NoiseRole::Initiator, seed)
    }

    fn flush(&mut self) {
        while let Some(message) = self.link.poll_transmit() {
            if self.socket.write_all(&message).is_err() {
                self.closed = true;
            }
        }
    }

    /// The plaintext that arrives within 20 ms; marks the end closed when its peer closes.
    fn read(&mut self) -> Vec<Bytes> {
        let mut buf = vec![0u8; 64 * 1024];
        match self.socket.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => {
                self.link.push(&buf[..n]);
                assert_eq!(self.link.error(), None, "the node's Noise messages verify");
                self.flush();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.closed = true,
        }
        std::iter::from_fn(|| self.link.poll_plaintext()).collect()
    }

    /// Seals `plain` and writes it.
    fn write(&mut self, plain: &[u8]) {
        assert!(self.link.is_established());
        let sealed = self.link.seal(plain);
        if self.socket.write_all(&sealed).is_err() {
            self.closed = true;
        }
    }

    fn send(&mut self, message: &Message) {
        self.write(&message.to_frame(false).into_bytes());
    }
}

/// A [`NoiseEnd`] that reads whole weft frames.
struct Client {
    end: NoiseEnd,
    frames: FrameDecoder,
}

impl Client {
    fn dial(addr: &str, keys: &NoiseKeys, seed: u8) -> Client {
        Client {
            end: NoiseEnd::dial(addr, keys, seed),
            frames: FrameDecoder::default(),
        }
    }

    /// The next frame, or `None` once the node closed the connection.
    fn next_frame(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(frame) = self.frames.next_frame().expect("the node's frames decode") {
                return Some(frame);
            }
            if self.end.closed {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "the node neither wrote nor closed"
            );
            for plain in self.end.read() {
                self.frames.push(plain);
            }
        }
    }

    fn next_hello(&mut self) -> Hello {
        let frame = self.next_frame().expect("a HELLO");
        match Message::decode(frame.code(), &frame.payload().unwrap()).unwrap() {
            Message::Hello(hello) => hello,
            other => panic!("expected a HELLO, got {other:?}"),
        }
    }

    fn next_hello_ack(&mut self) -> HelloAck {
        let frame = self.next_frame().expect("a HELLO_ACK");
        match Message::decode(frame.code(), &frame.payload().unwrap()).unwrap() {
            Message::HelloAck(ack) => ack,
            other => panic!("expected a HELLO_ACK, got {other:?}"),
        }
    }

    /// The codes of the frames the node sends before it closes the connection.
    fn codes_until_closed(&mut self) -> Vec<Code> {
        std::iter::from_fn(|| self.next_frame().map(|f| f.code())).collect()
    }
}

/// The keys of the node whose ed25519 secret is `secret`, in a network without a secret.
fn keys_of(secret: &[u8; 32]) -> NoiseKeys {
    NoiseKeys::new(secret, NetworkKey::OPEN, Rekey::default())
}

/// A HELLO from a dialer, for network `net`, claiming `public_key`.
fn hello(net: &str, public_key: PublicKey, nonce: [u8; 32]) -> Hello {
    Hello {
        network: NetworkId::from_name(net),
        public_key,
        nonce,
        incarnation: 1,
        listen_addr: None,
        capabilities: 0,
        families: Family::Session.bit(),
        dedicated: None,
    }
}

/// B and C linked.
fn pair(test: &str) -> (tempfile::TempDir, String, NodeProc, NodeProc) {
    let (dir, net) = scratch(test);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[]);
    let c = NodeProc::start(dir.path(), &net, "c", "mio", "127.0.0.1:0", &[&b.addr]);
    let c_id = c.id();
    wait_until("b and c link", || b.links_to(&c_id));
    (dir, net, b, c)
}

/// The node ids `node` holds a live link to.
fn linked(node: &NodeProc) -> Vec<String> {
    node.hosts()
        .into_iter()
        .filter(|h| h.direct)
        .map(|h| h.node)
        .collect()
}

#[test]
fn a_handshake_claiming_another_nodes_identity_is_refused() {
    let (_dir, _net, b, c) = pair("noise-claim");
    let (b_key, c_id) = (public_key_of(&b), c.id());
    let c_conns = conns_to(&b, &c_id);
    let failed_before = b.stats().counters.connections_failed;
    // C's key with a signature that is not one, then C's real payload: its key and its
    // signature over C's own static key, not the client's.
    let mut garbage = [0x5a; IDENTITY_PAYLOAD_BYTES];
    garbage[..32].copy_from_slice(&public_key_of(&c).0);
    let replayed = keys_of(&secret_of(&c)).identity_payload();
    for (seed, payload) in [(1u8, garbage), (2, replayed)] {
        let keys = keys_of(&[0x40 + seed; 32]).with_identity_payload(payload);
        let mut client = Client::dial(&b.addr, &keys, seed);
        assert_eq!(client.codes_until_closed(), [], "b sent no frame");
        // The client read message 2 (B proved its own key) and wrote message 3.
        assert!(client.end.link.is_established());
        assert_eq!(client.end.link.peer_identity(), Some(b_key));
    }
    wait_until("b logs both refusals", || {
        closes_logged(&b, "Noise(UnboundStaticKey)") == 2
    });
    assert_eq!(b.stats().counters.connections_failed, failed_before + 2);
    assert_eq!(linked(&b), [c_id.as_str()], "b links c only");
    assert_eq!(conns_to(&b, &c_id), c_conns, "the same link to c");
}

#[test]
fn a_hello_naming_another_key_than_the_handshakes_is_refused() {
    let (_dir, net, b, c) = pair("noise-hello");
    let (b_key, c_id) = (public_key_of(&b), c.id());
    let c_conns = conns_to(&b, &c_id);
    let network = NetworkId::from_name(&net);

    // First, honestly: the same client code with its own key links.
    let honest = Identity::from_secret(&[0x51; 32]);
    let mut client = Client::dial(&b.addr, &keys_of(&[0x51; 32]), 3);
    let b_hello = client.next_hello();
    assert_eq!(b_hello.public_key, b_key);
    let nonce = [7; 32];
    client
        .end
        .send(&Message::Hello(hello(&net, honest.public_key(), nonce)));
    let ack = client.next_hello_ack();
    let b_signed = Transcript {
        network,
        signer_role: Role::Acceptor,
        verifier_key: honest.public_key(),
        verifier_nonce: nonce,
        signer_nonce: b_hello.nonce,
        signer_incarnation: b_hello.incarnation,
    };
    assert!(b_signed.verify(b_key, &ack.signature));
    let ours = Transcript {
        network,
        signer_role: Role::Dialer,
        verifier_key: b_key,
        verifier_nonce: b_hello.nonce,
        signer_nonce: nonce,
        signer_incarnation: 1,
    };
    client.end.send(&Message::HelloAck(HelloAck {
        signature: honest.sign_hello_ack(&ours),
    }));
    let honest_id = weft_drivers::report::hex_id(&honest.node_id());
    wait_until("b links the honest client", || b.links_to(&honest_id));
    drop(client);
    wait_until("b sees the honest client go", || !b.links_to(&honest_id));

    // Then a client that did Noise as itself and names C's key in its HELLO.
    let failed_before = b.stats().counters.connections_failed;
    let liar = Identity::from_secret(&[0x52; 32]);
    let mut client = Client::dial(&b.addr, &keys_of(&[0x52; 32]), 4);
    assert_eq!(client.next_hello().public_key, b_key);
    client
        .end
        .send(&Message::Hello(hello(&net, public_key_of(&c), nonce)));
    assert_eq!(client.codes_until_closed(), [], "no HELLO_ACK, nothing");
    wait_until("b logs the refusal", || {
        closes_logged(&b, "Noise(IdentityMismatch)") == 1
    });
    assert_eq!(b.stats().counters.connections_failed, failed_before + 1);
    let liar_id = weft_drivers::report::hex_id(&liar.node_id());
    assert!(!b.links_to(&liar_id));
    assert_eq!(linked(&b), [c_id.as_str()], "b links c only");
    assert_eq!(conns_to(&b, &c_id), c_conns, "the same link to c");
}

#[test]
fn a_relay_that_terminates_noise_both_ways_links_no_one() {
    let (dir, net) = scratch("noise-mitm");
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[]);
    let m_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let m_addr = m_listener.local_addr().unwrap().to_string();
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[&m_addr]);
    let (a_key, b_key) = (public_key_of(&a), public_key_of(&b));
    let (a_id, b_id) = (a.id(), b.id());

    // M takes A's dial, dials B, does Noise with each as itself, and forwards the plaintext.
    m_listener.set_nonblocking(true).unwrap();
    let mut from_a = None;
    wait_until("a dials m", || {
        from_a = m_listener.accept().ok().map(|(socket, _)| socket);
        from_a.is_some()
    });
    let from_a = from_a.unwrap();
    from_a.set_nonblocking(false).unwrap();
    let m_keys = keys_of(&[0x4d; 32]);
    let mut to_a = NoiseEnd::new(from_a, &m_keys, NoiseRole::Responder, 5);
    let mut to_b = NoiseEnd::dial(&b.addr, &m_keys, 6);
    let (mut for_a, mut for_b) = (Vec::<Bytes>::new(), Vec::<Bytes>::new());
    let (mut seen_a, mut seen_b) = (FrameDecoder::default(), FrameDecoder::default());
    let deadline = Instant::now() + WAIT;
    while !(to_a.closed && to_b.closed) {
        assert!(
            Instant::now() < deadline,
            "a and b kept m's connections open"
        );
        for plain in to_a.read() {
            seen_a.push(plain.clone());
            for_b.push(plain);
        }
        for plain in to_b.read() {
            seen_b.push(plain.clone());
            for_a.push(plain);
        }
        for (end, held) in [(&mut to_a, &mut for_a), (&mut to_b, &mut for_b)] {
            if end.link.is_established() && !end.closed {
                for plain in held.drain(..) {
                    end.write(&plain);
                }
            }
        }
    }
    drop(m_listener);
    // M got through Noise with both, each proving its own key to M, and forwarded each one's
    // HELLO to the other; neither signed a HELLO_ACK for it.
    assert_eq!(to_a.link.peer_identity(), Some(a_key));
    assert_eq!(to_b.link.peer_identity(), Some(b_key));
    assert!(for_a.is_empty() && for_b.is_empty(), "all forwarded");
    for (seen, who) in [(&mut seen_a, "a"), (&mut seen_b, "b")] {
        let codes: Vec<Code> = std::iter::from_fn(|| seen.next_frame().unwrap())
            .map(|f| f.code())
            .collect();
        assert_eq!(
            codes,
            [Code::HELLO],
            "{who} sent its HELLO and nothing more"
        );
    }
    for node in [&a, &b] {
        wait_until("the node logs the refusal", || {
            closes_logged(node, "Noise(IdentityMismatch)") == 1
        });
        assert_eq!(node.stats().counters.handshakes_completed, 0);
        assert_eq!(linked(node), Vec::<String>::new(), "links no one");
    }
    let m_id = weft_drivers::report::hex_id(&Identity::from_secret(&[0x4d; 32]).node_id());
    for (node, other) in [(&a, &b_id), (&b, &a_id)] {
        assert!(!node.links_to(other) && !node.links_to(&m_id));
    }
}

/// Connections that send junk, opened as fast as a client can, each closed and a line in the
/// log: the lines are held to their budget (the log grew by one line per connection).
#[test]
fn junk_connections_log_a_bounded_number_of_lines() {
    let (dir, net) = scratch("noise-junk");
    let b = NodeProc::start(dir.path(), &net, "b", "mio", "127.0.0.1:0", &[]);
    let max = weft_drivers::peer_log::PEER_LOG_LINES_MAX as usize;
    let started = Instant::now();
    for _ in 0..3 * max {
        let mut s = TcpStream::connect(&b.addr).expect("connect to b");
        s.set_read_timeout(Some(WAIT)).expect("a read timeout");
        s.write_all(&[0xff; 64]).expect("write junk");
        let mut buf = [0u8; 256];
        // Closed by b: the read ends (or fails as reset).
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    }
    eprintln!(
        "{} junk connections closed in {:?}",
        3 * max,
        started.elapsed()
    );
    wait_until("b logs closes", || closes_logged(&b, "") >= max);
    // The loop logs each close as it handles it: give it a moment past the last.
    std::thread::sleep(Duration::from_millis(500));
    let logged = closes_logged(&b, "");
    assert!(
        (1..=max).contains(&logged),
        "{logged} closes logged, at most {max} expected"
    );
}

//! `weft conform --listen`: the kit as acceptor. It waits for the first peer that dials in,
//! checks its Noise handshake as initiator (SPEC.md §21), its HELLO and its HELLO_ACK as the
//! dialer (§7), a PING (§9) and a BYE (§8.5); then, if the peer dials again within a few
//! seconds (weft redials a configured address, §8.10), that it refuses a bad proof (§7.5),
//! and on the dial after that, a HELLO of another network (§7.4).

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use weft_engine::identity::Role;
use weft_engine::noise::NoiseRole;
use weft_engine::protocol::{ByeReason, HelloAck, Message, NetworkId, Signature};
use weft_engine::NetworkKey;

use super::super::conn::Conn;
use super::super::hello::{read_ack, read_hello, LinkOpts, Me};
use super::super::report::{CheckResult, Outcome, Report, Section};

/// How long the kit waits for the peer to dial again.
const REDIAL_WAIT: Duration = Duration::from_secs(5);

/// Runs the acceptor script on the first connection `listener` accepts (and the next).
pub fn run(
    listener: &TcpListener,
    network: Option<NetworkId>,
    network_key: NetworkKey,
    wait: Duration,
) -> Result<Report, String> {
    let (socket, from) = listener
        .accept()
        .map_err(|e| format!("cannot accept a connection: {e}"))?;
    let mut report = Report {
        peer: from.to_string(),
        role: "acceptor",
        results: Vec::new(),
    };
    let mut push = |section, name, outcome| {
        report.results.push(CheckResult {
            section,
            name,
            outcome,
        })
    };
    let me = Me::fresh();
    let mut conn = Conn::start(socket, &me.keys(network_key), NoiseRole::Responder);
    let first = first_link(&mut conn, &me, network, wait);
    let network = match first {
        Ok(network) => {
            push(
                Section::Noise,
                "the dialer's handshake binds its HELLO's key",
                Outcome::Pass,
            );
            push(
                Section::Handshake,
                "its HELLO_ACK as the dialer verifies",
                Outcome::Pass,
            );
            network
        }
        Err((section, why)) => {
            push(section, "the first link", Outcome::Fail(why));
            return Ok(report);
        }
    };
    push(
        Section::Liveness,
        "PING answered with its nonce",
        match conn.expect_alive(wait) {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        },
    );
    conn.send_msg(&Message::Bye(ByeReason::Requested), false);
    push(
        Section::Connections,
        "BYE on a link",
        match conn.expect_close_without_bye(wait) {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(format!("after our BYE: {e}")),
        },
    );
    drop(conn);
    let outcome = match accept_within(listener, REDIAL_WAIT) {
        None => Outcome::Skip(format!(
            "the peer did not dial again within {} s",
            REDIAL_WAIT.as_secs()
        )),
        Some(socket) => match bad_proof(socket, network, network_key, wait) {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        },
    };
    let dialed_again = matches!(outcome, Outcome::Pass | Outcome::Fail(_));
    push(
        Section::Handshake,
        "a bad signature from the acceptor",
        outcome,
    );
    if dialed_again {
        let outcome = match accept_within(listener, REDIAL_WAIT) {
            None => Outcome::Skip(format!(
                "the peer did not dial a third time within {} s",
                REDIAL_WAIT.as_secs()
            )),
            Some(socket) => match wrong_network(socket, network_key, wait) {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(e),
            },
        };
        push(
            Section::Handshake,
            "another network from the acceptor",
            outcome,
        );
    }
    Ok(report)
}

/// Noise as responder, the dialer's HELLO, ours, both HELLO_ACKs: the network.
fn first_link(
    conn: &mut Conn,
    me: &Me,
    network: Option<NetworkId>,
    wait: Duration,
) -> Result<NetworkId, (Section, String)> {
    conn.finish_noise(wait).map_err(|e| (Section::Noise, e))?;
    let peer = read_hello(conn, wait).map_err(|e| (Section::Handshake, e))?;
    if conn.peer_identity() != Some(peer.public_key) {
        return Err((
            Section::Noise,
            "its HELLO's key is not the key its Noise handshake bound (§21.2)".into(),
        ));
    }
    let network = network.unwrap_or(peer.network);
    if peer.network != network {
        return Err((Section::Handshake, "its HELLO names another network".into()));
    }
    let unsigned = peer.capabilities & weft_engine::protocol::CAP_BROADCASTS_UNSIGNED != 0;
    let opts = LinkOpts::link(unsigned);
    conn.send_msg(&Message::Hello(me.hello(network, &opts)), false);
    conn.send_msg(
        &Message::HelloAck(me.ack(network, Role::Acceptor, &peer)),
        false,
    );
    let ack = read_ack(conn, wait).map_err(|e| (Section::Handshake, e))?;
    if !me.verifies(network, Role::Acceptor, &peer, &ack) {
        return Err((
            Section::Handshake,
            "its HELLO_ACK does not verify over the §7.3 transcript (signer role: dialer)".into(),
        ));
    }
    conn.answer_pings = true;
    Ok(network)
}

/// The next connection within `wait`, if one comes.
fn accept_within(listener: &TcpListener, wait: Duration) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + wait;
    let got = loop {
        match listener.accept() {
            Ok((socket, _)) => break Some(socket),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let _ = listener.set_nonblocking(false);
    let socket = got?;
    socket.set_nonblocking(false).ok()?;
    Some(socket)
}

/// On a redial: a HELLO_ACK of random bytes from the acceptor must get BYE(BadProof).
fn bad_proof(
    socket: TcpStream,
    network: NetworkId,
    network_key: NetworkKey,
    wait: Duration,
) -> Result<(), String> {
    let me = Me::fresh();
    let mut conn = Conn::start(socket, &me.keys(network_key), NoiseRole::Responder);
    conn.finish_noise(wait)?;
    let peer = read_hello(&mut conn, wait)?;
    let unsigned = peer.capabilities & weft_engine::protocol::CAP_BROADCASTS_UNSIGNED != 0;
    conn.send_msg(
        &Message::Hello(me.hello(network, &LinkOpts::link(unsigned))),
        false,
    );
    let mut sig = [0u8; 64];
    OsRng.fill_bytes(&mut sig);
    conn.send_msg(
        &Message::HelloAck(HelloAck {
            signature: Signature(sig),
        }),
        false,
    );
    conn.expect_bye(ByeReason::BadProof, wait)
}

/// On a redial: a HELLO of another network from the acceptor must get BYE(WrongNetwork).
fn wrong_network(socket: TcpStream, network_key: NetworkKey, wait: Duration) -> Result<(), String> {
    let me = Me::fresh();
    let mut conn = Conn::start(socket, &me.keys(network_key), NoiseRole::Responder);
    conn.finish_noise(wait)?;
    let peer = read_hello(&mut conn, wait)?;
    let unsigned = peer.capabilities & weft_engine::protocol::CAP_BROADCASTS_UNSIGNED != 0;
    let other = NetworkId::from_name("weft-conform-another-network");
    conn.send_msg(
        &Message::Hello(me.hello(other, &LinkOpts::link(unsigned))),
        false,
    );
    conn.expect_bye(ByeReason::WrongNetwork, wait)
}

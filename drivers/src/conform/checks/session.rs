//! Noise (SPEC.md §21), the handshake (§7), closing and caps before the handshake (§8) and
//! liveness (§9).

use rand_core::{OsRng, RngCore};
use weft_engine::identity::Role;
use weft_engine::noise::IDENTITY_PAYLOAD_BYTES;
use weft_engine::protocol::{
    ByeReason, Code, Frame, Hello, HelloAck, Message, NetworkId, Ping, Signature,
    CAP_BROADCASTS_UNSIGNED,
};
use weft_engine::NetworkKey;

use super::super::conn::{span, Conn, Got};
use super::super::hello::{read_ack, read_hello, Me};
use super::super::{Ctx, Step, Stop};

/// The Noise handshake completes, binds the key the peer's HELLO names, and the link carries
/// frames.
pub fn noise_binds_identity(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    link.conn.expect_alive(ctx.wait)?;
    Ok(())
}

/// A dialer with another network key gets no byte and a close (§21.6, §21.7).
pub fn noise_other_key_gets_silence(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let other = NetworkKey::derive(&key).map_err(|e| Stop::Skip(e.to_string()))?;
    let mut conn = Conn::dial(ctx.addr, &me.keys(other), ctx.wait)?;
    if conn.until_closed(ctx.wait).is_err() {
        return Err(format!(
            "a handshake under another network key was not closed within {}",
            span(ctx.wait)
        )
        .into());
    }
    if conn.raw_received > 0 {
        return Err(format!(
            "it wrote {} bytes to a dialer of another network key (§21.7: nothing)",
            conn.raw_received
        )
        .into());
    }
    Ok(())
}

/// A static key not bound to the identity it presents fails the handshake: a close, no
/// HELLO, no BYE (§21.2, §21.6).
pub fn noise_unbound_static_key(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut payload = [0u8; IDENTITY_PAYLOAD_BYTES];
    payload[..32].copy_from_slice(&me.public_key().0);
    // A signature of random bytes: it does not verify.
    OsRng.fill_bytes(&mut payload[32..]);
    let keys = me.keys(ctx.network_key).with_identity_payload(payload);
    let mut conn = Conn::dial(ctx.addr, &keys, ctx.wait)?;
    conn.finish_noise(ctx.wait)?;
    match conn.until_closed(ctx.wait) {
        Ok(frames) if frames.is_empty() => Ok(()),
        Ok(frames) => Err(format!(
            "it sent {} to a peer whose static key is not bound (§21.2: it closes, sending nothing)",
            frames[0].code().name()
        )
        .into()),
        Err(_) => Err(format!(
            "an unbound static key was not refused by a close within {}",
            span(ctx.wait)
        )
        .into()),
    }
}

/// A HELLO naming another key than the one the Noise handshake bound: a close without BYE
/// (§21.2).
pub fn noise_hello_key_mismatch(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let other = Me::fresh();
    let mut conn = ctx.noise(&me)?;
    conn.send_msg(
        &Message::Hello(other.hello(ctx.network, &ctx.opts())),
        false,
    );
    conn.expect_close_without_bye(ctx.wait)
        .map_err(|e| format!("a HELLO with another key than the handshake's: {e}"))?;
    Ok(())
}

/// A transport message with a byte changed closes the link without a BYE (§21.4, §21.6).
pub fn noise_tampered_message(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    let ping = Message::Ping(Ping { nonce: 7 })
        .to_frame(false)
        .into_bytes();
    let mut sealed = link.conn.seal(&ping).to_vec();
    if let Some(b) = sealed.get_mut(4) {
        *b ^= 0x40;
    }
    link.conn.write_raw(&sealed);
    link.conn
        .expect_close_without_bye(ctx.wait)
        .map_err(|e| format!("a tampered transport message: {e}"))?;
    Ok(())
}

/// A transport message sent twice closes the link without a BYE (§21.4).
pub fn noise_replayed_message(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    let ping = Message::Ping(Ping { nonce: 8 })
        .to_frame(false)
        .into_bytes();
    let sealed = link.conn.seal(&ping);
    link.conn.write_raw(&sealed);
    link.conn.write_raw(&sealed);
    link.conn
        .expect_close_without_bye(ctx.wait)
        .map_err(|e| format!("a replayed transport message: {e}"))?;
    Ok(())
}

/// The peer sends its HELLO once Noise is done, without waiting for the kit's (§7.2).
pub fn hello_first_without_waiting(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut conn = ctx.noise(&me)?;
    let peer = read_hello(&mut conn, ctx.wait)?;
    ctx.check_hello(&conn, &peer)?;
    Ok(())
}

/// Its HELLO_ACK verifies over the §7.3 transcript (signer role: acceptor) and the link
/// carries frames after it.
pub fn hello_ack_verifies(ctx: &Ctx) -> Step {
    noise_binds_identity(ctx)
}

/// Our HELLO, then `ack` as our HELLO_ACK: the peer must answer BYE(`reason`).
fn ack_refused(ctx: &Ctx, me: &Me, make_ack: impl FnOnce(&Hello) -> HelloAck) -> Step {
    let (mut conn, peer) = ctx.hellos(me, &ctx.opts())?;
    conn.send_msg(&Message::HelloAck(make_ack(&peer)), false);
    // Its own HELLO_ACK may come first (it answers our HELLO at once).
    conn.expect_bye(ByeReason::BadProof, ctx.wait)?;
    Ok(())
}

/// A HELLO_ACK whose signature does not verify: BYE(BadProof) (§7.5).
pub fn bad_signature(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    ack_refused(ctx, &me, |_| {
        let mut sig = [0u8; 64];
        OsRng.fill_bytes(&mut sig);
        HelloAck {
            signature: Signature(sig),
        }
    })
}

/// A HELLO_ACK signed over another nonce than the peer's: BYE(BadProof) (§7.3, §7.5).
pub fn signature_over_wrong_nonce(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let signer = me.clone();
    let network = ctx.network;
    ack_refused(ctx, &me, move |peer| {
        let mut other = peer.clone();
        other.nonce[0] ^= 1;
        signer.ack(network, Role::Dialer, &other)
    })
}

/// A HELLO_ACK that signs the wrong role (the dialer claiming to be the acceptor): BYE(BadProof)
/// (§7.3).
pub fn signature_with_wrong_role(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let signer = me.clone();
    let network = ctx.network;
    ack_refused(ctx, &me, move |peer| {
        signer.ack(network, Role::Acceptor, peer)
    })
}

/// Sends `hello` right after Noise: the peer must answer BYE(`reason`).
fn hello_refused(ctx: &Ctx, me: &Me, hello: Hello, reason: ByeReason) -> Step {
    let mut conn = ctx.noise(me)?;
    conn.send_msg(&Message::Hello(hello), false);
    conn.expect_bye(reason, ctx.wait)?;
    Ok(())
}

/// A HELLO of another network: BYE(WrongNetwork) (§7.4 rule 3).
pub fn wrong_network(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut hello = me.hello(ctx.network, &ctx.opts());
    hello.network = NetworkId::from_name("weft-conform-another-network");
    hello_refused(ctx, &me, hello, ByeReason::WrongNetwork)
}

/// A HELLO of the other broadcast-signing mode: BYE(WrongNetwork) (§7.4 rule 5).
pub fn other_signing_mode(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut hello = me.hello(ctx.network, &ctx.opts());
    hello.capabilities ^= CAP_BROADCASTS_UNSIGNED;
    hello_refused(ctx, &me, hello, ByeReason::WrongNetwork)
}

/// A second HELLO on a connection: BYE(ProtocolViolation) (§7.4 rule 2).
pub fn second_hello(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let (mut conn, _) = ctx.hellos(&me, &ctx.opts())?;
    conn.send_msg(&Message::Hello(me.hello(ctx.network, &ctx.opts())), false);
    conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait)?;
    Ok(())
}

/// A HELLO_ACK before any HELLO: BYE(ProtocolViolation) (§7.5 rule 1).
pub fn ack_before_hello(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut conn = ctx.noise(&me)?;
    let ack = HelloAck {
        signature: Signature([1; 64]),
    };
    conn.send_msg(&Message::HelloAck(ack), false);
    conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait)?;
    Ok(())
}

/// A HELLO with a lower incarnation than one the peer linked with: BYE(StaleIncarnation)
/// (§7.4 rule 1, §8.7).
pub fn stale_incarnation(ctx: &Ctx) -> Step {
    let me = Me::fresh().again(5);
    let mut link = ctx.link_as(me.clone(), &ctx.opts())?;
    link.conn.expect_alive(ctx.wait)?;
    link.conn
        .send_msg(&Message::Bye(ByeReason::Requested), false);
    let _ = link.conn.until_closed(ctx.wait);
    drop(link);
    let older = me.again(4);
    let mut conn = ctx.noise(&older)?;
    conn.send_msg(
        &Message::Hello(older.hello(ctx.network, &ctx.opts())),
        false,
    );
    conn.expect_bye(ByeReason::StaleIncarnation, ctx.wait)?;
    Ok(())
}

/// Incarnation 0, unknown capability bits and unknown family bits are accepted (§6.2, §7.4).
pub fn unknown_bits_ignored(ctx: &Ctx) -> Step {
    let me = Me::fresh().again(0);
    let mut opts = ctx.opts();
    opts.capabilities |= 0x8000_0000;
    opts.families |= 1 << 20;
    let mut link = ctx.link_as(me, &opts)?;
    link.conn.expect_alive(ctx.wait)?;
    Ok(())
}

/// A PING with the largest nonce is answered by a PONG with it (§9).
pub fn ping_answered(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    link.conn
        .send_msg(&Message::Ping(Ping { nonce: u64::MAX }), false);
    let deadline = std::time::Instant::now() + ctx.wait;
    loop {
        match link.conn.next(deadline) {
            Got::Frame(f) if f.code() == Code::PONG => {
                let nonce = super::super::conn::with_msg(&f, |m| match m {
                    Message::Pong(p) => Some(p.nonce),
                    _ => None,
                });
                return match nonce {
                    Some(Some(u64::MAX)) => Ok(()),
                    Some(Some(n)) => {
                        Err(format!("PONG carries nonce {n}, not the PING's {}", u64::MAX).into())
                    }
                    _ => Err("its PONG does not decode".to_string().into()),
                };
            }
            Got::Frame(_) => {}
            Got::Closed => return Err("it closed the link after a PING".to_string().into()),
            Got::Timeout => {
                return Err(format!("no PONG within {}", span(ctx.wait)).into());
            }
        }
    }
}

/// A BYE on a link: the peer closes without answering (§8.5).
pub fn bye_on_link_closes_silently(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    link.conn.expect_alive(ctx.wait)?;
    link.conn
        .send_msg(&Message::Bye(ByeReason::Requested), false);
    link.conn
        .expect_close_without_bye(ctx.wait)
        .map_err(|e| format!("after our BYE: {e}"))?;
    Ok(())
}

/// A BYE before the handshake: the peer closes without answering (§6.13, §8.5).
pub fn bye_in_handshake_closes_silently(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let (mut conn, _) = ctx.hellos(&me, &ctx.opts())?;
    conn.send_msg(&Message::Bye(ByeReason::Shutdown), false);
    conn.expect_close_without_bye(ctx.wait)
        .map_err(|e| format!("after our BYE in the handshake: {e}"))?;
    Ok(())
}

/// A frame declaring more than 385 bytes before the handshake is done: BYE(ProtocolViolation)
/// as soon as its length is in (§8.4).
pub fn oversized_handshake_frame(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut conn = ctx.noise(&me)?;
    // A HELLO header declaring a 400-byte frame, and no payload.
    let mut header = (400u32 - 4).to_be_bytes().to_vec();
    header.extend_from_slice(&[1, 0, 0, 1]);
    conn.send(&header);
    conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait)
        .map_err(|e| format!("a 400-byte frame before the handshake: {e}"))?;
    Ok(())
}

/// A HELLO asking for a dedicated connection of a family that does not exist, or of the
/// session family: BYE(ProtocolViolation) (§8.9).
pub fn dedicated_unknown_family(ctx: &Ctx) -> Step {
    for family in [0x07u8, 0x00] {
        let me = Me::fresh();
        let mut opts = ctx.opts();
        opts.dedicated = Some(family);
        let mut conn = ctx.noise(&me)?;
        conn.send_msg(&Message::Hello(me.hello(ctx.network, &opts)), false);
        conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait)
            .map_err(|e| format!("a dedicated connection of family {family:#04x}: {e}"))?;
    }
    Ok(())
}

/// The peer's HELLO_ACK comes only after our HELLO (§7.2): with our HELLO held back, nothing
/// but its HELLO arrives.
pub fn no_ack_before_our_hello(ctx: &Ctx) -> Step {
    let me = Me::fresh();
    let mut conn = ctx.noise(&me)?;
    let _ = read_hello(&mut conn, ctx.wait)?;
    let early = conn.collect(std::time::Duration::from_millis(300));
    if let Some(f) = early.first() {
        return Err(format!("it sent {} before our HELLO arrived", f.code().name()).into());
    }
    conn.send_msg(&Message::Hello(me.hello(ctx.network, &ctx.opts())), false);
    let _ = read_ack(&mut conn, ctx.wait)?;
    Ok(())
}

/// The frame bytes of a message, for checks that send them raw.
pub fn frame_of(message: &Message) -> Vec<u8> {
    Frame::build(message.code(), &message.encode_payload(), false)
        .into_bytes()
        .to_vec()
}

//! Frames (SPEC.md §2), compression (§3) and payload decoding (§4): every invalid vector on
//! a fresh link must be answered by BYE(ProtocolViolation) and a close; frames split across
//! transport messages, joined in one, larger than one, and compressed must be taken.

use weft_engine::protocol::{ByeReason, Code, Family, Frame, Message, Ping};

use super::super::conn::{with_msg, Got};
use super::super::vectors::{self, Invalid};
use super::super::{Ctx, Step, Stop};
use super::broadcast_frame;

/// The section an invalid vector's error belongs to: 2 (frame), 3 (compression) or 4
/// (payload).
fn invalid_section(v: &Invalid) -> u8 {
    match v.error.as_str() {
        "DecompressedTooLarge" | "BadCompression" => 3,
        "Truncated" if v.name.contains("compressed") => 3,
        "MalformedPayload" => 4,
        _ => 2,
    }
}

/// Whether the kit can observe the peer's answer to `v`: an input that merely ends inside
/// a frame leaves the receiver waiting for the rest (§2.1), so nothing is due.
fn observable(v: &Invalid) -> bool {
    !matches!(v.name.as_str(), "truncated_header" | "truncated_payload")
}

/// Sends each invalid vector of `section` on its own fresh link; each must be answered by
/// BYE(ProtocolViolation) and a close. The malformed drop payloads are §24.5's when the peer
/// runs drops (`drops::malformed_drop_payloads`): a peer that mishandles them fails that line
/// alone.
fn invalid_vectors(ctx: &Ctx, section: u8) -> Step {
    let (_, invalid) = vectors::load();
    let drops = ctx.runs(Family::Drops);
    let mine: Vec<&Invalid> = invalid
        .iter()
        .filter(|v| invalid_section(v) == section && observable(v))
        .filter(|v| !(drops && super::drops::is_drop_payload_vector(v)))
        .collect();
    if mine.is_empty() {
        return Err(Stop::Skip("no vectors".into()));
    }
    let mut failed = Vec::new();
    for v in &mine {
        let mut link = ctx.link()?;
        link.conn.send(&v.bytes());
        if let Err(e) = link.conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait) {
            failed.push(format!("`{}` ({}): {e}", v.name, v.error));
            break;
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{first} (the first failing of {} vectors; the rest not tried)",
            mine.len()
        )
        .into()),
    }
}

/// §2: every invalid frame vector (length, version, flags, code) is refused.
pub fn invalid_frames(ctx: &Ctx) -> Step {
    invalid_vectors(ctx, 2)
}

/// §3: every invalid compression vector is refused.
pub fn invalid_compression(ctx: &Ctx) -> Step {
    invalid_vectors(ctx, 3)
}

/// §4: every malformed payload vector is refused.
pub fn invalid_payloads(ctx: &Ctx) -> Step {
    invalid_vectors(ctx, 4)
}

/// §2.1: a length prefix over `FRAME_BODY_BYTES_MAX` is refused as soon as its four bytes
/// are in, before any payload.
pub fn oversized_length_prefix(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    let len = weft_engine::protocol::FRAME_BODY_BYTES_MAX as u32 + 1;
    link.conn.send(&len.to_be_bytes());
    link.conn
        .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
        .map_err(|e| format!("oversized length prefix alone: {e}"))?;
    Ok(())
}

/// §2.1: a PING cut into one-byte transport messages is joined and answered.
pub fn split_frame(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    let nonce = 0x0123_4567_89ab_cdef;
    let ping = Message::Ping(Ping { nonce }).to_frame(false).into_bytes();
    link.conn.send_split(&ping, 1);
    expect_pongs(&mut link.conn, &[nonce], ctx)
        .map_err(|e| format!("a PING in one-byte pieces: {e}"))?;
    Ok(())
}

/// §2.1: three PINGs in one transport message are each answered.
pub fn joined_frames(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    let nonces = [11u64, 22, 33];
    let mut bytes = Vec::new();
    for nonce in nonces {
        bytes.extend_from_slice(&Message::Ping(Ping { nonce }).to_frame(false).into_bytes());
    }
    link.conn.send(&bytes);
    expect_pongs(&mut link.conn, &nonces, ctx)
        .map_err(|e| format!("three PINGs in one message: {e}"))?;
    Ok(())
}

/// §2: a 150 KiB BROADCAST spread over several transport messages, cut at odd points, is
/// taken (the link stays up).
pub fn large_frame(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    let payload: Vec<u8> = (0..150 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let frame = broadcast_frame(ctx, &link.me, 1, &payload, false);
    link.conn.send_split(&frame, 40_000 + 17);
    link.conn
        .expect_alive(ctx.wait)
        .map_err(|e| format!("after a 150 KiB frame over four transport messages: {e}"))?;
    Ok(())
}

/// §3: a compressed BROADCAST it can inflate is taken (the peer offered lz4 in its HELLO).
pub fn compressed_frame_taken(ctx: &Ctx) -> Step {
    if ctx.peer.capabilities & weft_engine::protocol::CAP_LZ4 == 0 {
        return Err(Stop::Skip("the peer did not offer lz4".into()));
    }
    let mut link = ctx.link()?;
    let payload = b"compress me, compress me, ".repeat(40);
    let frame = broadcast_frame(ctx, &link.me, 1, &payload, true);
    let parsed = Frame::parse(frame.clone().into()).map_err(|e| Stop::Skip(e.to_string()))?;
    if !parsed.flags().compressed() {
        return Err(Stop::Skip("the payload did not compress".into()));
    }
    link.conn.send(&frame);
    link.conn
        .expect_alive(ctx.wait)
        .map_err(|e| format!("after a valid compressed BROADCAST: {e}"))?;
    Ok(())
}

/// Reads until a PONG for each of `nonces` arrived, in order.
fn expect_pongs(
    conn: &mut super::super::conn::Conn,
    nonces: &[u64],
    ctx: &Ctx,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + ctx.wait;
    let mut left = nonces.iter();
    let mut want = left.next();
    while let Some(&n) = want {
        match conn.next(deadline) {
            Got::Frame(f) if f.code() == Code::PONG => {
                let got = with_msg(&f, |m| match m {
                    Message::Pong(p) => Some(p.nonce),
                    _ => None,
                })
                .flatten();
                if got != Some(n) {
                    return Err(format!("a PONG for {got:?} where {n} was due"));
                }
                want = left.next();
            }
            Got::Frame(f) => {
                if let Some(r) = super::super::conn::bye_reason(&f) {
                    return Err(format!("BYE({r:?})"));
                }
            }
            Got::Closed => return Err("the link closed".into()),
            Got::Timeout => return Err(format!("no PONG for {n} in time")),
        }
    }
    Ok(())
}

//! §25.5 Compression: a raw handshake with the peer's codes; the peer's later frames under
//! the first method of its own list that the kit advertised; a raw frame taken on a
//! compressed link; `renegotiate/compression` and `renegotiate/resend`.
//!
//! py2p (`base.py`): `_send_handshake` empties the link's list while it sends; a message's
//! method is the first of py2p's own list (`messages.compression`) in the link's list;
//! `feed_string` tries the link's methods and falls back to the raw bytes;
//! `handle_renegotiate` replaces the link's list and answers with
//! `intersect(own list, new list)` (py2p's order) only when the list changed, the answer
//! already under the new list; on `resend` it calls `self.send(*self.last_sent)`, where
//! `last_sent` is the payload `(sub-flag, args…)` of the last whisper or broadcast it sent on
//! the link: the frame that goes out is `[sub-flag, its own id, now, args…]`, the original's
//! main flag and sender lost.

use std::time::Instant;

use weft_engine::protocol::p2pt::{choose_compression, receive_order, MainFlag, Method, SubFlag};

use super::conn::{span, Got, Next};
use super::wire;
use super::{Ctx, Notes, KIT_CODES};
use crate::conform::Step;

/// `raw`, `zlib`.
fn how(m: Option<Method>) -> String {
    m.map_or_else(|| "raw".to_owned(), |m| format!("{m:?}").to_lowercase())
}

/// `[0x13 zlib, 0x11 gzip]`.
fn codes_text(codes: &[u64]) -> String {
    let named: Vec<String> = codes
        .iter()
        .map(|&c| match Method::from_code(c) {
            Some(m) => format!("0x{c:02x} {}", how(Some(m))),
            None if c == 0x20 => "0x20 snappy".to_owned(),
            None => format!("0x{c:02x}"),
        })
        .collect();
    format!("[{}]", named.join(", "))
}

/// The method the peer sends with to a kit that advertised `codes`: the first of its own
/// list (what its handshake advertised) that `codes` holds.
fn peer_method(ctx: &Ctx, codes: &[u64]) -> Option<Method> {
    choose_compression(&receive_order(&ctx.peer_codes), codes)
}

/// The peer's handshake is raw; its codes are noted when they are not py2p's default list.
pub fn handshake_raw(ctx: &Ctx, notes: &mut Notes) -> Step {
    let (mut conn, _) = ctx.dial()?;
    let (h, got) = ctx.their_handshake(&mut conn)?;
    if got.compression.is_some() {
        return Err(format!(
            "its handshake is compressed with {} (py2p sends handshakes raw)",
            how(got.compression)
        )
        .into());
    }
    if h.compression != KIT_CODES {
        notes.push(format!(
            "it advertises {} (py2p without snappy: {})",
            codes_text(&h.compression),
            codes_text(&KIT_CODES)
        ));
    }
    Ok(())
}

/// The kit advertises `codes` alone: the peer's `whisper/peers`, and its answer to a request
/// the kit sends under its own choice, come under the method the peer's rule picks.
fn advertising(ctx: &Ctx, codes: &[u64], notes: &mut Notes) -> Step {
    let expected = peer_method(ctx, codes);
    if let [code] = codes {
        if expected.is_none() {
            notes.push(format!(
                "it does not advertise 0x{code:02x}: raw frames expected"
            ));
        }
    }
    let mut link = ctx.link_with(codes)?;
    let what = format!("(the kit advertised {})", codes_text(codes));
    if link.peers.compression != expected {
        return Err(format!(
            "its whisper/peers came {}, not {} {what}",
            how(link.peers.compression),
            how(expected)
        )
        .into());
    }
    let m = wire::request_peers(&link.id, true);
    link.conn.send(&m);
    let answer = link.conn.expect(
        ctx.wait,
        &format!(
            "whisper/peers answering a request sent {}",
            how(link.conn.send_with)
        ),
        |g| g.is(MainFlag::WHISPER, SubFlag::PEERS),
    )?;
    if answer.compression != expected {
        return Err(format!(
            "its answer to a request came {}, not {} {what}",
            how(answer.compression),
            how(expected)
        )
        .into());
    }
    Ok(())
}

/// The kit advertising only zlib (0x13) gets zlib.
pub fn only_zlib(ctx: &Ctx, notes: &mut Notes) -> Step {
    advertising(ctx, &[u64::from(Method::Zlib.code())], notes)
}

/// The kit advertising only gzip (0x11) gets gzip.
pub fn only_gzip(ctx: &Ctx, notes: &mut Notes) -> Step {
    advertising(ctx, &[u64::from(Method::Gzip.code())], notes)
}

/// The kit advertising no method gets raw frames.
pub fn nothing_raw(ctx: &Ctx, notes: &mut Notes) -> Step {
    advertising(ctx, &[], notes)
}

/// The kit advertises zlib, so the peer reads its frames trying zlib first; a raw request
/// is answered all the same.
pub fn raw_on_compressed(ctx: &Ctx, _: &mut Notes) -> Step {
    let mut link = ctx.link_with(&[u64::from(Method::Zlib.code())])?;
    let m = wire::request_peers(&link.id, true);
    link.conn.send_raw(&m);
    link.conn
        .expect(
            ctx.wait,
            "whisper/peers answering a raw request on a link where the kit advertised zlib",
            |g| g.is(MainFlag::WHISPER, SubFlag::PEERS),
        )
        .map_err(|e| format!("{e} (py2p reads a frame raw when no method inflates it)"))?;
    Ok(())
}

/// The codes of a `renegotiate/compression`: its one arg, a list of integers.
fn renegotiated_codes(g: &Got) -> Option<Vec<u64>> {
    let m = g.message.as_ref()?;
    let [arg] = m.args.as_slice() else {
        return None;
    };
    arg.as_array()?.iter().map(|c| c.as_u64()).collect()
}

/// `renegotiate/compression [xz, gzip]` on a zlib link is answered with the peer's codes that
/// the list holds, in the peer's order; its later frames follow the new list; the same list
/// again is not answered (a request after it is the barrier).
pub fn renegotiate(ctx: &Ctx, notes: &mut Notes) -> Step {
    let mut link = ctx.link_with(&[u64::from(Method::Zlib.code())])?;
    let new = [u64::from(Method::Xz.code()), u64::from(Method::Gzip.code())];
    link.conn
        .send(&wire::renegotiate_compression(&link.id, &new));
    link.conn.send_with = ctx.send_method(&new);
    let expected_codes: Vec<u64> = ctx
        .peer_codes
        .iter()
        .filter(|c| new.contains(c))
        .copied()
        .collect();
    let expected = peer_method(ctx, &new);
    let answer = link.conn.expect(
        ctx.wait,
        "renegotiate/compression answering the kit's changed list",
        |g| g.is(MainFlag::RENEGOTIATE, SubFlag::COMPRESSION),
    )?;
    let Some(codes) = renegotiated_codes(&answer) else {
        return Err(
            "its renegotiate/compression does not carry one list of codes"
                .to_owned()
                .into(),
        );
    };
    if codes != expected_codes {
        return Err(format!(
            "it answered {}, not {} (its own codes, in its order, that {} holds)",
            codes_text(&codes),
            codes_text(&expected_codes),
            codes_text(&new)
        )
        .into());
    }
    if answer.compression != expected {
        notes.push(format!(
            "its answer came {} (py2p sends it under the new list: {})",
            how(answer.compression),
            how(expected)
        ));
    }
    link.conn
        .send(&wire::renegotiate_compression(&link.id, &new));
    link.conn.send(&wire::request_peers(&link.id, true));
    let deadline = Instant::now() + ctx.wait;
    loop {
        match link.conn.next(deadline) {
            Next::Frame(g) if g.is(MainFlag::RENEGOTIATE, SubFlag::COMPRESSION) => {
                return Err(
                    "it answered a renegotiation that changed nothing (py2p answers \
                            only a changed list)"
                        .to_owned()
                        .into(),
                );
            }
            Next::Frame(g) if g.is(MainFlag::WHISPER, SubFlag::PEERS) => {
                if g.compression != expected {
                    return Err(format!(
                        "after the renegotiation to {} its frames come {}, not {}",
                        codes_text(&new),
                        how(g.compression),
                        how(expected)
                    )
                    .into());
                }
                return Ok(());
            }
            Next::Frame(_) => {}
            Next::Closed => return Err(link.conn.closed_reason("whisper/peers").into()),
            Next::Timeout => {
                return Err(format!(
                    "no whisper/peers within {} of a request after the renegotiation",
                    span(ctx.wait)
                )
                .into())
            }
        }
    }
}

/// How `got` resends `last`: as it was (main flag, sub-flag and args), or as py2p does
/// (`[sub-flag, sender, timestamp, args…]`).
fn resend_form(got: &Got, last: &Got) -> Option<&'static str> {
    let (g, l) = (got.elements()?, last.elements()?);
    if g.len() == l.len() && g.len() >= 4 && g[0] == l[0] && g[3..] == l[3..] {
        return Some("as it was");
    }
    if g.len() + 1 == l.len() && g.len() >= 3 && g[0] == l[3] && g[3..] == l[4..] {
        return Some("py2p");
    }
    None
}

/// The peer relays the kit's broadcast to link B; `renegotiate/resend` on B brings the last
/// whisper or broadcast the peer sent on B again, as it was or in py2p's form.
pub fn resend(ctx: &Ctx, notes: &mut Notes) -> Step {
    let mut a = ctx.link()?;
    let mut b = ctx.link()?;
    let x = wire::broadcast(&a.id, wire::now(), "weft conform: resend", &wire::nonce());
    let xb = x.to_msgpack();
    a.conn.send(&x);
    b.conn.expect(
        ctx.wait,
        "the kit's broadcast relayed from its other link",
        |g| g.msgpack == xb,
    )?;
    let mut last = b.conn.last_payload.clone();
    b.conn.send(&wire::resend(&b.id));
    let deadline = Instant::now() + ctx.wait;
    loop {
        match b.conn.next(deadline) {
            Next::Frame(g) => {
                let form = last.as_ref().and_then(|l| resend_form(&g, l));
                match form {
                    Some("py2p") => {
                        notes.push(
                            "it resends as py2p does: [the old sub-flag as main flag, its own \
                             id, a new timestamp, the old args] (the old main flag and sender \
                             are lost)"
                                .into(),
                        );
                        return Ok(());
                    }
                    Some(_) => return Ok(()),
                    None => {}
                }
                if matches!(g.main_flag(), Some(0x00) | Some(0x02)) {
                    last = Some(g);
                }
            }
            Next::Closed => return Err(b.conn.closed_reason("a resend").into()),
            Next::Timeout => {
                let what = last.as_ref().map_or("nothing".into(), Got::describe);
                return Err(format!(
                    "nothing resending its last whisper/broadcast on the link ({what}) within {}",
                    span(ctx.wait)
                )
                .into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conform::p2pt::conn::open;

    fn got(msgpack: &[u8]) -> Got {
        open(&wire::frame_bytes(msgpack, None)).expect("a frame")
    }

    #[test]
    fn a_resend_is_recognised_in_both_forms() {
        // The relayed broadcast py2p last sent: [0, bin "A", ts, 0, 2, "hi"].
        let last = got(&[
            0x96, 0x00, 0xc4, 1, b'A', 0x05, 0x00, 0x02, 0xa2, b'h', b'i',
        ]);
        // As it was, under another sender and time.
        let same = got(&[
            0x96, 0x00, 0xc4, 1, b'P', 0x09, 0x00, 0x02, 0xa2, b'h', b'i',
        ]);
        // py2p's: [0 (the sub-flag), bin "P", ts, 2, "hi"].
        let py2p = got(&[0x95, 0x00, 0xc4, 1, b'P', 0x09, 0x02, 0xa2, b'h', b'i']);
        let other = got(&[0x95, 0x00, 0xc4, 1, b'P', 0x09, 0x02, 0xa2, b'h', b'o']);
        assert_eq!(resend_form(&same, &last), Some("as it was"));
        assert_eq!(resend_form(&py2p, &last), Some("py2p"));
        assert_eq!(resend_form(&other, &last), None);
        assert_eq!(resend_form(&last, &py2p), None);
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(
            codes_text(&[0x13, 0x20, 0x99]),
            "[0x13 zlib, 0x20 snappy, 0x99]"
        );
        assert_eq!(how(None), "raw");
    }
}

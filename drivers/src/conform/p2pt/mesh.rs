//! §25.10 Mesh: broadcasts relayed by `(id, timestamp)` to every link but the originator's.
//!
//! py2p (`mesh.py`): `handle_waterfall` drops a `broadcast` (main flag) whose timestamp is
//! more than 60 s old or whose `(id, timestamp)` it has seen; else `waterfall` relays the
//! frame, as received (`feed_string` keeps the msgpack bytes, so the id stays), to every link
//! whose id is not the message's sender, then delivers it.
//!
//! Absence is shown by a barrier, not by waiting: after the frame that must not come, the kit
//! sends a fresh broadcast the other way round; it arrives after anything the peer did with
//! the first frame (py2p handles one frame at a time).

use std::time::Instant;

use super::conn::{span, Got, Next};
use super::wire;
use super::{Ctx, Link, Notes};
use crate::conform::Step;

/// Two links, A and B.
fn pair(ctx: &Ctx) -> Result<(Link, Link), String> {
    Ok((ctx.link()?, ctx.link()?))
}

/// A fresh broadcast from `sender` on its own link, at the kit's time: the message's msgpack
/// bytes, its nonce element's bytes and the wire frame under the link's method.
struct Sent {
    msgpack: Vec<u8>,
    nonce_elem: Vec<u8>,
}

impl Sent {
    fn new(m: &weft_engine::protocol::p2pt::Message) -> Sent {
        let msgpack = m.to_msgpack();
        let nonce_elem = wire::split_array(&msgpack)
            .and_then(|e| e.last().map(|n| n.to_vec()))
            .unwrap_or_default();
        Sent {
            msgpack,
            nonce_elem,
        }
    }

    /// Whether `g` carries this broadcast (its nonce), whatever its bytes.
    fn carried_by(&self, g: &Got) -> bool {
        g.elements()
            .is_some_and(|e| e.contains(&self.nonce_elem.as_slice()))
    }
}

/// Sends a fresh broadcast from `link`'s id on `link`.
fn send_fresh(link: &mut Link, text: &str) -> Sent {
    let m = wire::broadcast(&link.id, wire::now(), text, &wire::nonce());
    link.conn.send(&m);
    Sent::new(&m)
}

/// Reads `to` until `sent` arrives with its bytes unchanged: `Err` if it does not, or comes
/// with other bytes.
fn arrives(ctx: &Ctx, to: &mut Link, sent: &Sent, what: &str) -> Result<(), String> {
    let g = to.conn.expect(ctx.wait, what, |g| sent.carried_by(g))?;
    if g.msgpack != sent.msgpack {
        return Err(format!(
            "{what} came with other msgpack bytes, so another id (a relay forwards the bytes it \
             received)"
        ));
    }
    Ok(())
}

/// A barrier from `from` to `to`: the frames `to` got before it.
fn barrier(ctx: &Ctx, from: &mut Link, to: &mut Link) -> Result<Vec<Got>, String> {
    let sent = send_fresh(from, "weft conform: barrier");
    let deadline = Instant::now() + ctx.wait;
    let mut before = Vec::new();
    loop {
        match to.conn.next(deadline) {
            Next::Frame(g) if g.msgpack == sent.msgpack => return Ok(before),
            Next::Frame(g) => before.push(g),
            Next::Closed => return Err(to.conn.closed_reason("the kit's next broadcast")),
            Next::Timeout => {
                return Err(format!(
                    "the kit's next broadcast between its two links did not arrive within {}",
                    span(ctx.wait)
                ))
            }
        }
    }
}

/// Fails with `why` if `x` reaches `to` before a barrier from `from` does.
fn never(ctx: &Ctx, from: &mut Link, to: &mut Link, x: &Sent, why: &str) -> Step {
    let seen = barrier(ctx, from, to)?;
    if seen.iter().any(|g| x.carried_by(g)) {
        return Err(why.to_owned().into());
    }
    Ok(())
}

/// A's fresh broadcast reaches B with its bytes, once (a barrier from A after it), and never
/// comes back to A (a barrier from B).
pub fn relayed_once(ctx: &Ctx, _: &mut Notes) -> Step {
    let (mut a, mut b) = pair(ctx)?;
    let x = send_fresh(&mut a, "weft conform: relay");
    arrives(
        ctx,
        &mut b,
        &x,
        "the broadcast from the kit's link A at link B",
    )?;
    never(
        ctx,
        &mut a,
        &mut b,
        &x,
        "it relayed the broadcast to link B twice",
    )?;
    never(
        ctx,
        &mut b,
        &mut a,
        &x,
        "it sent the broadcast back to link A, whose id is its sender",
    )
}

/// The same frame sent again on A is not relayed: its `(id, timestamp)` was seen.
pub fn duplicate_dropped(ctx: &Ctx, _: &mut Notes) -> Step {
    let (mut a, mut b) = pair(ctx)?;
    let m = wire::broadcast(&a.id, wire::now(), "weft conform: twice", &wire::nonce());
    let frame = wire::frame(&m, a.conn.send_with);
    let x = Sent::new(&m);
    a.conn.write_raw(&frame);
    arrives(
        ctx,
        &mut b,
        &x,
        "the broadcast from the kit's link A at link B",
    )?;
    a.conn.write_raw(&frame);
    never(
        ctx,
        &mut a,
        &mut b,
        &x,
        "it relayed the same frame (same id and timestamp) a second time",
    )
}

/// How old the kit's stale broadcast is: twice py2p's 60 s.
const STALE_SECS: u64 = 120;

/// A broadcast stamped 120 s ago is not relayed.
pub fn old_dropped(ctx: &Ctx, _: &mut Notes) -> Step {
    let (mut a, mut b) = pair(ctx)?;
    let m = wire::broadcast(
        &a.id,
        wire::now().saturating_sub(STALE_SECS),
        "weft conform: stale",
        &wire::nonce(),
    );
    let x = Sent::new(&m);
    a.conn.send(&m);
    let why =
        format!("it relayed a broadcast stamped {STALE_SECS} s ago (py2p drops those over 60 s)");
    never(ctx, &mut a, &mut b, &x, &why)
}

/// A broadcast sent on A whose sender is a third id, linked nowhere, is relayed to both A
/// and B: to every link but the sender's.
pub fn third_sender_to_all(ctx: &Ctx, _: &mut Notes) -> Step {
    let (mut a, mut b) = pair(ctx)?;
    let third = wire::fresh_id(a.conn.local, &ctx.protocol_id);
    let m = wire::broadcast(&third, wire::now(), "weft conform: third", &wire::nonce());
    let x = Sent::new(&m);
    a.conn.send(&m);
    arrives(
        ctx,
        &mut b,
        &x,
        "a broadcast from a third id, sent on link A, at link B",
    )?;
    arrives(
        ctx,
        &mut a,
        &x,
        "a broadcast from a third id back at link A, which it came on",
    )?;
    Ok(())
}

//! §25.2 Frame: a checksum that does not match closes the link (py2p's `feed_string`
//! asserts it; the `AssertionError` reaches `process_data`, which disconnects the link and
//! sends `whisper/request` to the others), while the peer's other links carry on; a frame cut
//! short and then silence is only noted (py2p waits: a link with a whole length prefix and a
//! missing body is dropped by `kill_old_nodes` after 60 s, one cut inside the prefix never).

use std::time::{Duration, Instant};

use weft_engine::protocol::p2pt::P2PT_LENGTH_BYTES;

use super::conn::{span, Conn, Next};
use super::wire;
use super::{Ctx, Notes};
use crate::conform::Step;

/// Links A, B and C; A sends a broadcast whose id is off by one bit: A must be closed, the
/// broadcast not relayed, and a broadcast from B must still reach C.
pub fn bad_checksum_closes(ctx: &Ctx, _: &mut Notes) -> Step {
    let mut a = ctx.link()?;
    let mut b = ctx.link()?;
    let mut c = ctx.link()?;
    let bad_nonce = wire::nonce();
    let bad = wire::broadcast(&a.id, wire::now(), "weft conform: bad checksum", &bad_nonce);
    let bad_bytes = bad.to_msgpack();
    let mut frame = wire::frame_bytes(&bad_bytes, None);
    // The first byte of the raw body is the first byte of the id.
    if let Some(byte) = frame.get_mut(P2PT_LENGTH_BYTES) {
        *byte ^= 0x01;
    }
    a.conn.write_raw(&frame);
    a.conn
        .expect_closed(ctx.wait, "a frame whose checksum does not match")?;
    let good = wire::broadcast(&b.id, wire::now(), "weft conform: after", &wire::nonce());
    let good_bytes = good.to_msgpack();
    b.conn.send(&good);
    let deadline = Instant::now() + ctx.wait;
    loop {
        match c.conn.next(deadline) {
            Next::Frame(g) if g.msgpack == good_bytes => return Ok(()),
            Next::Frame(g) if g.msgpack == bad_bytes => {
                return Err("it relayed the frame whose checksum did not match"
                    .to_owned()
                    .into());
            }
            Next::Frame(_) => {}
            Next::Closed => {
                return Err(c
                    .conn
                    .closed_reason("a broadcast from another link, after it closed the bad one")
                    .into());
            }
            Next::Timeout => {
                return Err(format!(
                    "after closing the link with the bad checksum it relayed nothing between \
                     two other links within {}",
                    span(ctx.wait)
                )
                .into());
            }
        }
    }
}

/// What happened to a link within the wait: `still open after 2 s`, `closed after 130 ms`.
fn fate(conn: &mut Conn, started: Instant, closed_at: &mut Option<Duration>) {
    if closed_at.is_none() {
        if let Next::Closed = conn.next(Instant::now() + Duration::from_millis(10)) {
            *closed_at = Some(started.elapsed());
        }
    }
}

/// Two links: on one the kit sends 2 of the 4 length bytes of a frame, on the other a whole
/// prefix and part of the body; then it waits. Noted, never failed: py2p keeps both open.
pub fn cut_short_noted(ctx: &Ctx, notes: &mut Notes) -> Step {
    let mut in_prefix = ctx.link()?;
    let mut in_body = ctx.link()?;
    let m = wire::broadcast(
        &in_body.id,
        wire::now(),
        "weft conform: cut",
        &wire::nonce(),
    );
    let whole = wire::frame(&m, None);
    in_prefix.conn.write_raw(&whole[..2]);
    in_body.conn.write_raw(&whole[..P2PT_LENGTH_BYTES + 10]);
    let started = Instant::now();
    let (mut prefix_closed, mut body_closed) = (None, None);
    while started.elapsed() < ctx.wait && (prefix_closed.is_none() || body_closed.is_none()) {
        fate(&mut in_prefix.conn, started, &mut prefix_closed);
        fate(&mut in_body.conn, started, &mut body_closed);
    }
    let say = |closed: Option<Duration>| match closed {
        Some(d) => format!("closed after {} ms", d.as_millis()),
        None => format!("still open after {}", span(ctx.wait)),
    };
    notes.push(format!(
        "cut inside its length prefix: {}; cut inside its body: {}",
        say(prefix_closed),
        say(body_closed)
    ));
    Ok(())
}

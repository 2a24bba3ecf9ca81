//! §25.11 Sync table (`--subnet sync1` or `sync0`): `broadcast/store [key, value]` writes
//! under the message's sender and timestamp, and every new link gets the table after
//! `whisper/peers` as `whisper/store [key, value, owner, timestamp]`.
//!
//! py2p (`sync.py`): `__handle_store` takes `(msg.sender, msg.time)` as the write's owner
//! and time; `__check_lease` accepts a write when the key is free, the owner is the same, the
//! last write is over an hour old, the times are equal and the old owner's id is greater, or
//! (leases off) the new time is later; a nil value deletes; `_send_peers` follows `peers`
//! with one `whisper/store` per key.

use std::time::{Duration, Instant};

use weft_engine::protocol::p2pt::{MainFlag, Store, SubFlag};

use super::conn::{span, Got, Next};
use super::{hex, wire, Ctx, Link, Notes, Subnet};
use crate::conform::{Step, Stop};

/// How long the kit reads on after the table's last expected key, for one that must not be
/// there.
const TAIL: Duration = Duration::from_millis(300);

fn needs_sync(ctx: &Ctx) -> Step {
    if ctx.subnet.is_sync() {
        Ok(())
    } else {
        Err(Stop::Skip(
            "the kit assumed a mesh peer: give --subnet sync1 or sync0 for a sync table".into(),
        ))
    }
}

/// A key and a value no other run uses.
fn fresh(what: &str) -> (Vec<u8>, String) {
    let n = hex(&wire::nonce());
    (
        format!("weft-conform-{what}-{n}").into_bytes(),
        format!("{what} {n}"),
    )
}

/// Waits until the peer has handled everything `link` sent: a request's answer.
fn settled(ctx: &Ctx, link: &mut Link) -> Result<(), String> {
    link.conn.send(&wire::request_peers(&link.id, true));
    link.conn.expect(
        ctx.wait,
        "whisper/peers answering a request after the write",
        |g| g.is(MainFlag::WHISPER, SubFlag::PEERS),
    )?;
    Ok(())
}

/// The `whisper/store` handing `key` to a new link, if `g` is one.
fn store_of(g: &Got, key: &[u8]) -> Option<Store> {
    let m = g.message.as_ref()?;
    if !g.is(MainFlag::WHISPER, SubFlag::STORE) {
        return None;
    }
    Store::parse(m).ok().filter(|s| s.key == key)
}

/// A new link, and the `whisper/store` for `key` in the table it is handed (after `peers`).
fn handed(ctx: &Ctx, key: &[u8]) -> Result<(Link, Store), String> {
    let mut c = ctx.link()?;
    let early = c
        .conn
        .log
        .iter()
        .any(|g| g.is(MainFlag::WHISPER, SubFlag::STORE));
    if early {
        return Err("a new link got whisper/store before whisper/peers".to_owned());
    }
    let g = c.conn.expect(
        ctx.wait,
        "whisper/store for the kit's key among those handed to a new link",
        |g| store_of(g, key).is_some(),
    )?;
    let store = store_of(&g, key).ok_or("the whisper/store vanished")?;
    Ok((c, store))
}

/// Checks a handed-over store: `value` under `owner` at `timestamp`.
fn holds(store: &Store, value: &str, owner: &Link, timestamp: u64, who: &str) -> Step {
    let Some((by, at)) = &store.meta else {
        return Err(
            "the key was handed over without owner and timestamp (py2p sends \
                    whisper/store [key, value, owner, timestamp])"
                .to_owned()
                .into(),
        );
    };
    if store.value.as_str() != Some(value) {
        return Err(format!(
            "the key was handed over with value {}, not {who}'s {value:?}",
            store.value
        )
        .into());
    }
    if *by != owner.id {
        return Err(format!(
            "the key was handed over with owner {}, not {who}'s id",
            String::from_utf8_lossy(by)
        )
        .into());
    }
    if *at != timestamp {
        return Err(format!(
            "the key was handed over with timestamp {at}, not the write's {timestamp}"
        )
        .into());
    }
    Ok(())
}

/// A writes a key; a new link C is handed it after `peers`, with A's value, id and time.
pub fn store_handed_over(ctx: &Ctx, _: &mut Notes) -> Step {
    needs_sync(ctx)?;
    let mut a = ctx.link()?;
    let (key, value) = fresh("kept");
    let at = wire::now();
    a.conn.send(&wire::store(&a.id, at, &key, Some(&value)));
    settled(ctx, &mut a)?;
    let (_, store) = handed(ctx, &key)?;
    holds(&store, &value, &a, at, "A")
}

/// A writes a key, then B (another id, one second later): with leases (sync1) B's write is
/// refused and C is handed A's; without (sync0) the later write wins and C is handed B's.
pub fn other_writer(ctx: &Ctx, _: &mut Notes) -> Step {
    needs_sync(ctx)?;
    let mut a = ctx.link()?;
    let mut b = ctx.link()?;
    let (key, value_a) = fresh("leased");
    let value_b = format!("{value_a} overwritten");
    let now = wire::now();
    let (at_a, at_b) = (now.saturating_sub(2), now.saturating_sub(1));
    a.conn.send(&wire::store(&a.id, at_a, &key, Some(&value_a)));
    settled(ctx, &mut a)?;
    b.conn.send(&wire::store(&b.id, at_b, &key, Some(&value_b)));
    settled(ctx, &mut b)?;
    let (_, store) = handed(ctx, &key)?;
    match ctx.subnet {
        Subnet::Sync => holds(&store, &value_b, &b, at_b, "B (the later write, no leases)"),
        _ => holds(&store, &value_a, &a, at_a, "A (the lease holder)").map_err(|e| match e {
            Stop::Fail(why) => Stop::Fail(format!(
                "{why}: another id's write within the hour's lease must be refused"
            )),
            skip => skip,
        }),
    }
}

/// A writes a key and then deletes it (nil); a marker key written after is handed to a new
/// link, the deleted one is not.
pub fn delete_removes(ctx: &Ctx, _: &mut Notes) -> Step {
    needs_sync(ctx)?;
    let mut a = ctx.link()?;
    let (key, value) = fresh("deleted");
    let (marker, marker_value) = fresh("marker");
    let now = wire::now();
    a.conn.send(&wire::store(
        &a.id,
        now.saturating_sub(1),
        &key,
        Some(&value),
    ));
    a.conn.send(&wire::store(&a.id, now, &key, None));
    a.conn
        .send(&wire::store(&a.id, now, &marker, Some(&marker_value)));
    settled(ctx, &mut a)?;
    let (mut c, _) = handed(ctx, &marker).map_err(|e| format!("{e} (the marker key)"))?;
    if c.conn.log.iter().any(|g| store_of(g, &key).is_some()) {
        return Err("a new link was handed the key its owner deleted"
            .to_owned()
            .into());
    }
    let deadline = Instant::now() + TAIL.min(ctx.wait);
    loop {
        match c.conn.next(deadline) {
            Next::Frame(g) if store_of(&g, &key).is_some() => {
                return Err("a new link was handed the key its owner deleted"
                    .to_owned()
                    .into());
            }
            Next::Frame(_) => {}
            Next::Closed => {
                return Err(c
                    .conn
                    .closed_reason(&format!("the rest of the table ({})", span(TAIL)))
                    .into())
            }
            Next::Timeout => return Ok(()),
        }
    }
}

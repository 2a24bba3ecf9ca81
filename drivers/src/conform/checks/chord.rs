//! Chord (SPEC.md §20), when the peer runs it: on a dedicated Chord connection (§8.9) the
//! kit asks for its state and a lookup, stores a signed entry and fetches it back, and sends
//! entries the rules refuse (a bad signature, a wrong position, an older `seq`).

use std::time::Instant;

use rand_core::{OsRng, RngCore};
use weft_engine::protocol::{
    key_position, ChordFetch, ChordFind, ChordMessage, ChordState, ChordStore, ChordValue, Code,
    Family, Message, Signature, StoreOp, StoreOutcome,
};

use super::super::conn::{with_msg, Got};
use super::super::hello::Me;
use super::super::{Ctx, Link, Step, Stop};

/// A dedicated Chord connection, or a skip when the peer does not run Chord.
fn chord_link(ctx: &Ctx) -> Result<Link, Stop> {
    if !ctx.runs(Family::Chord) {
        return Err(Stop::Skip("the peer does not run Chord".into()));
    }
    let mut opts = ctx.opts();
    opts.families |= Family::Chord.bit();
    opts.dedicated = Some(Family::Chord.high_byte());
    let mut link = ctx.link_as(Me::fresh(), &opts)?;
    link.conn.expect_alive(ctx.wait)?;
    Ok(link)
}

/// Sends `request` and reads the Chord answer of code `code` carrying `id`.
fn ask(
    ctx: &Ctx,
    link: &mut Link,
    request: ChordMessage,
    code: Code,
    id: u64,
) -> Result<ChordMessage, String> {
    let name = request.code().name();
    link.conn.send_msg(&Message::Chord(request), false);
    let deadline = Instant::now() + ctx.wait;
    loop {
        match link.conn.next(deadline) {
            Got::Frame(f) if f.code() == code => {
                let m = with_msg(&f, |m| match m {
                    Message::Chord(c) => Some(c),
                    _ => None,
                })
                .flatten()
                .ok_or_else(|| format!("its {} does not decode", code.name()))?;
                if request_of(&m) == Some(id) {
                    return Ok(m);
                }
                let got = request_of(&m).map_or("none".to_string(), |r| r.to_string());
                return Err(format!(
                    "its {} answers request {got}, not {id} (§20.2: the answer echoes it)",
                    code.name()
                ));
            }
            Got::Frame(f) => {
                if let Some(r) = super::super::conn::bye_reason(&f) {
                    return Err(format!("{name} was answered by BYE({r:?})"));
                }
            }
            Got::Closed => return Err(format!("it closed the connection after {name}")),
            Got::Timeout => {
                return Err(format!(
                    "{name} got no {} within {}",
                    code.name(),
                    super::super::conn::span(ctx.wait)
                ))
            }
        }
    }
}

/// The `request` field of an answer.
fn request_of(m: &ChordMessage) -> Option<u64> {
    match m {
        ChordMessage::Found(x) => Some(x.request),
        ChordMessage::State(x) => Some(x.request),
        ChordMessage::Stored(x) => Some(x.request),
        ChordMessage::Values(x) => Some(x.request),
        _ => None,
    }
}

/// A fresh request id.
fn request() -> u64 {
    OsRng.next_u64() >> 1 | 1
}

/// §20.2: CHORD_GET_STATE is answered by CHORD_STATE (successors never empty); a CHORD_FIND
/// for its first successor's position is answered `done` with that successor first.
pub fn state_and_lookup(ctx: &Ctx) -> Step {
    let mut link = chord_link(ctx)?;
    let id = request();
    let state = ask(
        ctx,
        &mut link,
        ChordMessage::GetState(id),
        Code::CHORD_STATE,
        id,
    )?;
    let ChordMessage::State(ChordState { successors, .. }) = state else {
        return Err("CHORD_STATE did not decode as a state".to_string().into());
    };
    let Some(first) = successors.first() else {
        return Err("its CHORD_STATE lists no successor (§20.3: never empty)"
            .to_string()
            .into());
    };
    let id = request();
    let find = ChordMessage::Find(ChordFind {
        request: id,
        target: first.ring_id(),
    });
    match ask(ctx, &mut link, find, Code::CHORD_FOUND, id)? {
        ChordMessage::Found(f) if f.done && f.peers.first() == Some(first) => Ok(()),
        ChordMessage::Found(f) if f.done => {
            Err(format!(
            "CHORD_FIND of its successor's position answered done with {} first, not its successor",
            f.peers.first().map_or("nobody".into(), |p| format!("{:016x}", p.ring_id()))
        )
            .into())
        }
        _ => Err(
            "CHORD_FIND of its successor's position was not answered done (§20.2)"
                .to_string()
                .into(),
        ),
    }
}

/// An entry of `me` for `key`: a put of `value` at `seq`, signed unless `forge`.
fn entry(me: &Me, key: &[u8], value: &[u8], seq: u64, forge: bool) -> ChordValue {
    let op = StoreOp::Put(value.to_vec());
    let signature = if forge {
        Signature([9; 64])
    } else {
        me.identity
            .sign(&ChordValue::signed_bytes(key, &me.public_key(), seq, &op))
    };
    ChordValue {
        writer: me.public_key(),
        seq,
        op,
        lifetime_ms: Some(60_000),
        signature,
    }
}

/// Stores `value` at `position` and returns the outcome.
fn store(
    ctx: &Ctx,
    link: &mut Link,
    position: u64,
    key: &[u8],
    value: ChordValue,
) -> Result<StoreOutcome, String> {
    let id = request();
    let m = ChordMessage::Store(ChordStore {
        request: id,
        position,
        key: key.to_vec(),
        value,
    });
    match ask(ctx, link, m, Code::CHORD_STORED, id)? {
        ChordMessage::Stored(s) => Ok(s.outcome),
        _ => Err("CHORD_STORED did not decode".into()),
    }
}

/// §20.1, §20.2: a signed put is `Stored` and CHORD_FETCH returns it; a put with a bad
/// signature, one at a position not the key's, and one with an older `seq` are `Invalid`,
/// `Invalid` and `Stale`, and the connection stays up.
pub fn store_and_fetch(ctx: &Ctx) -> Step {
    let mut link = chord_link(ctx)?;
    let me = link.me.clone();
    let key = format!("weft-conform/{:016x}", OsRng.next_u64()).into_bytes();
    let position = key_position(&key, 0);
    let good = entry(&me, &key, b"conform", 10, false);
    let expect = |what: &str, got: StoreOutcome, want: StoreOutcome| -> Step {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: CHORD_STORED {got:?}, not {want:?} (§20.1)").into())
        }
    };
    let got = store(ctx, &mut link, position, &key, good.clone())?;
    expect(
        "a signed put at the key's position",
        got,
        StoreOutcome::Stored,
    )?;
    let id = request();
    let fetch = ChordMessage::Fetch(ChordFetch {
        request: id,
        position,
        key: key.clone(),
    });
    match ask(ctx, &mut link, fetch, Code::CHORD_VALUES, id)? {
        ChordMessage::Values(v)
            if v.values.iter().any(|x| {
                x.writer == good.writer
                    && x.op == good.op
                    && x.seq == good.seq
                    && x.signature == good.signature
            }) => {}
        _ => {
            return Err("CHORD_FETCH after a Stored put does not return the entry"
                .to_string()
                .into())
        }
    }
    let got = store(
        ctx,
        &mut link,
        position,
        &key,
        entry(&me, &key, b"forged", 11, true),
    )?;
    expect("a put with a bad signature", got, StoreOutcome::Invalid)?;
    let wrong = position ^ 1;
    let other_positions: Vec<u64> = (0..5).map(|i| key_position(&key, i)).collect();
    if !other_positions.contains(&wrong) {
        let got = store(
            ctx,
            &mut link,
            wrong,
            &key,
            entry(&me, &key, b"moved", 12, false),
        )?;
        expect(
            "a put at a position not the key's",
            got,
            StoreOutcome::Invalid,
        )?;
    }
    let got = store(
        ctx,
        &mut link,
        position,
        &key,
        entry(&me, &key, b"conform", 9, false),
    )?;
    expect(
        "the same value again with an older seq",
        got,
        StoreOutcome::Stale,
    )?;
    link.conn.expect_alive(ctx.wait)?;
    Ok(())
}

//! The sync table (SPEC.md §19): a signed write is flooded once to the other links, a forged
//! one closes its sender, and a new link catches up through TABLE_DIGEST, TABLE_WANT and
//! TABLE_ENTRIES.

use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use weft_engine::protocol::{
    ByeReason, Code, Family, Hlc, Message, Signature, TableWant, TableWrite,
};

use super::super::conn::with_msg;
use super::super::hello::Me;
use super::super::{Ctx, Link, Step, Stop};

/// A write of a fresh key by `me`, stamped now, signed for the peer's network.
fn write(ctx: &Ctx, me: &Me, tag: &str) -> TableWrite {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut w = TableWrite {
        hlc: Hlc { ms, logical: 0 },
        node: me.node_id(),
        incarnation: me.incarnation,
        key: format!("weft-conform/{tag}/{:016x}", OsRng.next_u64()).into_bytes(),
        value: Some(b"conform".to_vec()),
        lease_until_ms: None,
        public_key: me.public_key(),
        signature: Signature::default(),
    };
    w.signature = me.identity.sign(&w.signed_bytes(&ctx.network));
    w
}

/// The table must run for these checks.
fn needs_table(ctx: &Ctx) -> Step {
    if ctx.runs(Family::Table) {
        Ok(())
    } else {
        Err(Stop::Skip("the peer does not run the table".into()))
    }
}

/// Links `n` scripted peers, each shown established by a PONG.
fn links(ctx: &Ctx, n: usize) -> Result<Vec<Link>, Stop> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut link = ctx.link()?;
        link.conn.expect_alive(ctx.wait)?;
        out.push(link);
    }
    Ok(out)
}

/// The TABLE_WRITEs in `link`'s log that carry `w`.
fn copies(link: &Link, w: &TableWrite) -> usize {
    link.conn
        .logged(Code::TABLE_WRITE)
        .iter()
        .filter(|f| with_msg(f, |m| matches!(m, Message::TableWrite(x) if x == *w)) == Some(true))
        .count()
}

/// §19.6: a signed write is relayed once to the other link, unchanged, not back, and not
/// again when it comes again.
pub fn write_flooded(ctx: &Ctx) -> Step {
    needs_table(ctx)?;
    let mut ls = links(ctx, 2)?;
    let w = write(ctx, &ls[0].me, "flood");
    ls[0].conn.send_msg(&Message::TableWrite(w.clone()), false);
    for l in ls.iter_mut() {
        l.conn.expect_alive(ctx.wait)?;
    }
    ls[0].conn.send_msg(&Message::TableWrite(w.clone()), false);
    ls[1].conn.send_msg(&Message::TableWrite(w.clone()), false);
    for l in ls.iter_mut() {
        l.conn.expect_alive(ctx.wait)?;
        l.conn.drain(std::time::Duration::from_millis(300));
    }
    match copies(&ls[1], &w) {
        1 => {}
        0 => {
            return Err("a signed write was not relayed to the other link"
                .to_string()
                .into())
        }
        n => {
            return Err(format!(
                "a write sent three times reached the other link {n} times (once is due)"
            )
            .into())
        }
    }
    if copies(&ls[0], &w) != 0 {
        return Err("a write was relayed back to its writer".to_string().into());
    }
    Ok(())
}

/// §19.8: a write whose signature does not verify closes its sender with
/// BYE(ProtocolViolation).
pub fn forged_write(ctx: &Ctx) -> Step {
    needs_table(ctx)?;
    let mut link = ctx.link()?;
    let mut w = write(ctx, &link.me, "forged");
    w.value = Some(b"changed after signing".to_vec());
    link.conn.send_msg(&Message::TableWrite(w), false);
    link.conn
        .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
        .map_err(|e| format!("a write whose signature does not verify: {e}"))?;
    Ok(())
}

/// §19.7: a new link gets a TABLE_DIGEST; a TABLE_WANT of its buckets, holding nothing, is
/// answered by TABLE_ENTRIES that carry a write the peer holds, unchanged.
pub fn anti_entropy(ctx: &Ctx) -> Step {
    needs_table(ctx)?;
    let mut writer = ctx.link()?;
    let w = write(ctx, &writer.me, "entries");
    writer.conn.send_msg(&Message::TableWrite(w.clone()), false);
    writer.conn.expect_alive(ctx.wait)?;
    let mut c = ctx.link()?;
    let digest = c
        .conn
        .next_of(Code::TABLE_DIGEST, ctx.wait)
        .map_err(|e| format!("a new link while it holds a write: {e} (§19.7: a digest is due)"))?;
    let want = with_msg(&digest, |m| match m {
        Message::TableDigest(d) => Some(TableWant {
            bits: d.bits,
            buckets: d.buckets.iter().map(|b| b.bucket).collect(),
            salt: OsRng.next_u64(),
            held: Vec::new(),
        }),
        _ => None,
    })
    .flatten()
    .ok_or_else(|| "its TABLE_DIGEST does not decode".to_string())?;
    let bucket = TableWrite::bucket_of(TableWrite::key_hash(&w.key), want.bits);
    if !want.buckets.contains(&bucket) {
        return Err(
            "its TABLE_DIGEST does not list the bucket of a key it holds"
                .to_string()
                .into(),
        );
    }
    let bits = want.bits;
    c.conn.send_msg(&Message::TableWant(want), false);
    let deadline = std::time::Instant::now() + ctx.wait;
    let carries = |f: &weft_engine::protocol::Frame| {
        with_msg(f, |m| match m {
            Message::TableEntries(e) => e.writes.contains(&w),
            _ => false,
        }) == Some(true)
    };
    loop {
        let f = c
            .conn
            .next_of(
                Code::TABLE_ENTRIES,
                deadline.saturating_duration_since(std::time::Instant::now()),
            )
            .map_err(|e| format!("a TABLE_WANT of its buckets: {e}"))?;
        if carries(&f) {
            break;
        }
    }
    // The same bucket again, holding the write's fingerprint: it must not come back.
    let salt = OsRng.next_u64();
    let again = TableWant {
        bits,
        buckets: vec![bucket],
        salt,
        held: vec![w.fingerprint(salt)],
    };
    let before = c.conn.log.len();
    c.conn.send_msg(&Message::TableWant(again), false);
    c.conn.expect_alive(ctx.wait)?;
    c.conn.drain(std::time::Duration::from_millis(300));
    if c.conn.log[before..].iter().any(carries) {
        return Err(
            "a TABLE_WANT holding a write's fingerprint got the write back (§19.7)"
                .to_string()
                .into(),
        );
    }
    Ok(())
}

//! Discovery cascades (SPEC.md §10) and mesh broadcast (§11): relays, deduplication, forged
//! broadcasts, repair; and compression on relay (§3, §11.4). Each check links two or three
//! scripted peers to the peer under test.

use std::time::Duration;

use rand_core::{OsRng, RngCore};
use weft_engine::protocol::{
    Broadcast, ByeReason, CascadeId, Code, DigestEntry, Family, Frame, ICanSee, MeshDigest,
    MeshWant, Message, NodeId, OriginProof, SeqRange, Signature, WantRange, CAP_LZ4,
};

use super::super::conn::with_msg;
use super::super::hello::{LinkOpts, Me};
use super::super::{Ctx, Link, Step, Stop};
use super::{broadcast_frame, broadcast_payload};

/// How long the kit listens for a copy that must not come, after a PONG showed the peer took
/// everything sent before it.
const QUIET: Duration = Duration::from_millis(300);

/// Links `n` scripted peers, each shown established by a PONG.
fn links(ctx: &Ctx, opts: &[LinkOpts]) -> Result<Vec<Link>, Stop> {
    let mut out = Vec::new();
    for o in opts {
        let mut link = ctx.link_as(Me::fresh(), o)?;
        link.conn.expect_alive(ctx.wait)?;
        out.push(link);
    }
    Ok(out)
}

/// Waits until every link answered a PING (the peer took what came before), then QUIET more.
fn settle(ctx: &Ctx, links: &mut [Link]) -> Result<(), Stop> {
    for link in links.iter_mut() {
        link.conn.expect_alive(ctx.wait)?;
    }
    for link in links.iter_mut() {
        link.conn.drain(QUIET);
    }
    Ok(())
}

/// The mesh must run for these checks.
fn needs_mesh(ctx: &Ctx) -> Step {
    if ctx.runs(Family::Mesh) {
        Ok(())
    } else {
        Err(Stop::Skip("the peer does not run mesh".into()))
    }
}

/// The BROADCAST frames in `link`'s log whose origin is `origin`: the node under test may
/// have other peers, whose broadcasts the kit ignores.
fn broadcasts_from(link: &Link, origin: NodeId) -> Vec<Frame> {
    link.conn
        .logged(Code::BROADCAST)
        .into_iter()
        .filter(|f| {
            f.payload().ok().and_then(|p| {
                Broadcast::decode(Code::BROADCAST, &p)
                    .ok()
                    .map(|b| b.origin)
            }) == Some(origin)
        })
        .collect()
}

/// The ICANSEE frames in `link`'s log from the cascade `id`: their `hops_left`.
fn cascade_hops(link: &Link, id: &CascadeId) -> Vec<u8> {
    link.conn
        .logged(Code::ICANSEE)
        .iter()
        .filter_map(|f| {
            with_msg(f, |m| match m {
                Message::ICanSee(c) if c.cascade == *id => Some(c.hops_left),
                _ => None,
            })
            .flatten()
        })
        .collect()
}

/// §10.2: an ICANSEE with hops left is relayed once to the other link with one hop less,
/// not back, not again when it comes again; one with no hops left is not relayed.
pub fn cascade_relay(ctx: &Ctx) -> Step {
    let mut ls = links(ctx, &[ctx.opts(), ctx.opts()])?;
    let mut origin = [0u8; 32];
    OsRng.fill_bytes(&mut origin);
    let cascade = |seq| CascadeId {
        origin: NodeId(origin),
        seq,
    };
    let icansee = |seq, hops_left| {
        Message::ICanSee(ICanSee {
            cascade: cascade(seq),
            hops_left,
            origin_addr: None,
            peers: Vec::new(),
        })
    };
    ls[0].conn.send_msg(&icansee(1, 2), false);
    ls[0].conn.send_msg(&icansee(1, 2), false);
    ls[0].conn.send_msg(&icansee(2, 0), false);
    settle(ctx, &mut ls)?;
    let (to_b, back) = (
        cascade_hops(&ls[1], &cascade(1)),
        cascade_hops(&ls[0], &cascade(1)),
    );
    if to_b != [1] {
        return Err(format!(
            "an ICANSEE with 2 hops left, sent twice, reached the other link {} times with hops {to_b:?} (once, with 1, is due; the kit assumes discovery on: a node with it off relays none, §10)",
            to_b.len()
        )
        .into());
    }
    if !back.is_empty() {
        return Err("the ICANSEE was relayed back to its sender"
            .to_string()
            .into());
    }
    if !cascade_hops(&ls[1], &cascade(2)).is_empty() {
        return Err("an ICANSEE with 0 hops left was relayed".to_string().into());
    }
    Ok(())
}

/// §11.2–§11.4, §8.9: a broadcast is relayed to the other link once, its frame unchanged;
/// not back to its sender, not to a link that does not run mesh, not again when it comes
/// again from either side.
pub fn relay_once(ctx: &Ctx) -> Step {
    needs_mesh(ctx)?;
    let mut session_only = ctx.opts();
    session_only.families = Family::Session.bit();
    let mut ls = links(ctx, &[ctx.opts(), ctx.opts(), session_only])?;
    let payload = format!("weft conform relay {}", OsRng.next_u64()).into_bytes();
    let frame = broadcast_frame(ctx, &ls[0].me, 1, &payload, false);
    ls[0].conn.send(&frame);
    settle(ctx, &mut ls)?;
    // The same broadcast again from its sender, and back from the link that got it.
    ls[0].conn.send(&frame);
    ls[1].conn.send(&frame);
    settle(ctx, &mut ls)?;
    let origin = ls[0].me.node_id();
    let got = broadcasts_from(&ls[1], origin);
    match got.as_slice() {
        [one] if one.bytes()[..] == frame[..] => {}
        [one] => {
            return Err(format!(
            "the relayed frame differs from the one received ({} bytes, not {}; §11.4: unchanged)",
            one.bytes().len(),
            frame.len()
        )
            .into())
        }
        [] => {
            return Err(format!(
                "a broadcast was not relayed to the other link within {}",
                super::super::conn::span(ctx.wait + QUIET)
            )
            .into())
        }
        many => {
            return Err(format!(
                "a broadcast sent three times reached the other link {} times (once is due)",
                many.len()
            )
            .into())
        }
    }
    if !broadcasts_from(&ls[0], origin).is_empty() {
        return Err("a broadcast was sent back to its sender".to_string().into());
    }
    let to_session_only = ls[2]
        .conn
        .log
        .iter()
        .find(|f| f.code().family() != Some(Family::Session));
    if let Some(f) = to_session_only {
        return Err(format!(
            "it sent {} to a link that announced the session family only (§8.9)",
            f.code().name()
        )
        .into());
    }
    Ok(())
}

/// §3, §11.4: a compressed broadcast is relayed compressed-as-received or plain to a link that
/// offered lz4, and plain (`01 00 0100`, the inflated payload) to one that did not; nothing
/// compressed ever reaches a link that did not offer lz4.
pub fn no_lz4_without_cap(ctx: &Ctx) -> Step {
    needs_mesh(ctx)?;
    if ctx.peer.capabilities & CAP_LZ4 == 0 {
        return Err(Stop::Skip(
            "the peer did not offer lz4 (the kit may not send it a compressed frame)".into(),
        ));
    }
    let mut plain = ctx.opts();
    plain.capabilities &= !CAP_LZ4;
    let mut ls = links(ctx, &[ctx.opts(), ctx.opts(), plain])?;
    let payload = format!("weft conform lz4 {} ", OsRng.next_u64())
        .repeat(30)
        .into_bytes();
    let frame = broadcast_frame(ctx, &ls[0].me, 1, &payload, true);
    let inflated = broadcast_payload(ctx, &ls[0].me, 1, &payload);
    if Frame::parse(frame.clone().into()).map(|f| f.flags().compressed()) != Ok(true) {
        return Err(Stop::Skip("the payload did not compress".into()));
    }
    ls[0].conn.send(&frame);
    settle(ctx, &mut ls)?;
    // How many copies arrive is §11's business: here, only their form.
    let origin = ls[0].me.node_id();
    let to_lz4 = broadcasts_from(&ls[1], origin);
    let to_plain = broadcasts_from(&ls[2], origin);
    if to_lz4.is_empty() {
        return Err(Stop::Skip(
            "the broadcast was not relayed to the other lz4 link (§11 checks relays)".into(),
        ));
    }
    if to_plain.is_empty() {
        return Err(
            "the compressed broadcast was relayed to an lz4 link but never, inflated, to the link without lz4 (§11.4: compression mismatch)"
                .to_string()
                .into(),
        );
    }
    let as_received = |f: &Frame| f.bytes()[..] == frame[..];
    let plain_form =
        |f: &Frame| !f.flags().compressed() && f.payload().ok().as_deref() == Some(&inflated[..]);
    if !to_lz4.iter().all(|f| as_received(f) || plain_form(f)) {
        return Err(
            "the compressed broadcast reached an lz4 link changed (§11.4: as received, or plain)"
                .to_string()
                .into(),
        );
    }
    if let Some(f) = ls[2].conn.log.iter().find(|f| f.flags().compressed()) {
        return Err(format!(
            "it sent a compressed {} to a peer whose HELLO did not offer lz4",
            f.code().name()
        )
        .into());
    }
    if !to_plain.iter().all(plain_form) {
        return Err("the link without lz4 got the broadcast, but not as a plain frame of the inflated payload (§11.4)"
            .to_string()
            .into());
    }
    Ok(())
}

/// §11.8: a broadcast with a bad signature, and one with no proof, close their sender with
/// BYE(ProtocolViolation) and are not relayed.
pub fn forged_broadcast(ctx: &Ctx) -> Step {
    needs_mesh(ctx)?;
    if ctx.unsigned() {
        return Err(Stop::Skip(
            "the peer's network sends broadcasts unsigned".into(),
        ));
    }
    for forged_kind in ["a bad signature", "no proof"] {
        let mut ls = links(ctx, &[ctx.opts(), ctx.opts()])?;
        let me = ls[0].me.clone();
        let proof = (forged_kind == "a bad signature").then(|| OriginProof {
            public_key: me.public_key(),
            signature: Signature([7; 64]),
        });
        let b = Broadcast {
            origin: me.node_id(),
            incarnation: me.incarnation,
            seq: 1,
            payload: b"forged",
            proof,
        };
        ls[0].conn.send_msg(&Message::Broadcast(b), false);
        ls[0]
            .conn
            .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
            .map_err(|e| format!("a broadcast with {forged_kind}: {e}"))?;
        settle(ctx, &mut ls[1..])?;
        if !broadcasts_from(&ls[1], me.node_id()).is_empty() {
            return Err(format!("a broadcast with {forged_kind} was relayed").into());
        }
    }
    Ok(())
}

/// §11.7: a new link gets a MESH_DIGEST listing a broadcast the peer holds, and a MESH_WANT
/// for it is answered by a MESH_REPAIR carrying its payload byte for byte.
pub fn repair_served(ctx: &Ctx) -> Step {
    needs_mesh(ctx)?;
    let mut ls = links(ctx, &[ctx.opts()])?;
    let origin = ls[0].me.clone();
    let payload = format!("weft conform repair {}", OsRng.next_u64()).into_bytes();
    ls[0]
        .conn
        .send(&broadcast_frame(ctx, &origin, 1, &payload, false));
    ls[0].conn.expect_alive(ctx.wait)?;
    let mut c = ctx.link()?;
    let digest = c.conn.next_of(Code::MESH_DIGEST, ctx.wait).map_err(|e| {
        format!("a new link while it holds a broadcast: {e} (§11.7: a digest is due)")
    })?;
    let listed = with_msg(&digest, |m| match m {
        Message::MeshDigest(d) => d.entries.iter().any(|e| {
            e.origin == origin.node_id()
                && e.incarnation == origin.incarnation
                && e.ranges.iter().any(|r| r.first <= 1 && 1 <= r.last)
        }),
        _ => false,
    });
    if listed != Some(true) {
        return Err(
            "its MESH_DIGEST to a new link does not list a broadcast it holds"
                .to_string()
                .into(),
        );
    }
    let want = MeshWant {
        wants: vec![WantRange {
            origin: origin.node_id(),
            incarnation: origin.incarnation,
            range: SeqRange { first: 1, last: 1 },
        }],
    };
    c.conn.send_msg(&Message::MeshWant(want), false);
    let repair = c
        .conn
        .next_of(Code::MESH_REPAIR, ctx.wait)
        .map_err(|e| format!("a MESH_WANT for a broadcast it listed: {e}"))?;
    let expected = broadcast_payload(ctx, &origin, 1, &payload);
    if repair.payload().ok().as_deref() != Some(&expected[..]) {
        return Err(
            "its MESH_REPAIR is not the broadcast's payload byte for byte"
                .to_string()
                .into(),
        );
    }
    Ok(())
}

/// §11.7, §11.4: a MESH_DIGEST listing a broadcast the peer lacks is answered by a MESH_WANT
/// for it; the MESH_REPAIR that answers is relayed to the other link as a plain BROADCAST.
pub fn repair_asked(ctx: &Ctx) -> Step {
    needs_mesh(ctx)?;
    let mut ls = links(ctx, &[ctx.opts(), ctx.opts()])?;
    let origin = ls[0].me.clone();
    let digest = MeshDigest {
        entries: vec![DigestEntry {
            origin: origin.node_id(),
            incarnation: origin.incarnation,
            ranges: vec![SeqRange { first: 1, last: 1 }],
        }],
    };
    ls[0].conn.send_msg(&Message::MeshDigest(digest), false);
    let want = ls[0]
        .conn
        .next_of(Code::MESH_WANT, ctx.wait)
        .map_err(|e| format!("a MESH_DIGEST of a broadcast it lacks: {e}"))?;
    let asks = with_msg(&want, |m| match m {
        Message::MeshWant(w) => w.wants.iter().any(|w| {
            w.origin == origin.node_id()
                && w.incarnation == origin.incarnation
                && w.range.first <= 1
                && 1 <= w.range.last
        }),
        _ => false,
    });
    if asks != Some(true) {
        return Err("its MESH_WANT does not ask for the broadcast it lacks"
            .to_string()
            .into());
    }
    let payload = format!("weft conform repaired {}", OsRng.next_u64()).into_bytes();
    let repaired = broadcast_payload(ctx, &origin, 1, &payload);
    ls[0]
        .conn
        .send(&Frame::build(Code::MESH_REPAIR, &repaired, false).into_bytes());
    settle(ctx, &mut ls)?;
    let relayed = broadcasts_from(&ls[1], origin.node_id());
    match relayed.as_slice() {
        [f] if !f.flags().compressed() && f.payload().ok().as_deref() == Some(&repaired[..]) => {
            Ok(())
        }
        [_] => Err("the repaired broadcast was relayed, but not as a plain BROADCAST of its payload (§11.4)"
            .to_string()
            .into()),
        other => Err(format!(
            "the repaired broadcast reached the other link {} times (once, as BROADCAST, is due)",
            other.len()
        )
        .into()),
    }
}

//! Which message is allowed when (SPEC.md §6.13), and families and dedicated connections
//! (§8.9): the valid vectors sent before the handshake is done and on a link.

use weft_engine::protocol::{ByeReason, Code, Family, Frame, NetworkId};

use super::super::vectors::{self, Valid};
use super::super::{Ctx, Step, Stop};

/// Codes the handshake itself uses: their states are checked by §7's checks.
fn handshake_code(code: u16) -> bool {
    matches!(Code(code), Code::HELLO | Code::HELLO_ACK | Code::BYE)
}

/// The reason of a loop over vectors that stopped at its first failure.
fn verdict(failed: Vec<String>, total: usize) -> Step {
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{first} (the first failing of {total} vectors; the rest not tried)"
        )
        .into()),
    }
}

/// Every valid vector but HELLO, HELLO_ACK and BYE, sent after both HELLOs but before the
/// kit's HELLO_ACK (the peer is not established): BYE(ProtocolViolation).
pub fn vectors_before_handshake(ctx: &Ctx) -> Step {
    let (valid, _) = vectors::load();
    let mine: Vec<&Valid> = valid.iter().filter(|v| !handshake_code(v.code)).collect();
    let mut failed = Vec::new();
    for v in &mine {
        let me = super::super::hello::Me::fresh();
        let (mut conn, _) = ctx.hellos(&me, &ctx.opts())?;
        conn.send(&v.bytes());
        if let Err(e) = conn.expect_bye(ByeReason::ProtocolViolation, ctx.wait) {
            failed.push(format!("`{}` before the handshake: {e}", v.name));
            break;
        }
    }
    verdict(failed, mine.len())
}

/// HELLO and HELLO_ACK on an established link: BYE(ProtocolViolation).
pub fn handshake_messages_on_link(ctx: &Ctx) -> Step {
    let (valid, _) = vectors::load();
    for name in ["hello", "hello_ack"] {
        let Some(v) = valid.iter().find(|v| v.name == name) else {
            return Err(Stop::Skip(format!("no vector `{name}`")));
        };
        let mut link = ctx.link()?;
        link.conn.send(&v.bytes());
        link.conn
            .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
            .map_err(|e| format!("`{name}` on a link: {e}"))?;
    }
    Ok(())
}

/// What a peer must do with a valid vector on a link: keep the link, or refuse it with
/// BYE(ProtocolViolation) for the rule named.
enum OnLink {
    Keep,
    Refuse(&'static str),
    /// Either: which rule the peer applies first depends on its clock.
    KeepOrRefuse,
    /// Not sent: the kit may not (a compressed frame to a peer that did not offer lz4, §3).
    NotSent,
}

/// The rule for vector `v` on a link with this peer.
fn on_link(ctx: &Ctx, v: &Valid) -> OnLink {
    let code = Code(v.code);
    let compressed = Frame::parse(v.bytes().into()).is_ok_and(|f| f.flags().compressed());
    if compressed && ctx.peer.capabilities & weft_engine::protocol::CAP_LZ4 == 0 {
        return OnLink::NotSent;
    }
    let family = code.family();
    if family.is_some_and(|f| !ctx.runs(f)) {
        return OnLink::Refuse("§8.9: a family it did not announce");
    }
    let vectors_net = ctx.network == NetworkId::from_name("weft vectors");
    match code {
        // The vectors' proofs are byte patterns or absent (§6.9): forged in a signed network.
        Code::BROADCAST | Code::MESH_REPAIR if !ctx.unsigned() => {
            OnLink::Refuse("§11.8: the vector's broadcast has no valid proof")
        }
        // The table vectors' writes are signed for the network "weft vectors" (§19.9), and
        // stamped 1 800 000 000 000 ms: a peer whose clock is more than a minute behind that
        // refuses them by policy first (too new, the link kept), any other closes the link
        // (a forged signature), §19.8.
        Code::TABLE_WRITE | Code::TABLE_ENTRIES if !vectors_net => OnLink::KeepOrRefuse,
        // The kit asked for no run: an answer to one breaks §23.4.
        Code::RUN_REFUSED | Code::RUN_STARTED | Code::RUN_OUTPUT | Code::RUN_EXIT => {
            OnLink::Refuse("§23.4: an answer to a run never asked")
        }
        _ => OnLink::Keep,
    }
}

/// Every valid vector but HELLO, HELLO_ACK and BYE, each on a fresh link: a message of a
/// family the peer runs is taken (the link answers a PING after it), except where its
/// content breaks a rule of its family (forged proofs and signatures: BYE(ProtocolViolation)).
pub fn vectors_on_link(ctx: &Ctx) -> Step {
    let (valid, _) = vectors::load();
    let mine: Vec<&Valid> = valid.iter().filter(|v| !handshake_code(v.code)).collect();
    let mut failed = Vec::new();
    for v in &mine {
        let rule = on_link(ctx, v);
        if matches!(rule, OnLink::NotSent) {
            continue;
        }
        let mut link = ctx.link()?;
        link.conn.send(&v.bytes());
        let result = match rule {
            OnLink::NotSent => Ok(()),
            OnLink::Keep => link.conn.expect_alive(ctx.wait),
            OnLink::Refuse(rule) => link
                .conn
                .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
                .map_err(|e| format!("{e} ({rule})")),
            OnLink::KeepOrRefuse => match link.conn.expect_alive(ctx.wait) {
                Ok(()) => Ok(()),
                Err(_) if link.conn.is_closed() => {
                    let byes: Vec<_> = link
                        .conn
                        .log
                        .iter()
                        .filter_map(super::super::conn::bye_reason)
                        .collect();
                    match byes.last() {
                        Some(ByeReason::ProtocolViolation) => Ok(()),
                        Some(r) => Err(format!(
                            "BYE({r:?}) where ProtocolViolation or nothing is due"
                        )),
                        None => Err("closed without a BYE".to_string()),
                    }
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            failed.push(format!("`{}` on a link: {e}", v.name));
            break;
        }
    }
    verdict(failed, mine.len())
}

/// On a dedicated mesh connection PING is answered, and a discovery or table message is
/// refused with BYE(ProtocolViolation) (§8.9, §6.13).
pub fn dedicated_families(ctx: &Ctx) -> Step {
    if !ctx.runs(Family::Mesh) {
        return Err(Stop::Skip("the peer does not run mesh".into()));
    }
    let (valid, _) = vectors::load();
    for name in ["icansee_empty", "table_digest_empty"] {
        let Some(v) = valid.iter().find(|v| v.name == name) else {
            return Err(Stop::Skip(format!("no vector `{name}`")));
        };
        let mut opts = ctx.opts();
        opts.dedicated = Some(Family::Mesh.high_byte());
        let mut link = ctx.link_as(super::super::hello::Me::fresh(), &opts)?;
        link.conn
            .expect_alive(ctx.wait)
            .map_err(|e| format!("a dedicated mesh connection: {e}"))?;
        link.conn.send(&v.bytes());
        link.conn
            .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
            .map_err(|e| format!("`{name}` on a dedicated mesh connection: {e}"))?;
    }
    Ok(())
}

/// A Chord message to a peer that does not run Chord: BYE(ProtocolViolation) (§8.9).
pub fn family_not_run(ctx: &Ctx) -> Step {
    if ctx.runs(Family::Chord) {
        return Err(Stop::Skip("the peer runs every family".into()));
    }
    let (valid, _) = vectors::load();
    let Some(v) = valid.iter().find(|v| v.name == "chord_get_state") else {
        return Err(Stop::Skip("no vector `chord_get_state`".into()));
    };
    let mut link = ctx.link()?;
    link.conn.send(&v.bytes());
    link.conn
        .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
        .map_err(|e| format!("CHORD_GET_STATE to a peer without Chord: {e}"))?;
    Ok(())
}

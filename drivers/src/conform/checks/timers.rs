//! The timers of SPEC.md §8.1 and §9 at their defaults (§13), for `weft conform --timers`:
//! each check waits out a timer on a connection of its own, and all of them run at once after
//! the other checks (about 18 s in all).

use std::time::{Duration, Instant};

use weft_engine::protocol::{ByeReason, Code};

use super::super::conn::{span, Got};
use super::super::hello::Me;
use super::super::{Ctx, Step};

/// `tick`: timers fire at the next tick after they are due, so they may be this late.
pub const TICK: Duration = Duration::from_secs(1);
/// `ping_interval`: an idle link gets a PING.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// `peer_timeout`: a link the peer hears nothing on is closed with BYE(`Timeout`).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// `handshake_timeout`: a connection still in its handshake is closed, with no BYE.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A link on which the peer has sent nothing for `ping_interval` gets a PING by the next
/// tick, and not before (§9).
pub fn idle_link_pinged(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    link.conn.answer_pings = false;
    let mut last_sent = Instant::now();
    // The link is idle from the peer's last frame on (a table digest, say): the wait starts
    // again with each, up to a bound.
    let give_up = last_sent + 3 * (PING_INTERVAL + TICK) + ctx.wait;
    loop {
        let deadline = (last_sent + PING_INTERVAL + TICK + ctx.wait).min(give_up);
        match link.conn.next(deadline) {
            Got::Frame(f) if f.code() == Code::PING => {
                let idle = last_sent.elapsed();
                if idle + TICK < PING_INTERVAL {
                    return Err(format!(
                        "a PING after {} idle, before ping_interval ({})",
                        span(idle),
                        span(PING_INTERVAL)
                    )
                    .into());
                }
                return Ok(());
            }
            Got::Frame(_) => last_sent = Instant::now(),
            Got::Closed => return Err("it closed an idle link before any PING".to_string().into()),
            Got::Timeout => {
                return Err(format!(
                    "no PING on a link idle for {} (ping_interval {} + a tick)",
                    span(last_sent.elapsed()),
                    span(PING_INTERVAL)
                )
                .into())
            }
        }
    }
}

/// A link on which the kit sends nothing at all, its PINGs unanswered, is closed with
/// BYE(`Timeout`) once `peer_timeout` has passed, by the next tick, and not before (§9).
pub fn silent_link_closed(ctx: &Ctx) -> Step {
    let mut link = ctx.link()?;
    link.conn.answer_pings = false;
    let started = Instant::now();
    link.conn
        .expect_bye(ByeReason::Timeout, PEER_TIMEOUT + TICK + ctx.wait)
        .map_err(|e| format!("a link silent for {}: {e}", span(started.elapsed())))?;
    let after = started.elapsed();
    if after + TICK < PEER_TIMEOUT {
        return Err(format!(
            "BYE(Timeout) after {} of silence, before peer_timeout ({})",
            span(after),
            span(PEER_TIMEOUT)
        )
        .into());
    }
    Ok(())
}

/// A connection left in its handshake (the kit's HELLO sent, never its HELLO_ACK) is closed
/// once `handshake_timeout` has passed since it opened, by the next tick, with no BYE, and
/// not before (§8.1).
pub fn stalled_handshake_closed(ctx: &Ctx) -> Step {
    let opened = Instant::now();
    let me = Me::fresh();
    let (mut conn, _) = ctx.hellos(&me, &ctx.opts())?;
    conn.expect_close_without_bye(HANDSHAKE_TIMEOUT + TICK + ctx.wait)
        .map_err(|e| format!("a handshake left unfinished: {e}"))?;
    let after = opened.elapsed();
    if after + TICK < HANDSHAKE_TIMEOUT {
        return Err(format!(
            "an unfinished handshake closed after {}, before handshake_timeout ({})",
            span(after),
            span(HANDSHAKE_TIMEOUT)
        )
        .into());
    }
    Ok(())
}

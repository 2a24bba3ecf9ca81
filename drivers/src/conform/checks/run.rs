//! Remote runs (SPEC.md §23): the kit is a stranger to every node (a fresh identity), so a
//! RUN_REQUEST of it must be refused with RUN_REFUSED (and nothing run); signals and
//! acknowledgements for no run are ignored; an answer to a run never asked closes the link.

use weft_engine::protocol::{
    ByeReason, Code, Family, Message, RunAck, RunMessage, RunRefusalReason, RunRequest, RunSignal,
    RunSignalKind, RunStarted,
};

use super::super::conn::with_msg;
use super::super::{Ctx, Step, Stop};

fn needs_runs(ctx: &Ctx) -> Step {
    if ctx.runs(Family::Remote) {
        Ok(())
    } else {
        Err(Stop::Skip("the peer does not announce remote runs".into()))
    }
}

/// §23.1, §23.3: a RUN_REQUEST from a node on no allow list gets RUN_REFUSED for its run,
/// `NotAllowed` or `NotOnAllowList` (or `Plaintext`: an implementation whose links are plain
/// behind a Noise front, as the test suite's broken peers are) with a line of text, never
/// RUN_STARTED; the link stays.
pub fn stranger_refused(ctx: &Ctx) -> Step {
    needs_runs(ctx)?;
    let mut link = ctx.link()?;
    let request = RunRequest {
        run: 7,
        program: "true".into(),
        args: vec![],
        shell: false,
        folder: None,
    };
    link.conn
        .send_msg(&Message::Run(RunMessage::Request(request)), false);
    let refused = link
        .conn
        .next_of(Code::RUN_REFUSED, ctx.wait)
        .map_err(|e| format!("a RUN_REQUEST from a stranger: {e}"))?;
    let verdict = with_msg(&refused, |m| match m {
        Message::Run(RunMessage::Refused(r)) if r.run != 7 => {
            Err(format!("RUN_REFUSED names run {} (7 was asked)", r.run))
        }
        Message::Run(RunMessage::Refused(r))
            if matches!(
                r.reason,
                RunRefusalReason::NotAllowed
                    | RunRefusalReason::NotOnAllowList
                    | RunRefusalReason::Plaintext
            ) =>
        {
            Ok(())
        }
        Message::Run(RunMessage::Refused(r)) => Err(format!(
            "a stranger's run refused for {:?} (NotAllowed, NotOnAllowList or Plaintext is due)",
            r.reason
        )),
        other => Err(format!("RUN_REFUSED decoded as {other:?}")),
    });
    verdict.unwrap_or_else(|| Err("RUN_REFUSED does not decode".into()))?;
    link.conn.expect_alive(ctx.wait)?;
    if !link.conn.logged(Code::RUN_STARTED).is_empty() {
        return Err("a stranger's run was started".to_string().into());
    }
    Ok(())
}

/// §23.3: RUN_SIGNAL and RUN_ACK for no run in progress are ignored: the link stays.
pub fn signals_for_no_run_ignored(ctx: &Ctx) -> Step {
    needs_runs(ctx)?;
    let mut link = ctx.link()?;
    let signal = RunSignal {
        run: 99,
        signal: RunSignalKind::Kill,
    };
    link.conn
        .send_msg(&Message::Run(RunMessage::Signal(signal)), false);
    let ack = RunAck { run: 99, bytes: 0 };
    link.conn
        .send_msg(&Message::Run(RunMessage::Ack(ack)), false);
    link.conn
        .expect_alive(ctx.wait)
        .map_err(|e| format!("RUN_SIGNAL and RUN_ACK for no run: {e}"))?;
    Ok(())
}

/// §23.4: RUN_STARTED for a run the peer never asked of the kit: BYE(ProtocolViolation).
pub fn answer_not_asked_closes(ctx: &Ctx) -> Step {
    needs_runs(ctx)?;
    let mut link = ctx.link()?;
    let started = RunStarted { run: 5 };
    link.conn
        .send_msg(&Message::Run(RunMessage::Started(started)), false);
    link.conn
        .expect_bye(ByeReason::ProtocolViolation, ctx.wait)
        .map_err(|e| format!("RUN_STARTED for a run never asked: {e}"))?;
    Ok(())
}

//! Log lines that peers cause (a connection closed, a peer up or down, a drop's message
//! refused), held to a budget per kind: anyone who can reach the port can open and drop
//! connections as fast as the node accepts them, and each was a line in `node.log`, which
//! grew without end. Past the budget, lines of that kind are counted, and the count is logged
//! with the next line of the kind that is logged.

use weft_engine::{Duration, Instant};

/// At most this many lines of one kind are logged per [`PEER_LOG_INTERVAL`].
pub const PEER_LOG_LINES_MAX: u32 = 20;

/// The interval [`PEER_LOG_LINES_MAX`] counts over.
pub const PEER_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The kinds of line a peer can cause, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerLine {
    /// A connection closed.
    Closed,
    /// A peer came up or went down (native or p2p.today).
    Link,
    /// A peer's drop message refused.
    Refused,
}

impl PeerLine {
    const ALL: [PeerLine; 3] = [PeerLine::Closed, PeerLine::Link, PeerLine::Refused];

    fn name(self) -> &'static str {
        match self {
            PeerLine::Closed => "connection closed",
            PeerLine::Link => "peer up or down",
            PeerLine::Refused => "refused drop message",
        }
    }
}

/// One kind's budget.
#[derive(Debug, Default, Clone, Copy)]
struct Budget {
    /// When the current interval began.
    since: Option<Instant>,
    /// Lines logged in it.
    logged: u32,
    /// Lines not logged since the last one that was.
    held_back: u64,
}

/// The budgets of every [`PeerLine`].
#[derive(Debug, Default)]
pub(crate) struct PeerLog {
    budgets: [Budget; PeerLine::ALL.len()],
}

impl PeerLog {
    /// Whether a line of `kind` may be logged at `now`. When it may after some were held
    /// back, their count is logged first.
    pub(crate) fn allow(&mut self, kind: PeerLine, now: Instant) -> bool {
        let at = PeerLine::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        let b = &mut self.budgets[at];
        let fresh = b
            .since
            .is_none_or(|since| now.saturating_since(since) >= PEER_LOG_INTERVAL);
        if fresh {
            b.since = Some(now);
            b.logged = 0;
        }
        if b.logged >= PEER_LOG_LINES_MAX {
            b.held_back += 1;
            return false;
        }
        b.logged += 1;
        if b.held_back > 0 {
            tracing::info!(
                "{} more \"{}\" lines were not logged (at most {PEER_LOG_LINES_MAX} every {} s)",
                b.held_back,
                kind.name(),
                PEER_LOG_INTERVAL.as_millis() / 1000
            );
            b.held_back = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_logs_at_most_its_budget_per_interval() {
        let mut log = PeerLog::default();
        let t0 = Instant::ZERO + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| log.allow(PeerLine::Closed, t0)).count();
        assert_eq!(allowed, PEER_LOG_LINES_MAX as usize);
        assert_eq!(
            log.budgets[0].held_back,
            100 - u64::from(PEER_LOG_LINES_MAX)
        );
        // Another kind has its own budget.
        assert!(log.allow(PeerLine::Link, t0));
        // Within the interval: still held back.
        let later = t0 + Duration::from_millis(PEER_LOG_INTERVAL.as_millis() - 1);
        assert!(!log.allow(PeerLine::Closed, later));
        // A new interval: logged again, and the count of those held back goes with it.
        let next = t0 + PEER_LOG_INTERVAL;
        assert!(log.allow(PeerLine::Closed, next));
        assert_eq!(log.budgets[0].held_back, 0);
        assert_eq!(log.budgets[0].logged, 1);
    }
}

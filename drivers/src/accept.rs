//! Failed accepts (out of descriptors, most often): a pause before the next attempt, so an
//! accept loop never spins, and one log line per interval, so a node out of descriptors does
//! not fill its log.

use std::io;

use weft_engine::{Duration, Instant};

/// At most one accept failure is logged per this interval; the line counts the ones that
/// were not.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The pause after a first failed accept; it doubles with each failure in a row.
pub const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(50);
/// The longest pause between accept attempts while they keep failing.
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// The failures of one accept loop.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    /// What accepts (for the log line).
    what: &'static str,
    /// When the last line was logged.
    logged_at: Option<Instant>,
    /// Failures since then that were not logged.
    unlogged: u64,
    /// The pause after the next failure.
    pause: Duration,
    /// No accept before this time.
    paused_until: Option<Instant>,
}

impl AcceptErrors {
    /// No failures yet; `what` names the listener in the log.
    pub(crate) fn new(what: &'static str) -> AcceptErrors {
        AcceptErrors {
            what,
            logged_at: None,
            unlogged: 0,
            pause: ACCEPT_PAUSE_MIN,
            paused_until: None,
        }
    }

    /// Records a failed accept at `now` (logged if the interval allows) and returns when to
    /// try again.
    pub(crate) fn failed(&mut self, now: Instant, error: &io::Error) -> Instant {
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_since(at) >= ACCEPT_LOG_INTERVAL);
        if due {
            if self.unlogged > 0 {
                tracing::warn!(
                    "{} accept failed: {error} ({} more failures in the last {} s not logged)",
                    self.what,
                    self.unlogged,
                    ACCEPT_LOG_INTERVAL.as_millis() / 1000
                );
            } else {
                tracing::warn!("{} accept failed: {error}", self.what);
            }
            self.logged_at = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        let until = now + self.pause;
        self.pause =
            Duration::from_millis((self.pause.as_millis() * 2).min(ACCEPT_PAUSE_MAX.as_millis()));
        self.paused_until = Some(until);
        until
    }

    /// Records an accepted connection: the next failure pauses briefly again.
    pub(crate) fn succeeded(&mut self) {
        self.pause = ACCEPT_PAUSE_MIN;
    }

    /// When the loop may accept again, if it is pausing at `now`.
    pub(crate) fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&until| until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_once_per_interval_and_pause_longer_each_time() {
        let mut errors = AcceptErrors::new("test");
        let e = io::Error::from_raw_os_error(24);
        let t0 = Instant::ZERO + Duration::from_secs(1);
        assert_eq!(errors.failed(t0, &e), t0 + ACCEPT_PAUSE_MIN);
        assert_eq!(errors.logged_at, Some(t0));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            errors.failed(t1, &e),
            t1 + ACCEPT_PAUSE_MIN + ACCEPT_PAUSE_MIN
        );
        assert_eq!((errors.logged_at, errors.unlogged), (Some(t0), 1));
        for _ in 0..20 {
            errors.failed(t1, &e);
        }
        assert_eq!(errors.pause, ACCEPT_PAUSE_MAX);
        assert_eq!(errors.paused_until(t1), Some(t1 + ACCEPT_PAUSE_MAX));
        assert_eq!(errors.paused_until(t1 + ACCEPT_PAUSE_MAX), None);
        let t2 = t0 + ACCEPT_LOG_INTERVAL;
        errors.failed(t2, &e);
        assert_eq!((errors.logged_at, errors.unlogged), (Some(t2), 0));
        errors.succeeded();
        assert_eq!(errors.pause, ACCEPT_PAUSE_MIN);
    }
}

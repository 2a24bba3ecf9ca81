//! The timer table: Chord's periodic timers (stabilize, fix fingers, check predecessor),
//! the per-request and per-operation deadlines, and the jitter drawn for each period.

use rand_chacha::rand_core::RngCore;

use super::Chord;
use crate::time::Duration;

/// The periodic timers, each an index into `Chord::timers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    Stabilize = 0,
    FixFingers = 1,
    CheckPredecessor = 2,
}

/// Every timer, in the order they fire when due together.
pub(super) const TIMERS: [Timer; 3] =
    [Timer::Stabilize, Timer::FixFingers, Timer::CheckPredecessor];

/// What a deadline in `Chord::deadlines` ends: a request to a peer or an application request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Deadline {
    Rpc(u64),
    Op(u64),
}

impl Chord {
    /// The mean period of timer `t`.
    pub(super) fn interval(&self, t: Timer) -> Duration {
        match t {
            Timer::Stabilize => self.config.stabilize_interval,
            Timer::FixFingers => self.config.fix_fingers_interval,
            Timer::CheckPredecessor => self.config.check_predecessor_interval,
        }
    }

    /// Uniform in [d/2, 3d/2).
    pub(super) fn jitter(&mut self, d: Duration) -> Duration {
        let half = d.as_nanos() / 2;
        let spread = d.as_nanos().max(1);
        Duration(half + self.rng.next_u64() % spread)
    }
}

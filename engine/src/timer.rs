//! The node's timers: a small table indexed by an enum (quinn-proto's shape).

use crate::time::Instant;

/// Each timer the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Liveness: PINGs, handshake and peer timeouts.
    Tick = 0,
    /// Discovery: the next dial of a heard-of peer.
    Dial = 1,
    /// Mesh repair: the next anti-entropy digest.
    Repair = 2,
}

impl Timer {
    const COUNT: usize = 3;
    const ALL: [Timer; Timer::COUNT] = [Timer::Tick, Timer::Dial, Timer::Repair];
}

/// Deadlines by timer. Compact (48 bytes): it shares the node's first cache line with the
/// clock, which every input reads.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    /// Each timer's deadline, where `armed` has its bit.
    deadlines: [Instant; Timer::COUNT],
    /// The earliest deadline and its timer, kept on every change: every input reads it.
    earliest: Option<(Instant, Timer)>,
    /// Bit `t` set: timer `t` is armed.
    armed: u8,
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = at;
        self.armed |= 1 << timer as u8;
        self.earliest = self.find_earliest();
    }

    /// The earliest deadline and its timer.
    pub(crate) fn next(&self) -> Option<(Instant, Timer)> {
        self.earliest
    }

    /// Clears and returns a timer whose deadline is at or before `now`.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let (at, timer) = self.earliest?;
        if at > now {
            return None;
        }
        self.armed &= !(1 << timer as u8);
        self.earliest = self.find_earliest();
        Some(timer)
    }

    /// The earliest deadline, the first timer in `Timer::ALL` order on a tie.
    fn find_earliest(&self) -> Option<(Instant, Timer)> {
        Timer::ALL
            .iter()
            .filter(|&&t| self.armed & (1 << t as u8) != 0)
            .map(|&t| (self.deadlines[t as usize], t))
            .min_by_key(|&(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_timers_come_out_earliest_first_and_once() {
        let mut t = TimerTable::default();
        t.set(Timer::Dial, Instant(5));
        t.set(Timer::Tick, Instant(3));
        assert_eq!(t.next(), Some((Instant(3), Timer::Tick)));
        assert_eq!(t.take_expired(Instant(2)), None);
        assert_eq!(t.take_expired(Instant(9)), Some(Timer::Tick));
        assert_eq!(t.take_expired(Instant(9)), Some(Timer::Dial));
        assert_eq!(t.take_expired(Instant(9)), None);
        assert_eq!(t.next(), None);
    }
}

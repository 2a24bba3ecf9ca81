//! A timer table indexed by an enum (quinn-proto's shape): each sub-machine names its timers
//! in an enum and keeps one of these.

use crate::time::{Duration, Instant};

/// A sub-machine's timer names: a small enum whose variants index the table.
pub(crate) trait TimerName: Copy + Eq + core::fmt::Debug + 'static {
    /// Every timer, in the order ties are broken.
    const ALL: &'static [Self];
    /// The timer's index in `ALL`.
    fn index(self) -> usize;
}

/// Deadlines by timer; `N` is the number of timers. The earliest is kept on every change:
/// every input asks for it.
#[derive(Debug, Clone)]
pub(crate) struct TimerTable<T, const N: usize> {
    deadlines: [Option<Instant>; N],
    earliest: Option<(Instant, T)>,
}

impl<T: TimerName, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        TimerTable {
            deadlines: [None; N],
            earliest: None,
        }
    }
}

impl<T: TimerName, const N: usize> TimerTable<T, N> {
    /// Arms `timer` for `at`.
    pub(crate) fn set(&mut self, timer: T, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
        self.earliest = self.find_earliest();
    }

    /// Disarms `timer`.
    pub(crate) fn cancel(&mut self, timer: T) {
        self.deadlines[timer.index()] = None;
        self.earliest = self.find_earliest();
    }

    /// Disarms every timer.
    pub(crate) fn clear(&mut self) {
        self.deadlines = [None; N];
        self.earliest = None;
    }

    /// The earliest deadline and its timer (the first in `ALL` on a tie).
    pub(crate) fn next(&self) -> Option<(Instant, T)> {
        self.earliest
    }

    fn find_earliest(&self) -> Option<(Instant, T)> {
        T::ALL
            .iter()
            .filter_map(|&t| Some((self.deadlines[t.index()]?, t)))
            .min_by_key(|&(at, _)| at)
    }

    /// Disarms and returns a timer whose deadline is at or before `now`, earliest first.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Option<T> {
        let (at, timer) = self.next()?;
        if at > now {
            return None;
        }
        self.deadlines[timer.index()] = None;
        self.earliest = self.find_earliest();
        Some(timer)
    }
}

/// A timer that fires every `period`: the protocols' repair, persist and probe timers. It is
/// armed by the first [`fire`](Self::fire), at `now + period`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Periodic {
    period: Duration,
    at: Option<Instant>,
}

impl Periodic {
    pub(crate) fn new(period: Duration) -> Periodic {
        Periodic { period, at: None }
    }

    /// Whether the timer fires at `now` (then it is armed again at `now + period`, so periods
    /// missed by a late caller are not replayed). The first call arms it and does not fire.
    pub(crate) fn fire(&mut self, now: Instant) -> bool {
        match self.at {
            Some(at) if at > now => false,
            armed => {
                self.at = Some(now + self.period);
                armed.is_some()
            }
        }
    }

    /// When it next fires, once armed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
    }

    impl TimerName for T {
        const ALL: &'static [T] = &[T::A, T::B];
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn expired_timers_come_out_earliest_first_and_once() {
        let mut t: TimerTable<T, 2> = TimerTable::default();
        t.set(T::B, Instant(5));
        t.set(T::A, Instant(3));
        assert_eq!(t.next(), Some((Instant(3), T::A)));
        assert_eq!(t.take_expired(Instant(2)), None);
        assert_eq!(t.take_expired(Instant(9)), Some(T::A));
        assert_eq!(t.take_expired(Instant(9)), Some(T::B));
        assert_eq!(t.take_expired(Instant(9)), None);
        assert_eq!(t.next(), None);
        t.set(T::B, Instant(1));
        t.set(T::A, Instant(1));
        assert_eq!(
            t.next(),
            Some((Instant(1), T::A)),
            "ties go to the first in ALL"
        );
    }

    #[test]
    fn a_periodic_timer_arms_first_then_fires_each_period() {
        let mut p = Periodic::new(Duration(10));
        assert_eq!(p.deadline(), None);
        assert!(!p.fire(Instant(5)), "the first call arms");
        assert_eq!(p.deadline(), Some(Instant(15)));
        assert!(!p.fire(Instant(14)));
        assert!(p.fire(Instant(40)), "late: fires once");
        assert_eq!(
            p.deadline(),
            Some(Instant(50)),
            "missed periods are not replayed"
        );
    }
}

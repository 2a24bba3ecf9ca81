//! A timer table indexed by an enum (quinn-proto's shape): each sub-machine names its timers
//! in an enum and keeps one of these.

use crate::time::Instant;

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
}

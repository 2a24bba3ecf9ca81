//! The hybrid logical clock that stamps this node's table writes (SPEC.md §19.2).

use weft_protocol::Hlc;

/// A hybrid logical clock: never behind the wall clock it is given, never behind any
/// timestamp it has observed, strictly increasing on every stamp taken.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// The stamp a new local write at wall-clock `wall_ms` would take, without taking it;
    /// `None` if no stamp is later than the last (the clock is at its very end).
    pub(crate) fn peek(&self, wall_ms: u64) -> Option<Hlc> {
        if wall_ms > self.last.ms {
            Some(Hlc {
                ms: wall_ms,
                logical: 0,
            })
        } else if let Some(logical) = self.last.logical.checked_add(1) {
            Some(Hlc {
                ms: self.last.ms,
                logical,
            })
        } else {
            Some(Hlc {
                ms: self.last.ms.checked_add(1)?,
                logical: 0,
            })
        }
    }

    /// Takes a stamp from [`Self::peek`]: later stamps come after it.
    pub(crate) fn take(&mut self, stamp: Hlc) {
        self.last = self.last.max(stamp);
    }

    /// Merges a timestamp heard from another node: later stamps come after it.
    pub(crate) fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }

    /// The latest stamp taken or observed.
    pub(crate) fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(c: &mut HlcClock, wall_ms: u64) -> Hlc {
        let stamp = c.peek(wall_ms).expect("not at the end");
        c.take(stamp);
        stamp
    }

    #[test]
    fn stamps_increase_past_what_was_observed() {
        let mut c = HlcClock::default();
        let a = tick(&mut c, 100);
        let b = tick(&mut c, 100);
        assert!(b > a && b.ms == 100);
        c.observe(Hlc {
            ms: 500,
            logical: 7,
        });
        let d = tick(&mut c, 200);
        assert_eq!(
            d,
            Hlc {
                ms: 500,
                logical: 8
            }
        );
        assert_eq!(tick(&mut c, 900).ms, 900);
        c.observe(Hlc {
            ms: 900,
            logical: u32::MAX,
        });
        assert_eq!(
            tick(&mut c, 0),
            Hlc {
                ms: 901,
                logical: 0
            }
        );
    }

    #[test]
    fn at_the_end_of_time_no_stamp_is_given() {
        let mut c = HlcClock::default();
        let end = Hlc {
            ms: u64::MAX,
            logical: u32::MAX,
        };
        c.observe(end);
        assert_eq!(c.peek(5), None, "nothing comes after the last stamp");
        assert_eq!(c.peek(u64::MAX), None);
        assert_eq!(c.last(), end);
    }
}

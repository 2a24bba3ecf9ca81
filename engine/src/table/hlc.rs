//! The hybrid logical clock that stamps this node's table writes (SPEC.md §19.2).

use weft_protocol::Hlc;

/// A hybrid logical clock: never behind the wall clock it is given, never behind any
/// timestamp it has observed, strictly increasing on every tick.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// The stamp for a new local write at wall-clock `wall_ms`.
    pub(crate) fn tick(&mut self, wall_ms: u64) -> Hlc {
        let next = if wall_ms > self.last.ms {
            Hlc {
                ms: wall_ms,
                logical: 0,
            }
        } else if self.last.logical == u32::MAX {
            Hlc {
                ms: self.last.ms.saturating_add(1),
                logical: 0,
            }
        } else {
            Hlc {
                ms: self.last.ms,
                logical: self.last.logical + 1,
            }
        };
        self.last = next;
        next
    }

    /// Merges a timestamp heard from another node: later ticks come after it.
    pub(crate) fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_past_what_was_observed() {
        let mut c = HlcClock::default();
        let a = c.tick(100);
        let b = c.tick(100);
        assert!(b > a && b.ms == 100);
        c.observe(Hlc {
            ms: 500,
            logical: 7,
        });
        let d = c.tick(200);
        assert_eq!(
            d,
            Hlc {
                ms: 500,
                logical: 8
            }
        );
        assert_eq!(c.tick(900).ms, 900);
        c.observe(Hlc {
            ms: 900,
            logical: u32::MAX,
        });
        assert_eq!(
            c.tick(0),
            Hlc {
                ms: 901,
                logical: 0
            }
        );
    }
}

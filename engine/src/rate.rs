//! Token buckets: the per-peer and global rate limits (SPEC.md §13).

use crate::time::{Duration, Instant};

/// A rate: `per_second` tokens a second on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added each second.
    pub per_second: u32,
    /// Most tokens held; a full bucket is the largest burst allowed.
    pub burst: u32,
}

/// A token bucket, starting full. Tokens are kept in thousandths so slow rates refill smoothly.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    milli_tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `limit` at `now`.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            milli_tokens: u64::from(limit.burst) * 1000,
            last: now,
        }
    }

    /// Takes one token if there is one: true when the action is allowed now.
    pub(crate) fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed: Duration = now.saturating_since(self.last);
        self.last = self.last.max(now);
        // Nanoseconds × tokens/s ÷ 10^6 = milli-tokens; u128 keeps long idles from overflowing.
        let added = u128::from(elapsed.as_nanos()) * u128::from(limit.per_second) / 1_000_000;
        let cap = u64::from(limit.burst) * 1000;
        self.milli_tokens = (u128::from(self.milli_tokens) + added).min(u128::from(cap)) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 5,
    };

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::ZERO;
        let mut b = TokenBucket::new(LIMIT, t0);
        assert_eq!((0..20).filter(|_| b.take(LIMIT, t0)).count(), 5);
        // One second later: ten more tokens, capped at the burst of five.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| b.take(LIMIT, t1)).count(), 5);
        // 100 ms later: exactly one.
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!((0..20).filter(|_| b.take(LIMIT, t2)).count(), 1);
        // Over ten seconds of steady asking, about ten a second get through.
        let mut allowed = 0;
        for ms in 1..=10_000 {
            allowed += usize::from(b.take(LIMIT, t2 + Duration::from_millis(ms)));
        }
        assert!((100..=105).contains(&allowed), "{allowed}");
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t = Instant::ZERO + Duration::from_secs(5);
        let mut b = TokenBucket::new(LIMIT, t);
        for _ in 0..5 {
            assert!(b.take(LIMIT, t));
        }
        assert!(!b.take(LIMIT, Instant::ZERO));
        assert!(!b.take(LIMIT, t));
    }
}

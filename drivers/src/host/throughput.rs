//! The node's throughput over the last minutes, for the web page's chart (`weft ui`): a sample
//! of the node's byte counters every [`SAMPLE_PERIOD`], the last [`SAMPLES_MAX`] kept (ten
//! minutes). The page subtracts neighbours to get a rate.

use std::collections::VecDeque;

use weft_engine::{Duration, Instant};

use crate::report::ThroughputSample;

/// How often the counters are sampled.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// How many samples are kept: ten minutes at one a second.
pub(crate) const SAMPLES_MAX: usize = 600;

/// A bounded ring of samples and when the next one is due.
#[derive(Debug)]
pub(crate) struct Throughput {
    next: Instant,
    samples: VecDeque<ThroughputSample>,
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            next: Instant::ZERO,
            samples: VecDeque::with_capacity(SAMPLES_MAX),
        }
    }
}

impl Throughput {
    /// When the next sample is due.
    pub(crate) fn due(&self) -> Instant {
        self.next
    }

    /// Takes a sample if one is due at `now`: the byte totals received and sent, the node's
    /// uptime and the calendar time. A late loop takes one sample, not the ones it missed.
    pub(crate) fn on_timer(
        &mut self,
        now: Instant,
        unix_ms: Option<u64>,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        if now < self.next {
            return;
        }
        self.next = now + SAMPLE_PERIOD;
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(ThroughputSample {
            uptime_ms: now.as_nanos() / 1_000_000,
            unix_ms,
            bytes_in,
            bytes_out,
        });
    }

    /// The samples kept, oldest first.
    pub(crate) fn report(&self) -> Vec<ThroughputSample> {
        self.samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sample_a_period_and_no_more_than_the_bound() {
        let mut t = Throughput::default();
        t.on_timer(Instant::ZERO, Some(5), 1, 2);
        // Not due yet: nothing taken.
        t.on_timer(Instant::ZERO + Duration::from_millis(999), None, 9, 9);
        assert_eq!(t.report().len(), 1);
        assert_eq!(t.due(), Instant::ZERO + SAMPLE_PERIOD);
        let mut now = Instant::ZERO;
        for i in 0..(SAMPLES_MAX as u64 + 50) {
            now = now + SAMPLE_PERIOD;
            t.on_timer(now, None, i, 2 * i);
        }
        let samples = t.report();
        assert_eq!(samples.len(), SAMPLES_MAX);
        let last = samples.last().expect("samples were taken");
        assert_eq!(last.bytes_in, SAMPLES_MAX as u64 + 49);
        assert_eq!(last.uptime_ms, now.as_nanos() / 1_000_000);
        assert!(samples.windows(2).all(|w| w[0].uptime_ms < w[1].uptime_ms));
    }

    #[test]
    fn a_late_loop_takes_one_sample_not_the_missed_ones() {
        let mut t = Throughput::default();
        t.on_timer(Instant::ZERO, None, 0, 0);
        let late = Instant::ZERO + Duration::from_secs(30);
        t.on_timer(late, None, 10, 10);
        assert_eq!(t.report().len(), 2);
        assert_eq!(t.due(), late + SAMPLE_PERIOD);
    }
}

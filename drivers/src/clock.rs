//! The driver's clocks: the OS monotonic clock mapped onto the engine's [`Instant`], and the
//! calendar clock the engine receives as `Input::WallClock`.

use std::time::{SystemTime, UNIX_EPOCH};

use weft_engine::{Duration, Instant};

/// Monotonic time as the engine counts it: nanoseconds since the driver started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose origin (engine `Instant(0)`) is now.
    pub fn start() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The engine's `now`.
    pub fn now(&self) -> Instant {
        Instant(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The OS instant of an engine instant, for sleeping until it.
    pub fn to_std(&self, at: Instant) -> std::time::Instant {
        let after = std::time::Duration::from_nanos(at.as_nanos());
        // Far-future deadlines that overflow the OS clock are clamped to a day from now.
        self.origin
            .checked_add(after)
            .unwrap_or_else(|| std::time::Instant::now() + std::time::Duration::from_secs(86_400))
    }

    /// How long from now until `at`; zero if it has passed.
    pub fn until(&self, at: Instant) -> std::time::Duration {
        std::time::Duration::from_nanos(at.saturating_since(self.now()).as_nanos())
    }
}

/// Calendar time in Unix milliseconds, or `None` if the system clock is before 1970.
pub fn unix_ms() -> Option<u64> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// How often the driver re-sends the wall clock to the engine.
pub const WALL_CLOCK_PERIOD: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_advances_and_maps_back_to_the_os_clock() {
        let clock = Clock::start();
        let a = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = clock.now();
        assert!(b.saturating_since(a) >= Duration::from_millis(2));
        let os = clock.to_std(b);
        assert!(os <= std::time::Instant::now());
        assert_eq!(clock.until(a), std::time::Duration::ZERO);
    }

    #[test]
    fn unix_ms_is_after_2020() {
        assert!(unix_ms().is_some_and(|ms| ms > 1_577_836_800_000));
    }
}

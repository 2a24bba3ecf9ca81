//! Times as people read them in human output: "in 14 s", "3 min ago", "up 2 h 5 min". JSON
//! output keeps the exact numbers (Unix ms, ms).

use std::time::{SystemTime, UNIX_EPOCH};

/// A span of `ms` milliseconds in its largest whole units: `850 ms`, `14 s`, `3 min 20 s`,
/// `2 h 5 min`, `4 d 3 h` (the smaller unit left out when it is zero, rounded down).
pub fn span(ms: u64) -> String {
    const S: u64 = 1000;
    const MIN: u64 = 60 * S;
    const H: u64 = 60 * MIN;
    const D: u64 = 24 * H;
    let two = |big: u64, big_name: &str, small: u64, small_name: &str| {
        let (b, s) = (ms / big, ms % big / small);
        if s == 0 {
            format!("{b} {big_name}")
        } else {
            format!("{b} {big_name} {s} {small_name}")
        }
    };
    match ms {
        0..S => format!("{ms} ms"),
        S..MIN => format!("{} s", ms / S),
        MIN..H => two(MIN, "min", S, "s"),
        H..D => two(H, "h", MIN, "min"),
        _ => two(D, "d", H, "h"),
    }
}

/// How far `unix_ms` is from `now_unix_ms`: `in 14 s`, `3 min ago`, or `now` within a
/// millisecond.
pub fn relative(unix_ms: u64, now_unix_ms: u64) -> String {
    match unix_ms.cmp(&now_unix_ms) {
        std::cmp::Ordering::Greater => format!("in {}", span(unix_ms - now_unix_ms)),
        std::cmp::Ordering::Less => format!("{} ago", span(now_unix_ms - unix_ms)),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// This machine's wall clock, Unix ms (0 for a clock set before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_their_largest_units() {
        assert_eq!(span(0), "0 ms");
        assert_eq!(span(999), "999 ms");
        assert_eq!(span(14_900), "14 s");
        assert_eq!(span(180_000), "3 min");
        assert_eq!(span(200_500), "3 min 20 s");
        assert_eq!(span(3_600_000), "1 h");
        assert_eq!(span(7_500_000), "2 h 5 min");
        assert_eq!(span(3 * 86_400_000 + 7_200_000), "3 d 2 h");
    }

    #[test]
    fn relative_times_say_which_way() {
        assert_eq!(relative(1_014_000, 1_000_000), "in 14 s");
        assert_eq!(relative(1_000_000, 1_180_000), "3 min ago");
        assert_eq!(relative(5, 5), "now");
    }
}

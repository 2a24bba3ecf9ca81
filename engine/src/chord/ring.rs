//! Arithmetic on the 64-bit identifier ring.

/// Whether `x` lies in the open interval (`a`, `b`) going clockwise; when `a == b` that is
/// the whole ring but `a`.
pub fn between(a: u64, x: u64, b: u64) -> bool {
    if a < b {
        a < x && x < b
    } else {
        x != a && (x > a || x < b)
    }
}

/// Whether `x` lies in the half-open interval (`a`, `b`]; when `a == b` that is the whole ring.
pub fn in_half_open(a: u64, x: u64, b: u64) -> bool {
    x == b || between(a, x, b) || a == b
}

/// The clockwise distance from `a` to `b`.
pub fn distance(a: u64, b: u64) -> u64 {
    b.wrapping_sub(a)
}

/// Where finger `i` starts: `id + 2^i`.
pub fn finger_start(id: u64, i: usize) -> u64 {
    id.wrapping_add(1u64 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_wrap_around_zero() {
        assert!(between(10, 11, 20));
        assert!(!between(10, 10, 20));
        assert!(!between(10, 20, 20));
        assert!(between(u64::MAX - 1, u64::MAX, 3));
        assert!(between(u64::MAX - 1, 0, 3));
        assert!(!between(u64::MAX - 1, 3, 3));
        assert!(between(5, 6, 5) && between(5, 4, 5) && !between(5, 5, 5));
        assert!(in_half_open(10, 20, 20) && !in_half_open(10, 10, 20));
        assert!(in_half_open(5, 5, 5) && in_half_open(5, 9, 5));
        assert!(in_half_open(u64::MAX, 0, 0));
        assert_eq!(distance(u64::MAX, 1), 2);
        assert_eq!(finger_start(u64::MAX, 0), 0);
    }
}

//! Seeded randomness: one root seed, a child seed per node and per fault source, and the few
//! distributions the simulator draws from.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A child seed for `(label, index)` under `root`: BLAKE3 of the three, so child streams are
/// independent and adding a source never shifts another's numbers.
pub fn child_seed(root: u64, label: &str, index: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&root.to_le_bytes());
    h.update(label.as_bytes());
    h.update(&[0]);
    h.update(&index.to_le_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

/// A seeded random stream.
#[derive(Debug, Clone)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The stream for child `(label, index)` of `root`.
    pub fn child(root: u64, label: &str, index: u64) -> SimRng {
        SimRng::new(child_seed(root, label, index))
    }

    /// A uniform u64.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: unbiased enough for simulation (bias < n / 2^64).
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Exponentially distributed with mean `mean` (same unit), rounded down.
    pub fn exp(&mut self, mean: u64) -> u64 {
        if mean == 0 {
            return 0;
        }
        let u = 1.0 - self.unit();
        (-(u.ln()) * mean as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_stable_and_distinct() {
        assert_eq!(child_seed(1, "node", 2), child_seed(1, "node", 2));
        assert_ne!(child_seed(1, "node", 2), child_seed(1, "node", 3));
        assert_ne!(child_seed(1, "node", 2), child_seed(2, "node", 2));
        assert_ne!(child_seed(1, "node", 2), child_seed(1, "link", 2));
    }

    #[test]
    fn distributions_stay_in_range_and_have_the_right_mean() {
        let mut r = SimRng::new(7);
        let mut sum = 0;
        for _ in 0..20_000 {
            assert!(r.below(10) < 10);
            let b = r.between(3, 5);
            assert!((3..=5).contains(&b));
            sum += r.exp(1000);
        }
        let mean = sum / 20_000;
        assert!((900..1100).contains(&mean), "{mean}");
    }
}

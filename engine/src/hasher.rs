//! A fixed (unseeded) hasher for maps keyed by values that are already uniform hashes, so map
//! iteration order is the same on every run and machine.

use core::hash::{BuildHasherDefault, Hasher};

/// Folds the written bytes into a u64, then mixes it. Unseeded: the same on every run.
#[derive(Default, Clone, Copy)]
pub(crate) struct FixedHasher(u64);

impl Hasher for FixedHasher {
    /// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit, so the
    /// table's bucket index (low bits) and tag (high bits) are both well mixed.
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

/// A deterministic `hashbrown` map.
pub(crate) type FixedMap<K, V> = hashbrown::HashMap<K, V, BuildHasherDefault<FixedHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn keys_differing_in_one_byte_spread_over_buckets() {
        let build = BuildHasherDefault::<FixedHasher>::default();
        let mut buckets = [0u32; 64];
        for i in 0..6400u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            buckets[(build.hash_one((id, 1u64)) & 63) as usize] += 1;
        }
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 60 && *max < 140, "{min}..{max}");
    }
}

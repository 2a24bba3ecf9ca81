//! A fixed (unseeded) hasher for maps keyed by values that are already uniform hashes, so map
//! iteration order is the same on every run and machine.

use core::hash::{BuildHasherDefault, Hasher};

/// Folds the written bytes into a u64; keys here (node ids) are BLAKE3 outputs already.
#[derive(Default, Clone, Copy)]
pub(crate) struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn finish(&self) -> u64 {
        self.0
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

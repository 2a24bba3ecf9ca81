//! Keyed hashing for the engine's hash maps: SipHash-1-3 (std's own `HashMap` hasher), keyed
//! with a 128-bit secret drawn from the node's seed. A peer chooses many of the keys these
//! maps hold (paths, node ids, incarnations, cascade ids): with a hash it could compute, it
//! could make them all collide and turn every lookup into a scan of the table (HashDoS). The
//! key derives from the node's secret key, so no peer knows it, and is a pure function of the
//! config, so a run replays. Nothing iterates these maps in an order that reaches an output
//! (SPEC.md §15): they are looked up, or swept whole.

use core::hash::BuildHasher;

use siphasher::sip::SipHasher13;

/// The hasher of the engine's maps and tables: SipHash-1-3 under a secret key ([`hash_key`];
/// the default, all zeros, is for tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HashKey {
    k0: u64,
    k1: u64,
}

impl BuildHasher for HashKey {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// A `hashbrown` map hashed with a [`HashKey`].
pub(crate) type KeyedMap<K, V> = hashbrown::HashMap<K, V, HashKey>;

/// The hash key of a protocol whose seed is `seed` (the seed's own bytes never serve as the
/// key: BLAKE3 derives it).
pub(crate) fn hash_key(seed: &[u8; 32]) -> HashKey {
    let derived = blake3::derive_key("weft engine hash key v1", seed);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&derived[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    HashKey {
        k0: word(0),
        k1: word(1),
    }
}

/// `value` hashed with `key`.
pub(crate) fn hash_with<T: core::hash::Hash + ?Sized>(key: &HashKey, value: &T) -> u64 {
    key.hash_one(value)
}

/// `hash_with(key, &s[..cut])` for each of `cuts` (ascending byte offsets into `s`), hashing
/// `s` once: SipHash takes its input as a stream, and a `str` hashes as its bytes then `0xff`,
/// so each prefix's hash is the state after its bytes, finished with that byte. A path's
/// directories are looked up this way in time linear in the path, not in its length times its
/// depth.
pub(crate) fn prefix_hashes<'a>(
    key: &HashKey,
    s: &'a str,
    cuts: impl IntoIterator<Item = usize> + 'a,
) -> impl Iterator<Item = u64> + 'a {
    use core::hash::Hasher;
    let mut state = key.build_hasher();
    let mut at = 0;
    cuts.into_iter().map(move |cut| {
        let cut = cut.clamp(at, s.len());
        state.write(&s.as_bytes()[at..cut]);
        at = cut;
        let mut h = state;
        h.write_u8(0xff);
        h.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    quickcheck::quickcheck! {
        /// The incremental hashes are the plain ones, for any string cut anywhere.
        fn prefix_hashes_are_the_prefixes_hashes(s: String, cuts: Vec<usize>, seed: u8) -> bool {
            let key = hash_key(&[seed; 32]);
            let mut cuts: Vec<usize> = cuts
                .into_iter()
                .map(|c| c % (s.len() + 1))
                .filter(|&c| s.is_char_boundary(c))
                .chain(s.match_indices('/').map(|(i, _)| i))
                .chain([s.len()])
                .collect();
            cuts.sort_unstable();
            prefix_hashes(&key, &s, cuts.clone())
                .zip(&cuts)
                .all(|(h, &c)| h == hash_with(&key, &s[..c]))
        }
    }

    #[test]
    fn keys_differing_in_one_byte_spread_over_buckets() {
        let key = hash_key(&[3; 32]);
        let mut buckets = [0u32; 64];
        for i in 0..6400u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            buckets[(hash_with(&key, &(id, 1u64)) & 63) as usize] += 1;
        }
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 60 && *max < 140, "{min}..{max}");
    }

    #[test]
    fn the_hash_depends_on_the_key() {
        let (a, b) = (hash_key(&[1; 32]), hash_key(&[2; 32]));
        assert_eq!(
            hash_with(&a, "path"),
            hash_with(&hash_key(&[1; 32]), "path")
        );
        assert_ne!(hash_with(&a, "path"), hash_with(&b, "path"));
    }
}

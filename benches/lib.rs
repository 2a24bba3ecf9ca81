//! criterion benches over weft's protocol, engine and simulator; see `benches/`.

/// `len` pseudo-random bytes (xorshift): the same every run, and incompressible, as hashes
/// or ids would be.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

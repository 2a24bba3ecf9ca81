//! Opportunistic lz4 compression of payloads, with a hard cap on decompressed size.
//!
//! A compressed payload is a `u32` big-endian decompressed length followed by one lz4 block.
//! The length is checked against [`PAYLOAD_BYTES_MAX`] before anything is allocated, and the
//! block must inflate to exactly that length.

use crate::error::ProtocolError;
use crate::frame::PAYLOAD_BYTES_MAX;

/// Payloads shorter than this are never compressed. Measured on the payloads weft sends
/// (`cargo bench --bench compress`): below 256 bytes lz4 almost never shrinks them by more
/// than a few bytes, and every failed try costs about half a microsecond.
pub const COMPRESS_PAYLOAD_BYTES_MIN: usize = 256;

/// Bytes in front of the lz4 block: the decompressed length.
pub const COMPRESSED_PREFIX_BYTES: usize = 4;

/// Compresses `payload` if, and only if, the result (prefix included) is strictly smaller.
pub fn compress_if_smaller(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < COMPRESS_PAYLOAD_BYTES_MIN || payload.len() > PAYLOAD_BYTES_MAX {
        return None;
    }
    let bound = lz4_flex::block::get_maximum_output_size(payload.len());
    let mut out = vec![0u8; COMPRESSED_PREFIX_BYTES + bound];
    // payload.len() <= PAYLOAD_BYTES_MAX < u32::MAX, checked above.
    out[..COMPRESSED_PREFIX_BYTES].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    let written =
        lz4_flex::block::compress_into(payload, &mut out[COMPRESSED_PREFIX_BYTES..]).ok()?;
    let total = COMPRESSED_PREFIX_BYTES + written;
    if total >= payload.len() {
        return None;
    }
    out.truncate(total);
    Some(out)
}

/// Inflates a compressed payload, refusing anything that would exceed [`PAYLOAD_BYTES_MAX`].
pub fn decompress(compressed: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let Some((prefix, block)) = compressed.split_first_chunk::<COMPRESSED_PREFIX_BYTES>() else {
        return Err(ProtocolError::Truncated {
            needed: COMPRESSED_PREFIX_BYTES,
            have: compressed.len(),
        });
    };
    let size = u32::from_be_bytes(*prefix) as usize;
    if size > PAYLOAD_BYTES_MAX {
        return Err(ProtocolError::DecompressedTooLarge {
            size: size as u64,
            max: PAYLOAD_BYTES_MAX as u64,
        });
    }
    // lz4 expands at most 255:1; a block that small cannot honestly inflate to `size`, so refuse
    // before allocating (a compression bomb announcing 16 MiB in a few bytes).
    if size > block.len().saturating_mul(255).saturating_add(16) {
        return Err(ProtocolError::BadCompression);
    }
    let mut out = vec![0u8; size];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(n) if n == size => Ok(out),
        _ => Err(ProtocolError::BadCompression),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitive_payload_shrinks_and_round_trips() {
        let payload = vec![7u8; 4096];
        let packed = compress_if_smaller(&payload).expect("4 KiB of one byte compresses");
        assert!(packed.len() < 100);
        assert_eq!(decompress(&packed).unwrap(), payload);
    }

    #[test]
    fn incompressible_or_short_payload_is_left_alone() {
        assert!(compress_if_smaller(b"short").is_none());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(compress_if_smaller(&noise).is_none());
    }

    #[test]
    fn announced_size_over_the_cap_is_refused_before_allocating() {
        let mut bomb = ((PAYLOAD_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        bomb.extend_from_slice(&[0u8; 8]);
        assert!(matches!(
            decompress(&bomb),
            Err(ProtocolError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_block_is_bad_compression() {
        let mut packed = compress_if_smaller(&[1u8; 1000]).unwrap();
        let last = packed.len() - 1;
        packed.truncate(last);
        assert_eq!(decompress(&packed), Err(ProtocolError::BadCompression));
        assert!(matches!(
            decompress(&[0, 0]),
            Err(ProtocolError::Truncated { .. })
        ));
    }
}

//! py2p's base58 integers: `base58.b58encode_int` / `b58decode_int` (Bitcoin alphabet), as
//! py2p uses them for protocol ids, node ids and chord keys.
//!
//! An integer is written most significant digit first with no padding; zero is `"1"`. Here an
//! integer is its big-endian bytes, so `bs58` (which maps leading zero bytes to leading `'1'`s)
//! gives the same string once leading zero bytes are dropped.

use super::error::P2ptError;

/// Longest base58 integer [`decode_int`] accepts: 128 characters (750 bits; a sha384 node id
/// takes at most 66).
pub const P2PT_BASE58_CHARS_MAX: usize = 128;

/// `b58encode_int` of the big-endian unsigned integer `be` (any length, leading zeros allowed).
pub fn encode_int(be: &[u8]) -> String {
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    if first == be.len() {
        return "1".to_owned();
    }
    bs58::encode(&be[first..]).into_string()
}

/// `b58decode_int`: the integer's minimal big-endian bytes (empty for zero). Leading `'1'`s
/// are zeros, as in py2p; an empty string is zero, as in py2p.
pub fn decode_int(s: &str) -> Result<Vec<u8>, P2ptError> {
    if s.len() > P2PT_BASE58_CHARS_MAX {
        return Err(P2ptError::Base58("longer than P2PT_BASE58_CHARS_MAX"));
    }
    let mut be = bs58::decode(s)
        .into_vec()
        .map_err(|_| P2ptError::Base58("not in the Bitcoin alphabet"))?;
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    be.drain(..first);
    Ok(be)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_one_and_small_values_are_digits() {
        assert_eq!(encode_int(&[]), "1");
        assert_eq!(encode_int(&[0, 0]), "1");
        assert_eq!(encode_int(&[57]), "z");
        assert_eq!(encode_int(&[58]), "21");
        assert_eq!(decode_int("1").unwrap(), Vec::<u8>::new());
        assert_eq!(decode_int("").unwrap(), Vec::<u8>::new());
        assert_eq!(
            decode_int("0021").err(),
            Some(P2ptError::Base58("not in the Bitcoin alphabet"))
        );
        assert_eq!(decode_int("1121").unwrap(), vec![58]);
    }

    #[test]
    fn overlong_strings_are_refused() {
        let s = "2".repeat(P2PT_BASE58_CHARS_MAX + 1);
        assert!(matches!(decode_int(&s), Err(P2ptError::Base58(_))));
        assert!(decode_int(&s[1..]).is_ok());
    }
}

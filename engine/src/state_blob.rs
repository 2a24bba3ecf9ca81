//! The framing every state blob the engine hands the host shares (SPEC.md §8.11, §19.11,
//! §20.8): a magic line naming the blob's kind and version, the postcard encoding of its
//! contents, and the BLAKE3-256 hash of both. A blob that is cut, damaged, of another kind or
//! version, or longer than its contents is never taken for state.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of the hash at the end of a blob.
pub(crate) const HASH_BYTES: usize = 32;

/// `contents` as a blob of the kind and version `magic` names.
pub(crate) fn seal<T: Serialize + ?Sized>(magic: &[u8], contents: &T) -> Bytes {
    let mut blob = magic.to_vec();
    // Serializing the engine's state into a Vec cannot fail: no maps, every sequence sized.
    blob.extend(postcard::to_allocvec(contents).unwrap_or_default());
    let hash = blake3::hash(&blob);
    blob.extend_from_slice(hash.as_bytes());
    Bytes::from(blob)
}

/// The contents of `blob`, or `None` unless it is a whole, intact blob that starts with
/// `magic` and holds exactly one `T`.
pub(crate) fn open<T: DeserializeOwned>(blob: &[u8], magic: &[u8]) -> Option<T> {
    let (body, hash) = blob.split_at_checked(blob.len().checked_sub(HASH_BYTES)?)?;
    if blake3::hash(body).as_bytes() != hash {
        return None;
    }
    match postcard::take_from_bytes::<T>(body.strip_prefix(magic)?) {
        Ok((contents, [])) => Some(contents),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8] = b"weft test v1\n";

    #[test]
    fn a_blob_opens_only_whole_intact_and_of_its_kind() {
        let contents = (7u64, vec![String::from("a"), String::from("bc")]);
        let blob = seal(MAGIC, &contents);
        assert_eq!(open::<(u64, Vec<String>)>(&blob, MAGIC), Some(contents));
        for cut in [0, 1, MAGIC.len(), blob.len() - 1] {
            assert_eq!(
                open::<(u64, Vec<String>)>(&blob[..cut], MAGIC),
                None,
                "cut {cut}"
            );
        }
        let mut flipped = blob.to_vec();
        flipped[MAGIC.len() + 1] ^= 1;
        assert_eq!(open::<(u64, Vec<String>)>(&flipped, MAGIC), None);
        assert_eq!(open::<(u64, Vec<String>)>(&blob, b"weft test v2\n"), None);
        // Intact, but with a byte left over after the contents.
        let mut longer = MAGIC.to_vec();
        longer.extend(postcard::to_allocvec(&(7u64, Vec::<String>::new())).unwrap());
        longer.push(0);
        let hash = blake3::hash(&longer);
        longer.extend_from_slice(hash.as_bytes());
        assert_eq!(open::<(u64, Vec<String>)>(&longer, MAGIC), None);
    }
}

//! Strict decoding: a message's postcard payload decodes whole, within
//! [`PAYLOAD_BYTES_MAX`], or is refused with a typed error naming why (SPEC.md §4).

use serde::Deserialize;

use crate::code::Code;
use crate::error::ProtocolError;
use crate::frame::PAYLOAD_BYTES_MAX;

/// Decodes one postcard value that must use every byte of `payload`.
pub(crate) fn strict<'a, T: Deserialize<'a>>(
    code: Code,
    payload: &'a [u8],
) -> Result<T, ProtocolError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(ProtocolError::DecompressedTooLarge {
            size: payload.len() as u64,
            max: PAYLOAD_BYTES_MAX as u64,
        });
    }
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(ProtocolError::MalformedPayload {
            code,
            reason: "trailing bytes after the message",
        }),
        Err(e) => Err(ProtocolError::MalformedPayload {
            code,
            reason: postcard_reason(e),
        }),
    }
}

/// Why postcard refused a payload, in words (a typed error's reason).
pub(crate) fn postcard_reason(e: postcard::Error) -> &'static str {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => "payload ends inside a field",
        postcard::Error::DeserializeBadVarint => "bad varint",
        postcard::Error::DeserializeBadBool => "bad bool",
        postcard::Error::DeserializeBadUtf8 => "string is not UTF-8",
        postcard::Error::DeserializeBadOption => "bad option tag",
        // serde reports an unknown variant index as a custom error.
        postcard::Error::DeserializeBadEnum | postcard::Error::SerdeDeCustom => {
            "unknown enum variant or out-of-range value"
        }
        _ => "payload does not decode",
    }
}

/// A sequence of `T` decoded keeping at most `keep` elements: those after are decoded too (a
/// malformed one is still refused, and the input is consumed as for the whole list) and
/// dropped. Given one more than a list's limit, the limit check after decoding refuses a
/// longer list exactly as before, while a payload of millions of small elements (a few
/// bytes each on the wire, many more in memory) never takes memory in proportion.
pub(crate) fn keep_at_most<'de, D, T>(d: D, keep: usize) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Kept<T> {
        keep: usize,
        of: core::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Kept<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.keep));
            while let Some(element) = seq.next_element::<T>()? {
                if kept.len() < self.keep {
                    kept.push(element);
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_seq(Kept {
        keep,
        of: core::marker::PhantomData,
    })
}

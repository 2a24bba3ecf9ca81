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

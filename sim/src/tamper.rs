//! A lying peer's wire: blocks that do not match the hashes they are sent under.

use bytes::Bytes;
use weft_engine::protocol::{Code, FrameDecoder, HereIs, Message, ReplicaMessage};

/// `bytes` (whole plaintext frames) with the first data byte of every uncompressed HEREIS
/// flipped, so a frame keeps its length; anything that is not whole frames goes unchanged.
/// How many blocks were changed is the second value.
pub fn blocks(bytes: Bytes) -> (Bytes, u64) {
    let mut dec = FrameDecoder::default();
    dec.push(bytes.clone());
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = 0;
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => {
                let tampered = (f.code() == Code::HEREIS && !f.flags().compressed())
                    .then(|| f.payload().ok())
                    .flatten()
                    .and_then(|payload| match Message::decode(Code::HEREIS, &payload) {
                        Ok(Message::Replica(ReplicaMessage::HereIs(h))) if !h.data.is_empty() => {
                            let mut data = h.data.to_vec();
                            data[0] ^= 0x5a;
                            let m = Message::Replica(ReplicaMessage::HereIs(HereIs {
                                data: &data,
                                ..h
                            }));
                            Some(m.to_frame(false).into_bytes())
                        }
                        _ => None,
                    });
                changed += u64::from(tampered.is_some());
                out.extend_from_slice(tampered.as_ref().unwrap_or(f.bytes()));
            }
            Ok(None) if dec.buffered_len() == 0 => return (Bytes::from(out), changed),
            _ => return (bytes, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::protocol::{FolderId, Ping};

    #[test]
    fn only_a_heres_data_changes_and_every_frame_keeps_its_length() {
        let data = vec![7u8; 300];
        let here = Message::Replica(ReplicaMessage::HereIs(HereIs {
            folder: FolderId([1; 16]),
            hash: [2; 32],
            offset: 0,
            data: &data,
        }))
        .to_frame(false)
        .into_bytes();
        let ping = Message::Ping(Ping { nonce: 9 })
            .to_frame(false)
            .into_bytes();
        let wire = Bytes::from([ping.to_vec(), here.to_vec()].concat());
        let (out, changed) = blocks(wire.clone());
        assert_eq!(changed, 1);
        assert_eq!(out.len(), wire.len());
        assert_eq!(out[..ping.len()], wire[..ping.len()]);
        assert_ne!(out, wire);
        // A cut frame: unchanged.
        let cut = wire.slice(..wire.len() - 1);
        assert_eq!(blocks(cut.clone()), (cut, 0));
    }
}

//! py2p's flags (`py2p/flags.py`): main flags, sub-flags. Compression codes are on
//! [`super::Method`].

/// The first element of a message: how it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MainFlag(pub u8);

impl MainFlag {
    /// Relayed to every peer (a "waterfall").
    pub const BROADCAST: Self = Self(0x00);
    /// Link maintenance: compression lists and resend requests; never delivered.
    pub const RENEGOTIATE: Self = Self(0x01);
    /// To one peer.
    pub const WHISPER: Self = Self(0x02);
    /// Reserved by py2p, never sent.
    pub const PING: Self = Self(0x03);
    /// Reserved by py2p, never sent.
    pub const PONG: Self = Self(0x04);

    /// py2p's name for the flag, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "broadcast",
            0x01 => "renegotiate",
            0x02 => "whisper",
            0x03 => "ping",
            0x04 => "pong",
            _ => return None,
        })
    }
}

/// The fourth element of a message: what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubFlag(pub u8);

impl SubFlag {
    /// An application broadcast.
    pub const BROADCAST: Self = Self(0x00);
    /// `renegotiate`: the sender's compression list.
    pub const COMPRESSION: Self = Self(0x01);
    /// An application whisper.
    pub const WHISPER: Self = Self(0x02);
    /// Reserved by py2p.
    pub const PING: Self = Self(0x03);
    /// Reserved by py2p.
    pub const PONG: Self = Self(0x04);
    /// `[node id, protocol id, [host, port], [compression codes]]`.
    pub const HANDSHAKE: Self = Self(0x05);
    /// Chord: a key changed.
    pub const NOTIFY: Self = Self(0x06);
    /// `[[[host, port], node id], ...]`.
    pub const PEERS: Self = Self(0x07);
    /// Mesh: ask for peers (`"*"`) or for one peer's address.
    pub const REQUEST: Self = Self(0x08);
    /// `renegotiate`: send the last message again.
    pub const RESEND: Self = Self(0x09);
    /// Mesh: the answer to a request for one peer.
    pub const RESPONSE: Self = Self(0x0A);
    /// Sync and chord: write a key.
    pub const STORE: Self = Self(0x0B);
    /// Chord: read a key.
    pub const RETRIEVE: Self = Self(0x0C);
    /// Chord: the answer to a read.
    pub const RETRIEVED: Self = Self(0x0D);
    /// Chord: pass a message on.
    pub const FORWARD: Self = Self(0x0E);
    /// Ford (unfinished in py2p).
    pub const NEW_PATHS: Self = Self(0x0F);
    /// Ford (unfinished in py2p).
    pub const REVOKE_PATHS: Self = Self(0x10);
    /// Sync: merge a map into a key's value.
    pub const DELTA: Self = Self(0x11);

    /// py2p's name for the flag, if it has one.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 18] = [
            "broadcast",
            "compression",
            "whisper",
            "ping",
            "pong",
            "handshake",
            "notify",
            "peers",
            "request",
            "resend",
            "response",
            "store",
            "retrieve",
            "retrieved",
            "forward",
            "new_paths",
            "revoke_paths",
            "delta",
        ];
        NAMES.get(usize::from(self.0)).copied()
    }
}

/// py2p reserves every flag value below this one (`flags.reserved = range(0x30)`).
pub const RESERVED_FLAGS_END: u8 = 0x30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_py2p_flags_py() {
        assert_eq!(SubFlag::DELTA.name(), Some("delta"));
        assert_eq!(SubFlag(0x12).name(), None);
        assert_eq!(SubFlag::HANDSHAKE.name(), Some("handshake"));
        assert_eq!(MainFlag::WHISPER.name(), Some("whisper"));
        assert_eq!(MainFlag(5).name(), None);
    }
}

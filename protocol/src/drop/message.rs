//! The drop messages (family 0x05, SPEC.md §24.5).

use serde::{Deserialize, Serialize};

use super::{
    DropFile, DropId, DropManifest, VersionId, DROP_FILES_BATCH_MAX, DROP_FILES_MAX, DROP_HEADS_MAX,
};
use crate::code::Code;
use crate::error::ProtocolError;
use crate::strict::strict;

/// DROP_SUBSCRIBE: the sender wants the drop's new versions pushed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropSubscribe {
    /// The drop.
    pub drop: DropId,
}

/// DROP_UNSUBSCRIBE: the sender no longer wants the drop's versions pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropUnsubscribe {
    /// The drop.
    pub drop: DropId,
}

/// DROP_HEADS: the sender's current heads of the drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropHeads {
    /// The drop.
    pub drop: DropId,
    /// The versions no other held version names as a parent: strictly ascending, at most
    /// [`DROP_HEADS_MAX`]; more than one are branches not merged yet; none, the sender holds
    /// no version.
    pub heads: Vec<VersionId>,
}

/// DROP_GET_VERSION: asks for one version's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropGetVersion {
    /// The drop.
    pub drop: DropId,
    /// The version.
    pub version: VersionId,
}

/// DROP_GET_FILES: asks for a version's file list from index `from` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropGetFiles {
    /// The drop.
    pub drop: DropId,
    /// The version.
    pub version: VersionId,
    /// The index of the first file wanted (0: the first).
    pub from: u32,
}

/// DROP_FILES: files of a version's list, from index `from` on, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropFiles {
    /// The drop.
    pub drop: DropId,
    /// The version.
    pub version: VersionId,
    /// The index of the first file carried.
    pub from: u32,
    /// At most [`DROP_FILES_BATCH_MAX`], paths strictly ascending; none when `from` is at or
    /// past the list's end.
    #[serde(deserialize_with = "files_kept")]
    pub files: Vec<DropFile>,
}

/// DROP_FILES' files, decoded keeping one past [`DROP_FILES_BATCH_MAX`] at most (the limit
/// check then refuses them as before; `strict::keep_at_most`).
fn files_kept<'de, D>(d: D) -> Result<Vec<DropFile>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    crate::strict::keep_at_most(d, DROP_FILES_BATCH_MAX + 1)
}

/// DROP_NOTFOUND: the sender holds no such version (or not its file list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropNotFound {
    /// The drop.
    pub drop: DropId,
    /// The version asked for.
    pub version: VersionId,
}

/// Every drop message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropMessage {
    /// DROP_SUBSCRIBE.
    Subscribe(DropSubscribe),
    /// DROP_UNSUBSCRIBE.
    Unsubscribe(DropUnsubscribe),
    /// DROP_HEADS.
    Heads(DropHeads),
    /// DROP_GET_VERSION.
    GetVersion(DropGetVersion),
    /// DROP_VERSION: one manifest, asked for or pushed (boxed: a manifest is larger than any
    /// other message, and every `Message` would be as large).
    Version(Box<DropManifest>),
    /// DROP_GET_FILES.
    GetFiles(DropGetFiles),
    /// DROP_FILES.
    Files(DropFiles),
    /// DROP_NOTFOUND.
    NotFound(DropNotFound),
}

impl DropMessage {
    /// The drop the message is about.
    pub fn drop_id(&self) -> DropId {
        match self {
            DropMessage::Subscribe(m) => m.drop,
            DropMessage::Unsubscribe(m) => m.drop,
            DropMessage::Heads(m) => m.drop,
            DropMessage::GetVersion(m) => m.drop,
            DropMessage::Version(m) => m.drop,
            DropMessage::GetFiles(m) => m.drop,
            DropMessage::Files(m) => m.drop,
            DropMessage::NotFound(m) => m.drop,
        }
    }

    /// The command code it travels under.
    pub fn code(&self) -> Code {
        match self {
            DropMessage::Subscribe(_) => Code::DROP_SUBSCRIBE,
            DropMessage::Unsubscribe(_) => Code::DROP_UNSUBSCRIBE,
            DropMessage::Heads(_) => Code::DROP_HEADS,
            DropMessage::GetVersion(_) => Code::DROP_GET_VERSION,
            DropMessage::Version(_) => Code::DROP_VERSION,
            DropMessage::GetFiles(_) => Code::DROP_GET_FILES,
            DropMessage::Files(_) => Code::DROP_FILES,
            DropMessage::NotFound(_) => Code::DROP_NOTFOUND,
        }
    }

    /// The payload (uncompressed).
    pub(crate) fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            DropMessage::Subscribe(m) => postcard::to_allocvec(m),
            DropMessage::Unsubscribe(m) => postcard::to_allocvec(m),
            DropMessage::Heads(m) => postcard::to_allocvec(m),
            DropMessage::GetVersion(m) => postcard::to_allocvec(m),
            DropMessage::Version(m) => postcard::to_allocvec(m),
            DropMessage::GetFiles(m) => postcard::to_allocvec(m),
            DropMessage::Files(m) => postcard::to_allocvec(m),
            DropMessage::NotFound(m) => postcard::to_allocvec(m),
        }
    }

    /// Decodes the payload of a frame with a drop code.
    pub(crate) fn decode(code: Code, payload: &[u8]) -> Result<DropMessage, ProtocolError> {
        Ok(match code {
            Code::DROP_SUBSCRIBE => DropMessage::Subscribe(strict(code, payload)?),
            Code::DROP_UNSUBSCRIBE => DropMessage::Unsubscribe(strict(code, payload)?),
            Code::DROP_HEADS => DropMessage::Heads(strict(code, payload)?),
            Code::DROP_GET_VERSION => DropMessage::GetVersion(strict(code, payload)?),
            Code::DROP_VERSION => DropMessage::Version(strict(code, payload)?),
            Code::DROP_GET_FILES => DropMessage::GetFiles(strict(code, payload)?),
            Code::DROP_FILES => DropMessage::Files(strict(code, payload)?),
            Code::DROP_NOTFOUND => DropMessage::NotFound(strict(code, payload)?),
            other => return Err(ProtocolError::UnknownCommand(other.0)),
        })
    }

    /// Why the message breaks a limit of SPEC.md §24.5, if it does. A manifest is checked for
    /// its form only ([`DropManifest::check_form`]); its signature and its place among its
    /// parents are the receiver's to check.
    pub(crate) fn limit_error(&self) -> Option<&'static str> {
        match self {
            DropMessage::Heads(m) if m.heads.len() > DROP_HEADS_MAX => {
                Some("more than DROP_HEADS_MAX heads")
            }
            DropMessage::Heads(m) if !m.heads.windows(2).all(|w| w[0] < w[1]) => {
                Some("heads not strictly ascending")
            }
            DropMessage::Version(m) if m.check_form().is_err() => {
                Some("manifest over a limit, out of order, or with counter 0")
            }
            DropMessage::Files(m) if m.files.len() > DROP_FILES_BATCH_MAX => {
                Some("more than DROP_FILES_BATCH_MAX files")
            }
            DropMessage::Files(m)
                if u64::from(m.from) + m.files.len() as u64 > u64::from(DROP_FILES_MAX) =>
            {
                Some("files past DROP_FILES_MAX")
            }
            DropMessage::Files(m) if !m.files.iter().all(DropFile::within_limits) => {
                Some("a file's path, target or blocks over their limit")
            }
            DropMessage::Files(m) if !m.files.windows(2).all(|w| w[0].path < w[1].path) => {
                Some("file paths not strictly ascending")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drop::{DropOwners, ManifestFields};
    use crate::message::Message;
    use crate::replica::{Block, FileKind};

    fn manifest() -> DropManifest {
        let fields = ManifestFields {
            drop: DropId([1; 32]),
            nonce: [2; 16],
            counter: 4,
            parents: vec![VersionId([3; 32]), VersionId([4; 32])],
            owners: DropOwners {
                primary: crate::ids::PublicKey([5; 32]),
                secondary: vec![crate::ids::PublicKey([6; 32])],
            },
            root: [7; 32],
            files: 2,
            bytes: 300,
        };
        DropManifest::sign(fields, &[8; 32])
    }

    fn files(paths: &[&str]) -> DropFiles {
        DropFiles {
            drop: DropId([1; 32]),
            version: VersionId([9; 32]),
            from: 10,
            files: paths
                .iter()
                .map(|p| DropFile {
                    path: (*p).into(),
                    kind: FileKind::File,
                    mode: 6,
                    size: 300,
                    target: None,
                    blocks: vec![Block {
                        offset: 0,
                        len: 300,
                        hash: [1; 32],
                    }],
                })
                .collect(),
        }
    }

    fn round_trip(m: DropMessage) {
        let payload = Message::Drop(m.clone()).encode_payload();
        assert_eq!(Message::decode(m.code(), &payload), Ok(Message::Drop(m)));
    }

    fn refused(m: DropMessage) {
        let payload = Message::Drop(m.clone()).encode_payload();
        assert!(
            matches!(
                Message::decode(m.code(), &payload),
                Err(ProtocolError::MalformedPayload { .. })
            ),
            "{m:?}"
        );
    }

    #[test]
    fn every_message_round_trips() {
        let drop = DropId([1; 32]);
        let version = VersionId([2; 32]);
        round_trip(DropMessage::Subscribe(DropSubscribe { drop }));
        round_trip(DropMessage::Unsubscribe(DropUnsubscribe { drop }));
        round_trip(DropMessage::Heads(DropHeads {
            drop,
            heads: (0..DROP_HEADS_MAX as u8)
                .map(|i| VersionId([i; 32]))
                .collect(),
        }));
        round_trip(DropMessage::GetVersion(DropGetVersion { drop, version }));
        round_trip(DropMessage::Version(Box::new(manifest())));
        round_trip(DropMessage::GetFiles(DropGetFiles {
            drop,
            version,
            from: u32::MAX,
        }));
        round_trip(DropMessage::Files(files(&["a", "a/b", "b"])));
        round_trip(DropMessage::Files(files(&[])));
        round_trip(DropMessage::NotFound(DropNotFound { drop, version }));
        assert_eq!(DropMessage::Version(Box::new(manifest())).drop_id(), drop);
        // A manifest in a message costs a pointer: `Message` stays as small as before.
        assert!(core::mem::size_of::<DropMessage>() <= 96);
        assert!(core::mem::size_of::<Message<'_>>() <= 216);
    }

    #[test]
    fn limits_are_checked_on_decode() {
        let drop = DropId([1; 32]);
        let heads = |ids: &[u8]| {
            DropMessage::Heads(DropHeads {
                drop,
                heads: ids.iter().map(|&i| VersionId([i; 32])).collect(),
            })
        };
        refused(heads(&[0; DROP_HEADS_MAX + 1]));
        refused(heads(&[2, 1]));
        refused(heads(&[1, 1]));
        let mut m = manifest();
        m.parents.reverse();
        refused(DropMessage::Version(Box::new(m)));
        let mut m = manifest();
        m.counter = 0;
        refused(DropMessage::Version(Box::new(m)));
        let paths: Vec<String> = (0..=DROP_FILES_BATCH_MAX)
            .map(|i| format!("{i:04}"))
            .collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        refused(DropMessage::Files(files(&paths)));
        round_trip(DropMessage::Files(files(&paths[..DROP_FILES_BATCH_MAX])));
        refused(DropMessage::Files(files(&["b", "a"])));
        refused(DropMessage::Files(files(&["a", "a"])));
        let long = "x".repeat(crate::PATH_BYTES_MAX + 1);
        refused(DropMessage::Files(files(&[&long])));
        let mut far = files(&["a", "b"]);
        far.from = DROP_FILES_MAX - 1;
        refused(DropMessage::Files(far.clone()));
        far.from = DROP_FILES_MAX - 2;
        round_trip(DropMessage::Files(far));
        // A symlink's target over the limit.
        let mut link = files(&["l"]);
        link.files[0].kind = FileKind::Symlink;
        link.files[0].target = Some("t".repeat(crate::PATH_BYTES_MAX + 1));
        refused(DropMessage::Files(link));
    }
}

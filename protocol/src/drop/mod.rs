//! Drops (family 0x05, SPEC.md §24): folders shared like a torrent that only their owners may
//! update.
//!
//! A drop is named by its [`DropId`], derived from its primary owner's key and a nonce. Each
//! version is a [`DropManifest`] signed by an owner: it names its parent versions, the owners,
//! and the root hash of its file list ([`DropFile`]s, hashed by [`RootHasher`]). A receiver
//! accepts a version only if [`DropManifest::verify`] and [`check_version`] pass. The
//! messages ([`DropMessage`]) subscribe to a drop, announce its heads, and fetch manifests and
//! file lists; block data travels as replication messages (§22) under
//! [`DropId::folder_id`].

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::PublicKey;
use crate::replica::FolderId;

mod files;
mod manifest;
mod message;

pub use files::*;
pub use manifest::*;
pub use message::*;

/// Most parents one version names.
pub const DROP_PARENTS_MAX: usize = 8;

/// Most secondary owners one version names.
pub const DROP_SECONDARY_OWNERS_MAX: usize = 16;

/// Most heads one DROP_HEADS carries.
pub const DROP_HEADS_MAX: usize = 16;

/// Most files one version lists.
pub const DROP_FILES_MAX: u32 = 1_000_000;

/// Most bytes one version's file list takes encoded (the files' postcard encodings added
/// up): a list is held whole in memory, and a holder serving one against a real manifest
/// (the right count, sizes within its bytes) could otherwise make each file's entry up to
/// `FILE_BLOCKS_MAX` blocks long, gigabytes before the root hash told it apart.
pub const DROP_FILE_LIST_BYTES_MAX: u64 = 256 << 20;

/// Most files one DROP_FILES carries.
pub const DROP_FILES_BATCH_MAX: usize = 256;

/// Most bytes of encoded files a sender puts in one DROP_FILES (more only if one file alone is
/// larger; see [`files_batch_len`]).
pub const DROP_FILES_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Domain separation for [`DropId::derive`].
pub const DROP_ID_DOMAIN: &[u8] = b"weft drop id v1\0";

/// Domain separation for [`DropId::folder_id`].
pub const DROP_FOLDER_DOMAIN: &[u8] = b"weft drop folder v1\0";

/// Domain separation for a manifest's signed bytes ([`DropManifest::signed_bytes`]).
pub const DROP_MANIFEST_DOMAIN: &[u8] = b"weft drop manifest v1\0";

/// Domain separation for a file list's root hash ([`RootHasher`]).
pub const DROP_ROOT_DOMAIN: &[u8] = b"weft drop root v1\0";

/// A drop's name: BLAKE3(`"weft drop id v1\0"` ‖ primary owner's public key ‖ nonce).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct DropId(pub [u8; 32]);

impl DropId {
    /// The id of the drop whose primary owner is `primary`, made with `nonce` (16 random
    /// bytes its creator drew).
    pub fn derive(primary: &PublicKey, nonce: &[u8; 16]) -> DropId {
        let mut h = blake3::Hasher::new();
        h.update(DROP_ID_DOMAIN);
        h.update(&primary.0);
        h.update(nonce);
        DropId(*h.finalize().as_bytes())
    }

    /// The replication folder the drop's blocks travel under: the first 16 bytes of
    /// BLAKE3(`"weft drop folder v1\0"` ‖ drop id).
    pub fn folder_id(&self) -> FolderId {
        let mut h = blake3::Hasher::new();
        h.update(DROP_FOLDER_DOMAIN);
        h.update(&self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        FolderId(id)
    }
}

/// A version of a drop: BLAKE3 of its manifest's signed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct VersionId(pub [u8; 32]);

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for DropId {
    /// All 32 bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for DropId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DropId(")?;
        write_hex(f, &self.0[..8])?;
        f.write_str(")")
    }
}

impl fmt::Display for VersionId {
    /// All 32 bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VersionId(")?;
        write_hex(f, &self.0[..8])?;
        f.write_str(")")
    }
}

/// Why a manifest, a version or a file list is refused (SPEC.md §24.2, §24.3): one variant per
/// rule, in the order the rules are checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// More than [`DROP_PARENTS_MAX`] parents.
    #[error("more than DROP_PARENTS_MAX parents")]
    TooManyParents,
    /// Parents not strictly ascending (or one named twice).
    #[error("parents not strictly ascending")]
    ParentsNotAscending,
    /// More than [`DROP_SECONDARY_OWNERS_MAX`] secondary owners.
    #[error("more than DROP_SECONDARY_OWNERS_MAX secondary owners")]
    TooManySecondaryOwners,
    /// Secondary owners not strictly ascending (or one named twice).
    #[error("secondary owners not strictly ascending")]
    SecondaryOwnersNotAscending,
    /// The primary owner is also listed as a secondary owner.
    #[error("the primary owner is among the secondary owners")]
    PrimaryAmongSecondary,
    /// A manifest with counter 0.
    #[error("counter 0")]
    CounterZero,
    /// A manifest announcing more than [`DROP_FILES_MAX`] files.
    #[error("more than DROP_FILES_MAX files")]
    TooManyFiles,
    /// A file list whose encoding passes [`DROP_FILE_LIST_BYTES_MAX`].
    #[error("a file list of more than DROP_FILE_LIST_BYTES_MAX bytes")]
    FileListTooLarge,
    /// `drop` is not [`DropId::derive`] of the primary owner and the nonce.
    #[error("drop id is not derived from the primary owner and the nonce")]
    WrongDropId,
    /// The signature is not the signer's over the signed bytes (or the key is no key).
    #[error("bad signature")]
    BadSignature,
    /// A parent the new version names was not given.
    #[error("parent {0} not given")]
    MissingParent(VersionId),
    /// A manifest given as a parent that the new version does not name (or given twice).
    #[error("{0} given as a parent but not named")]
    UnexpectedParent(VersionId),
    /// A version without parents whose counter is not 1.
    #[error("a version without parents has counter {0}, not 1")]
    RootCounterNotOne(u64),
    /// A version without parents not signed by its primary owner.
    #[error("a version without parents not signed by the primary owner")]
    RootNotSignedByPrimary,
    /// A parent of another drop (drop id or nonce differ).
    #[error("parent {0} is of another drop")]
    ParentOfAnotherDrop(VersionId),
    /// The counter is not one more than the largest parent counter.
    #[error("counter {got} is not one more than the parents' largest, {parents_max}")]
    CounterNotNext {
        /// The largest counter among the parents.
        parents_max: u64,
        /// The new version's counter.
        got: u64,
    },
    /// The primary owner differs from a parent's.
    #[error("primary owner changed from parent {0}")]
    PrimaryChanged(VersionId),
    /// The signer is not an owner (primary or secondary) in this parent.
    #[error("signer is not an owner in parent {0}")]
    SignerNotOwner(VersionId),
    /// The owners differ from this parent's and the signer is not the primary owner.
    #[error("a secondary owner changed the owners of parent {0}")]
    OwnersChangedBySecondary(VersionId),
    /// A file whose path is not strictly after the previous file's.
    #[error("file {path:?} not strictly after the previous path")]
    FilesNotAscending {
        /// The path out of order.
        path: String,
    },
    /// A file that breaks a rule of SPEC.md §24.3.
    #[error("file {path:?}: {why}")]
    BadFile {
        /// The file's path (cut to [`crate::PATH_BYTES_MAX`] bytes).
        path: String,
        /// Which rule.
        why: &'static str,
    },
    /// The files' sizes add up past `u64::MAX`.
    #[error("file sizes add up past u64::MAX")]
    TooManyBytes,
    /// A path, or a symlink's target, that the path rules of SPEC.md §22.3 refuse: the
    /// receiver's check (the engine's `check_path`, `check_symlink_target`), not
    /// [`RootHasher`]'s.
    #[error("file {path:?}: path refused ({refusal:?})")]
    BadPath {
        /// The file's path.
        path: String,
        /// Which rule.
        refusal: crate::replica::PathRefusal,
    },
    /// The file list's root hash is not the manifest's.
    #[error("root hash differs from the manifest's")]
    RootMismatch,
    /// The file list does not hold as many files as the manifest says.
    #[error("{got} files, the manifest says {expected}")]
    FileCountMismatch {
        /// The manifest's `files`.
        expected: u32,
        /// Files pushed.
        got: u32,
    },
    /// The file list's sizes do not add up to the manifest's `bytes`.
    #[error("{got} bytes, the manifest says {expected}")]
    ByteCountMismatch {
        /// The manifest's `bytes`.
        expected: u64,
        /// The sizes' sum.
        got: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_domain_separated_hashes_shown_in_hex() {
        let key = PublicKey([7; 32]);
        let nonce = [9; 16];
        let id = DropId::derive(&key, &nonce);
        let mut input = b"weft drop id v1\0".to_vec();
        input.extend_from_slice(&[7; 32]);
        input.extend_from_slice(&[9; 16]);
        assert_eq!(id.0, *blake3::hash(&input).as_bytes());
        assert_ne!(id, DropId::derive(&key, &[8; 16]));
        assert_ne!(id, DropId::derive(&PublicKey([6; 32]), &nonce));

        let mut folder = b"weft drop folder v1\0".to_vec();
        folder.extend_from_slice(&id.0);
        assert_eq!(id.folder_id().0, blake3::hash(&folder).as_bytes()[..16]);

        let shown = id.to_string();
        assert_eq!(shown.len(), 64);
        assert!(shown.starts_with(&format!("{:02x}", id.0[0])));
        assert_eq!(format!("{:?}", id), format!("DropId({})", &shown[..16]));
        let v = VersionId([0xAB; 32]);
        assert_eq!(v.to_string(), "ab".repeat(32));
        assert_eq!(format!("{v:?}"), format!("VersionId({})", "ab".repeat(8)));
    }
}

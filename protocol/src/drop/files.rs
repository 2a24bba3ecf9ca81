//! A drop version's file list and its root hash (SPEC.md §24.3).

use serde::{Deserialize, Serialize};

use super::{
    DropError, DropManifest, DROP_FILES_BATCH_BYTES_MAX, DROP_FILES_BATCH_MAX, DROP_FILES_MAX,
    DROP_FILE_LIST_BYTES_MAX, DROP_ROOT_DOMAIN,
};
use crate::message::put_varint;
use crate::replica::{Block, FileKind, BLOCK_BYTES_MAX, FILE_BLOCKS_MAX, PATH_BYTES_MAX};
use crate::table::varint_len;

/// One path of a drop version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DropFile {
    /// `/`-separated, relative, NFC, as replication's paths (SPEC.md §22.3); at most
    /// [`PATH_BYTES_MAX`] bytes.
    pub path: String,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// The owner's permission bits, 0 to 7 (read 4, write 2, execute 1).
    pub mode: u8,
    /// Size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// A symlink's target (`None` for the other kinds).
    pub target: Option<String>,
    /// The blocks, in order, tiling `size` exactly (none for directories, symlinks and empty
    /// files); at most [`FILE_BLOCKS_MAX`].
    pub blocks: Vec<Block>,
}

impl DropFile {
    /// Which rule of SPEC.md §24.3 the file breaks, if any (the order of paths apart).
    pub fn fault(&self) -> Option<&'static str> {
        if self.path.is_empty() {
            return Some("empty path");
        }
        if self.path.len() > PATH_BYTES_MAX {
            return Some("path longer than PATH_BYTES_MAX");
        }
        if self.mode > 7 {
            return Some("mode over 7");
        }
        match (self.kind, &self.target) {
            (FileKind::Symlink, None) => return Some("a symlink without a target"),
            (FileKind::Symlink, Some(t)) if t.is_empty() => return Some("empty symlink target"),
            (FileKind::Symlink, Some(t)) if t.len() > PATH_BYTES_MAX => {
                return Some("symlink target longer than PATH_BYTES_MAX")
            }
            (FileKind::File | FileKind::Directory, Some(_)) => {
                return Some("a target on a file or directory")
            }
            _ => {}
        }
        if self.kind != FileKind::File && (self.size != 0 || !self.blocks.is_empty()) {
            return Some("a directory or symlink with a size or blocks");
        }
        if self.blocks.len() > FILE_BLOCKS_MAX {
            return Some("more than FILE_BLOCKS_MAX blocks");
        }
        let mut end = 0u64;
        for b in &self.blocks {
            if b.offset != end || b.len == 0 || b.len > BLOCK_BYTES_MAX {
                return Some("blocks do not tile the size");
            }
            end += u64::from(b.len);
        }
        (end != self.size).then_some("blocks do not tile the size")
    }

    /// Whether the lists and strings are within the limits a DROP_FILES is decoded with
    /// (SPEC.md §24.5): path and target at most [`PATH_BYTES_MAX`] bytes, at most
    /// [`FILE_BLOCKS_MAX`] blocks.
    pub(crate) fn within_limits(&self) -> bool {
        self.path.len() <= PATH_BYTES_MAX
            && self
                .target
                .as_ref()
                .is_none_or(|t| t.len() <= PATH_BYTES_MAX)
            && self.blocks.len() <= FILE_BLOCKS_MAX
    }

    /// Appends the file's postcard encoding ([`encoded_len`](Self::encoded_len) bytes) to
    /// `out`, written field by field: the bytes postcard's derived encoding writes (tested),
    /// without its byte-at-a-time arrays (the root hash encodes every file of a list).
    fn encode_into(&self, out: &mut Vec<u8>) {
        let put_str = |out: &mut Vec<u8>, s: &str| {
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        };
        put_str(out, &self.path);
        out.push(match self.kind {
            FileKind::File => 0,
            FileKind::Directory => 1,
            FileKind::Symlink => 2,
        });
        out.push(self.mode);
        put_varint(out, self.size);
        match &self.target {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                put_str(out, t);
            }
        }
        put_varint(out, self.blocks.len() as u64);
        for b in &self.blocks {
            put_varint(out, b.offset);
            put_varint(out, b.len.into());
            out.extend_from_slice(&b.hash);
        }
    }

    /// The length of the file's postcard encoding, bytes.
    pub fn encoded_len(&self) -> usize {
        let string = |s: &str| varint_len(s.len() as u64) + s.len();
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| varint_len(b.offset) + varint_len(b.len.into()) + 32)
            .sum();
        string(&self.path)
            + 1 // kind: a variant index below 128
            + 1 // mode: one raw byte
            + varint_len(self.size)
            + 1 + self.target.as_deref().map_or(0, string)
            + varint_len(self.blocks.len() as u64)
            + blocks
    }
}

/// How many of `files`, from the first, a sender puts in one DROP_FILES: at most
/// [`DROP_FILES_BATCH_MAX`], and no more than fit in [`DROP_FILES_BATCH_BYTES_MAX`] bytes of
/// encoded files, but at least one (a single file within the limits always fits a frame).
pub fn files_batch_len(files: &[DropFile]) -> usize {
    let mut bytes = 0usize;
    let mut n = 0;
    for file in files.iter().take(DROP_FILES_BATCH_MAX) {
        bytes += file.encoded_len();
        if n > 0 && bytes > DROP_FILES_BATCH_BYTES_MAX {
            break;
        }
        n += 1;
    }
    n
}

/// Hashes a version's file list as it arrives, batch by batch, and checks it against the
/// manifest (SPEC.md §24.3): root = BLAKE3(`"weft drop root v1\0"` ‖ each file's postcard
/// encoding, in strictly ascending bytewise order of paths).
#[derive(Debug, Clone)]
pub struct RootHasher {
    hasher: blake3::Hasher,
    last_path: String,
    files: u32,
    bytes: u64,
    /// The files' encodings added up, bytes.
    encoded_bytes: u64,
    /// Encoded files not yet hashed: BLAKE3 hashes long inputs many times faster than a
    /// file's few dozen bytes at a time.
    pending: Vec<u8>,
}

/// How many encoded bytes [`RootHasher`] gathers before it hashes them.
const HASH_CHUNK_BYTES: usize = 64 * 1024;

impl Default for RootHasher {
    fn default() -> Self {
        RootHasher::new()
    }
}

impl RootHasher {
    /// A hasher of an empty list.
    pub fn new() -> RootHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DROP_ROOT_DOMAIN);
        RootHasher {
            hasher,
            last_path: String::new(),
            files: 0,
            bytes: 0,
            encoded_bytes: 0,
            pending: Vec::new(),
        }
    }

    /// Adds the next file: refused if it is not strictly after the previous one, if the list
    /// would exceed [`DROP_FILES_MAX`] files, `u64::MAX` bytes or
    /// [`DROP_FILE_LIST_BYTES_MAX`] bytes encoded, or if it breaks a rule of
    /// [`DropFile::fault`]. A refused file changes nothing.
    pub fn push(&mut self, file: &DropFile) -> Result<(), DropError> {
        if self.files >= DROP_FILES_MAX {
            return Err(DropError::TooManyFiles);
        }
        if self.files > 0 && file.path.as_bytes() <= self.last_path.as_bytes() {
            return Err(DropError::FilesNotAscending {
                path: cut(&file.path),
            });
        }
        if let Some(why) = file.fault() {
            return Err(DropError::BadFile {
                path: cut(&file.path),
                why,
            });
        }
        let bytes = self
            .bytes
            .checked_add(file.size)
            .ok_or(DropError::TooManyBytes)?;
        let encoded_bytes = self.encoded_bytes + file.encoded_len() as u64;
        if encoded_bytes > DROP_FILE_LIST_BYTES_MAX {
            return Err(DropError::FileListTooLarge);
        }
        file.encode_into(&mut self.pending);
        if self.pending.len() >= HASH_CHUNK_BYTES {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        self.last_path.clear();
        self.last_path.push_str(&file.path);
        self.files += 1;
        self.bytes = bytes;
        self.encoded_bytes = encoded_bytes;
        Ok(())
    }

    /// Adds a batch of files, in order, up to the first refused one.
    pub fn push_batch(&mut self, files: &[DropFile]) -> Result<(), DropError> {
        files.iter().try_for_each(|f| self.push(f))
    }

    /// Files pushed so far.
    pub fn files(&self) -> u32 {
        self.files
    }

    /// Their sizes added up, bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The root hash of the files pushed so far.
    pub fn root(&self) -> [u8; 32] {
        let mut hasher = self.hasher.clone();
        hasher.update(&self.pending);
        *hasher.finalize().as_bytes()
    }

    /// Whether the list pushed is the one `manifest` names: as many files, as many bytes, the
    /// same root hash (checked in that order).
    pub fn finish(self, manifest: &DropManifest) -> Result<(), DropError> {
        if self.files != manifest.files {
            return Err(DropError::FileCountMismatch {
                expected: manifest.files,
                got: self.files,
            });
        }
        if self.bytes != manifest.bytes {
            return Err(DropError::ByteCountMismatch {
                expected: manifest.bytes,
                got: self.bytes,
            });
        }
        if self.root() != manifest.root {
            return Err(DropError::RootMismatch);
        }
        Ok(())
    }
}

/// `path` cut to at most [`PATH_BYTES_MAX`] bytes at a character boundary.
fn cut(path: &str) -> String {
    let mut end = path.len().min(PATH_BYTES_MAX);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drop::{DropId, DropOwners, ManifestFields};
    use crate::ids::PublicKey;

    fn file(path: &str, size: u64) -> DropFile {
        let blocks = (0..size.div_ceil(1000))
            .map(|i| Block {
                offset: i * 1000,
                len: (size - i * 1000).min(1000) as u32,
                hash: [i as u8; 32],
            })
            .collect();
        DropFile {
            path: path.into(),
            kind: FileKind::File,
            mode: 6,
            size,
            target: None,
            blocks,
        }
    }

    fn manifest(root: [u8; 32], files: u32, bytes: u64) -> DropManifest {
        let fields = ManifestFields {
            drop: DropId::default(),
            nonce: [0; 16],
            counter: 1,
            parents: vec![],
            owners: DropOwners {
                primary: PublicKey::default(),
                secondary: vec![],
            },
            root,
            files,
            bytes,
        };
        DropManifest::sign(fields, &[4; 32])
    }

    #[test]
    fn the_root_hashes_every_file_in_order() {
        let files = [file("a", 2500), file("a/b", 0), file("b", 10)];
        let mut h = RootHasher::new();
        h.push(&files[0]).unwrap();
        h.push_batch(&files[1..]).unwrap();
        let mut expected = b"weft drop root v1\0".to_vec();
        for f in &files {
            let encoded = postcard::to_allocvec(f).unwrap();
            assert_eq!(encoded.len(), f.encoded_len());
            let mut by_hand = vec![];
            f.encode_into(&mut by_hand);
            assert_eq!(by_hand, encoded);
            expected.extend_from_slice(&encoded);
        }
        assert_eq!(h.root(), *blake3::hash(&expected).as_bytes());
        assert_eq!((h.files(), h.bytes()), (3, 2510));
        let root = h.root();
        assert_eq!(h.clone().finish(&manifest(root, 3, 2510)), Ok(()));
        assert_eq!(
            h.clone().finish(&manifest(root, 4, 2510)),
            Err(DropError::FileCountMismatch {
                expected: 4,
                got: 3
            })
        );
        assert_eq!(
            h.clone().finish(&manifest(root, 3, 2511)),
            Err(DropError::ByteCountMismatch {
                expected: 2511,
                got: 2510
            })
        );
        assert_eq!(
            h.finish(&manifest([0; 32], 3, 2510)),
            Err(DropError::RootMismatch)
        );
        assert_eq!(
            RootHasher::new().root(),
            *blake3::hash(b"weft drop root v1\0").as_bytes()
        );
    }

    #[test]
    fn a_long_list_hashes_as_its_encodings_in_one_piece() {
        // About 300 KiB of encoded files: hashed in several 64 KiB pieces.
        let files: Vec<DropFile> = (0..3000).map(|i| file(&format!("{i:05}"), 2500)).collect();
        let mut h = RootHasher::new();
        let mut expected = DROP_ROOT_DOMAIN.to_vec();
        for (i, f) in files.iter().enumerate() {
            h.push(f).unwrap();
            expected.extend_from_slice(&postcard::to_allocvec(f).unwrap());
            if i % 997 == 0 {
                assert_eq!(h.root(), *blake3::hash(&expected).as_bytes(), "after {i}");
            }
        }
        assert!(expected.len() > 4 * HASH_CHUNK_BYTES);
        assert_eq!(h.root(), *blake3::hash(&expected).as_bytes());
    }

    /// Files of one-byte blocks, `FILE_BLOCKS_MAX` each (some 9 MiB encoded), fit a modest
    /// manifest's bytes: the list is refused once its encoding would pass
    /// `DROP_FILE_LIST_BYTES_MAX`, not held on until its root is known.
    #[test]
    fn a_list_past_its_encoded_bytes_is_refused() {
        let size = FILE_BLOCKS_MAX as u64;
        let blocks = (0..size)
            .map(|offset| Block {
                offset,
                len: 1,
                hash: [7; 32],
            })
            .collect();
        let mut f = DropFile {
            path: String::new(),
            kind: FileKind::File,
            mode: 6,
            size,
            target: None,
            blocks,
        };
        let per_file = f.encoded_len() as u64 + 4;
        let fit = DROP_FILE_LIST_BYTES_MAX / per_file;
        let mut h = RootHasher::new();
        for i in 0..fit {
            f.path = format!("f{i:04}");
            h.push(&f).expect("within the bound");
        }
        let before = h.root();
        f.path = format!("f{fit:04}");
        assert_eq!(h.push(&f), Err(DropError::FileListTooLarge));
        assert_eq!(h.root(), before, "a refused file changes nothing");
        assert_eq!(h.files(), fit as u32);
    }

    #[test]
    fn out_of_order_and_bad_files_are_refused_and_change_nothing() {
        let mut h = RootHasher::new();
        h.push(&file("b", 1)).unwrap();
        let before = h.root();
        for path in ["b", "a", "B"] {
            assert_eq!(
                h.push(&file(path, 1)),
                Err(DropError::FilesNotAscending { path: path.into() })
            );
        }
        let mut bad = file("c", 2000);
        bad.blocks[1].offset += 1;
        assert!(matches!(h.push(&bad), Err(DropError::BadFile { .. })));
        let mut huge = file("d", 0);
        huge.size = u64::MAX;
        huge.kind = FileKind::File;
        huge.blocks = vec![];
        assert!(matches!(h.push(&huge), Err(DropError::BadFile { .. })));
        assert_eq!((h.root(), h.files(), h.bytes()), (before, 1, 1));
        let mut full = RootHasher::new();
        full.files = DROP_FILES_MAX;
        assert_eq!(full.push(&file("z", 0)), Err(DropError::TooManyFiles));
        let mut sum = RootHasher::new();
        sum.bytes = u64::MAX;
        assert_eq!(sum.push(&file("z", 1)), Err(DropError::TooManyBytes));
    }

    #[test]
    fn every_file_rule_is_checked() {
        let dir = DropFile {
            path: "d".into(),
            kind: FileKind::Directory,
            mode: 7,
            size: 0,
            target: None,
            blocks: vec![],
        };
        let link = DropFile {
            kind: FileKind::Symlink,
            target: Some("../x".into()),
            ..dir.clone()
        };
        assert_eq!(dir.fault(), None);
        assert_eq!(link.fault(), None);
        assert_eq!(file("f", 0).fault(), None);
        assert_eq!(file("f", 3001).fault(), None);
        let bad: Vec<DropFile> = vec![
            DropFile {
                path: String::new(),
                ..dir.clone()
            },
            DropFile {
                path: "x".repeat(PATH_BYTES_MAX + 1),
                ..dir.clone()
            },
            DropFile {
                mode: 8,
                ..dir.clone()
            },
            DropFile {
                target: None,
                ..link.clone()
            },
            DropFile {
                target: Some(String::new()),
                ..link.clone()
            },
            DropFile {
                target: Some("x".repeat(PATH_BYTES_MAX + 1)),
                ..link.clone()
            },
            DropFile {
                target: Some("x".into()),
                ..dir.clone()
            },
            DropFile {
                size: 1,
                ..dir.clone()
            },
            DropFile {
                blocks: file("f", 5).blocks,
                ..link.clone()
            },
            DropFile {
                size: 4,
                ..file("f", 5)
            },
            DropFile {
                size: 6,
                ..file("f", 5)
            },
            {
                let mut f = file("f", 5);
                f.blocks[0].len = 0;
                f
            },
            {
                let mut f = file("f", 0);
                f.size = u64::from(BLOCK_BYTES_MAX) + 1;
                f.blocks = vec![Block {
                    offset: 0,
                    len: BLOCK_BYTES_MAX + 1,
                    hash: [0; 32],
                }];
                f
            },
        ];
        for (i, f) in bad.iter().enumerate() {
            assert!(f.fault().is_some(), "case {i}: {f:?}");
        }
        // A long path in an error is cut at a character boundary.
        let long = "é".repeat(PATH_BYTES_MAX);
        assert_eq!(cut(&long).len(), PATH_BYTES_MAX);
        assert!(cut("ab") == "ab");
    }

    #[test]
    fn batches_are_cut_by_count_and_bytes() {
        let small: Vec<DropFile> = (0..300).map(|i| file(&format!("{i:04}"), 10)).collect();
        assert_eq!(files_batch_len(&small), DROP_FILES_BATCH_MAX);
        assert_eq!(files_batch_len(&small[..3]), 3);
        assert_eq!(files_batch_len(&[]), 0);
        // Files of 10 000 blocks (about 450 KiB encoded each): two fit, and one always goes.
        let big: Vec<DropFile> = (0..5).map(|i| file(&format!("{i}"), 10_000_000)).collect();
        let each = big[0].encoded_len();
        assert!(each > DROP_FILES_BATCH_BYTES_MAX / 3 && each < DROP_FILES_BATCH_BYTES_MAX / 2);
        assert_eq!(files_batch_len(&big), 2);
        let mut huge = file("h", 0);
        huge.blocks = (0..30_000)
            .map(|i| Block {
                offset: i * 1000,
                len: 1000,
                hash: [0; 32],
            })
            .collect();
        assert!(huge.encoded_len() > DROP_FILES_BATCH_BYTES_MAX);
        assert_eq!(files_batch_len(&[huge.clone(), huge]), 1);
    }

    #[test]
    fn the_largest_file_fits_one_drop_files_frame() {
        let largest = DropFile {
            path: "p".repeat(PATH_BYTES_MAX),
            kind: FileKind::Symlink,
            mode: u8::MAX,
            size: u64::MAX,
            target: Some("t".repeat(PATH_BYTES_MAX)),
            blocks: vec![
                Block {
                    offset: u64::MAX,
                    len: u32::MAX,
                    hash: [0xFF; 32],
                };
                FILE_BLOCKS_MAX
            ],
        };
        assert_eq!(largest.encoded_len(), 12_328_980, "SPEC.md §24.5");
        let encoded = postcard::to_allocvec(&largest).unwrap();
        assert_eq!(encoded.len(), 12_328_980);
        let mut by_hand = vec![];
        largest.encode_into(&mut by_hand);
        assert!(by_hand == encoded, "encode_into writes postcard's bytes");
        // drop 32, version 32, from (at most 5), count 1, the file: under the payload limit.
        assert!(32 + 32 + 5 + 1 + largest.encoded_len() <= crate::PAYLOAD_BYTES_MAX);
    }
}

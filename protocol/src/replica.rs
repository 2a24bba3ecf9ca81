//! Folder replication messages (family 0x04, SPEC.md §22): the ploppy protocol with its gaps
//! closed.
//!
//! Every message names the folder it is about. A node announces its index of a folder
//! (IHAVE, IMOVED, IDELETED, in batches), answers LIST with its index or the changes since a
//! sequence number, and serves blocks by their blake3 hash (IWANT, answered by HEREIS pieces
//! or NOTFOUND). A path it will not take from a peer is answered with IREFUSE; the rest of that
//! peer's index still applies.

use core::cmp::Ordering;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ProtocolError;
use crate::frame::PAYLOAD_BYTES_MAX;
use crate::strict::{postcard_reason, strict};

/// Most entries one IHAVE, IMOVED or IDELETED carries.
pub const INDEX_ENTRIES_MAX: usize = 256;

/// An index message's entries, decoded keeping one past `INDEX_ENTRIES_MAX` at most (the
/// limit check then refuses them as before; `strict::keep_at_most`).
fn index_entries_kept<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    crate::strict::keep_at_most(d, INDEX_ENTRIES_MAX + 1)
}

/// Most blocks one file entry lists (a file of more blocks is not shared).
pub const FILE_BLOCKS_MAX: usize = 262_144;

/// Longest path or symlink target, in bytes.
pub const PATH_BYTES_MAX: usize = 4096;

/// Most counters one version vector holds.
pub const VERSION_COUNTERS_MAX: usize = 256;

/// A version on the wire, its counters decoded keeping one past [`VERSION_COUNTERS_MAX`] at
/// most (the limit check then refuses it as before; `strict::keep_at_most`). A counter is two
/// bytes on the wire at least and sixteen in memory: without the bound one frame could hold
/// millions. Only the wire's fields are decoded so: a node's own index may hold a version
/// merged past the limit (never announced), and its persisted state keeps it whole.
fn version_kept<'de, D>(d: D) -> Result<Version, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Kept {
        #[serde(deserialize_with = "counters_kept")]
        counters: Vec<Counter>,
    }
    fn counters_kept<'de, D>(d: D) -> Result<Vec<Counter>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        crate::strict::keep_at_most(d, VERSION_COUNTERS_MAX + 1)
    }
    Kept::deserialize(d).map(|k| Version {
        counters: k.counters,
    })
}

/// [`FileEntry`] as the wire's messages decode it: the same fields, its version by
/// [`version_kept`] (serde's remote derive: a field list to keep in step with the struct's,
/// which the round-trip tests check).
#[derive(Deserialize)]
#[serde(remote = "FileEntry")]
struct FileEntryOnWire {
    path: String,
    kind: FileKind,
    target: String,
    mode: u8,
    size: u64,
    mtime_ms: i64,
    modified_by: u64,
    #[serde(deserialize_with = "version_kept")]
    version: Version,
    sequence: u64,
    blocks: Vec<Block>,
}

/// One IHAVE entry as decoded from the wire.
struct WireEntry(FileEntry);

impl<'de> Deserialize<'de> for WireEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WireEntry, D::Error> {
        FileEntryOnWire::deserialize(d).map(WireEntry)
    }
}

/// IHAVE's entries: [`index_entries_kept`], each decoded as [`FileEntryOnWire`].
fn wire_entries_kept<'de, D>(d: D) -> Result<Vec<FileEntry>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let kept: Vec<WireEntry> = index_entries_kept(d)?;
    Ok(kept.into_iter().map(|e| e.0).collect())
}

/// Most hashes one IWANT or NOTFOUND carries.
pub const WANT_HASHES_MAX: usize = 256;

/// Largest block, bytes: the largest tier's average (4 MiB) times four.
pub const BLOCK_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Most data bytes one HEREIS carries: a block longer than this goes in several pieces.
pub const HEREIS_DATA_BYTES_MAX: usize = 256 * 1024 - 1024;

/// A shared folder, named the same on every node that holds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct FolderId(pub [u8; 16]);

impl FolderId {
    /// The id of the folder called `name`: the first 16 bytes of
    /// BLAKE3(`"weft folder v1\0"` ‖ name).
    pub fn from_name(name: &str) -> FolderId {
        let mut h = blake3::Hasher::new();
        h.update(b"weft folder v1\0");
        h.update(name.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        FolderId(id)
    }
}

impl fmt::Debug for FolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FolderId({self})")
    }
}

impl fmt::Display for FolderId {
    /// All 16 bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A block's blake3 hash.
pub type BlockHash = [u8; 32];

/// One block of a file: where it lies and its blake3 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Block {
    /// Offset in the file, bytes.
    pub offset: u64,
    /// Length, bytes (1 to [`BLOCK_BYTES_MAX`]).
    pub len: u32,
    /// BLAKE3-256 of the block's bytes.
    pub hash: BlockHash,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link, stored as a link and never followed.
    Symlink,
}

/// One node's counter in a version vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Counter {
    /// The node's short id: the first eight bytes of its node id, big-endian.
    pub node: u64,
    /// How many changes of the path that node has made (never 0 on the wire).
    pub value: u64,
}

/// A version vector: one counter per node that changed the path, in ascending `node` order,
/// none zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Version {
    /// The counters, ascending by node.
    pub counters: Vec<Counter>,
}

/// How two versions relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// The same version.
    Equal,
    /// The left one descends from the right one.
    Newer,
    /// The right one descends from the left one.
    Older,
    /// Neither descends from the other: concurrent changes, a conflict.
    Concurrent,
}

impl Version {
    /// `node`'s counter (0 if it never changed the path).
    pub fn get(&self, node: u64) -> u64 {
        self.counters
            .binary_search_by_key(&node, |c| c.node)
            .map_or(0, |i| self.counters[i].value)
    }

    /// This version with `node`'s counter one higher: the version of a change made by `node`.
    pub fn bumped(&self, node: u64) -> Version {
        let mut v = self.clone();
        match v.counters.binary_search_by_key(&node, |c| c.node) {
            Ok(i) => v.counters[i].value = v.counters[i].value.saturating_add(1),
            Err(i) => v.counters.insert(i, Counter { node, value: 1 }),
        }
        v
    }

    /// This version with `node`'s counter set one above the larger of its own and `floor`:
    /// the version of a change made by `node` whose counters elsewhere reached `floor`.
    pub fn bumped_past(&self, node: u64, floor: u64) -> Version {
        let mut v = self.clone();
        match v.counters.binary_search_by_key(&node, |c| c.node) {
            Ok(i) => v.counters[i].value = v.counters[i].value.max(floor).saturating_add(1),
            Err(i) => v.counters.insert(
                i,
                Counter {
                    node,
                    value: floor.saturating_add(1),
                },
            ),
        }
        v
    }

    /// The least version that descends from both: each node's larger counter.
    pub fn merged(&self, other: &Version) -> Version {
        let (mut a, mut b) = (
            self.counters.iter().peekable(),
            other.counters.iter().peekable(),
        );
        let mut out = Vec::with_capacity(self.counters.len().max(other.counters.len()));
        loop {
            let next = match (a.peek().copied(), b.peek().copied()) {
                (None, None) => break,
                (Some(&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&y)) => {
                    b.next();
                    y
                }
                (Some(&x), Some(&y)) => match x.node.cmp(&y.node) {
                    Ordering::Less => {
                        a.next();
                        x
                    }
                    Ordering::Greater => {
                        b.next();
                        y
                    }
                    Ordering::Equal => {
                        a.next();
                        b.next();
                        Counter {
                            node: x.node,
                            value: x.value.max(y.value),
                        }
                    }
                },
            };
            out.push(next);
        }
        Version { counters: out }
    }

    /// How this version relates to `other`.
    pub fn compare(&self, other: &Version) -> VersionOrder {
        let (mut newer, mut older) = (false, false);
        let (mut a, mut b) = (
            self.counters.iter().peekable(),
            other.counters.iter().peekable(),
        );
        loop {
            let (x, y) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    newer = true;
                    break;
                }
                (None, Some(_)) => {
                    older = true;
                    break;
                }
                (Some(x), Some(y)) => (**x, **y),
            };
            match x.node.cmp(&y.node) {
                Ordering::Less => {
                    newer = true;
                    a.next();
                }
                Ordering::Greater => {
                    older = true;
                    b.next();
                }
                Ordering::Equal => {
                    match x.value.cmp(&y.value) {
                        Ordering::Greater => newer = true,
                        Ordering::Less => older = true,
                        Ordering::Equal => {}
                    }
                    a.next();
                    b.next();
                }
            }
        }
        match (newer, older) {
            (false, false) => VersionOrder::Equal,
            (true, false) => VersionOrder::Newer,
            (false, true) => VersionOrder::Older,
            (true, true) => VersionOrder::Concurrent,
        }
    }

    /// Whether the counters are strictly ascending by node, none zero, at most
    /// [`VERSION_COUNTERS_MAX`].
    pub fn is_well_formed(&self) -> bool {
        self.counters.len() <= VERSION_COUNTERS_MAX
            && self.counters.iter().all(|c| c.value > 0)
            && self.counters.windows(2).all(|w| w[0].node < w[1].node)
    }
}

/// One path of a node's index as IHAVE announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileEntry {
    /// `/`-separated, relative, NFC (SPEC.md §22.3).
    pub path: String,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// A symlink's target (empty for the other kinds).
    pub target: String,
    /// The owner's permission bits, 0 to 7 (read 4, write 2, execute 1).
    pub mode: u8,
    /// Size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// Modification time, ms since the Unix epoch (may be negative).
    pub mtime_ms: i64,
    /// The short id of the node that made this version.
    pub modified_by: u64,
    /// The version vector.
    pub version: Version,
    /// The sender's index sequence number of this record.
    pub sequence: u64,
    /// The blocks, in order, tiling `size` exactly (none for directories, symlinks and empty
    /// files).
    pub blocks: Vec<Block>,
}

impl FileEntry {
    /// Whether the entry keeps the limits of SPEC.md §22.2 that a receiver checks when it
    /// decodes it (its path and target at most `PATH_BYTES_MAX` bytes, at most
    /// `FILE_BLOCKS_MAX` blocks, a well-formed version): one that does not makes the whole
    /// message malformed.
    pub fn is_within_limits(&self) -> bool {
        self.path.len() <= PATH_BYTES_MAX
            && self.target.len() <= PATH_BYTES_MAX
            && self.blocks.len() <= FILE_BLOCKS_MAX
            && self.version.is_well_formed()
    }
}

/// LIST: asks for the receiver's index of `folder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// The folder.
    pub folder: FolderId,
    /// The receiver's index id as the sender last saw it (0: never).
    pub index_id: u64,
    /// Only records with a higher sequence number, if `index_id` is still the receiver's
    /// (0: everything).
    pub since: u64,
}

/// IHAVE: files of the sender's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IHave {
    /// The folder.
    pub folder: FolderId,
    /// The sender's index id.
    pub index_id: u64,
    /// At most [`INDEX_ENTRIES_MAX`], ascending by sequence.
    #[serde(deserialize_with = "wire_entries_kept")]
    pub entries: Vec<FileEntry>,
}

/// One move: `from` is gone (a deletion with version `from_version`) and its content is at
/// `to.path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The old path.
    pub from: String,
    /// The version of the deletion of `from`.
    #[serde(deserialize_with = "version_kept")]
    pub from_version: Version,
    /// The file at its new path.
    #[serde(deserialize_with = "FileEntryOnWire::deserialize")]
    pub to: FileEntry,
}

/// IMOVED: renames the sender made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IMoved {
    /// The folder.
    pub folder: FolderId,
    /// The sender's index id.
    pub index_id: u64,
    /// At most [`INDEX_ENTRIES_MAX`].
    #[serde(deserialize_with = "index_entries_kept")]
    pub entries: Vec<Moved>,
}

/// One deletion record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deleted {
    /// The path.
    pub path: String,
    /// What was deleted: file, directory or symlink.
    pub kind: FileKind,
    /// The short id of the node that deleted it.
    pub modified_by: u64,
    /// The version of the deletion.
    #[serde(deserialize_with = "version_kept")]
    pub version: Version,
    /// The sender's index sequence number of this record.
    pub sequence: u64,
}

/// IDELETED: deletions the sender knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IDeleted {
    /// The folder.
    pub folder: FolderId,
    /// The sender's index id.
    pub index_id: u64,
    /// At most [`INDEX_ENTRIES_MAX`].
    #[serde(deserialize_with = "index_entries_kept")]
    pub entries: Vec<Deleted>,
}

/// IWANT: blocks the sender asks for, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IWant {
    /// The folder.
    pub folder: FolderId,
    /// At most [`WANT_HASHES_MAX`].
    pub hashes: Vec<BlockHash>,
}

/// HEREIS: a piece of a block, its bytes raw after the header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HereIs<'a> {
    /// The folder.
    pub folder: FolderId,
    /// The block's hash.
    pub hash: BlockHash,
    /// Where the piece starts in the block.
    pub offset: u32,
    /// The piece's bytes (1 to [`HEREIS_DATA_BYTES_MAX`]): the rest of the payload.
    pub data: &'a [u8],
}

/// NOTFOUND: blocks the sender was asked for and no longer has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotFound {
    /// The folder.
    pub folder: FolderId,
    /// At most [`WANT_HASHES_MAX`].
    pub hashes: Vec<BlockHash>,
}

/// Why a node will not take a path from a peer (SPEC.md §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathRefusal {
    /// Empty, absolute (`/…`), or with an empty component (`a//b`, a trailing `/`).
    NotRelative,
    /// A `.` or `..` component.
    DotComponent,
    /// A NUL or a `\` byte, or a control character.
    BadCharacter,
    /// Not in Unicode normalization form C.
    NotNormalized,
    /// Longer than [`PATH_BYTES_MAX`], or a component over 255 bytes.
    TooLong,
    /// Inside the reserved `.weft` folder.
    Reserved,
    /// Differs only in case from a path the receiver holds.
    CaseClash,
    /// A symlink target that is absolute or leaves the folder.
    SymlinkEscapes,
    /// A component of the path is a symlink at the receiver.
    ThroughSymlink,
    /// Fields that do not fit together: blocks that do not tile the size (or one longer than
    /// [`BLOCK_BYTES_MAX`]), a directory with blocks, a mode over 7. (A malformed version never
    /// reaches the receiver's checks: the whole message fails to decode.)
    BadEntry,
}

impl PathRefusal {
    /// Every reason, in wire order (variant index).
    pub const ALL: [PathRefusal; 10] = [
        PathRefusal::NotRelative,
        PathRefusal::DotComponent,
        PathRefusal::BadCharacter,
        PathRefusal::NotNormalized,
        PathRefusal::TooLong,
        PathRefusal::Reserved,
        PathRefusal::CaseClash,
        PathRefusal::SymlinkEscapes,
        PathRefusal::ThroughSymlink,
        PathRefusal::BadEntry,
    ];
}

/// IREFUSE: the receiver will not take `path` from the sender, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IRefuse {
    /// The folder.
    pub folder: FolderId,
    /// The path refused (cut to [`PATH_BYTES_MAX`] bytes at a character boundary).
    pub path: String,
    /// Why.
    pub reason: PathRefusal,
}

/// Every replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaMessage<'a> {
    /// LIST.
    List(List),
    /// IHAVE.
    IHave(IHave),
    /// IMOVED.
    IMoved(IMoved),
    /// IDELETED.
    IDeleted(IDeleted),
    /// IWANT.
    IWant(IWant),
    /// HEREIS.
    HereIs(HereIs<'a>),
    /// NOTFOUND.
    NotFound(NotFound),
    /// IREFUSE.
    IRefuse(IRefuse),
}

/// HEREIS's header fields, before the raw bytes.
#[derive(Serialize, Deserialize)]
struct HereIsHeader {
    folder: FolderId,
    hash: BlockHash,
    offset: u32,
}

impl<'a> ReplicaMessage<'a> {
    /// The folder the message is about.
    pub fn folder(&self) -> FolderId {
        match self {
            ReplicaMessage::List(m) => m.folder,
            ReplicaMessage::IHave(m) => m.folder,
            ReplicaMessage::IMoved(m) => m.folder,
            ReplicaMessage::IDeleted(m) => m.folder,
            ReplicaMessage::IWant(m) => m.folder,
            ReplicaMessage::HereIs(m) => m.folder,
            ReplicaMessage::NotFound(m) => m.folder,
            ReplicaMessage::IRefuse(m) => m.folder,
        }
    }

    /// The command code this message travels under.
    pub fn code(&self) -> Code {
        match self {
            ReplicaMessage::List(_) => Code::LIST,
            ReplicaMessage::IHave(_) => Code::IHAVE,
            ReplicaMessage::IMoved(_) => Code::IMOVED,
            ReplicaMessage::IDeleted(_) => Code::IDELETED,
            ReplicaMessage::IWant(_) => Code::IWANT,
            ReplicaMessage::HereIs(_) => Code::HEREIS,
            ReplicaMessage::NotFound(_) => Code::NOTFOUND,
            ReplicaMessage::IRefuse(_) => Code::IREFUSE,
        }
    }

    /// The payload (uncompressed).
    pub(crate) fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            ReplicaMessage::List(m) => postcard::to_allocvec(m),
            ReplicaMessage::IHave(m) => postcard::to_allocvec(m),
            ReplicaMessage::IMoved(m) => postcard::to_allocvec(m),
            ReplicaMessage::IDeleted(m) => postcard::to_allocvec(m),
            ReplicaMessage::IWant(m) => postcard::to_allocvec(m),
            ReplicaMessage::HereIs(m) => {
                let header = HereIsHeader {
                    folder: m.folder,
                    hash: m.hash,
                    offset: m.offset,
                };
                let mut out = postcard::to_allocvec(&header)?;
                out.extend_from_slice(m.data);
                Ok(out)
            }
            ReplicaMessage::NotFound(m) => postcard::to_allocvec(m),
            ReplicaMessage::IRefuse(m) => postcard::to_allocvec(m),
        }
    }

    /// Decodes the payload of a frame with a replication code.
    pub(crate) fn decode(
        code: Code,
        payload: &'a [u8],
    ) -> Result<ReplicaMessage<'a>, ProtocolError> {
        Ok(match code {
            Code::LIST => ReplicaMessage::List(strict(code, payload)?),
            Code::IHAVE => ReplicaMessage::IHave(strict(code, payload)?),
            Code::IMOVED => ReplicaMessage::IMoved(strict(code, payload)?),
            Code::IDELETED => ReplicaMessage::IDeleted(strict(code, payload)?),
            Code::IWANT => ReplicaMessage::IWant(strict(code, payload)?),
            Code::HEREIS => ReplicaMessage::HereIs(decode_here_is(payload)?),
            Code::NOTFOUND => ReplicaMessage::NotFound(strict(code, payload)?),
            Code::IREFUSE => ReplicaMessage::IRefuse(strict(code, payload)?),
            other => return Err(ProtocolError::UnknownCommand(other.0)),
        })
    }

    /// Why the message breaks a limit of SPEC.md §22.2, if it does. Paths are not checked
    /// here: a bad path is refused by the receiver with IREFUSE, and the rest still applies.
    pub(crate) fn limit_error(&self) -> Option<&'static str> {
        let text_ok = |s: &str| s.len() <= PATH_BYTES_MAX;
        let version_ok = |v: &Version| v.is_well_formed();
        let entry_ok = FileEntry::is_within_limits;
        let ok = match self {
            ReplicaMessage::List(_) => true,
            ReplicaMessage::IHave(m) => {
                m.entries.len() <= INDEX_ENTRIES_MAX && m.entries.iter().all(entry_ok)
            }
            ReplicaMessage::IMoved(m) => {
                m.entries.len() <= INDEX_ENTRIES_MAX
                    && m.entries
                        .iter()
                        .all(|e| text_ok(&e.from) && version_ok(&e.from_version) && entry_ok(&e.to))
            }
            ReplicaMessage::IDeleted(m) => {
                m.entries.len() <= INDEX_ENTRIES_MAX
                    && m.entries
                        .iter()
                        .all(|e| text_ok(&e.path) && version_ok(&e.version))
            }
            ReplicaMessage::IWant(m) => m.hashes.len() <= WANT_HASHES_MAX,
            ReplicaMessage::HereIs(m) => {
                !m.data.is_empty()
                    && m.data.len() <= HEREIS_DATA_BYTES_MAX
                    && u64::from(m.offset) + m.data.len() as u64 <= u64::from(BLOCK_BYTES_MAX)
            }
            ReplicaMessage::NotFound(m) => m.hashes.len() <= WANT_HASHES_MAX,
            ReplicaMessage::IRefuse(m) => text_ok(&m.path),
        };
        (!ok).then_some("replication message over a limit of SPEC.md §22.2")
    }
}

/// HEREIS: the header fields by postcard, then every remaining byte is the piece. A payload
/// over `PAYLOAD_BYTES_MAX` is refused before decoding, as [`strict`] refuses it.
fn decode_here_is(payload: &[u8]) -> Result<HereIs<'_>, ProtocolError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(ProtocolError::DecompressedTooLarge {
            size: payload.len() as u64,
            max: PAYLOAD_BYTES_MAX as u64,
        });
    }
    match postcard::take_from_bytes::<HereIsHeader>(payload) {
        Ok((h, data)) => Ok(HereIs {
            folder: h.folder,
            hash: h.hash,
            offset: h.offset,
            data,
        }),
        Err(e) => Err(ProtocolError::MalformedPayload {
            code: Code::HEREIS,
            reason: postcard_reason(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(u64, u64)]) -> Version {
        Version {
            counters: pairs
                .iter()
                .map(|&(node, value)| Counter { node, value })
                .collect(),
        }
    }

    #[test]
    fn versions_compare_merge_and_bump() {
        let a = v(&[(1, 2), (5, 1)]);
        assert_eq!(a.compare(&a), VersionOrder::Equal);
        assert_eq!(a.bumped(1).compare(&a), VersionOrder::Newer);
        let past = a.bumped_past(1, 7);
        assert_eq!((past.get(1), past.compare(&a)), (8, VersionOrder::Newer));
        assert_eq!(a.bumped_past(1, 0), a.bumped(1));
        assert_eq!(Version::default().bumped_past(9, 4).get(9), 5);
        assert_eq!(a.compare(&a.bumped(9)), VersionOrder::Older);
        let b = a.bumped(3);
        let c = a.bumped(7);
        assert_eq!(b.compare(&c), VersionOrder::Concurrent);
        let m = b.merged(&c);
        assert_eq!(m, v(&[(1, 2), (3, 1), (5, 1), (7, 1)]));
        assert_eq!(m.compare(&b), VersionOrder::Newer);
        assert_eq!(c.compare(&m), VersionOrder::Older);
        assert!(m.is_well_formed());
        assert!(!v(&[(3, 1), (1, 1)]).is_well_formed());
        assert!(!v(&[(3, 0)]).is_well_formed());
        assert_eq!(Version::default().compare(&a), VersionOrder::Older);
    }

    #[test]
    fn every_path_refusal_is_listed_at_its_wire_index() {
        for (i, r) in PathRefusal::ALL.iter().enumerate() {
            let encoded = postcard::to_allocvec(r).expect("a unit variant encodes");
            assert_eq!(encoded, [i as u8], "{r:?}");
        }
    }

    #[test]
    fn hereis_carries_its_bytes_raw_after_the_header() {
        let m = ReplicaMessage::HereIs(HereIs {
            folder: FolderId([7; 16]),
            hash: [9; 32],
            offset: 300,
            data: b"abc",
        });
        let payload = m.encode_payload().expect("encodes");
        assert_eq!(&payload[payload.len() - 3..], b"abc");
        assert_eq!(payload.len(), 16 + 32 + 2 + 3);
        assert_eq!(ReplicaMessage::decode(Code::HEREIS, &payload), Ok(m));
        assert!(ReplicaMessage::decode(Code::HEREIS, &payload[..40]).is_err());
    }
}

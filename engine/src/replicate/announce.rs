//! Announcing the index: every peer that sent LIST gets the records after its cursor, in
//! sequence order, as IHAVE / IDELETED / IMOVED batches of at most `INDEX_ENTRIES_MAX`
//! entries and [`BATCH_BYTES_MAX`] bytes (by each entry's [`entry_bytes_max`]; an entry
//! larger than that goes alone), then every later change the same way. A record over a
//! limit of SPEC.md §22.2 is not announced.

use weft_protocol::{
    Code, Deleted, FileEntry, FolderId, IDeleted, IHave, IMoved, Message, Moved, ReplicaMessage,
    Version, HEADER_BYTES, INDEX_ENTRIES_MAX, PATH_BYTES_MAX,
};

use super::index::Index;
use super::types::Record;
use crate::sending::BULK_FRAME_BYTES_MAX;

/// The entries of one batch, bytes at most, as [`entry_bytes_max`] counts them: with the
/// frame header and the batch's own fields (the folder, the index id and the count, 33 bytes
/// at most) the frame fits a bulk frame, the lane index batches travel in. A batch always
/// holds at least one entry: a file of `FILE_BLOCKS_MAX` blocks, about 12 MiB, still fits in
/// one frame's `PAYLOAD_BYTES_MAX`, and travels as a control frame.
pub(crate) const BATCH_BYTES_MAX: usize = BULK_FRAME_BYTES_MAX - HEADER_BYTES - 64;

/// An entry's bytes on the wire besides its strings, counters and blocks, at most (postcard:
/// ten varints of at most 10 bytes, the mode, the kind).
const ENTRY_FIXED_BYTES_MAX: usize = 128;

/// One version counter on the wire, bytes at most (two u64 varints).
const COUNTER_BYTES_MAX: usize = 20;

/// One block on the wire, bytes at most (a u64 and a u32 varint, the 32-byte hash).
const BLOCK_ENTRY_BYTES_MAX: usize = 10 + 5 + 32;

/// The bytes `r` takes in an IHAVE, IDELETED or IMOVED (with `moved_from`), at most.
pub(crate) fn entry_bytes_max(r: &Record, moved_from: Option<&(String, Version)>) -> usize {
    let e = &r.entry;
    let moved = moved_from.map_or(0, |(from, v)| {
        ENTRY_FIXED_BYTES_MAX + from.len() + v.counters.len() * COUNTER_BYTES_MAX
    });
    ENTRY_FIXED_BYTES_MAX
        + e.path.len()
        + e.target.len()
        + e.version.counters.len() * COUNTER_BYTES_MAX
        + e.blocks.len() * BLOCK_ENTRY_BYTES_MAX
        + moved
}

/// Whether `r` (moved from `moved_from`) keeps the limits a receiver checks when it decodes
/// it (SPEC.md §22.2). One that does not (a version merged or bumped past
/// `VERSION_COUNTERS_MAX` counters: a path changed by more nodes than that) is never sent:
/// every peer would close the link over the whole batch, and again at every reconnection.
fn announceable(r: &Record, moved_from: Option<&(String, Version)>) -> bool {
    r.entry.is_within_limits()
        && moved_from.is_none_or(|(from, v)| from.len() <= PATH_BYTES_MAX && v.is_well_formed())
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Have,
    Deleted,
    Moved,
}

/// The next batch after `cursor`: its code, payload and the new cursor; `None` if the
/// cursor is at the end.
pub(crate) fn next_batch(
    index: &Index,
    folder: FolderId,
    index_id: u64,
    cursor: u64,
) -> Option<(Code, Vec<u8>, u64)> {
    let mut class = None;
    let mut have: Vec<FileEntry> = Vec::new();
    let mut deleted: Vec<Deleted> = Vec::new();
    let mut moved: Vec<Moved> = Vec::new();
    let mut bytes = 0usize;
    let mut last = cursor;
    for (r, moved_from) in index.since(cursor) {
        if !announceable(r, moved_from) {
            continue;
        }
        let c = match (r.deleted, moved_from) {
            (true, _) => Class::Deleted,
            (false, Some(_)) => Class::Moved,
            (false, None) => Class::Have,
        };
        if class.is_some_and(|k| k != c) {
            break;
        }
        let count = have.len() + deleted.len() + moved.len();
        let size = entry_bytes_max(r, moved_from);
        if count >= INDEX_ENTRIES_MAX || (count > 0 && bytes + size > BATCH_BYTES_MAX) {
            break;
        }
        class = Some(c);
        bytes += size;
        last = r.entry.sequence;
        match (c, moved_from) {
            (Class::Deleted, _) => deleted.push(Deleted {
                path: r.entry.path.clone(),
                kind: r.entry.kind,
                modified_by: r.entry.modified_by,
                version: r.entry.version.clone(),
                sequence: r.entry.sequence,
            }),
            (Class::Moved, Some((from, from_version))) => moved.push(Moved {
                from: from.clone(),
                from_version: from_version.clone(),
                to: r.entry.clone(),
            }),
            _ => have.push(r.entry.clone()),
        }
    }
    let message = match class? {
        Class::Have => ReplicaMessage::IHave(IHave {
            folder,
            index_id,
            entries: have,
        }),
        Class::Deleted => ReplicaMessage::IDeleted(IDeleted {
            folder,
            index_id,
            entries: deleted,
        }),
        Class::Moved => ReplicaMessage::IMoved(IMoved {
            folder,
            index_id,
            entries: moved,
        }),
    };
    let code = message.code();
    Some((code, Message::Replica(message).encode_payload(), last))
}

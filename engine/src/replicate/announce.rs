//! Announcing the index: every peer that sent LIST gets the records after its cursor, in
//! sequence order, as IHAVE / IDELETED / IMOVED batches of at most `INDEX_ENTRIES_MAX`
//! entries (and about [`BATCH_BLOCKS_MAX`] blocks), then every later change the same way.

use weft_protocol::{
    Code, Deleted, FileEntry, FolderId, IDeleted, IHave, IMoved, Message, Moved, ReplicaMessage,
    INDEX_ENTRIES_MAX,
};

use super::index::Index;

/// Blocks listed in one batch, about at most (a batch always holds at least one entry).
pub(crate) const BATCH_BLOCKS_MAX: usize = 16_384;

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
    let mut blocks = 0usize;
    let mut last = cursor;
    for (r, moved_from) in index.since(cursor) {
        let c = match (r.deleted, moved_from) {
            (true, _) => Class::Deleted,
            (false, Some(_)) => Class::Moved,
            (false, None) => Class::Have,
        };
        if class.is_some_and(|k| k != c) {
            break;
        }
        let count = have.len() + deleted.len() + moved.len();
        if count >= INDEX_ENTRIES_MAX
            || (count > 0 && blocks + r.entry.blocks.len() > BATCH_BLOCKS_MAX)
        {
            break;
        }
        class = Some(c);
        blocks += r.entry.blocks.len();
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

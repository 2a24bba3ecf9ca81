//! Folder replication (SPEC.md §22), when the peer holds a folder (it sends LIST on a new
//! link): its index in IHAVE batches, blocks served by IWANT/HEREIS, NOTFOUND for a block it
//! does not hold, and a peer that serves it blocks with wrong hashes closed after
//! `mismatches_before_disconnect` (3) of them.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use weft_engine::protocol::{
    Block, BlockHash, ByeReason, Code, Counter, Deleted, Family, FileEntry, FileKind, FolderId,
    HereIs, IDeleted, IHave, IWant, List, Message, ReplicaMessage, Version, BLOCK_BYTES_MAX,
    INDEX_ENTRIES_MAX,
};

use super::super::conn::{span, with_msg, Got};
use super::super::{Ctx, Link, Step, Stop};

/// Corrupt blocks a peer serves before SPEC.md §22.7 closes it.
const MISMATCHES_BEFORE_DISCONNECT: usize = 3;

/// A link on which the peer sent LIST for a folder: the link and the folder.
fn folder_link(ctx: &Ctx) -> Result<(Link, FolderId), Stop> {
    if !ctx.runs(Family::Replication) {
        return Err(Stop::Skip("the peer does not run replication".into()));
    }
    if ctx.sends_list.get() == Some(&false) {
        return Err(Stop::Skip(
            "the peer holds no folder (no LIST on a new link)".into(),
        ));
    }
    let mut link = ctx.link()?;
    let deadline = Instant::now() + ctx.wait;
    loop {
        match link.conn.next(deadline) {
            Got::Frame(f) if f.code() == Code::LIST => {
                let folder = with_msg(&f, |m| match m {
                    Message::Replica(ReplicaMessage::List(l)) => Some(l.folder),
                    _ => None,
                })
                .flatten()
                .ok_or_else(|| "its LIST does not decode".to_string())?;
                let _ = ctx.sends_list.set(true);
                return Ok((link, folder));
            }
            Got::Frame(_) => {}
            Got::Closed => return Err("it closed a new link".to_string().into()),
            Got::Timeout => {
                let _ = ctx.sends_list.set(false);
                return Err(Stop::Skip(format!(
                    "the peer holds no folder (no LIST on a new link within {})",
                    span(ctx.wait)
                )));
            }
        }
    }
}

/// The IHAVE batches that arrive within `wait` of a LIST for everything.
fn index(ctx: &Ctx, link: &mut Link, folder: FolderId) -> Result<Vec<IHave>, String> {
    let list = List {
        folder,
        index_id: 0,
        since: 0,
    };
    link.conn
        .send_msg(&Message::Replica(ReplicaMessage::List(list)), false);
    let frames = link
        .conn
        .collect_until_quiet(ctx.wait, std::time::Duration::from_millis(300));
    let mut batches = Vec::new();
    for f in frames.iter().filter(|f| f.code() == Code::IHAVE) {
        let batch = with_msg(f, |m| match m {
            Message::Replica(ReplicaMessage::IHave(h)) if h.folder == folder => Some(h),
            _ => None,
        })
        .flatten();
        if let Some(b) = batch {
            batches.push(b);
        }
    }
    if link.conn.is_closed() {
        return Err("it closed the link after a LIST".into());
    }
    Ok(batches)
}

/// §22.2, §22.4: a LIST for everything is answered by IHAVE batches of one index id, at most
/// 256 entries each, in ascending sequence order.
pub fn list_answered(ctx: &Ctx) -> Step {
    let (mut link, folder) = folder_link(ctx)?;
    let batches = index(ctx, &mut link, folder)?;
    if batches.is_empty() {
        return Err(Stop::Skip("its index of the folder is empty".into()));
    }
    let id = batches[0].index_id;
    let mut last = 0;
    for b in &batches {
        if b.index_id != id {
            return Err("its IHAVE batches name two index ids".to_string().into());
        }
        if b.entries.len() > INDEX_ENTRIES_MAX {
            return Err("an IHAVE batch over 256 entries".to_string().into());
        }
        for e in &b.entries {
            if e.sequence <= last && last != 0 {
                return Err(format!(
                    "its IHAVE records are not in sequence order ({} after {last})",
                    e.sequence
                )
                .into());
            }
            last = e.sequence;
        }
    }
    Ok(())
}

/// §22.7: an IWANT of a block of its index is answered by HEREIS pieces that tile the
/// block and hash to it; an IWANT of a hash it does not hold, by NOTFOUND naming it.
pub fn blocks_served(ctx: &Ctx) -> Step {
    let (mut link, folder) = folder_link(ctx)?;
    let batches = index(ctx, &mut link, folder)?;
    let Some(block) = batches
        .iter()
        .flat_map(|b| b.entries.iter())
        .flat_map(|e| e.blocks.iter())
        .next()
        .copied()
    else {
        return Err(Stop::Skip("its index has no block".into()));
    };
    if block.len == 0 || block.len > BLOCK_BYTES_MAX {
        return Err(format!(
            "its index lists a block of {} bytes (§22.2: 1 to {BLOCK_BYTES_MAX})",
            block.len
        )
        .into());
    }
    let want = IWant {
        folder,
        hashes: vec![block.hash],
    };
    link.conn
        .send_msg(&Message::Replica(ReplicaMessage::IWant(want)), false);
    let mut data = Vec::new();
    let deadline = Instant::now() + ctx.wait;
    while data.len() < block.len as usize {
        let f = link
            .conn
            .next_of(
                Code::HEREIS,
                deadline.saturating_duration_since(Instant::now()),
            )
            .map_err(|e| format!("an IWANT of a block it listed: {e}"))?;
        let piece = with_msg(&f, |m| match m {
            Message::Replica(ReplicaMessage::HereIs(h)) if h.hash == block.hash => {
                Some((h.offset, h.data.to_vec()))
            }
            _ => None,
        })
        .flatten();
        let Some((offset, bytes)) = piece else {
            continue;
        };
        if offset as usize != data.len() {
            return Err(format!(
                "a HEREIS piece at offset {offset} where {} was due (pieces in order)",
                data.len()
            )
            .into());
        }
        data.extend_from_slice(&bytes);
    }
    if data.len() != block.len as usize || *blake3::hash(&data).as_bytes() != block.hash {
        return Err("the HEREIS data does not hash to the block asked for"
            .to_string()
            .into());
    }
    let mut unknown: BlockHash = [0; 32];
    OsRng.fill_bytes(&mut unknown);
    let want = IWant {
        folder,
        hashes: vec![unknown],
    };
    link.conn
        .send_msg(&Message::Replica(ReplicaMessage::IWant(want)), false);
    let f = link
        .conn
        .next_of(Code::NOTFOUND, ctx.wait)
        .map_err(|e| format!("an IWANT of a hash it does not hold: {e}"))?;
    let named = with_msg(
        &f,
        |m| matches!(m, Message::Replica(ReplicaMessage::NotFound(n)) if n.hashes.contains(&unknown)),
    );
    if named != Some(true) {
        return Err("its NOTFOUND does not name the hash asked for"
            .to_string()
            .into());
    }
    Ok(())
}

/// §22.7: a peer that answers its IWANTs with data that does not hash to the block is closed
/// with BYE(ProtocolViolation) at the third such block.
pub fn corrupt_blocks_close(ctx: &Ctx) -> Step {
    let (mut link, folder) = folder_link(ctx)?;
    let me = link.me.clone();
    let short = u64::from_be_bytes(
        me.node_id().0[..8]
            .try_into()
            .map_err(|_| Stop::Skip("a node id of 32 bytes".into()))?,
    );
    let mtime_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // One file of three 1000-byte blocks of random bytes: the kit will serve other bytes.
    let mut blocks = Vec::new();
    for i in 0..MISMATCHES_BEFORE_DISCONNECT as u64 {
        let mut bytes = vec![0u8; 1000];
        OsRng.fill_bytes(&mut bytes);
        blocks.push(Block {
            offset: i * 1000,
            len: 1000,
            hash: *blake3::hash(&bytes).as_bytes(),
        });
    }
    let entry = FileEntry {
        path: format!("weft-conform-{:016x}.bin", OsRng.next_u64()),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: 1000 * MISMATCHES_BEFORE_DISCONNECT as u64,
        mtime_ms,
        modified_by: short,
        version: Version {
            counters: vec![Counter {
                node: short,
                value: 1,
            }],
        },
        sequence: 1,
        blocks: blocks.clone(),
    };
    let ihave = IHave {
        folder,
        index_id: OsRng.next_u64() | 1,
        entries: vec![entry.clone()],
    };
    link.conn
        .send_msg(&Message::Replica(ReplicaMessage::IHave(ihave)), false);
    let outcome = serve_corrupt_blocks(ctx, &mut link, folder, &blocks);
    drop(link);
    retract(ctx, &entry);
    outcome
}

/// Takes back the file [`corrupt_blocks_close`] announced: its deletion, a newer version of
/// the same author's, from a link of its own. The file's blocks never came (no one else holds
/// them), and the peer kept waiting for them: each run of the kit left one more path
/// "fetching" in its folder for good. Best effort: the check's outcome is already known.
fn retract(ctx: &Ctx, entry: &FileEntry) {
    let Ok((mut link, folder)) = folder_link(ctx) else {
        return;
    };
    let mut version = entry.version.clone();
    for c in &mut version.counters {
        c.value += 1;
    }
    let deleted = IDeleted {
        folder,
        index_id: OsRng.next_u64() | 1,
        entries: vec![Deleted {
            path: entry.path.clone(),
            kind: entry.kind,
            modified_by: entry.modified_by,
            version,
            sequence: 1,
        }],
    };
    link.conn
        .send_msg(&Message::Replica(ReplicaMessage::IDeleted(deleted)), false);
    // Until the peer has read it (whatever it answers).
    let _ = link
        .conn
        .collect_until_quiet(ctx.wait, std::time::Duration::from_millis(300));
}

/// Serves every block the peer asks for with bytes that do not hash to it, until it closes
/// the link (the check passes if with BYE(ProtocolViolation)).
fn serve_corrupt_blocks(ctx: &Ctx, link: &mut Link, folder: FolderId, blocks: &[Block]) -> Step {
    let deadline = Instant::now() + ctx.wait * 3;
    let mut served = 0;
    loop {
        match link.conn.next(deadline) {
            Got::Frame(f) if f.code() == Code::IWANT => {
                let hashes = with_msg(&f, |m| match m {
                    Message::Replica(ReplicaMessage::IWant(w)) => w.hashes,
                    _ => Vec::new(),
                })
                .unwrap_or_default();
                for hash in hashes {
                    let Some(b) = blocks.iter().find(|b| b.hash == hash) else {
                        continue;
                    };
                    let wrong = vec![0x5a; b.len as usize];
                    let hereis = HereIs {
                        folder,
                        hash,
                        offset: 0,
                        data: &wrong,
                    };
                    link.conn
                        .send_msg(&Message::Replica(ReplicaMessage::HereIs(hereis)), false);
                    served += 1;
                }
            }
            Got::Frame(f) => {
                if let Some(r) = super::super::conn::bye_reason(&f) {
                    return if r == ByeReason::ProtocolViolation && served >= 1 {
                        Ok(())
                    } else {
                        Err(format!("BYE({r:?}) after {served} corrupt blocks").into())
                    };
                }
            }
            Got::Closed => {
                return Err(format!(
                    "closed without BYE(ProtocolViolation) after {served} corrupt blocks"
                )
                .into())
            }
            Got::Timeout if served == 0 => {
                return Err(Stop::Skip(format!(
                    "it asked for none of the blocks of a file the kit announced within {}",
                    span(ctx.wait * 3)
                )))
            }
            Got::Timeout => {
                return Err(format!(
                    "{served} blocks with wrong hashes served and the link kept after {} (§22.7: closed at the third)",
                    span(ctx.wait * 3)
                )
                .into())
            }
        }
    }
}

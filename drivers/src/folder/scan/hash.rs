//! Hashing the planned files on every core: each read through the stream chunker in pieces
//! of at most [`READ_BYTES_MAX`], and taken only if the file did not change while it was read.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use weft_engine::protocol::Block;
use weft_engine::replicate::blocks::{StreamChunker, Tier};

use super::stat::{lstat, lstat_fd, Found, Stat};
use super::walk::{Item, Plan};
use super::{io_line, ScanError, Scanner};

/// What hashing a file gave.
pub(super) enum Hashed {
    Blocks(Vec<Block>),
    /// It changed while being read.
    Changed,
    /// It could not be read.
    Failed(String),
}

/// The most one read of a file being hashed asks for (the chunker cuts what each read gives
/// while it is still in the cache).
pub(super) const READ_BYTES_MAX: usize = 1024 * 1024;

/// Whether `found` is still `expect` (the device and inode too: a file reached through a
/// parent swapped for a symlink since the walk's `lstat`, done through its parent opened
/// without following one, is another file, and is not read).
fn still(found: io::Result<Found>, expect: &Stat) -> bool {
    matches!(found, Ok(Found::Entry(s)) if s == *expect)
}

/// The file at `path` opened to read, if it is still `expect`: `Err` with what to answer
/// (it changed, or cannot be read).
fn open_still(path: &Path, expect: &Stat) -> Result<std::fs::File, Hashed> {
    // Never follow a symlink put in its place; never block on a FIFO put in its place.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = OpenOptions::new()
        .read(true)
        // The flags are small positive constants: the cast keeps them.
        .custom_flags(flags.bits() as i32)
        .open(path);
    match file {
        Ok(f) if still(lstat_fd(&f), expect) => Ok(f),
        Ok(_) => Err(Hashed::Changed),
        Err(e) if still(lstat(path), expect) => Err(Hashed::Failed(io_line(&e))),
        Err(_) => Err(Hashed::Changed),
    }
}

/// Reads the file at `path`, which must still be `expect`, and cuts it at `tier`; with the
/// bytes read. Gives up (`Changed`) between reads once `stop` is set: a stop waited for the
/// whole of a file of many gigabytes, and the signals that would end the wait went unheard.
pub(super) fn hash_file(
    path: &Path,
    expect: &Stat,
    tier: Tier,
    stop: &AtomicBool,
) -> (Hashed, u64) {
    let changed = || (Hashed::Changed, 0);
    let same = |found: io::Result<Found>| still(found, expect);
    let mut file = match open_still(path, expect) {
        Ok(f) => f,
        Err(answer) => return (answer, 0),
    };
    // Read through the chunker's window (never the whole file at once), one byte more than
    // expected at most: a file that grows is caught below.
    let mut chunker = StreamChunker::new(tier, expect.size);
    let mut cut = Vec::new();
    let mut read = 0u64;
    let mut limited = (&mut file).take(expect.size.saturating_add(1));
    loop {
        if stop.load(Ordering::Relaxed) {
            return changed();
        }
        let space = chunker.space();
        let room = space.len().min(READ_BYTES_MAX);
        match limited.read(&mut space[..room]) {
            Ok(0) => break,
            Ok(n) => {
                read += n as u64;
                chunker.filled(n, &mut cut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Hashed::Failed(io_line(&e)), 0),
        }
    }
    if read != expect.size || !same(lstat_fd(&file)) {
        return changed();
    }
    chunker.finish(&mut cut);
    let blocks = cut
        .into_iter()
        .map(|b| Block {
            offset: b.offset,
            len: b.len,
            hash: b.hash,
        })
        .collect();
    (Hashed::Blocks(blocks), read)
}

impl Scanner {
    /// Hashes every [`Plan::Hash`] item on the scanner's threads, biggest files first, and
    /// every [`Plan::Move`] to confirm: for each item, what hashing gave and the bytes read.
    pub(super) fn hash_all(&self, items: &[Item]) -> Result<Vec<Option<(Hashed, u64)>>, ScanError> {
        let mut jobs: Vec<usize> = (0..items.len())
            .filter(|&i| {
                matches!(
                    items[i].plan,
                    Plan::Hash(_) | Plan::Move { confirm: true, .. }
                )
            })
            .collect();
        jobs.sort_by_key(|&i| std::cmp::Reverse(items[i].stat.size));
        let mut results: Vec<Option<(Hashed, u64)>> = (0..items.len()).map(|_| None).collect();
        if jobs.is_empty() {
            return Ok(results);
        }
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            while let Some(&i) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                if self.stopping() {
                    break;
                }
                let item = &items[i];
                let abs = self.root.join(&item.path);
                // A rename to confirm is cut at the tier its cached blocks were cut at.
                let tier = match &item.plan {
                    Plan::Hash(tier) => Some(*tier),
                    Plan::Move { cached, .. } => {
                        Some(Tier::from_index(cached.tier).unwrap_or(Tier::MIN))
                    }
                    Plan::Dir | Plan::Symlink(_) => None,
                };
                if let Some(tier) = tier {
                    done.push((i, hash_file(&abs, &item.stat, tier, &self.stop)));
                }
            }
            done
        };
        let threads = self.threads.min(jobs.len()).max(1);
        let finished: Vec<Vec<(usize, (Hashed, u64))>> = std::thread::scope(|s| {
            // A thread the OS refuses (the user's process limit, which a run's program may
            // reach) is done without: `spawn` would panic and end the scanner.
            let handles: Vec<_> = (0..threads)
                .map_while(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
                .collect();
            // None could be made: this thread hashes.
            let here = handles.is_empty().then(work);
            handles
                .into_iter()
                .map(|h| h.join())
                .chain(here.map(Ok))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|_| ScanError::Io("a hashing thread panicked".into()))?;
        if self.stopping() {
            return Err(ScanError::Stopped);
        }
        for (i, r) in finished.into_iter().flatten() {
            results[i] = Some(r);
        }
        Ok(results)
    }
}

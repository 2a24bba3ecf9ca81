//! The trash: files a remote change removes or replaces, kept under `.weft/trash` for
//! [`super::TRASH_KEEP_MS`] and within [`super::TRASH_BYTES_MAX`] and
//! [`super::TRASH_ENTRIES_MAX`], oldest pruned first.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

use crate::folder::TRASH_DIR;

use super::stat::size_of;
use super::walk::rename_noreplace;
use super::{Disk, NAME_MAX};

/// The time and counter a trash name starts with (`<ms>-<n>-…`); `(i64::MIN, 0)` if none.
pub(super) fn trash_age(name: &[u8]) -> (i64, u64) {
    let mut parts = name.splitn(3, |b| *b == b'-');
    let ms = parts
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<i64>().ok());
    let n = parts
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<u64>().ok());
    match (ms, n) {
        (Some(ms), Some(n)) => (ms, n),
        _ => (i64::MIN, 0),
    }
}

impl Disk {
    /// Deletes trash entries older than the policy's `keep_ms` (by the time their name
    /// starts with; a name that starts with none counts as oldest), then the oldest until the
    /// trash holds at most `bytes_max` bytes and `entries_max` entries.
    pub fn prune_trash(&self, now_unix_ms: i64) -> io::Result<()> {
        self.check().map_err(io::Error::other)?;
        let trash = self
            .reserved(TRASH_DIR)
            .map_err(|w| w.into_io("open the trash"))?;
        let mut entries = Vec::new();
        let mut dir = rfs::Dir::read_from(&trash)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_owned();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let st = match rfs::statat(&trash, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let (ms, n) = trash_age(bytes);
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            entries.push((ms, n, name, size_of(&st), is_dir, (st.st_dev, st.st_ino)));
        }
        entries.sort();
        // A file linked there more than once counts once (its newest name), its other
        // names as nothing: its bytes are on the disk once.
        let mut counted = std::collections::BTreeSet::new();
        for e in entries.iter_mut().rev() {
            if !e.4 && !counted.insert(e.5) {
                e.3 = 0;
            }
        }
        // Saturating: sizes are what `stat` says, and two sparse files of 8 EiB would wrap.
        let mut total: u64 = entries.iter().fold(0, |t, e| t.saturating_add(e.3));
        let mut count = entries.len();
        for (ms, _, name, size, is_dir, _) in entries {
            let old = now_unix_ms.saturating_sub(ms) > self.trash.keep_ms;
            if !old && total <= self.trash.bytes_max && count <= self.trash.entries_max {
                break;
            }
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            match rfs::unlinkat(&trash, name.as_c_str(), flags) {
                Ok(()) | Err(Errno::NOENT) => {
                    total = total.saturating_sub(size);
                    count -= 1;
                }
                // A directory someone put there and filled: not ours to empty.
                Err(Errno::NOTEMPTY) => {}
                Err(e) => return Err(e.into()),
            }
        }
        rfs::fsync(&trash)?;
        Ok(())
    }

    /// A fresh trash name for `path`: `<now>-<n>-<path with / as %>`, the path's head cut
    /// (and a hash of it added) if that is longer than a file name may be.
    pub(super) fn trash_name(&self, path: &str, now_unix_ms: i64) -> String {
        let n = self.trash_seq.fetch_add(1, Ordering::Relaxed);
        let flat = path.replace('/', "%");
        let name = format!("{now_unix_ms}-{n}-{flat}");
        if name.len() <= NAME_MAX {
            return name;
        }
        let hash = blake3::hash(path.as_bytes()).to_hex();
        let head = format!(
            "{now_unix_ms}-{n}-{}-",
            hash.as_str().get(..16).unwrap_or("")
        );
        let room = NAME_MAX.saturating_sub(head.len());
        let mut start = flat.len().saturating_sub(room);
        while !flat.is_char_boundary(start) {
            start += 1;
        }
        format!("{head}{}", &flat[start..])
    }

    /// Puts what is at `name` in `dir` into the trash: renamed there (`link == false`) or
    /// hard-linked (`link == true`, for what a commit then replaces). Answers its name there.
    pub(super) fn to_trash(
        &self,
        dir: &OwnedFd,
        name: &str,
        trash: &OwnedFd,
        path: &str,
        now_unix_ms: i64,
        link: bool,
    ) -> Result<String, Errno> {
        let mut last = Errno::EXIST;
        // A name taken (another process's trash, a clock gone back) is retried with the next
        // counter; a few tries are plenty.
        for _ in 0..8 {
            let tname = self.trash_name(path, now_unix_ms);
            let r = if link {
                rfs::linkat(dir, name, trash, tname.as_str(), AtFlags::empty())
            } else {
                rename_noreplace(dir, name, trash, &tname)
            };
            match r {
                Err(Errno::EXIST) => last = Errno::EXIST,
                Err(e) => return Err(e),
                Ok(()) => return Ok(tname),
            }
        }
        Err(last)
    }
}

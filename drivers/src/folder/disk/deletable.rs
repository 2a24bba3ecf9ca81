//! A directory a peer deleted, kept only by what `(?d)` rules let go (SPEC.md §22.10): that is
//! removed, never through a symlink, and the directory with it. Anything else in it (a file
//! no rule ignores, one ignored without `(?d)`, a name that is no UTF-8, a `.weft`, another
//! disk mounted there, a tree deeper than [`DELETABLE_DEPTH_MAX`]) keeps it all.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;
use weft_engine::replicate::paths::{is_reserved, normalize, IgnoreRules};

use super::walk::open_dir;
use super::Disk;

/// Entries a removal looks at and removes at most; a directory holding more stays.
pub const DELETABLE_ENTRIES_MAX: usize = 65_536;

/// Directory levels below the removed directory a removal goes down at most; a deeper tree
/// stays.
pub const DELETABLE_DEPTH_MAX: usize = 64;

/// The names in `dir` (but `.` and `..`), each as text and whether it is a directory;
/// `Err` if one is no UTF-8, a `.weft`, on another disk than `dir`, cannot be looked at, or
/// they are more than `budget`.
fn entries(dir: impl AsFd, budget: &mut usize) -> Result<Vec<(String, bool)>, Errno> {
    let dir = dir.as_fd();
    let dev = rfs::fstat(dir)?.st_dev;
    let mut out = Vec::new();
    let mut list = rfs::Dir::read_from(dir)?;
    while let Some(entry) = list.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        *budget = budget.checked_sub(1).ok_or(Errno::NOTEMPTY)?;
        let name = std::str::from_utf8(name).map_err(|_| Errno::NOTEMPTY)?;
        if is_reserved(name) {
            return Err(Errno::NOTEMPTY);
        }
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_dev != dev {
            return Err(Errno::XDEV);
        }
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        out.push((name.to_owned(), is_dir));
    }
    Ok(out)
}

/// Walks directory `name` in `dir` and all in it, never following a symlink: checks that
/// it may all go (`remove` false), or removes it (`remove` true).
fn walk_tree(
    dir: &OwnedFd,
    name: &str,
    depth: usize,
    budget: &mut usize,
    remove: bool,
) -> Result<(), Errno> {
    if depth > DELETABLE_DEPTH_MAX {
        return Err(Errno::NOTEMPTY);
    }
    let inner = open_dir(dir, name).map_err(|_| Errno::NOTDIR)?;
    for (child, is_dir) in entries(&inner, budget)? {
        if is_dir {
            walk_tree(&inner, &child, depth + 1, budget, remove)?;
        } else if remove {
            rfs::unlinkat(&inner, child.as_str(), AtFlags::empty())?;
        }
    }
    if remove {
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

impl Disk {
    /// Uses `rules` (the folder's `.weftignore`) for what a removal may clear.
    pub fn set_ignore_rules(&self, rules: IgnoreRules) {
        *self.rules.lock().unwrap_or_else(|e| e.into_inner()) = rules;
    }

    /// Whether directory `name` in `dir` (the folder's `path`) held only what `(?d)` rules
    /// let go, now removed: then it is empty. Nothing is removed unless everything in it may
    /// be (checked whole first, then removed).
    pub(super) fn clear_deletable(&self, dir: &OwnedFd, name: &str, path: &str) -> bool {
        // Held throughout: rules read anew (a `.weftignore` from a peer) wait for the
        // clearing to end, so it never removes what they no longer let go.
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(inner) = open_dir(dir, name) else {
            return false;
        };
        let mut budget = DELETABLE_ENTRIES_MAX;
        let Ok(list) = entries(&inner, &mut budget) else {
            return false;
        };
        // Matched as the scanner matches: in NFC.
        let deletable = |child: &str, is_dir: bool| {
            rules.is_deletable(&normalize(&format!("{path}/{child}")), is_dir)
        };
        if !list.iter().all(|(child, is_dir)| deletable(child, *is_dir)) {
            return false;
        }
        for remove in [false, true] {
            let mut budget = DELETABLE_ENTRIES_MAX;
            for (child, is_dir) in &list {
                let done = if *is_dir {
                    walk_tree(&inner, child, 1, &mut budget, remove)
                } else if remove {
                    rfs::unlinkat(&inner, child.as_str(), AtFlags::empty())
                } else {
                    Ok(())
                };
                match done {
                    Ok(()) => {}
                    // Gone meanwhile: nothing to remove. (While checking, something gone
                    // under it left the rest unchecked: nothing goes.)
                    Err(Errno::NOENT) if remove => {}
                    Err(e) => {
                        if remove {
                            tracing::warn!(path, child, error = %e, "removing an ignored (?d) entry failed");
                        }
                        return false;
                    }
                }
            }
        }
        true
    }
}

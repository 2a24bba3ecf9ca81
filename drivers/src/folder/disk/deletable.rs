//! A directory a peer deleted, kept only by what `(?d)` rules let go (SPEC.md §22.10): that is
//! removed, never through a symlink, and the directory with it. Anything else in it (a file
//! no rule ignores, one ignored without `(?d)`, a name that is no UTF-8) keeps it all.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;
use weft_engine::replicate::paths::IgnoreRules;

use super::walk::open_dir;
use super::Disk;

/// Entries a removal looks at and removes at most; a directory holding more stays.
pub const DELETABLE_ENTRIES_MAX: usize = 65_536;

/// The names in `dir` (but `.` and `..`), each as text and whether it is a directory; `None`
/// if one is no UTF-8, cannot be looked at, or they are more than `budget`.
fn entries(dir: impl AsFd, budget: &mut usize) -> Option<Vec<(String, bool)>> {
    let dir = dir.as_fd();
    let mut out = Vec::new();
    let mut list = rfs::Dir::read_from(dir).ok()?;
    while let Some(entry) = list.read() {
        let entry = entry.ok()?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        *budget = budget.checked_sub(1)?;
        let name = std::str::from_utf8(name).ok()?.to_owned();
        let st = rfs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
        out.push((
            name,
            FileType::from_raw_mode(st.st_mode) == FileType::Directory,
        ));
    }
    Some(out)
}

/// Removes directory `name` in `dir` and all in it, never following a symlink.
fn remove_tree(dir: &OwnedFd, name: &str, budget: &mut usize) -> Result<(), Errno> {
    let inner = open_dir(dir, name).map_err(|_| Errno::NOTDIR)?;
    for (child, is_dir) in entries(&inner, budget).ok_or(Errno::NOTEMPTY)? {
        if is_dir {
            remove_tree(&inner, &child, budget)?;
        } else {
            rfs::unlinkat(&inner, child.as_str(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

impl Disk {
    /// Uses `rules` (the folder's `.weftignore`) for what a removal may clear.
    pub fn set_ignore_rules(&self, rules: IgnoreRules) {
        *self.rules.lock().unwrap_or_else(|e| e.into_inner()) = rules;
    }

    /// Whether directory `name` in `dir` (the folder's `path`) held only what `(?d)` rules
    /// let go, now removed: then it is empty. Nothing is removed unless everything in it
    /// may be.
    pub(super) fn clear_deletable(&self, dir: &OwnedFd, name: &str, path: &str) -> bool {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(inner) = open_dir(dir, name) else {
            return false;
        };
        let mut budget = DELETABLE_ENTRIES_MAX;
        let Some(list) = entries(&inner, &mut budget) else {
            return false;
        };
        if !list
            .iter()
            .all(|(child, is_dir)| rules.is_deletable(&format!("{path}/{child}"), *is_dir))
        {
            return false;
        }
        for (child, is_dir) in list {
            let removed = if is_dir {
                remove_tree(&inner, &child, &mut budget)
            } else {
                rfs::unlinkat(&inner, child.as_str(), AtFlags::empty())
            };
            match removed {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    tracing::warn!(path, child, error = %e, "removing an ignored (?d) entry failed");
                    return false;
                }
            }
        }
        true
    }
}

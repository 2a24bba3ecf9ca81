//! The walk: every directory read in name order without following symlinks (names not in
//! NFC renamed to it), each path compared with the cache and planned (unchanged, to hash,
//! held back as still being written, skipped), and what is gone matched to what appeared by
//! inode as a rename.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;

use std::os::fd::OwnedFd;

use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;
use weft_engine::protocol::{FileKind, PathRefusal, FILE_BLOCKS_MAX};
use weft_engine::replicate::blocks::{tier_for, Tier};
use weft_engine::replicate::paths::{check_path, normalize};

use crate::folder::cache::CachedEntry;
use crate::folder::disk::{open_dir_in, open_dir_under, rename_noreplace};
use crate::folder::RESERVED_DIR;

use super::stat::{lstat_at, lstat_fd, Found, Stat};
use super::{io_line, ScanError, Scanner, SkipReason};

/// What the walk decided to do about a path that differs from the cache.
pub(super) enum Plan {
    /// A directory: reported if new or its mode changed.
    Dir,
    /// A symlink pointing at this: reported if new or retargeted.
    Symlink(String),
    /// A file to hash at this tier.
    Hash(Tier),
    /// The file the cache holds at `from`, renamed here; with `confirm`, only if its
    /// content is still the cached blocks.
    Move {
        from: String,
        cached: CachedEntry,
        confirm: bool,
    },
}

pub(super) struct Item {
    pub(super) path: String,
    pub(super) stat: Stat,
    pub(super) plan: Plan,
}

/// What the walk found.
#[derive(Default)]
pub(super) struct Walk {
    pub(super) items: Vec<Item>,
    /// Every path present (reported, unchanged, unstable or unreadable).
    pub(super) seen: HashSet<String>,
    /// Paths that could not be listed or `lstat`ed, and ignored directories: nothing at or
    /// under them is removed.
    pub(super) protected: Vec<String>,
    /// Paths the cache holds as a directory that are now something else.
    pub(super) no_longer_dirs: HashSet<String>,
    pub(super) skipped: Vec<(String, SkipReason)>,
    pub(super) files: u64,
    /// The directories walked that are mount points, and those the cache holds as mount
    /// points that are no longer mounted (protected, not walked).
    pub(super) mount_points: BTreeSet<String>,
}

impl Walk {
    pub(super) fn is_protected(&self, path: &str) -> bool {
        self.protected.iter().any(|p| under_or_at(path, p))
    }
}

/// Whether `path` is `dir` or inside it.
pub(super) fn under_or_at(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether listing a directory changed it.
pub(super) enum Listed {
    Unchanged,
    /// A child was renamed to its NFC form.
    Renamed,
}

/// The directory the walk visits the children of: opened from the root one component at a
/// time without following a symlink, so what is `lstat`ed, read as a link or listed through
/// it is inside the folder even if a parent is swapped for a symlink meanwhile.
struct Parent {
    path: String,
    fd: OwnedFd,
}

/// Whether opening a directory failed because it is gone or is no longer a directory (a
/// symlink swapped in counts).
fn gone_dir(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// `path`'s parent directory (empty: the root) and its last component.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Scanner {
    /// Walks the tree under the root, comparing each path with the cache.
    pub(super) fn walk(&self) -> Result<Walk, ScanError> {
        let mut walk = Walk::default();
        let root_failed =
            |e: &dyn std::fmt::Display| ScanError::Io(format!("{}: {e}", self.root.display()));
        let root = open_dir_under(&self.root, "").map_err(|e| root_failed(&e))?;
        let root_dev = match lstat_fd(&root).map_err(|e| root_failed(&e))? {
            Found::Entry(stat) => stat.dev,
            Found::Special(_) => return Err(root_failed(&"not a directory")),
        };
        // Paths to visit, the next on top, each with its parent's device.
        let mut stack: Vec<(String, u64)> = Vec::new();
        // The root must list: walking nothing would report everything removed.
        self.list_dir("", &root, root_dev, &mut stack, &mut walk.skipped)
            .map(|_| ())
            .map_err(|e| ScanError::Io(format!("listing {}: {e}", self.root.display())))?;
        let mut at = Parent {
            path: String::new(),
            fd: root,
        };
        while let Some((path, parent_dev)) = stack.pop() {
            if self.stopping() {
                return Err(ScanError::Stopped);
            }
            let (dir, name) = split(&path);
            if at.path != dir {
                match open_dir_under(&self.root, dir) {
                    Ok(fd) => {
                        at = Parent {
                            path: dir.to_string(),
                            fd,
                        }
                    }
                    // Its parent is gone, or no longer a directory, since it was listed.
                    Err(e) if gone_dir(&e) => continue,
                    Err(e) => {
                        walk.skipped
                            .push((path.clone(), SkipReason::Unreadable(io_line(&e))));
                        walk.protected.push(path);
                        continue;
                    }
                }
            }
            let (stat, unchanged, cached_kind, cached_tier, was_mount_point) = {
                let cache = self.cache.lock();
                match lstat_at(&at.fd, name) {
                    // Gone since its directory was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        walk.skipped
                            .push((path.clone(), SkipReason::Unreadable(io_line(&e))));
                        walk.protected.push(path);
                        continue;
                    }
                    Ok(Found::Special(reason)) => {
                        walk.skipped.push((path, reason));
                        continue;
                    }
                    Ok(Found::Entry(stat)) => {
                        let c = cache.entries.get(&path);
                        (
                            stat,
                            c.is_some_and(|c| stat.matches(c)),
                            c.map(|c| c.kind),
                            c.filter(|c| c.kind == FileKind::File)
                                .and_then(|c| Tier::from_index(c.tier)),
                            cache.mount_points.contains(&path),
                        )
                    }
                }
            };
            #[cfg(test)]
            if let Some(hook) = self.after_lstat {
                hook(&self.root, &path);
            }
            if self
                .ignore
                .is_ignored(&normalize(&path), stat.kind == FileKind::Directory)
            {
                // Not walked; a cached entry at or under it stays as it is (the engine keeps
                // its record, SPEC.md §22.3).
                walk.seen.insert(path.clone());
                if stat.kind == FileKind::Directory {
                    walk.protected.push(path);
                }
                continue;
            }
            walk.seen.insert(path.clone());
            if stat.kind == FileKind::Directory {
                if crate::folder::mounts::is_mount_root_at(&at.fd, name, parent_dev, stat.dev) {
                    walk.mount_points.insert(path.clone());
                } else if was_mount_point {
                    // What was mounted here is not: everything under it is kept as it was
                    // (unmounting a disk is not deleting its files), the path stays a mount
                    // point, and it is walked again once mounted.
                    walk.mount_points.insert(path.clone());
                    walk.protected.push(path.clone());
                    walk.skipped.push((path, SkipReason::Unmounted));
                    continue;
                }
            }
            if stat.kind == FileKind::File {
                walk.files += 1;
            }
            if cached_kind == Some(FileKind::Directory) && stat.kind != FileKind::Directory {
                walk.no_longer_dirs.insert(path.clone());
            }
            if !unchanged {
                let plan = match stat.kind {
                    FileKind::Directory => Some(Plan::Dir),
                    FileKind::File => {
                        let tier = tier_for(stat.size, cached_tier);
                        if stat.size > FILE_BLOCKS_MAX as u64 * u64::from(tier.max_bytes()) {
                            // Seen, so a record of the path itself stays; what was under a
                            // directory it replaced is removed as usual (not protected).
                            walk.skipped.push((path.clone(), SkipReason::TooLarge));
                            None
                        } else {
                            Some(Plan::Hash(tier))
                        }
                    }
                    FileKind::Symlink => match rfs::readlinkat(&at.fd, name, Vec::new()) {
                        Ok(t) => match t.into_string() {
                            Ok(t) => Some(Plan::Symlink(t)),
                            Err(_) => {
                                walk.seen.remove(&path);
                                walk.skipped.push((path.clone(), SkipReason::NotUtf8));
                                None
                            }
                        },
                        Err(Errno::NOENT) => {
                            walk.seen.remove(&path);
                            None
                        }
                        Err(e) => {
                            walk.skipped
                                .push((path.clone(), SkipReason::Unreadable(e.to_string())));
                            None
                        }
                    },
                };
                if let Some(plan) = plan {
                    walk.items.push(Item {
                        path: path.clone(),
                        stat,
                        plan,
                    });
                }
            }
            if stat.kind == FileKind::Directory {
                // Opened through its parent without following a symlink: one swapped in
                // since its `lstat` is not listed (nor anything outside the folder).
                let listed = open_dir_in(&at.fd, name).and_then(|fd| {
                    let listed =
                        self.list_dir(&path, &fd, stat.dev, &mut stack, &mut walk.skipped)?;
                    Ok((fd, listed))
                });
                match listed {
                    Ok((fd, listed)) => {
                        // A child renamed to NFC changed the directory's own times: what it
                        // is recorded as is the directory after that.
                        if let (Listed::Renamed, Some(item), Ok(Found::Entry(now))) =
                            (listed, walk.items.last_mut(), lstat_fd(&fd))
                        {
                            if item.path == path {
                                item.stat = now;
                            }
                        }
                        // Its children are visited next.
                        at = Parent { path, fd };
                    }
                    // Gone (or no longer a directory) since its lstat: what was under it is
                    // removed.
                    Err(e) if gone_dir(&e) => {}
                    Err(e) => {
                        walk.skipped
                            .push((path.clone(), SkipReason::Unreadable(io_line(&e))));
                        walk.protected.push(path);
                    }
                }
            }
        }
        Ok(walk)
    }

    /// Pushes the children of directory `dir` (relative, open as `fd`, on device `dir_dev`)
    /// onto `stack`, the first name on top; renames names not in NFC to it; skips the
    /// reserved folder at the root and names no peer would take.
    pub(super) fn list_dir(
        &self,
        dir: &str,
        fd: &OwnedFd,
        dir_dev: u64,
        stack: &mut Vec<(String, u64)>,
        skipped: &mut Vec<(String, SkipReason)>,
    ) -> io::Result<Listed> {
        let mut names = Vec::new();
        let mut entries = rfs::Dir::read_from(fd)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                skipped.push((
                    join(dir, &String::from_utf8_lossy(name)),
                    SkipReason::NotUtf8,
                ));
                continue;
            };
            // Not following a symlink; unknown (an error) counts as not a directory.
            let is_dir = match entry.file_type() {
                rfs::FileType::Unknown => lstat_at(fd, name)
                    .is_ok_and(|f| matches!(f, Found::Entry(s) if s.kind == FileKind::Directory)),
                t => t == rfs::FileType::Directory,
            };
            names.push((name.to_string(), is_dir));
        }
        // Listed whole first: a name renamed to NFC is not listed again.
        let mut children = Vec::new();
        let mut listed = Listed::Unchanged;
        for (name, is_dir) in names {
            // Weft's own at the root; deeper, a nested shared folder's (never shared).
            if name == RESERVED_DIR {
                continue;
            }
            let path = join(dir, &name);
            match check_path(&path) {
                Ok(()) => children.push(path),
                // An ignored path is never written, nor renamed: the walk passes it by.
                Err(PathRefusal::NotNormalized)
                    if self.ignore.is_ignored(&normalize(&path), is_dir) =>
                {
                    children.push(path)
                }
                Err(PathRefusal::NotNormalized) => match self.rename_to_nfc(dir, &name) {
                    Ok(nfc) => {
                        children.push(nfc);
                        listed = Listed::Renamed;
                    }
                    Err(why) => skipped.push((path, why)),
                },
                Err(why) => skipped.push((path, SkipReason::BadName(why))),
            }
        }
        children.sort_unstable_by(|a, b| b.cmp(a));
        // A name walked under its NFC form may be listed under that form too.
        children.dedup();
        stack.extend(children.into_iter().map(|child| (child, dir_dev)));
        Ok(listed)
    }

    /// Renames `name` in directory `dir` (both relative, `dir` in NFC) to its NFC form, as
    /// peers name it (an NFD name, say, from macOS), unless that name is taken; moves what the
    /// cache holds at and under it along. Answers the new path.
    pub(super) fn rename_to_nfc(&self, dir: &str, name: &str) -> Result<String, SkipReason> {
        let from = join(dir, name);
        let nfc = normalize(name);
        let to = join(dir, &nfc);
        check_path(&to).map_err(SkipReason::BadName)?;
        let failed = |e: &dyn std::fmt::Display| {
            SkipReason::Unreadable(format!("renaming it to its NFC form: {e}"))
        };
        // The directory opened from the root without following a symlink: one swapped in
        // for a parent since the listing is not followed out of the folder.
        let parent = open_dir_under(&self.root, dir).map_err(|e| failed(&e))?;
        let mut cache = self.cache.lock();
        match rename_noreplace(&parent, name, &parent, &nfc) {
            Ok(()) => {
                tracing::info!("renamed {from:?} to its NFC form {to:?}, as peers name it");
            }
            // Both names are one file: a file system that does not tell normalization forms
            // apart (ZFS with normalization=formD, ext4 casefold), where the NFC name already
            // reaches it, or a hard link. It is walked under its NFC name.
            Err(Errno::EXIST) if same_file(&parent, name, &nfc) => {}
            Err(Errno::EXIST) => return Err(SkipReason::NfcNameTaken),
            Err(e) => return Err(failed(&e)),
        }
        let under: Vec<String> = cache
            .entries
            .range(from.clone()..)
            .take_while(|(p, _)| p.starts_with(&from))
            .filter(|(p, _)| under_or_at(p, &from))
            .map(|(p, _)| p.clone())
            .collect();
        for old in under {
            if let Some(entry) = cache.entries.remove(&old) {
                cache
                    .entries
                    .insert(format!("{to}{}", &old[from.len()..]), entry);
            }
        }
        let mount_points: Vec<String> = cache
            .mount_points
            .iter()
            .filter(|m| under_or_at(m, &from))
            .cloned()
            .collect();
        for old in mount_points {
            cache.mount_points.remove(&old);
            cache
                .mount_points
                .insert(format!("{to}{}", &old[from.len()..]));
        }
        Ok(to)
    }

    /// Turns a file to hash whose inode, size and mtime are those of a removed cached file
    /// into a move of that file, its blocks kept and nothing read, unless the path holds
    /// that inode in the cache already (a hard link of the removed path, not a rename of
    /// it). A file whose mtime is a whole second (set by `tar`, `cp -p` from a coarse disk,
    /// a reproducible build's fixed time: many files share it, and a freed inode is soon
    /// taken again) is read to confirm it is still the cached content.
    pub(super) fn plan_moves(&self, walk: &mut Walk, removed: &mut BTreeMap<String, CachedEntry>) {
        let mut by_stat: HashMap<(u64, u64, i128), Vec<String>> = HashMap::new();
        for (path, c) in removed.iter().rev() {
            // A path under one that is no longer a directory is removed before it changes.
            let under_changed = walk
                .no_longer_dirs
                .iter()
                .any(|d| path.len() > d.len() && under_or_at(path, d));
            if c.kind == FileKind::File && !under_changed {
                by_stat
                    .entry((c.inode, c.size, c.mtime_ns))
                    .or_default()
                    .push(path.clone());
            }
        }
        if by_stat.is_empty() {
            return;
        }
        let cache = self.cache.lock();
        for item in &mut walk.items {
            let same_inode = cache
                .entries
                .get(&item.path)
                .is_some_and(|c| c.inode == item.stat.inode);
            if !matches!(item.plan, Plan::Hash(_)) || same_inode {
                continue;
            }
            let key = (item.stat.inode, item.stat.size, item.stat.mtime_ns);
            let Some(from) = by_stat.get_mut(&key).and_then(Vec::pop) else {
                continue;
            };
            if let Some(cached) = removed.remove(&from) {
                let confirm = item.stat.mtime_ns.rem_euclid(1_000_000_000) == 0;
                item.plan = Plan::Move {
                    from,
                    cached,
                    confirm,
                };
            }
        }
    }
}

/// Whether names `a` and `b` in `dir` are one file (device and inode), neither followed if a
/// symlink.
fn same_file(dir: &OwnedFd, a: &str, b: &str) -> bool {
    let at = |name: &str| rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
    match (at(a), at(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

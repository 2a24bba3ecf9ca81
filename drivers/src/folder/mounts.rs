//! Which directories of a folder are mount points: a disk mounted there, or a bind mount of
//! a directory (of the same disk too, which has its parent's device number and so cannot be
//! told by it). Found by `statx` (Linux 5.8: `STATX_ATTR_MOUNT_ROOT`, `STATX_MNT_ID`), else
//! by the device number.

use std::os::fd::AsFd;

use rustix::fs::{self as rfs, AtFlags, StatxAttributes, StatxFlags};

/// Whether directory `name` in `parent` (never followed if a symlink; on device `dev`, its
/// parent on `parent_dev`) is the root of a mount.
pub(crate) fn is_mount_root_at(parent: impl AsFd, name: &str, parent_dev: u64, dev: u64) -> bool {
    let found = rfs::statx(parent, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::empty());
    mount_root(found.ok(), parent_dev, dev)
}

/// [`is_mount_root_at`] for an open directory `dir`.
pub(crate) fn is_mount_root(dir: impl AsFd, parent_dev: u64, dev: u64) -> bool {
    let found = rfs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::empty());
    mount_root(found.ok(), parent_dev, dev)
}

fn mount_root(found: Option<rfs::Statx>, parent_dev: u64, dev: u64) -> bool {
    match found {
        Some(x) if x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        _ => dev != parent_dev,
    }
}

/// The mount the open file or directory `fd` is on: its mount id (`STATX_MNT_ID`), else
/// its device number (one kernel gives the one or the other for every file, so two of these
/// are compared like with like). A file is neither renamed nor linked across mounts.
pub(crate) fn mount_of(fd: impl AsFd) -> rustix::io::Result<u64> {
    let x = rfs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    if x.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        Ok(x.stx_mnt_id)
    } else {
        // `Dev` is a `u64` on Linux, the only system with `statx`.
        Ok(rfs::makedev(x.stx_dev_major, x.stx_dev_minor))
    }
}

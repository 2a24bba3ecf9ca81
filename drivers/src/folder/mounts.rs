//! Which directories of a folder are mount points: a disk mounted there (or a btrfs
//! subvolume), on another device than its parent, or a bind mount of a directory of the same
//! disk, which has its parent's device number and is found by `statx` (Linux 5.8:
//! `STATX_ATTR_MOUNT_ROOT`, `STATX_MNT_ID`; where `statx` is missing or says nothing, by the
//! device number alone).

use std::os::fd::AsFd;

use rustix::fs::{self as rfs, AtFlags, StatxAttributes, StatxFlags};

/// Whether directory `name` in `parent` (never followed if a symlink; on device `dev`, its
/// parent on `parent_dev`) is a mount point: on another device than its parent (a disk, a
/// btrfs subvolume), or the root of a mount (a bind mount of a directory of the same disk).
pub(crate) fn is_mount_root_at(parent: impl AsFd, name: &str, parent_dev: u64, dev: u64) -> bool {
    dev != parent_dev
        || rfs::statx(parent, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::empty())
            .is_ok_and(|x| is_root(&x))
}

/// [`is_mount_root_at`] for an open directory `dir`.
pub(crate) fn is_mount_root(dir: impl AsFd, parent_dev: u64, dev: u64) -> bool {
    dev != parent_dev
        || rfs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::empty()).is_ok_and(|x| is_root(&x))
}

/// Whether `statx` says the path is the root of a mount (Linux 5.8; else it does not say).
fn is_root(x: &rfs::Statx) -> bool {
    x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
}

/// Where the open file or directory `fd` is: its device number and, where the kernel gives
/// it (`statx`'s `STATX_MNT_ID`, Linux 5.8), its mount's id. Two files are on one mount if
/// both are the same; a file is neither renamed nor linked across mounts.
pub(crate) fn mount_of(fd: impl AsFd) -> rustix::io::Result<(u64, Option<u64>)> {
    let dev = dev_of(&rfs::fstat(&fd)?);
    let id = rfs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
        .ok()
        .filter(|x| x.stx_mask & StatxFlags::MNT_ID.bits() != 0)
        .map(|x| x.stx_mnt_id);
    Ok((dev, id))
}

/// A `stat`'s device number (`st_dev` is a `c_ulong` on some targets and a `u64` on others).
#[allow(clippy::useless_conversion)]
pub(crate) fn dev_of(st: &rfs::Stat) -> u64 {
    u64::from(st.st_dev)
}

//! The permission bits weft gives what it writes (SPEC.md §22.10, "Mode"): the engine's mode
//! is the owner's three bits and is replicated; the group's and others' bits are this disk's
//! own, as a user here set them or the umask made them, and are never replicated.

/// The umask assumed when the process's cannot be read: group and others get nothing.
pub const UMASK_UNKNOWN: u32 = 0o077;

/// The process's umask, from `/proc/self/status` (Linux 4.7 and later; reading it leaves it
/// unchanged, which `umask(2)` cannot do while other threads create files), else
/// [`UMASK_UNKNOWN`].
pub fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_umask(&status))
        .unwrap_or(UMASK_UNKNOWN)
}

/// The `Umask:` line of a `/proc/<pid>/status` text, as permission bits.
fn parse_umask(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8)
        .ok()
        .filter(|mask| *mask <= 0o777)
}

/// The bits of a file (`is_dir` false) or directory weft writes, for the engine's `owner`
/// mode (0–7, higher bits ignored): the owner's bits are `owner`; the group's and others'
/// are kept from `held`, the `st_mode` of what the path holds now (a file a commit replaces,
/// a directory whose mode is set), with a directory's set-group-ID and sticky bits; a path
/// new here (`held` `None`) gives them the owner's bits less `umask`, as `open` and `mkdir`
/// would. A file never gets set-user-ID or set-group-ID.
pub fn disk_mode(owner: u8, held: Option<u32>, is_dir: bool, umask: u32) -> u32 {
    let owner = u32::from(owner & 7);
    let kept = match held {
        Some(st_mode) if is_dir => st_mode & 0o3077,
        Some(st_mode) => st_mode & 0o077,
        None => ((owner << 3) | owner) & !umask & 0o077,
    };
    (owner << 6) | kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_umask_is_read_from_a_status_text() {
        let status = "Name:\tweft\nUmask:\t0027\nState:\tR (running)\n";
        assert_eq!(parse_umask(status), Some(0o027));
        assert_eq!(parse_umask("Name:\tweft\n"), None);
        assert_eq!(parse_umask("Umask:\t9\n"), None);
        assert_eq!(parse_umask("Umask:\t7777\n"), None);
        // This process's, on Linux: the kernel's text parses.
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            assert!(parse_umask(&status).is_some(), "{status}");
        }
    }

    #[test]
    fn a_new_path_takes_the_owner_bits_less_the_umask() {
        assert_eq!(disk_mode(6, None, false, 0o022), 0o644);
        assert_eq!(disk_mode(7, None, false, 0o022), 0o755);
        assert_eq!(disk_mode(7, None, true, 0o027), 0o750);
        assert_eq!(disk_mode(6, None, false, 0o077), 0o600);
        assert_eq!(disk_mode(4, None, false, 0o002), 0o444);
        // Only the owner's three bits of the engine's mode are taken.
        assert_eq!(disk_mode(0xfe, None, false, 0o022), 0o644);
    }

    #[test]
    fn a_held_path_keeps_its_group_and_other_bits() {
        assert_eq!(disk_mode(7, Some(0o100640), false, 0o022), 0o740);
        assert_eq!(disk_mode(4, Some(0o100606), false, 0o077), 0o406);
        // A file's set-user-ID and set-group-ID bits are not kept; a directory's
        // set-group-ID and sticky bits are.
        assert_eq!(disk_mode(6, Some(0o106755), false, 0o022), 0o655);
        assert_eq!(disk_mode(5, Some(0o43770), true, 0o022), 0o3570);
    }
}

//! Tests that mount file systems: each runs again inside a mount namespace of its own.

use std::path::Path;

/// Runs `mount` with `args`, failing the test if it fails.
pub(crate) fn mount(args: &[&str], at: &Path) {
    let status = std::process::Command::new("mount")
        .args(args)
        .arg(at)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mount {args:?} {}", at.display());
}

/// Runs `umount`, failing the test if it fails.
pub(crate) fn umount(at: &Path) {
    let status = std::process::Command::new("umount")
        .arg(at)
        .status()
        .expect("umount runs");
    assert!(status.success(), "umount {}", at.display());
}

/// Set in the run of a test inside a mount namespace of its own.
const IN_MOUNT_NAMESPACE: &str = "WEFT_TEST_IN_MOUNT_NAMESPACE";

/// Whether this run of test `name` (in module `module`, as `module_path!()` gives it) is the
/// one inside a mount namespace of its own, where it may mount (as root of a user namespace:
/// `unshare -rm`). Outside, it runs the test again there and asserts that it passed, unless
/// `WEFT_SKIP_MOUNT_TESTS` is set (`.ci/run` sets it only where `unshare -rm` cannot run).
pub(crate) fn in_mount_namespace(module: &str, name: &str) -> bool {
    if std::env::var_os(IN_MOUNT_NAMESPACE).is_some() {
        return true;
    }
    if std::env::var_os("WEFT_SKIP_MOUNT_TESTS").is_some() {
        eprintln!("skipped: WEFT_SKIP_MOUNT_TESTS is set");
        return false;
    }
    // The test's full name, without the crate's.
    let module = module.split_once("::").map_or("", |(_, m)| m);
    let out = std::process::Command::new("unshare")
        .arg("-rm")
        .arg(std::env::current_exe().expect("the test binary"))
        .args([&format!("{module}::{name}"), "--exact", "--nocapture"])
        .env(IN_MOUNT_NAMESPACE, "1")
        .output()
        .expect("unshare runs (util-linux); set WEFT_SKIP_MOUNT_TESTS=1 to skip");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a mount namespace: {}\n{stdout}\n{}\n(set WEFT_SKIP_MOUNT_TESTS=1 where user namespaces are off)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

//! Path rules of folder replication (SPEC.md §22.3): what a peer's path may be, the one
//! Unicode form, case clashes, and `.weftignore`. Stub: the API; the rules fill it in.

use std::borrow::Cow;

use weft_protocol::PathRefusal;

/// The reserved folder at a shared folder's root (temporary files, trash); no peer's path
/// may lie inside it.
pub const RESERVED_DIR: &str = ".weft";

/// The ignore file at a shared folder's root, in gitignore syntax.
pub const IGNORE_FILE: &str = ".weftignore";

/// Whether `path` may name something in a shared folder: relative, `/`-separated, no empty,
/// `.` or `..` component, no NUL, `\` or control character, NFC, at most
/// `weft_protocol::PATH_BYTES_MAX` bytes and 255 per component, and not inside
/// [`RESERVED_DIR`].
pub fn check_path(path: &str) -> Result<(), PathRefusal> {
    let _ = path;
    todo!()
}

/// Whether a symlink at `path` may point at `target`: relative, and resolving (lexically,
/// from `path`'s directory) to a place inside the folder.
pub fn check_symlink_target(path: &str, target: &str) -> Result<(), PathRefusal> {
    let _ = (path, target);
    todo!()
}

/// `path` in Unicode normalization form C (what the scanner reports).
pub fn normalize(path: &str) -> Cow<'_, str> {
    Cow::Borrowed(path)
}

/// The key two paths share when they differ only in case: full Unicode lowercase of the NFC
/// form.
pub fn case_key(path: &str) -> String {
    path.to_string()
}

/// `.weftignore` rules: gitignore syntax, relative to the folder root.
#[derive(Debug, Default)]
pub struct IgnoreRules {}

impl IgnoreRules {
    /// The rules in `text` (the ignore file's contents); lines that do not parse are
    /// returned beside the rules that do.
    pub fn parse(text: &str) -> (IgnoreRules, Vec<String>) {
        let _ = text;
        (IgnoreRules {}, Vec::new())
    }

    /// Whether `path` (a directory if `is_dir`) or one of its parents is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let _ = (path, is_dir);
        false
    }
}

//! A shared folder's `.weftignore` as its scanner reads it (SPEC.md §22.3, §22.10): looked at
//! before every scan and read again only when its `lstat` changed; never through a symlink;
//! at most [`IGNORE_FILE_BYTES_MAX`] bytes. The rules go both to the scanner (an ignored path
//! is not walked) and to the engine (an ignored path is neither announced nor written).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use weft_engine::replicate::paths::{IgnoreRules, IGNORE_FILE};

use super::scan::STABLE_MS;

/// The largest `.weftignore` read, bytes; a larger one is not read, and the rules read
/// before stay until it is made smaller.
pub const IGNORE_FILE_BYTES_MAX: u64 = 256 * 1024;

/// What `lstat` said of the file at a look.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    Absent,
    File {
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
        inode: u64,
    },
    /// A symlink, a directory or anything else that is not a regular file.
    NotAFile,
    Unreadable(String),
}

/// The rules of one folder's `.weftignore`, and what the last look saw.
#[derive(Debug, Default)]
pub struct IgnoreFile {
    last: Option<Look>,
    /// The rules in force: a file that is there but cannot be used (not a regular file, too
    /// large, unreadable, still being written) keeps them, so a broken edit never un-ignores
    /// what was ignored (a secret, say). Only a removed file ends them.
    rules: IgnoreRules,
}

/// Rules read anew, with what was wrong with the file (for the log).
#[derive(Debug)]
pub struct Refreshed {
    /// The rules to use from now on.
    pub rules: IgnoreRules,
    /// Lines that do not parse (`line N: why`), or why the file was not read.
    pub problems: Vec<String>,
}

impl IgnoreFile {
    /// Looks at `root/.weftignore` at `now_ns` (ns since the Unix epoch): the rules to use
    /// from now on if it changed since the last look (at the first look, always; no file, no
    /// rules). After the first look, a file modified less than `STABLE_MS` before `now_ns` is
    /// still being written: it is left for a later look (the scanner looks again once the
    /// file is settled), and the rules stay.
    pub fn refresh(&mut self, root: &Path, now_ns: i128) -> Option<Refreshed> {
        let path = root.join(IGNORE_FILE);
        let look = look(&path);
        if self.last.as_ref() == Some(&look) {
            return None;
        }
        if let (Look::File { mtime_ns, .. }, Some(_)) = (&look, &self.last) {
            let stable_ns = i128::from(STABLE_MS) * 1_000_000;
            // A file from the future (another clock) is read: waiting would never end. The
            // first look reads it whatever its age: the first scan needs rules at once.
            if (0..stable_ns).contains(&now_ns.saturating_sub(*mtime_ns)) {
                return None;
            }
        }
        let refreshed = match &look {
            Look::Absent => Refreshed {
                rules: IgnoreRules::default(),
                problems: Vec::new(),
            },
            Look::File { size, .. } if *size > IGNORE_FILE_BYTES_MAX => self.rules_stay(format!(
                "{size} bytes, over {IGNORE_FILE_BYTES_MAX}: not read"
            )),
            Look::File { .. } => match read(&path) {
                Ok(text) => {
                    let (rules, problems) = IgnoreRules::parse(&text);
                    Refreshed { rules, problems }
                }
                Err(e) => self.rules_stay(format!("cannot be read ({e})")),
            },
            Look::NotAFile => {
                self.rules_stay("not a regular file (a symlink is never followed)".into())
            }
            Look::Unreadable(e) => self.rules_stay(format!("cannot be read ({e})")),
        };
        self.last = Some(look);
        self.rules = refreshed.rules.clone();
        Some(refreshed)
    }

    /// The rules in force, kept: the file is there and cannot be used.
    fn rules_stay(&self, problem: String) -> Refreshed {
        Refreshed {
            rules: self.rules.clone(),
            problems: vec![format!("{problem}: the rules read before still apply")],
        }
    }
}

fn look(path: &Path) -> Look {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Look::Absent,
        Err(e) => Look::Unreadable(e.to_string()),
        Ok(m) if m.file_type().is_file() => Look::File {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            inode: m.ino(),
        },
        Ok(_) => Look::NotAFile,
    }
}

/// The file's text (not UTF-8: each bad sequence read as U+FFFD), at most
/// [`IGNORE_FILE_BYTES_MAX`] bytes of it, never through a symlink.
fn read(path: &Path) -> io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    // NONBLOCK: a FIFO put there since the lstat must not hang the scanner.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags | OFlags::NOCTTY, Mode::empty())?;
    let file = fs::File::from(fd);
    let mut bytes = Vec::new();
    file.take(IGNORE_FILE_BYTES_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A look long after any write: every file is settled.
    const LATER: i128 = i128::MAX / 2;

    #[test]
    fn rules_are_read_at_the_first_look_and_again_only_when_the_file_changes() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let root = tmp.path();
        let mut file = IgnoreFile::default();
        let first = file
            .refresh(root, LATER)
            .expect("the first look gives rules");
        assert!(!first.rules.is_ignored("a.log", false));
        assert!(file.refresh(root, LATER).is_none(), "no file, no change");

        fs::write(root.join(IGNORE_FILE), "*.log\na{b\n").expect("write");
        let read = file.refresh(root, LATER).expect("a new file is read");
        assert!(read.rules.is_ignored("a.log", false));
        assert_eq!(read.problems.len(), 1, "{:?}", read.problems);
        assert!(
            read.problems[0].starts_with("line 2"),
            "{:?}",
            read.problems
        );
        assert!(
            file.refresh(root, LATER).is_none(),
            "unchanged: not read again"
        );

        fs::write(root.join(IGNORE_FILE), "build/\n").expect("rewrite");
        let read = file.refresh(root, LATER).expect("a changed file is read");
        assert!(!read.rules.is_ignored("a.log", false));
        assert!(read.rules.is_ignored("build/x", false));

        fs::remove_file(root.join(IGNORE_FILE)).expect("remove");
        let read = file
            .refresh(root, LATER)
            .expect("a removed file ends the rules");
        assert!(!read.rules.is_ignored("build/x", false));
    }

    /// A file that is there but cannot be used keeps the rules read before: a broken edit
    /// never un-ignores what was ignored (they all dropped, and ignored files were announced).
    #[test]
    fn a_symlink_or_an_oversized_file_is_not_read_and_the_rules_stay() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let root = tmp.path();
        fs::write(root.join("elsewhere"), "*\n").expect("write");
        std::os::unix::fs::symlink("elsewhere", root.join(IGNORE_FILE)).expect("symlink");
        let mut file = IgnoreFile::default();
        let read = file.refresh(root, LATER).expect("the first look");
        assert!(
            !read.rules.is_ignored("a", false),
            "a symlink is never followed"
        );
        assert!(
            read.problems[0].contains("not a regular file"),
            "{:?}",
            read.problems
        );

        fs::remove_file(root.join(IGNORE_FILE)).expect("remove");
        fs::write(root.join(IGNORE_FILE), "secret.key\n").expect("write");
        let read = file.refresh(root, LATER).expect("a regular file");
        assert!(read.rules.is_ignored("secret.key", false));

        let big = "*.log\n".repeat(IGNORE_FILE_BYTES_MAX as usize / 6 + 1);
        fs::write(root.join(IGNORE_FILE), big).expect("write");
        let read = file.refresh(root, LATER).expect("a changed file");
        assert!(
            !read.rules.is_ignored("a.log", false),
            "over the bound: not read"
        );
        assert!(read.rules.is_ignored("secret.key", false), "the rules stay");
        assert!(read.problems[0].contains("not read"), "{:?}", read.problems);

        fs::remove_file(root.join(IGNORE_FILE)).expect("remove");
        std::os::unix::fs::symlink("elsewhere", root.join(IGNORE_FILE)).expect("symlink");
        let read = file.refresh(root, LATER).expect("a symlink again");
        assert!(read.rules.is_ignored("secret.key", false), "the rules stay");
    }

    /// A `.weftignore` written less than `STABLE_MS` ago may be half written: it is read
    /// once it has settled, and the rules stay until then.
    #[test]
    fn a_file_still_being_written_is_read_once_settled() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let root = tmp.path();
        let mut file = IgnoreFile::default();
        file.refresh(root, LATER).expect("the first look");
        fs::write(root.join(IGNORE_FILE), "*.log\n").expect("write");
        let Look::File { mtime_ns, .. } = look(&root.join(IGNORE_FILE)) else {
            panic!("a regular file");
        };
        let ms = 1_000_000;
        assert!(
            file.refresh(root, mtime_ns + 100 * ms).is_none(),
            "too fresh"
        );
        let read = file
            .refresh(root, mtime_ns + i128::from(STABLE_MS) * ms)
            .expect("settled: read");
        assert!(read.rules.is_ignored("a.log", false));
    }
}

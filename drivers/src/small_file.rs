//! Reading the small files weft keeps beside a node (its config, key and incarnation, the web
//! page's token, a shared folder's marker): a regular file of at most a stated size, or an
//! error. Never read whole whatever is there: a FIFO put in its place would hang the start
//! (the open does not block, and a file that is not regular is refused), and `/dev/zero` or a
//! huge file would take memory without bound.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// The most bytes a config file may hold.
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// The most bytes a one-line state file (a key, an incarnation, a token, a marker) may hold.
pub const LINE_FILE_BYTES_MAX: u64 = 256;

/// The text of the file at `path` (symlinks followed), which must be a regular file of at
/// most `bytes_max` bytes of UTF-8. Not found is `ErrorKind::NotFound`, as `fs::read` says.
pub fn read_text(path: &Path, bytes_max: u64) -> io::Result<String> {
    read_with(path, bytes_max, OFlags::empty())
}

/// [`read_text`], never through a symlink at `path` itself (one there is an error).
pub fn read_text_nofollow(path: &Path, bytes_max: u64) -> io::Result<String> {
    read_with(path, bytes_max, OFlags::NOFOLLOW)
}

fn read_with(path: &Path, bytes_max: u64, extra: OFlags) -> io::Result<String> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY | extra;
    let file = File::from(rustix::fs::open(path, flags, Mode::empty())?);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(bytes_max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {bytes_max} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_small_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "1234\n").expect("write");
        assert_eq!(read_text(&file, 5).expect("read"), "1234\n");
        let e = read_text(&file, 4).unwrap_err();
        assert!(e.to_string().contains("longer than 4 bytes"), "{e}");
        let missing = read_text(&dir.path().join("none"), 5).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let e = read_text(&fifo, 5).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A directory, /dev/zero, bytes that are not UTF-8.
        assert!(read_text(dir.path(), 5).is_err());
        assert!(read_text(Path::new("/dev/zero"), 5).is_err());
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        assert!(read_text(&file, 5).is_err());
        // Through a symlink: followed, or refused.
        let link = dir.path().join("link");
        std::fs::write(&file, "x").expect("write");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read_text(&link, 5).expect("followed"), "x");
        assert!(read_text_nofollow(&link, 5).is_err());
    }
}

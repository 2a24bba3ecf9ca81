//! Temporary files under `.weft/tmp`: opened (at most [`super::TEMPS_OPEN_MAX`] kept open),
//! written block by block, discarded, and strays from before a crash removed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, MutexGuard};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use weft_engine::replicate::{StorageResult, TempId};

use crate::folder::TEMP_DIR;

use super::{
    errno_fail, io_fail, ioerr_fail, temp_file_name, Disk, Step, Temps, TEMPS_ENDED_MAX,
    TEMPS_OPEN_MAX,
};

impl Disk {
    /// Removes the temporary files whose ids are not in `keep` (left over from before a
    /// crash: the engine's state no longer names them); returns how many went.
    ///
    /// The folder's checks first, and `.weft/tmp` opened from the root without following a
    /// symlink (a `.weft` or `.weft/tmp` that is one is refused): the files removed are
    /// only ever this folder's own.
    pub fn remove_stray_temps(&self, keep: &[TempId]) -> io::Result<usize> {
        self.check().map_err(io::Error::other)?;
        let dir = self
            .reserved(TEMP_DIR)
            .map_err(|w| w.into_io("open the temporary files' folder"))?;
        let keep: Vec<String> = keep.iter().map(|t| temp_file_name(*t)).collect();
        let mut strays = Vec::new();
        let mut entries = rfs::Dir::read_from(&dir)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name().to_owned();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." || keep.iter().any(|k| bytes == k.as_bytes()) {
                continue;
            }
            strays.push(name);
        }
        let mut removed = 0;
        for name in strays {
            let st = match rfs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
                continue;
            }
            match rfs::unlinkat(&dir, name.as_c_str(), AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// The temporary files' state, locked (a panic while it was held cannot leave it
    /// inconsistent: every change is one push or remove).
    pub(super) fn temps(&self) -> MutexGuard<'_, Temps> {
        self.temps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The temporary file of `temp`, open for writing: kept from an earlier write, or opened
    /// (made if missing) and kept. `NotFound` if `temp` ended (discarded or committed): a
    /// write carried out after its discard does not make the file again.
    pub(super) fn open_temp(&self, temp: TempId, step: &str) -> Step<Arc<File>> {
        // Held while the file is made, so a discard is wholly before or after it.
        let mut temps = self.temps();
        if let Some(file) = temps.kept(temp) {
            return Ok(file);
        }
        if temps.ended.contains(&temp) {
            return Err(StorageResult::NotFound);
        }
        let tname = temp_file_name(temp);
        let tmp = self.reserved_for(TEMP_DIR, step, &tname)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NONBLOCK
            | OFlags::NOCTTY;
        let fd = rfs::openat(&tmp, tname.as_str(), flags, Mode::from_raw_mode(0o600))
            .map_err(|e| errno_fail(step, &tname, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| ioerr_fail(step, &tname, &e))?;
        if !meta.is_file() {
            return Err(io_fail(format!("{step} {tname:?}: not a file")));
        }
        let file = Arc::new(file);
        if temps.open.len() == TEMPS_OPEN_MAX {
            temps.open.remove(0);
        }
        temps.open.push((temp, Arc::clone(&file)));
        Ok(file)
    }

    /// The temporary file of `temp` if it is kept open (now the most recently used).
    pub(super) fn kept_temp(&self, temp: TempId) -> Option<Arc<File>> {
        self.temps().kept(temp)
    }

    /// Closes the temporary file of `temp` if it is kept open (before a commit or discard).
    pub(super) fn close_temp(&self, temp: TempId) {
        self.temps().open.retain(|(t, _)| *t != temp);
    }

    /// `temp` was committed into place: a late write to it is not carried out.
    pub(super) fn end_temp(&self, temp: TempId) {
        self.temps().end(temp);
    }

    pub(super) fn write_temp(&self, temp: TempId, offset: u64, data: &[u8]) -> Step<StorageResult> {
        const STEP: &str = "write temporary file";
        let file = self.open_temp(temp, STEP)?;
        self.write_into(&file, temp, offset, data)
    }

    /// Writes `data` at `offset` of `temp`'s open temporary file `file`.
    pub(super) fn write_into(
        &self,
        file: &File,
        temp: TempId,
        offset: u64,
        data: &[u8],
    ) -> Step<StorageResult> {
        const STEP: &str = "write temporary file";
        let fail = |e: &io::Error| ioerr_fail(STEP, &temp_file_name(temp), e);
        if data.iter().all(|b| *b == 0) {
            // Zeros beyond the end are a hole already (the commit's set_len makes it). Zeros
            // inside the file (blocks arrive in any order) are punched as a hole: whatever
            // was there (a resumed temp's bad bytes) reads as zeros after, and the file stays
            // sparse. A file system that cannot punch gets the zeros written.
            let len = file.metadata().map_err(|e| fail(&e))?.len();
            if len <= offset {
                return Ok(StorageResult::Done);
            }
            let punch = rfs::FallocateFlags::PUNCH_HOLE | rfs::FallocateFlags::KEEP_SIZE;
            let n = (data.len() as u64).min(len - offset);
            if n == data.len() as u64 && rfs::fallocate(file, punch, offset, n).is_ok() {
                return Ok(StorageResult::Done);
            }
        }
        file.write_all_at(data, offset).map_err(|e| fail(&e))?;
        Ok(StorageResult::Done)
    }

    pub(super) fn discard_temp(&self, temp: TempId) -> Step<StorageResult> {
        const STEP: &str = "discard temporary file";
        // Held until the file is gone, so a write is wholly before or after it.
        let mut temps = self.temps();
        temps.open.retain(|(t, _)| *t != temp);
        temps.end(temp);
        let tname = temp_file_name(temp);
        let tmp = self.reserved_for(TEMP_DIR, STEP, &tname)?;
        match rfs::unlinkat(&tmp, tname.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(StorageResult::Done),
            Err(e) => Err(errno_fail(STEP, &tname, e)),
        }
    }
}

impl Temps {
    /// The file of `temp` if kept open, now the most recently used.
    fn kept(&mut self, temp: TempId) -> Option<Arc<File>> {
        let i = self.open.iter().position(|(t, _)| *t == temp)?;
        let kept = self.open.remove(i);
        let file = Arc::clone(&kept.1);
        self.open.push(kept);
        Some(file)
    }

    /// Remembers `temp` as ended (the oldest forgotten past [`TEMPS_ENDED_MAX`]).
    fn end(&mut self, temp: TempId) {
        if self.ended.contains(&temp) {
            return;
        }
        if self.ended.len() == TEMPS_ENDED_MAX {
            self.ended.pop_front();
        }
        self.ended.push_back(temp);
    }
}

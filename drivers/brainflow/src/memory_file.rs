//! A copy of a file the caller passed, in a memory file of this process, for BrainFlow, which
//! takes files by name only: it opens `/proc/self/fd/N` of the copy. Reopening the caller's own
//! descriptor that way would check the daemon's rights on the file, not the caller's, and the
//! driver host's sandbox does not let it read the caller's directories.
//!
//! The copy is written through a shared mapping that lives as long as the copy, so its pages are
//! in this process's address space (`driver_memory_limit`) and resident set (what the OOM killer
//! weighs), unlike a memory file written with `write`. Its size is checked before anything is
//! copied, against [`MAX_TOTAL`] for all of a session's files.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use bci2token_driver_abi::plugin::ConfigFile;

/// The most a session's passed files may hold together: a BrainFlow CSV of the Cyton's 24 rows
/// at 250 Hz is about 200 MiB an hour.
pub const MAX_TOTAL: u64 = 256 << 20;

pub struct MemoryFile {
    file: File,
    map: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is this value's own and is only unmapped in Drop.
unsafe impl Send for MemoryFile {}

impl std::fmt::Debug for MemoryFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFile").field("fd", &self.file.as_raw_fd()).field("len", &self.len).finish()
    }
}

impl MemoryFile {
    /// Copies `source` (from its start, without moving the caller's file position) if it fits in
    /// what `used` leaves of [`MAX_TOTAL`].
    pub fn copy(source: &ConfigFile, used: u64) -> Result<MemoryFile, String> {
        let name = source.name.display().to_string();
        let size = source.file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
        if used.saturating_add(size) > MAX_TOTAL {
            return Err(format!(
                "{name} holds {} MiB; the brainflow driver copies a session's files into memory, {} MiB at most \
                 in all: play a part of it",
                size.div_ceil(1 << 20),
                MAX_TOTAL >> 20
            ));
        }
        let len = usize::try_from(size).map_err(|_| format!("{name} is too large"))?;
        // SAFETY: a static NUL-terminated name; the new descriptor is owned right below.
        let fd = unsafe { libc::memfd_create(c"bci2token-brainflow".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("cannot make a memory file for {name}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(|e| format!("cannot size the memory file for {name}: {e}"))?;
        let mut copy = MemoryFile { file, map: std::ptr::null_mut(), len: 0 };
        if len == 0 {
            return Ok(copy);
        }
        // SAFETY: a new shared mapping of the whole memory file, which this value unmaps on drop.
        let map = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if map == libc::MAP_FAILED {
            return Err(format!("cannot map {} MiB for {name}: {}", len >> 20, std::io::Error::last_os_error()));
        }
        copy.map = map;
        copy.len = len;
        // SAFETY: the mapping is `len` writable bytes, alive while `copy` is.
        let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
        source.file.read_exact_at(bytes, 0).map_err(|e| format!("reading {name} (did it change?): {e}"))?;
        Ok(copy)
    }

    /// The name BrainFlow opens.
    pub fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        if !self.map.is_null() {
            // SAFETY: the mapping made in `copy`, unmapped once.
            unsafe { libc::munmap(self.map, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn passed(bytes: &[u8]) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("bci2token-memfile-{}-{}", std::process::id(), bytes.len()));
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file.seek(SeekFrom::Start(3)).unwrap();
        ConfigFile { file, name: "rec.csv".into() }
    }

    #[test]
    fn the_copy_reads_as_the_file_by_its_proc_name_and_the_caller_s_position_stays() {
        let mut source = passed(b"0.0\t1.5\n1.0\t2.5\n");
        let copy = MemoryFile::copy(&source, 0).unwrap();
        assert_eq!(std::fs::read(copy.path()).unwrap(), b"0.0\t1.5\n1.0\t2.5\n");
        assert_eq!(copy.len(), 16);
        let mut rest = String::new();
        source.file.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "\t1.5\n1.0\t2.5\n", "the caller's file position is where it was");
        let empty = MemoryFile::copy(&passed(b""), 0).unwrap();
        assert!(empty.is_empty());
        assert_eq!(std::fs::read(empty.path()).unwrap(), b"");
    }

    #[test]
    fn files_beyond_the_session_s_total_are_refused_before_anything_is_copied() {
        let e = MemoryFile::copy(&passed(b"0123456789"), MAX_TOTAL - 5).unwrap_err();
        assert!(e.contains("rec.csv") && e.contains("256 MiB at most"), "{e}");
    }
}

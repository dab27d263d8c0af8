//! The sample buffer a daemon and its driver host share: a memfd of `channels × max_block_frames`
//! f32. The plugin's `read` writes a block straight into it in the host; the daemon copies the
//! block out once the host's reply says it is there. A `read` waits for its reply, so one block
//! is in flight at a time and one slot is enough.
//!
//! The daemon creates the memfd (sealable) and hands it to the host, which sizes and maps it when
//! the device is open. The daemon then seals its size (no shrinking, no growing, no more seals)
//! before it maps it, read-only: a host cannot make the daemon's mapping shorter than its size
//! (which would be SIGBUS in the daemon) or map it larger than it checked.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A memfd for the host: close-on-exec here (the daemon moves it to the host's descriptors),
/// sealable.
pub fn create() -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and flags; the result is a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"bci2token-samples".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A mapping of a sample buffer: `floats` f32.
pub struct Mapping {
    ptr: *mut f32,
    floats: usize,
}

// SAFETY: the mapping is plain memory, owned by this value; moving it between threads is fine.
unsafe impl Send for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} floats)", self.floats)
    }
}

impl Mapping {
    /// The host's side: sizes the buffer on `fd` for `floats` and maps it for writing.
    pub fn for_host(fd: RawFd, floats: usize) -> std::io::Result<Mapping> {
        let bytes = floats.checked_mul(4).ok_or_else(|| std::io::Error::other("a sample buffer too large"))?;
        // SAFETY: ftruncate on a descriptor the daemon passed.
        if unsafe { libc::ftruncate(fd, bytes as libc::off_t) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd, floats, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// The daemon's side: seals the buffer's size, checks it holds `floats`, maps it read-only.
    pub fn for_daemon(fd: &OwnedFd, floats: usize) -> Result<Mapping, String> {
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl with an integer argument on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(format!("its sample buffer cannot be sealed ({})", std::io::Error::last_os_error()));
        }
        // SAFETY: fstat into a zeroed struct of the right type.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(format!("its sample buffer cannot be inspected ({})", std::io::Error::last_os_error()));
        }
        let needed = floats.saturating_mul(4);
        // Exactly: a host must not park memory here beyond its address-space limit.
        if st.st_size as u64 != needed as u64 {
            return Err(format!("its sample buffer holds {} bytes, not the {needed} of a block", st.st_size));
        }
        Self::map(fd.as_raw_fd(), floats, libc::PROT_READ)
            .map_err(|e| format!("its sample buffer cannot be mapped ({e})"))
    }

    /// No buffer yet (a device not open).
    pub fn empty() -> Mapping {
        Mapping { ptr: std::ptr::NonNull::dangling().as_ptr(), floats: 0 }
    }

    fn map(fd: RawFd, floats: usize, prot: libc::c_int) -> std::io::Result<Mapping> {
        if floats == 0 {
            return Ok(Mapping { ptr: std::ptr::NonNull::dangling().as_ptr(), floats });
        }
        // SAFETY: a new shared mapping of `floats * 4` bytes of `fd` (sized above); checked.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), floats * 4, prot, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), floats })
    }

    /// The host's view, for the plugin to write into.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: `floats` f32 mapped for writing (`for_host`); only this process writes, and the
        // daemon reads only after the reply that follows the write.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.floats) }
    }

    /// The daemon's side: copies the first `n` floats into `out` (`n` ≤ both sizes, checked).
    pub fn copy_to(&self, out: &mut [f32], n: usize) -> bool {
        if n > self.floats || n > out.len() {
            return false;
        }
        // SAFETY: `n` floats lie in the mapping and in `out`, which do not overlap. Every bit
        // pattern is a valid f32; a host writing meanwhile (which it must not) can only tear
        // values, it cannot resize the sealed mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, out.as_mut_ptr(), n) };
        true
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.floats > 0 {
            // SAFETY: the mapping made in `map`, unmapped once.
            unsafe { libc::munmap(self.ptr.cast(), self.floats * 4) };
        }
    }
}

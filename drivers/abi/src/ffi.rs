//! `#[repr(C)]` types shared by host and plugins. Ownership rule: whoever allocates frees.
//! Strings and JSON documents produced by a plugin travel in an [`AbiBuf`] that the host hands
//! back to the plugin's `free_buf`; sample memory is allocated by the host and only written by
//! the plugin.

use std::ffi::c_void;

/// Status codes returned by the table's functions.
pub mod status {
    /// The call succeeded (for `read`: `out` holds a block or an event).
    pub const OK: i32 = 0;
    /// `read` only: nothing arrived within the time-out.
    pub const TIMEOUT: i32 = 1;
    /// `read` only: the stream has ended (end of file, script finished).
    pub const END: i32 = 2;
    /// The call failed; the message is in the error buffer or behind `last_error`.
    pub const ERROR: i32 = -1;
    /// The plugin panicked; it caught the panic at the boundary. The message is available as for `ERROR`.
    pub const PANIC: i32 = -2;
}

/// What `read` produced when it returned [`status::OK`].
pub mod read_kind {
    /// `frames` frames of samples were written to `data`.
    pub const BLOCK: u32 = 1;
    /// `event` holds a JSON [`crate::types::DriverEvent`].
    pub const EVENT: u32 = 2;
}

/// Flags of a sample block.
pub mod block_flags {
    /// Samples were lost immediately before this block.
    pub const GAP: u32 = 1;
    /// At least one value in the block is at the amplifier's rail.
    pub const SATURATED: u32 = 2;
    /// The device was reconnected immediately before this block.
    pub const RECONNECTED: u32 = 4;
}

/// A borrowed UTF-8 string: valid for the duration of the call (or forever, for the table's names).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AbiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl AbiStr {
    pub const fn from_static(s: &'static str) -> Self {
        Self { ptr: s.as_ptr(), len: s.len() }
    }

    pub fn borrowed(s: &str) -> Self {
        Self { ptr: s.as_ptr(), len: s.len() }
    }

    /// # Safety
    /// `ptr`/`len` must describe readable memory that outlives the returned slice.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A byte buffer allocated by the plugin (a `Vec<u8>` taken apart); freed by the plugin's `free_buf`.
#[repr(C)]
pub struct AbiBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl AbiBuf {
    pub const EMPTY: AbiBuf = AbiBuf { ptr: std::ptr::null_mut(), len: 0, cap: 0 };

    /// Plugin side: hand a vector over the boundary.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Self { ptr: v.as_mut_ptr(), len: v.len(), cap: v.capacity() }
    }

    /// Plugin side: take the vector back (only in the library that allocated it).
    ///
    /// # Safety
    /// The buffer must come from [`AbiBuf::from_vec`] in this same library and not be freed yet.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: guaranteed by the caller.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }
}

/// The part of the table whose layout is frozen across all ABI versions.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiHeader {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<DriverVTable>()` as the plugin was built; lets the host see appended fields.
    pub struct_size: u32,
}

/// The output slot of `read`. The host sets `data` and `capacity`; the plugin sets the rest.
#[repr(C)]
pub struct ReadOut {
    /// Host: channel-major sample memory, `capacity` floats long.
    pub data: *mut f32,
    pub capacity: usize,
    /// Plugin: [`read_kind::BLOCK`] or [`read_kind::EVENT`].
    pub kind: u32,
    /// Plugin: frames written (`data[ch * frames + i]`).
    pub frames: u32,
    /// Plugin: [`block_flags`].
    pub flags: u32,
    /// Plugin: time of the first frame in seconds on the stream's clock.
    pub t: f64,
    /// Plugin: the JSON event when `kind` is EVENT (freed by the host through `free_buf`).
    pub event: AbiBuf,
}

/// The function table of a driver plugin, ABI 1.0.
#[repr(C)]
pub struct DriverVTable {
    pub header: AbiHeader,
    /// Driver name (`replay`, `synthetic`, ...): static, ASCII, used in `--driver NAME`.
    pub name: AbiStr,
    /// Driver version: static.
    pub version: AbiStr,
    /// Writes a JSON array of [`crate::types::DeviceInfo`] (or an error message) into `out`.
    pub probe: unsafe extern "C" fn(out: *mut AbiBuf) -> i32,
    /// Opens a device from a JSON object of config keys. On success `*handle` is set; on error the
    /// message is written to `err`.
    pub open: unsafe extern "C" fn(config: AbiStr, handle: *mut *mut c_void, err: *mut AbiBuf) -> i32,
    /// Writes a JSON [`crate::types::StreamInfo`] into `out`.
    pub describe: unsafe extern "C" fn(handle: *mut c_void, out: *mut AbiBuf) -> i32,
    pub start: unsafe extern "C" fn(handle: *mut c_void) -> i32,
    /// Waits at most `timeout_ms` for the next block or event.
    pub read: unsafe extern "C" fn(handle: *mut c_void, timeout_ms: u32, out: *mut ReadOut) -> i32,
    pub stop: unsafe extern "C" fn(handle: *mut c_void) -> i32,
    /// Releases the device; the handle is invalid afterwards.
    pub close: unsafe extern "C" fn(handle: *mut c_void),
    /// Writes the message of the last failed call on this handle into `out`.
    pub last_error: unsafe extern "C" fn(handle: *mut c_void, out: *mut AbiBuf) -> i32,
    /// Frees a buffer this plugin allocated.
    pub free_buf: unsafe extern "C" fn(buf: AbiBuf),
}

/// A `DriverVTable` in a `static`: the raw pointers inside only point at static, immutable data.
#[repr(transparent)]
pub struct StaticVTable(pub DriverVTable);

// SAFETY: every pointer in the table refers to 'static immutable data or to functions.
unsafe impl Sync for StaticVTable {}

/// The signature of [`crate::ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const DriverVTable;

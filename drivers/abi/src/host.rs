//! The daemon's side: load plugins with `libloading`, check the ABI, and drive devices safely.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ffi::{read_kind, status, AbiBuf, AbiStr, DriverVTable, EntryFn, ReadOut};
use crate::types::{DeviceInfo, DriverEvent, StreamInfo};
use crate::{ABI_MAJOR, ABI_MINOR, ENTRY_SYMBOL};

/// Why a file in the driver path could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot be loaded as a shared library: {reason}", path.display())]
    NotALibrary { path: PathBuf, reason: String },
    #[error("{}: not a bci2token driver plugin (it does not export `{ENTRY_SYMBOL}`)", path.display())]
    MissingEntry { path: PathBuf },
    #[error("{}: {problem}", path.display())]
    BadTable { path: PathBuf, problem: String },
    #[error(
        "{}: driver ABI {found_major}.{found_minor} is not supported; this bci2tokend speaks ABI {ABI_MAJOR}.x \
         (up to {ABI_MAJOR}.{ABI_MINOR}). Rebuild the plugin against bci2token-driver-abi {ABI_MAJOR}.x or install \
         the matching driver package",
        path.display()
    )]
    AbiMismatch { path: PathBuf, found_major: u32, found_minor: u32 },
}

/// A failed call into a loaded driver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("driver `{driver}`: {message}")]
pub struct DriverError {
    pub driver: String,
    pub message: String,
    /// True when the plugin caught a panic at the boundary.
    pub panicked: bool,
}

/// A loaded plugin. The library stays mapped as long as the `Plugin` or any of its devices lives.
pub struct Plugin {
    // Field order matters for drop: the table points into the library.
    vtable: *const DriverVTable,
    name: String,
    version: String,
    abi: (u32, u32),
    path: PathBuf,
    _library: libloading::Library,
}

// SAFETY: the table is immutable static data of the library, which lives as long as `Plugin`;
// the plugin functions without a handle (probe, open) are thread-safe by contract.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("path", &self.path).finish()
    }
}

fn static_str(path: &Path, what: Identity, s: AbiStr) -> Result<String, LoadError> {
    // SAFETY: the table's strings are static data of the loaded library.
    let bytes = unsafe { s.as_bytes() };
    let text = std::str::from_utf8(bytes).map_err(|_| format!("the driver {} is not UTF-8", what.as_str()));
    let text = text.and_then(|t| check_identity(what, t).map(|()| t));
    text.map(str::to_string).map_err(|problem| LoadError::BadTable { path: path.to_path_buf(), problem })
}

/// A driver's name or version at most (they go into logs, listings and `[driver.NAME]` sections).
pub const MAX_IDENTITY: usize = 64;

/// Whether `text` may be a driver's `what` ([`Identity`]): 1 to [`MAX_IDENTITY`] bytes, of ASCII
/// letters, digits and `._+-` for a name (what users type after `--driver` and in
/// `[drivers.NAME]`), of printable ASCII for a version (`1.0~rc1`, `2.1 beta`). Also applied to
/// what a driver host reports.
pub fn check_identity(what: Identity, text: &str) -> Result<(), String> {
    let (fits, allowed): (fn(char) -> bool, &str) = match what {
        Identity::Name => {
            (|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'), "ASCII letters, digits and `._+-`")
        }
        Identity::Version => (|c| matches!(c, ' '..='~'), "printable ASCII"),
    };
    if text.is_empty() || text.len() > MAX_IDENTITY || !text.chars().all(fits) {
        let what = what.as_str();
        return Err(format!("the driver {what} ({} bytes) is not 1 to {MAX_IDENTITY} bytes of {allowed}", text.len()));
    }
    Ok(())
}

/// What [`check_identity`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Name,
    Version,
}

impl Identity {
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Name => "name",
            Identity::Version => "version",
        }
    }
}

/// An error with its causes (libloading puts dlopen's own message in the source). Shared by
/// everything that loads a library: the plugin host, liblsl, libtorch's CUDA backend.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The most samples (channels × frames) one block may hold: 256 MiB of f32.
pub const MAX_BLOCK_FLOATS: usize = 64 << 20;

/// Labels, units and the description longer than this make a stream description unusable.
pub const MAX_STREAM_TEXT: usize = 4096;

/// Whether `c` would change how the text around it looks in a terminal or a log: control
/// characters, the bidirectional formatting characters (which reorder what follows them, so a
/// message could show other words than it holds), and the other invisible format characters and
/// line separators (zero-width spaces and joiners, the byte-order mark, interlinear annotation,
/// tags).
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Outside text made fit for a message: at most 256 characters, [`unprintable`] ones as `?`.
pub fn bounded(text: &str) -> String {
    const MAX: usize = 256;
    let mut out: String = text.chars().take(MAX).map(|c| if unprintable(c) { '?' } else { c }).collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// Refuses a stream description the host could not work with: no channels, a sample rate that
/// is not a positive finite number, blocks of no frames or larger than [`MAX_BLOCK_FLOATS`]
/// (the host allocates channels × max_block_frames floats), text beyond [`MAX_STREAM_TEXT`].
/// Also applied to what a driver host process reports, which the daemon cannot trust more than
/// the plugin.
pub fn check_stream(info: &StreamInfo) -> Result<(), String> {
    let block_floats = info.channels.len().saturating_mul(info.max_block_frames as usize);
    if info.channels.is_empty()
        || !info.sample_rate.is_finite()
        || info.sample_rate <= 0.0
        || info.max_block_frames == 0
        || block_floats > MAX_BLOCK_FLOATS
    {
        return Err(format!(
            "the device describes an unusable stream ({} channels, {} Hz, {} frames per block)",
            info.channels.len(),
            info.sample_rate,
            info.max_block_frames
        ));
    }
    let long = |t: &str| t.len() > MAX_STREAM_TEXT;
    if long(&info.description) || info.channels.iter().any(|c| long(&c.label) || long(&c.unit)) {
        return Err(format!("the device describes its stream with a text longer than {MAX_STREAM_TEXT} bytes"));
    }
    Ok(())
}

impl Plugin {
    /// Loads `path`, checks the ABI header before reading anything else, and reads name and version.
    pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
        // SAFETY: loading a library runs its initialisers; the driver path is trusted configuration
        // (root-owned directories in a system install).
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| LoadError::NotALibrary { path: path.to_path_buf(), reason: error_chain(&e) })?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: EntryFn = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
            .map(|sym| *sym)
            .map_err(|_| LoadError::MissingEntry { path: path.to_path_buf() })?;
        // SAFETY: the entry point takes no arguments and returns a pointer to a static table.
        let vtable = unsafe { entry() };
        if vtable.is_null() {
            return Err(LoadError::BadTable {
                path: path.to_path_buf(),
                problem: "the entry point returned no table".into(),
            });
        }
        // SAFETY: every ABI version starts with the frozen AbiHeader.
        let header = unsafe { (*vtable).header };
        if header.abi_major != ABI_MAJOR {
            return Err(LoadError::AbiMismatch {
                path: path.to_path_buf(),
                found_major: header.abi_major,
                found_minor: header.abi_minor,
            });
        }
        if (header.struct_size as usize) < std::mem::size_of::<DriverVTable>() {
            return Err(LoadError::BadTable {
                path: path.to_path_buf(),
                problem: format!(
                    "the function table is {} bytes, ABI {ABI_MAJOR}.0 needs at least {}",
                    header.struct_size,
                    std::mem::size_of::<DriverVTable>()
                ),
            });
        }
        // SAFETY: the size check above proves the table has every field of this version.
        let table = unsafe { &*vtable };
        let name = static_str(path, Identity::Name, table.name)?;
        let version = static_str(path, Identity::Version, table.version)?;
        Ok(Arc::new(Plugin {
            vtable,
            name,
            version,
            abi: (header.abi_major, header.abi_minor),
            path: path.to_path_buf(),
            _library: library,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    /// (major, minor) the plugin was built with.
    pub fn abi(&self) -> (u32, u32) {
        self.abi
    }
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn table(&self) -> &DriverVTable {
        // SAFETY: checked in `load`; valid while the library is loaded, i.e. while self lives.
        unsafe { &*self.vtable }
    }

    /// Takes ownership of a plugin buffer: copies it out and hands it back to the plugin's allocator.
    fn take_buf(&self, buf: AbiBuf) -> Vec<u8> {
        let bytes = if buf.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the plugin filled ptr/len with a live allocation.
            unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec()
        };
        // SAFETY: the buffer came from this plugin and is freed exactly once.
        unsafe { (self.table().free_buf)(buf) };
        bytes
    }

    fn error(&self, code: i32, message: String) -> DriverError {
        DriverError { driver: self.name.clone(), message, panicked: code == status::PANIC }
    }

    /// Lists what the driver can open now.
    pub fn probe(&self) -> Result<Vec<DeviceInfo>, DriverError> {
        let mut out = AbiBuf::EMPTY;
        // SAFETY: `out` is a valid slot.
        let code = unsafe { (self.table().probe)(&mut out) };
        let bytes = self.take_buf(out);
        if code != status::OK {
            return Err(self.error(code, String::from_utf8_lossy(&bytes).into_owned()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.error(status::ERROR, format!("the device list is not valid JSON: {e}")))
    }

    /// Opens a device with a JSON object of config keys and reads its stream description.
    pub fn open(self: &Arc<Self>, config: &serde_json::Map<String, serde_json::Value>) -> Result<Device, DriverError> {
        let json = serde_json::Value::Object(config.clone()).to_string();
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut err = AbiBuf::EMPTY;
        // SAFETY: the config string outlives the call; handle and err are valid slots.
        let code = unsafe { (self.table().open)(AbiStr::borrowed(&json), &mut handle, &mut err) };
        let message = self.take_buf(err);
        if code != status::OK || handle.is_null() {
            let text = String::from_utf8_lossy(&message).into_owned();
            return Err(self.error(code, if text.is_empty() { "open failed without a message".into() } else { text }));
        }
        let mut device = Device { plugin: Arc::clone(self), handle, info: None };
        let mut out = AbiBuf::EMPTY;
        // SAFETY: live handle, valid slot.
        let code = unsafe { (self.table().describe)(handle, &mut out) };
        let bytes = self.take_buf(out);
        if code != status::OK {
            return Err(device.last_error(code));
        }
        let info: StreamInfo = serde_json::from_slice(&bytes)
            .map_err(|e| self.error(status::ERROR, format!("the stream description is not valid JSON: {e}")))?;
        check_stream(&info).map_err(|m| self.error(status::ERROR, m))?;
        device.info = Some(info);
        Ok(device)
    }
}

/// What [`Device::read`] produced. (Serialisable: a driver host sends it to the daemon, a
/// block's samples following it.)
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Read {
    /// `frames` frames are in the buffer (channel-major), the first at stream time `t`.
    Block {
        frames: usize,
        t: f64,
        flags: u32,
    },
    Event(DriverEvent),
    Timeout,
    End,
}

/// An open device of a loaded plugin. Closed on drop.
pub struct Device {
    plugin: Arc<Plugin>,
    handle: *mut c_void,
    info: Option<StreamInfo>,
}

// SAFETY: a device handle is used by one thread at a time (enforced by `&mut self`), which the ABI allows.
unsafe impl Send for Device {}

impl Device {
    pub fn info(&self) -> &StreamInfo {
        self.info.as_ref().expect("Device is only handed out after describe succeeded")
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn last_error(&self, code: i32) -> DriverError {
        let mut out = AbiBuf::EMPTY;
        // SAFETY: live handle, valid slot.
        unsafe { (self.plugin.table().last_error)(self.handle, &mut out) };
        let text = String::from_utf8_lossy(&self.plugin.take_buf(out)).into_owned();
        self.plugin.error(code, if text.is_empty() { format!("call failed with status {code}") } else { text })
    }

    pub fn start(&mut self) -> Result<(), DriverError> {
        // SAFETY: live handle.
        match unsafe { (self.plugin.table().start)(self.handle) } {
            status::OK => Ok(()),
            code => Err(self.last_error(code)),
        }
    }

    pub fn stop(&mut self) -> Result<(), DriverError> {
        // SAFETY: live handle.
        match unsafe { (self.plugin.table().stop)(self.handle) } {
            status::OK => Ok(()),
            code => Err(self.last_error(code)),
        }
    }

    /// Waits at most `timeout` for a block (written into `buf`) or an event.
    pub fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<Read, DriverError> {
        assert!(buf.len() >= self.info().buffer_len(), "read buffer smaller than channels × max_block_frames");
        let mut out = ReadOut {
            data: buf.as_mut_ptr(),
            capacity: buf.len(),
            kind: 0,
            frames: 0,
            flags: 0,
            t: 0.0,
            event: AbiBuf::EMPTY,
        };
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        // SAFETY: live handle; `out.data` points at `buf`, which outlives the call.
        let code = unsafe { (self.plugin.table().read)(self.handle, timeout_ms, &mut out) };
        match code {
            status::OK => match out.kind {
                read_kind::BLOCK => {
                    let frames = out.frames as usize;
                    let max = self.info().max_block_frames as usize;
                    if frames > max {
                        return Err(self.plugin.error(
                            status::ERROR,
                            format!("the driver returned {frames} frames, more than its maximum {max}"),
                        ));
                    }
                    Ok(Read::Block { frames, t: out.t, flags: out.flags })
                }
                read_kind::EVENT => {
                    let bytes = self.plugin.take_buf(out.event);
                    serde_json::from_slice(&bytes)
                        .map(Read::Event)
                        .map_err(|e| self.plugin.error(status::ERROR, format!("the driver sent an invalid event: {e}")))
                }
                other => {
                    Err(self.plugin.error(status::ERROR, format!("the driver returned unknown read kind {other}")))
                }
            },
            status::TIMEOUT => Ok(Read::Timeout),
            status::END => Ok(Read::End),
            code => Err(self.last_error(code)),
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: the handle is live and closed exactly once.
        unsafe { (self.plugin.table().close)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_shows_no_control_or_reordering_characters_and_ends_after_256() {
        // "file.exe" shown as "file\u{202E}txt.exe" would read "fileexe.txt".
        assert_eq!(bounded("a\u{202E}b\u{2066}c\u{200F}d\ne\u{1b}[31m"), "a?b?c?d?e?[31m");
        assert_eq!(bounded("x\u{200B}y\u{FEFF}z\u{E0041}"), "x?y?z?");
        assert_eq!(bounded("Grüße, 東京"), "Grüße, 東京");
        let long = "x".repeat(300);
        assert_eq!(bounded(&long), format!("{}…", "x".repeat(256)));
    }

    #[test]
    fn a_driver_name_is_short_plain_ascii() {
        assert!(check_identity(Identity::Name, "openbci").is_ok());
        assert!(check_identity(Identity::Version, "1.2.3-rc.1+g1a2b").is_ok());
        assert!(check_identity(Identity::Version, "1.0~rc1 beta").is_ok());
        assert!(check_identity(Identity::Version, "1.0\u{202E}").is_err());
        assert!(check_identity(Identity::Version, "1.0\u{3164}").is_err());
        for bad in ["", "two words", "x\u{202E}y", "../etc", "名前", &"n".repeat(65)] {
            assert!(check_identity(Identity::Name, bad).is_err(), "{bad:?}");
        }
    }
}

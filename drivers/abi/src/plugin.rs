//! The plugin author's side: implement [`Driver`] and [`Device`], then call
//! `bci2token_driver_abi::export_driver!(MyDriver);` once in the cdylib.
//!
//! The generated shims convert between the C table and these traits, catch every panic at the
//! boundary (a panic must never unwind into the daemon), and keep the last error per handle.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::ffi::{read_kind, status, AbiBuf, AbiHeader, AbiStr, DriverVTable, ReadOut};
use crate::types::{DeviceInfo, DriverEvent, StreamInfo};

/// Config keys as given by the user (`--set KEY=VALUE` arrives as a JSON string), plus the host
/// keys: names starting with `_`, set only by the daemon (a session cannot), from the admin's
/// `[drivers.NAME]` settings (`_library`, …) and `_caller_paths` (see [`config_file`]).
pub type Config = serde_json::Map<String, serde_json::Value>;

/// Whether `key` is a host key (set by the daemon, never by a session).
pub fn is_host_key(key: &str) -> bool {
    key.starts_with('_')
}

/// A file a session's config names, open for reading.
#[derive(Debug)]
pub struct ConfigFile {
    pub file: std::fs::File,
    /// What the caller called it: for messages, and its extension may tell a format. Never opened.
    pub name: std::path::PathBuf,
}

/// Reads a file-valued config key. The daemon passes a file the caller opened with its own rights
/// as `{"fd": N, "name": "..."}`: the descriptor is valid during `open` only, so this duplicates
/// it. A plain string is a path, opened here only when the host allows callers' paths
/// (`_caller_paths`: a `--user` daemon, whose callers are its own user); a system daemon's driver
/// must not open a file a caller names with the daemon's rights.
pub fn config_file(config: &Config, key: &str) -> Result<Option<ConfigFile>, String> {
    use std::os::fd::BorrowedFd;
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(o)) => {
            let fd = o
                .get("fd")
                .and_then(serde_json::Value::as_i64)
                .and_then(|fd| i32::try_from(fd).ok())
                .filter(|fd| *fd >= 0)
                .ok_or_else(|| format!("config key `{key}`: a passed file needs its descriptor"))?;
            let name = o.get("name").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
            // SAFETY: the host keeps descriptor `fd` open for the duration of `open`, which is when
            // this runs; it is duplicated before being used.
            let owned = unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .map_err(|e| format!("config key `{key}`: the passed file: {e}"))?;
            Ok(Some(ConfigFile { file: std::fs::File::from(owned), name: name.into() }))
        }
        Some(serde_json::Value::String(p)) if !p.is_empty() => {
            if !config_bool(config, "_caller_paths")?.unwrap_or(false) {
                return Err(format!(
                    "config key `{key}`: the system daemon opens no file by a caller's path; pass the file itself \
                     (bci2tokenctl opens it and passes it)"
                ));
            }
            let path = std::path::PathBuf::from(p);
            if path.is_relative() {
                // The daemon's working directory means nothing to the caller.
                return Err(format!("config key `{key}` must be an absolute path, got {}", path.display()));
            }
            let file = std::fs::File::open(&path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
            Ok(Some(ConfigFile { file, name: path }))
        }
        Some(other) => Err(format!("config key `{key}`: expected a file, got {other}")),
    }
}

/// A driver: a kind of device and how to find and open one.
pub trait Driver: 'static {
    /// Name used in `--driver NAME` (lower case, no spaces).
    const NAME: &'static str;
    /// The driver's own version.
    const VERSION: &'static str;
    type Device: Device;

    /// Lists what can be opened now. Cheap: no device is opened.
    fn probe() -> Result<Vec<DeviceInfo>, String>;
    /// Opens a device; every config key the driver does not know is an error naming it.
    fn open(config: &Config) -> Result<Self::Device, String>;
}

/// What `read` produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    /// `frames` frames were written channel-major to the buffer, the first at stream time `t`.
    Block {
        frames: usize,
        t: f64,
        flags: u32,
    },
    Event(DriverEvent),
    Timeout,
    End,
}

/// An open device. Called from one thread at a time (the daemon's acquisition thread).
pub trait Device: Send + 'static {
    fn info(&self) -> StreamInfo;
    fn start(&mut self) -> Result<(), String>;
    /// Waits at most `timeout` for the next block or event. `buf` holds
    /// `channels * max_block_frames` floats; write `buf[ch * frames + i]`.
    fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<ReadOutcome, String>;
    fn stop(&mut self) -> Result<(), String>;
}

struct Handle<D> {
    device: D,
    last_error: String,
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    format!("the driver panicked: {text}")
}

/// Runs `f`, turning a panic into `Err`.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, (i32, String)> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(msg)) => Err((status::ERROR, msg)),
        Err(payload) => Err((status::PANIC, panic_message(payload))),
    }
}

fn put(out: *mut AbiBuf, bytes: Vec<u8>) {
    if !out.is_null() {
        // SAFETY: the host passes a valid, writable AbiBuf slot.
        unsafe { out.write(AbiBuf::from_vec(bytes)) };
    }
}

unsafe extern "C" fn probe_shim<D: Driver>(out: *mut AbiBuf) -> i32 {
    let result = guarded(|| {
        let list = D::probe()?;
        serde_json::to_vec(&list).map_err(|e| e.to_string())
    });
    match result {
        Ok(json) => {
            put(out, json);
            status::OK
        }
        Err((code, msg)) => {
            put(out, msg.into_bytes());
            code
        }
    }
}

unsafe extern "C" fn open_shim<D: Driver>(config: AbiStr, handle: *mut *mut c_void, err: *mut AbiBuf) -> i32 {
    // SAFETY: the host keeps the config string alive for the call.
    let bytes = unsafe { config.as_bytes() };
    let result = guarded(|| {
        let config: Config =
            serde_json::from_slice(bytes).map_err(|e| format!("the driver config is not a JSON object: {e}"))?;
        let device = D::open(&config)?;
        Ok(Box::into_raw(Box::new(Handle { device, last_error: String::new() })))
    });
    match result {
        Ok(ptr) => {
            // SAFETY: the host passes a valid slot for the handle.
            unsafe { handle.write(ptr.cast()) };
            status::OK
        }
        Err((code, msg)) => {
            put(err, msg.into_bytes());
            code
        }
    }
}

/// Runs `f` on the handle's device, recording a failure as the handle's last error.
fn with_device<D: Device, T>(handle: *mut c_void, f: impl FnOnce(&mut D) -> Result<T, String>) -> Result<T, i32> {
    if handle.is_null() {
        return Err(status::ERROR);
    }
    // SAFETY: non-null handles come from open_shim::<D> and are used by one thread at a time.
    let h = unsafe { &mut *handle.cast::<Handle<D>>() };
    match guarded(|| f(&mut h.device)) {
        Ok(v) => Ok(v),
        Err((code, msg)) => {
            h.last_error = msg;
            Err(code)
        }
    }
}

unsafe extern "C" fn describe_shim<D: Driver>(handle: *mut c_void, out: *mut AbiBuf) -> i32 {
    let r = with_device::<D::Device, _>(handle, |d| serde_json::to_vec(&d.info()).map_err(|e| e.to_string()));
    match r {
        Ok(json) => {
            put(out, json);
            status::OK
        }
        Err(code) => code,
    }
}

unsafe extern "C" fn start_shim<D: Driver>(handle: *mut c_void) -> i32 {
    with_device::<D::Device, _>(handle, |d| d.start()).map_or_else(|c| c, |()| status::OK)
}

unsafe extern "C" fn stop_shim<D: Driver>(handle: *mut c_void) -> i32 {
    with_device::<D::Device, _>(handle, |d| d.stop()).map_or_else(|c| c, |()| status::OK)
}

unsafe extern "C" fn read_shim<D: Driver>(handle: *mut c_void, timeout_ms: u32, out: *mut ReadOut) -> i32 {
    if out.is_null() {
        return status::ERROR;
    }
    // SAFETY: the host passes a valid ReadOut whose data/capacity describe writable memory.
    let out = unsafe { &mut *out };
    let buf: &mut [f32] = if out.data.is_null() {
        &mut []
    } else {
        // SAFETY: see above.
        unsafe { std::slice::from_raw_parts_mut(out.data, out.capacity) }
    };
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    match with_device::<D::Device, _>(handle, |d| d.read(timeout, buf)) {
        Ok(ReadOutcome::Block { frames, t, flags }) => {
            out.kind = read_kind::BLOCK;
            out.frames = u32::try_from(frames).unwrap_or(u32::MAX);
            out.t = t;
            out.flags = flags;
            status::OK
        }
        Ok(ReadOutcome::Event(event)) => match serde_json::to_vec(&event) {
            Ok(json) => {
                out.kind = read_kind::EVENT;
                out.event = AbiBuf::from_vec(json);
                status::OK
            }
            Err(_) => status::ERROR,
        },
        Ok(ReadOutcome::Timeout) => status::TIMEOUT,
        Ok(ReadOutcome::End) => status::END,
        Err(code) => code,
    }
}

unsafe extern "C" fn close_shim<D: Driver>(handle: *mut c_void) {
    if handle.is_null() {
        return;
    }
    // SAFETY: the handle came from open_shim::<D>; the host calls close exactly once.
    let boxed = unsafe { Box::from_raw(handle.cast::<Handle<D::Device>>()) };
    // A panicking Drop must not unwind into the host either.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
}

unsafe extern "C" fn last_error_shim<D: Driver>(handle: *mut c_void, out: *mut AbiBuf) -> i32 {
    if handle.is_null() {
        return status::ERROR;
    }
    // SAFETY: as in with_device.
    let h = unsafe { &*handle.cast::<Handle<D::Device>>() };
    put(out, h.last_error.clone().into_bytes());
    status::OK
}

unsafe extern "C" fn free_buf_shim(buf: AbiBuf) {
    // SAFETY: the host only hands back buffers this library allocated, once.
    drop(unsafe { buf.into_vec() });
}

/// The table for driver `D`; used by [`crate::export_driver!`].
pub const fn vtable<D: Driver>() -> DriverVTable {
    DriverVTable {
        header: AbiHeader {
            abi_major: crate::ABI_MAJOR,
            abi_minor: crate::ABI_MINOR,
            struct_size: std::mem::size_of::<DriverVTable>() as u32,
        },
        name: AbiStr::from_static(D::NAME),
        version: AbiStr::from_static(D::VERSION),
        probe: probe_shim::<D>,
        open: open_shim::<D>,
        describe: describe_shim::<D>,
        start: start_shim::<D>,
        read: read_shim::<D>,
        stop: stop_shim::<D>,
        close: close_shim::<D>,
        last_error: last_error_shim::<D>,
        free_buf: free_buf_shim,
    }
}

/// Exports `$driver` (a type implementing [`Driver`]) as this library's plugin entry point.
#[macro_export]
macro_rules! export_driver {
    ($driver:ty) => {
        static BCI2TOKEN_DRIVER_VTABLE: $crate::ffi::StaticVTable =
            $crate::ffi::StaticVTable($crate::plugin::vtable::<$driver>());

        /// The plugin entry point the daemon looks up.
        #[unsafe(no_mangle)]
        pub extern "C" fn bci2token_driver_entry() -> *const $crate::ffi::DriverVTable {
            &BCI2TOKEN_DRIVER_VTABLE.0
        }
    };
}

/// For sources that simulate a live device (file replay, the synthetic board): waits until the
/// stream time `due_seconds` (the end of the next block, scaled by the replay speed) has passed on
/// the wall clock since `started`. Returns false, after sleeping `timeout`, when that is further
/// away than `timeout`; the caller then reports [`ReadOutcome::Timeout`].
pub fn wait_until_due(started: std::time::Instant, due_seconds: f64, timeout: Duration) -> bool {
    let due = Duration::from_secs_f64(due_seconds.max(0.0));
    let wait = due.saturating_sub(started.elapsed());
    if wait > timeout {
        std::thread::sleep(timeout);
        return false;
    }
    std::thread::sleep(wait);
    true
}

/// Copies a channel-major block of `channels * frames` values into the host's read buffer.
pub fn copy_block(block: &[f32], buf: &mut [f32]) -> Result<(), String> {
    let n = block.len();
    if buf.len() < n {
        return Err(format!("the read buffer of {} values is smaller than a block of {n}", buf.len()));
    }
    buf[..n].copy_from_slice(block);
    Ok(())
}

/// Reads a config value that users may give as a JSON string (`--set speed=0`) or a number.
pub fn config_f64(config: &Config, key: &str) -> Result<Option<f64>, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
        Some(serde_json::Value::String(s)) => {
            s.trim().parse::<f64>().map(Some).map_err(|_| format!("config key `{key}`: {s:?} is not a number"))
        }
        Some(other) => Err(format!("config key `{key}`: expected a number, got {other}")),
    }
}

/// Reads a text config value; present but empty, or not text, is an error naming the key.
pub fn config_string(config: &Config, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Err(format!("config key `{key}` is empty")),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("config key `{key}`: expected text, got {other}")),
    }
}

/// Reads a boolean config value given as JSON bool or as a string (`true/false/yes/no/on/off/1/0`).
pub fn config_bool(config: &Config, key: &str) -> Result<Option<bool>, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "off" | "0" => Ok(Some(false)),
            _ => Err(format!("config key `{key}`: {s:?} is not a boolean (use true or false)")),
        },
        Some(other) => Err(format!("config key `{key}`: expected true or false, got {other}")),
    }
}

/// Fails with a message naming the first key not in `known`.
pub fn reject_unknown_keys(driver: &str, config: &Config, known: &[&str]) -> Result<(), String> {
    match config.keys().find(|k| !is_host_key(k) && !known.contains(&k.as_str())) {
        // The host prefixes "driver `NAME`: " to every driver error.
        Some(k) => Err(format!("no config key `{k}` (valid keys for {driver}: {})", known.join(", "))),
        None => Ok(()),
    }
}

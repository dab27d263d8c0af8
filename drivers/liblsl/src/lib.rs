//! liblsl, the Lab Streaming Layer library, loaded at run time with `libloading`: nothing of it is
//! needed to build, and a system without it still runs everything else. [`Lsl::load`] finds the
//! library (a configured path, `$BCI2TOKEN_LIBLSL`, then the usual names through the dynamic
//! linker's search path) and resolves every function this project calls, so a too-old liblsl is
//! refused at load, with the missing symbol named, rather than failing later.
//!
//! The safe types own their liblsl objects and destroy them on drop: [`StreamInfo`], [`Inlet`],
//! [`Outlet`]. liblsl's own threads do the networking; every call here is a plain C call.

use bci2token_driver_abi::host::error_chain;
use std::ffi::{c_char, c_double, c_int, c_long, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable naming the liblsl file to load.
pub const LIBLSL_ENV: &str = "BCI2TOKEN_LIBLSL";
/// Names tried through the dynamic linker's search path, newest ABI first.
pub const LIBRARY_NAMES: &[&str] = &["liblsl.so.2", "liblsl.so", "liblsl64.so", "liblsl.so.1"];

/// Channel formats (`lsl_channel_format_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFormat {
    Float32,
    Double64,
    String,
    Int32,
    Int16,
    Int8,
    Int64,
    Undefined,
}

impl ChannelFormat {
    fn from_c(v: c_int) -> ChannelFormat {
        match v {
            1 => ChannelFormat::Float32,
            2 => ChannelFormat::Double64,
            3 => ChannelFormat::String,
            4 => ChannelFormat::Int32,
            5 => ChannelFormat::Int16,
            6 => ChannelFormat::Int8,
            7 => ChannelFormat::Int64,
            _ => ChannelFormat::Undefined,
        }
    }

    fn to_c(self) -> c_int {
        match self {
            ChannelFormat::Float32 => 1,
            ChannelFormat::Double64 => 2,
            ChannelFormat::String => 3,
            ChannelFormat::Int32 => 4,
            ChannelFormat::Int16 => 5,
            ChannelFormat::Int8 => 6,
            ChannelFormat::Int64 => 7,
            ChannelFormat::Undefined => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelFormat::Float32 => "float32",
            ChannelFormat::Double64 => "double64",
            ChannelFormat::String => "string",
            ChannelFormat::Int32 => "int32",
            ChannelFormat::Int16 => "int16",
            ChannelFormat::Int8 => "int8",
            ChannelFormat::Int64 => "int64",
            ChannelFormat::Undefined => "undefined",
        }
    }

    pub fn is_numeric(self) -> bool {
        !matches!(self, ChannelFormat::String | ChannelFormat::Undefined)
    }
}

/// A liblsl call that failed (its `lsl_error_code_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LslError {
    Timeout,
    /// The stream is gone and could not be recovered.
    Lost,
    Argument,
    Internal,
    Other(i32),
}

impl LslError {
    fn check(ec: i32) -> Result<(), LslError> {
        match ec {
            0 => Ok(()),
            -1 => Err(LslError::Timeout),
            -2 => Err(LslError::Lost),
            -3 => Err(LslError::Argument),
            -4 => Err(LslError::Internal),
            other => Err(LslError::Other(other)),
        }
    }
}

impl std::fmt::Display for LslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LslError::Timeout => write!(f, "timed out"),
            LslError::Lost => write!(f, "the stream was lost"),
            LslError::Argument => write!(f, "liblsl refused an argument"),
            LslError::Internal => write!(f, "internal liblsl error"),
            LslError::Other(c) => write!(f, "liblsl error {c}"),
        }
    }
}

type Info = *mut c_void;
type Xml = *mut c_void;

/// The functions this project calls, resolved once at load.
struct Fns {
    library_version: unsafe extern "C" fn() -> c_int,
    local_clock: unsafe extern "C" fn() -> c_double,
    resolve_all: unsafe extern "C" fn(*mut Info, u32, c_double) -> c_int,
    resolve_byprop: unsafe extern "C" fn(*mut Info, u32, *const c_char, *const c_char, c_int, c_double) -> c_int,
    resolve_bypred: unsafe extern "C" fn(*mut Info, u32, *const c_char, c_int, c_double) -> c_int,
    create_streaminfo:
        unsafe extern "C" fn(*const c_char, *const c_char, c_int, c_double, c_int, *const c_char) -> Info,
    destroy_streaminfo: unsafe extern "C" fn(Info),
    get_name: unsafe extern "C" fn(Info) -> *const c_char,
    get_type: unsafe extern "C" fn(Info) -> *const c_char,
    get_channel_count: unsafe extern "C" fn(Info) -> c_int,
    get_nominal_srate: unsafe extern "C" fn(Info) -> c_double,
    get_channel_format: unsafe extern "C" fn(Info) -> c_int,
    get_source_id: unsafe extern "C" fn(Info) -> *const c_char,
    get_hostname: unsafe extern "C" fn(Info) -> *const c_char,
    get_desc: unsafe extern "C" fn(Info) -> Xml,
    get_xml: unsafe extern "C" fn(Info) -> *mut c_char,
    destroy_string: unsafe extern "C" fn(*mut c_char),
    child: unsafe extern "C" fn(Xml, *const c_char) -> Xml,
    next_sibling_n: unsafe extern "C" fn(Xml, *const c_char) -> Xml,
    child_value_n: unsafe extern "C" fn(Xml, *const c_char) -> *const c_char,
    empty: unsafe extern "C" fn(Xml) -> c_int,
    append_child: unsafe extern "C" fn(Xml, *const c_char) -> Xml,
    append_child_value: unsafe extern "C" fn(Xml, *const c_char, *const c_char) -> Xml,
    create_inlet: unsafe extern "C" fn(Info, c_int, c_int, c_int) -> *mut c_void,
    destroy_inlet: unsafe extern "C" fn(*mut c_void),
    get_fullinfo: unsafe extern "C" fn(*mut c_void, c_double, *mut c_int) -> Info,
    open_stream: unsafe extern "C" fn(*mut c_void, c_double, *mut c_int),
    time_correction_ex:
        unsafe extern "C" fn(*mut c_void, *mut c_double, *mut c_double, c_double, *mut c_int) -> c_double,
    pull_chunk_d:
        unsafe extern "C" fn(*mut c_void, *mut c_double, *mut c_double, c_long, c_long, c_double, *mut c_int) -> c_long,
    pull_sample_d: unsafe extern "C" fn(*mut c_void, *mut c_double, c_int, c_double, *mut c_int) -> c_double,
    create_outlet: unsafe extern "C" fn(Info, c_int, c_int) -> *mut c_void,
    destroy_outlet: unsafe extern "C" fn(*mut c_void),
    push_sample_ftp: unsafe extern "C" fn(*mut c_void, *const f32, c_double, c_int) -> c_int,
    push_sample_strtp: unsafe extern "C" fn(*mut c_void, *const *const c_char, c_double, c_int) -> c_int,
    have_consumers: unsafe extern "C" fn(*mut c_void) -> c_int,
}

/// A loaded liblsl.
pub struct Lsl {
    fns: Fns,
    path: PathBuf,
    // Last: the functions point into it.
    _library: libloading::Library,
}

impl std::fmt::Debug for Lsl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lsl").field("path", &self.path).finish()
    }
}

/// How to get liblsl, for error messages.
pub const HOW_TO_INSTALL: &str =
    "install liblsl (the liblsl .deb or .rpm from https://github.com/sccn/liblsl/releases, \
    or `pip install pylsl`, whose wheel carries liblsl.so.2) and point the daemon at the file with its \
    `[drivers.lsl] library` setting or BCI2TOKEN_LIBLSL=/path/to/liblsl.so.2";

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: liblsl returns NUL-terminated strings that live as long as their object.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn c(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("NULs replaced")
}

impl Lsl {
    /// Loads liblsl: `configured` if given, else `$BCI2TOKEN_LIBLSL`, else [`LIBRARY_NAMES`].
    pub fn load(configured: Option<&Path>) -> Result<Arc<Lsl>, String> {
        let env = std::env::var_os(LIBLSL_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        let explicit = configured.map(Path::to_path_buf).or(env);
        if let Some(path) = explicit {
            return Lsl::open(&path).map_err(|e| format!("{e}; {HOW_TO_INSTALL}"));
        }
        let mut tried = Vec::new();
        for name in LIBRARY_NAMES {
            match Lsl::open(Path::new(name)) {
                Ok(lsl) => return Ok(lsl),
                Err(e) => tried.push(e),
            }
        }
        Err(format!(
            "liblsl was not found (tried {} through the library search path); {HOW_TO_INSTALL}",
            LIBRARY_NAMES.join(", ")
        ))
    }

    fn open(path: &Path) -> Result<Arc<Lsl>, String> {
        // SAFETY: loading runs liblsl's initialisers, which only set up its own state.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load liblsl from {}: {}", path.display(), error_chain(&e)))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the signature is liblsl's C API (lsl_c.h, liblsl 1.14 and later).
                *unsafe { library.get(concat!($name, "\0").as_bytes()) }.map_err(|_| {
                    format!("{}: no function {} (liblsl 1.14 or later is needed)", path.display(), $name)
                })?
            };
        }
        let fns = Fns {
            library_version: sym!("lsl_library_version"),
            local_clock: sym!("lsl_local_clock"),
            resolve_all: sym!("lsl_resolve_all"),
            resolve_byprop: sym!("lsl_resolve_byprop"),
            resolve_bypred: sym!("lsl_resolve_bypred"),
            create_streaminfo: sym!("lsl_create_streaminfo"),
            destroy_streaminfo: sym!("lsl_destroy_streaminfo"),
            get_name: sym!("lsl_get_name"),
            get_type: sym!("lsl_get_type"),
            get_channel_count: sym!("lsl_get_channel_count"),
            get_nominal_srate: sym!("lsl_get_nominal_srate"),
            get_channel_format: sym!("lsl_get_channel_format"),
            get_source_id: sym!("lsl_get_source_id"),
            get_hostname: sym!("lsl_get_hostname"),
            get_desc: sym!("lsl_get_desc"),
            get_xml: sym!("lsl_get_xml"),
            destroy_string: sym!("lsl_destroy_string"),
            child: sym!("lsl_child"),
            next_sibling_n: sym!("lsl_next_sibling_n"),
            child_value_n: sym!("lsl_child_value_n"),
            empty: sym!("lsl_empty"),
            append_child: sym!("lsl_append_child"),
            append_child_value: sym!("lsl_append_child_value"),
            create_inlet: sym!("lsl_create_inlet"),
            destroy_inlet: sym!("lsl_destroy_inlet"),
            get_fullinfo: sym!("lsl_get_fullinfo"),
            open_stream: sym!("lsl_open_stream"),
            time_correction_ex: sym!("lsl_time_correction_ex"),
            pull_chunk_d: sym!("lsl_pull_chunk_d"),
            pull_sample_d: sym!("lsl_pull_sample_d"),
            create_outlet: sym!("lsl_create_outlet"),
            destroy_outlet: sym!("lsl_destroy_outlet"),
            push_sample_ftp: sym!("lsl_push_sample_ftp"),
            push_sample_strtp: sym!("lsl_push_sample_strtp"),
            have_consumers: sym!("lsl_have_consumers"),
        };
        Ok(Arc::new(Lsl { fns, path: path.to_path_buf(), _library: library }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// liblsl's version as 100 × major + minor (117 for 1.17).
    pub fn library_version(&self) -> i32 {
        // SAFETY: no arguments.
        unsafe { (self.fns.library_version)() }
    }

    /// liblsl's clock (seconds, CLOCK_MONOTONIC on Linux): the clock of sample time stamps.
    pub fn local_clock(&self) -> f64 {
        // SAFETY: no arguments.
        unsafe { (self.fns.local_clock)() }
    }

    fn infos(self: &Arc<Self>, buf: &[Info], n: c_int) -> Vec<StreamInfo> {
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        buf[..n].iter().map(|&ptr| StreamInfo { lsl: Arc::clone(self), ptr }).collect()
    }

    /// Every stream visible within `wait` seconds.
    pub fn resolve_all(self: &Arc<Self>, wait: f64) -> Vec<StreamInfo> {
        let mut buf = vec![std::ptr::null_mut(); 256];
        // SAFETY: buf has the stated number of slots; liblsl fills at most that many.
        let n = unsafe { (self.fns.resolve_all)(buf.as_mut_ptr(), buf.len() as u32, wait) };
        self.infos(&buf, n)
    }

    /// Streams whose `prop` (`name`, `type`, `source_id`, …) is `value`, waiting at most `timeout`
    /// for the first one.
    pub fn resolve_by(self: &Arc<Self>, prop: &str, value: &str, timeout: f64) -> Vec<StreamInfo> {
        let mut buf = vec![std::ptr::null_mut(); 64];
        let (p, v) = (c(prop), c(value));
        // SAFETY: as in resolve_all; the strings outlive the call.
        let n = unsafe {
            (self.fns.resolve_byprop)(buf.as_mut_ptr(), buf.len() as u32, p.as_ptr(), v.as_ptr(), 1, timeout)
        };
        self.infos(&buf, n)
    }

    /// Streams matching an XPath 1.0 predicate over their description (`name='EEG' and
    /// type='EEG'`), waiting at most `timeout` for the first one.
    pub fn resolve_where(self: &Arc<Self>, predicate: &str, timeout: f64) -> Vec<StreamInfo> {
        let mut buf = vec![std::ptr::null_mut(); 64];
        let p = c(predicate);
        // SAFETY: as in resolve_all; the string outlives the call.
        let n = unsafe { (self.fns.resolve_bypred)(buf.as_mut_ptr(), buf.len() as u32, p.as_ptr(), 1, timeout) };
        self.infos(&buf, n)
    }

    /// A new stream description for an outlet.
    pub fn new_stream_info(
        self: &Arc<Self>,
        name: &str,
        type_: &str,
        channels: usize,
        rate: f64,
        format: ChannelFormat,
        source_id: &str,
    ) -> Result<StreamInfo, String> {
        let (n, t, s) = (c(name), c(type_), c(source_id));
        let channels = c_int::try_from(channels).map_err(|_| "too many channels".to_string())?;
        // SAFETY: the strings outlive the call; liblsl copies them.
        let ptr =
            unsafe { (self.fns.create_streaminfo)(n.as_ptr(), t.as_ptr(), channels, rate, format.to_c(), s.as_ptr()) };
        if ptr.is_null() {
            return Err(format!("liblsl refused the stream description of {name:?}"));
        }
        Ok(StreamInfo { lsl: Arc::clone(self), ptr })
    }
}

/// A stream's description (`lsl_streaminfo`), owned.
pub struct StreamInfo {
    lsl: Arc<Lsl>,
    ptr: Info,
}

// SAFETY: a streaminfo is an independent heap object; liblsl's accessors do not use thread-local
// state, and we never use one from two threads at once (no Sync).
unsafe impl Send for StreamInfo {}

impl Drop for StreamInfo {
    fn drop(&mut self) {
        // SAFETY: owned pointer, destroyed once.
        unsafe { (self.lsl.fns.destroy_streaminfo)(self.ptr) }
    }
}

/// One `<channel>` of a stream's description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelDesc {
    pub label: String,
    pub unit: String,
    pub type_: String,
}

impl StreamInfo {
    pub fn name(&self) -> String {
        // SAFETY: valid object; the string lives as long as it.
        cstr(unsafe { (self.lsl.fns.get_name)(self.ptr) })
    }
    pub fn type_(&self) -> String {
        // SAFETY: as above.
        cstr(unsafe { (self.lsl.fns.get_type)(self.ptr) })
    }
    pub fn source_id(&self) -> String {
        // SAFETY: as above.
        cstr(unsafe { (self.lsl.fns.get_source_id)(self.ptr) })
    }
    pub fn hostname(&self) -> String {
        // SAFETY: as above.
        cstr(unsafe { (self.lsl.fns.get_hostname)(self.ptr) })
    }
    pub fn channel_count(&self) -> usize {
        // SAFETY: valid object.
        usize::try_from(unsafe { (self.lsl.fns.get_channel_count)(self.ptr) }).unwrap_or(0)
    }
    /// Samples per second; 0 for irregular streams.
    pub fn nominal_rate(&self) -> f64 {
        // SAFETY: valid object.
        unsafe { (self.lsl.fns.get_nominal_srate)(self.ptr) }
    }
    pub fn channel_format(&self) -> ChannelFormat {
        // SAFETY: valid object.
        ChannelFormat::from_c(unsafe { (self.lsl.fns.get_channel_format)(self.ptr) })
    }

    /// The whole description as XML.
    pub fn xml(&self) -> String {
        // SAFETY: liblsl allocates the string; we free it with lsl_destroy_string.
        let p = unsafe { (self.lsl.fns.get_xml)(self.ptr) };
        let text = cstr(p);
        if !p.is_null() {
            // SAFETY: allocated by liblsl for us, freed once.
            unsafe { (self.lsl.fns.destroy_string)(p) };
        }
        text
    }

    fn child(&self, parent: Xml, name: &str) -> Option<Xml> {
        let n = c(name);
        // SAFETY: parent is a node of this info's tree; liblsl returns an empty node, never null.
        let node = unsafe { (self.lsl.fns.child)(parent, n.as_ptr()) };
        // SAFETY: node from liblsl.
        (!node.is_null() && unsafe { (self.lsl.fns.empty)(node) } == 0).then_some(node)
    }

    fn child_value(&self, node: Xml, name: &str) -> String {
        let n = c(name);
        // SAFETY: node of this tree; the string lives as long as the tree.
        cstr(unsafe { (self.lsl.fns.child_value_n)(node, n.as_ptr()) })
    }

    /// The `<desc><channels><channel>` entries (label, unit, type), in order; empty when the
    /// stream does not describe its channels.
    pub fn channels(&self) -> Vec<ChannelDesc> {
        // SAFETY: valid object; the desc node lives as long as it.
        let desc = unsafe { (self.lsl.fns.get_desc)(self.ptr) };
        let Some(channels) = self.child(desc, "channels") else { return Vec::new() };
        let mut out = Vec::new();
        let mut node = self.child(channels, "channel");
        let name = c("channel");
        while let Some(ch) = node {
            out.push(ChannelDesc {
                label: self.child_value(ch, "label"),
                unit: self.child_value(ch, "unit"),
                type_: self.child_value(ch, "type"),
            });
            // SAFETY: sibling of a node of this tree.
            let next = unsafe { (self.lsl.fns.next_sibling_n)(ch, name.as_ptr()) };
            // SAFETY: node from liblsl.
            node = (!next.is_null() && unsafe { (self.lsl.fns.empty)(next) } == 0).then_some(next);
        }
        out
    }

    /// Appends `<name>value</name>` under `<desc>` (for outlets' descriptions).
    pub fn add_desc_value(&mut self, name: &str, value: &str) {
        let (n, v) = (c(name), c(value));
        // SAFETY: valid object; liblsl copies the strings.
        unsafe { (self.lsl.fns.append_child_value)((self.lsl.fns.get_desc)(self.ptr), n.as_ptr(), v.as_ptr()) };
    }

    /// Appends `<channels><channel><label>…</label><unit>…</unit><type>…</type></channel>…`.
    pub fn add_channels(&mut self, channels: &[ChannelDesc]) {
        let f = &self.lsl.fns;
        let (chs, ch, label, unit, ty) = (c("channels"), c("channel"), c("label"), c("unit"), c("type"));
        // SAFETY: nodes of this object's tree; liblsl copies the strings.
        unsafe {
            let list = (f.append_child)((f.get_desc)(self.ptr), chs.as_ptr());
            for d in channels {
                let node = (f.append_child)(list, ch.as_ptr());
                let (l, u, t) = (c(&d.label), c(&d.unit), c(&d.type_));
                (f.append_child_value)(node, label.as_ptr(), l.as_ptr());
                (f.append_child_value)(node, unit.as_ptr(), u.as_ptr());
                (f.append_child_value)(node, ty.as_ptr(), t.as_ptr());
            }
        }
    }
}

/// A stream inlet (`lsl_inlet`), owned. Recovers by itself when its outlet comes back.
pub struct Inlet {
    lsl: Arc<Lsl>,
    ptr: *mut c_void,
}

// SAFETY: liblsl inlets may be used from any thread, one call at a time (no Sync).
unsafe impl Send for Inlet {}

impl Drop for Inlet {
    fn drop(&mut self) {
        // SAFETY: owned pointer, destroyed once.
        unsafe { (self.lsl.fns.destroy_inlet)(self.ptr) }
    }
}

/// A time-correction estimate: add `offset` to the outlet's time stamps to get this host's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeCorrection {
    pub offset: f64,
    /// Half the round-trip time of the best probe: the mapping's uncertainty (s).
    pub uncertainty: f64,
}

impl Inlet {
    /// An inlet for `info` buffering up to `max_buffer_seconds`, recovering from lost outlets.
    pub fn new(info: &StreamInfo, max_buffer_seconds: i32) -> Result<Inlet, String> {
        let lsl = Arc::clone(&info.lsl);
        // SAFETY: valid info; liblsl copies what it needs.
        let ptr = unsafe { (lsl.fns.create_inlet)(info.ptr, max_buffer_seconds, 0, 1) };
        if ptr.is_null() {
            return Err(format!("liblsl could not create an inlet for {:?}", info.name()));
        }
        Ok(Inlet { lsl, ptr })
    }

    pub fn open(&mut self, timeout: f64) -> Result<(), LslError> {
        let mut ec = 0;
        // SAFETY: valid inlet, valid error slot.
        unsafe { (self.lsl.fns.open_stream)(self.ptr, timeout, &mut ec) };
        LslError::check(ec)
    }

    /// The full description (with `<desc>`), as the outlet has it.
    pub fn full_info(&mut self, timeout: f64) -> Result<StreamInfo, LslError> {
        let mut ec = 0;
        // SAFETY: valid inlet; the returned info is ours to destroy.
        let ptr = unsafe { (self.lsl.fns.get_fullinfo)(self.ptr, timeout, &mut ec) };
        LslError::check(ec)?;
        if ptr.is_null() {
            return Err(LslError::Internal);
        }
        Ok(StreamInfo { lsl: Arc::clone(&self.lsl), ptr })
    }

    pub fn time_correction(&mut self, timeout: f64) -> Result<TimeCorrection, LslError> {
        let (mut remote, mut uncertainty, mut ec) = (0.0, 0.0, 0);
        // SAFETY: valid inlet and slots.
        let offset =
            unsafe { (self.lsl.fns.time_correction_ex)(self.ptr, &mut remote, &mut uncertainty, timeout, &mut ec) };
        LslError::check(ec)?;
        Ok(TimeCorrection { offset, uncertainty })
    }

    /// Pulls what is there into `data` (samples × channels, row-major) and `stamps`, waiting at
    /// most `timeout` for the first sample but not for more (liblsl's chunk pull with a time-out
    /// waits until its buffer is full); returns the number of samples.
    pub fn pull_chunk(&mut self, data: &mut [f64], stamps: &mut [f64], timeout: f64) -> Result<usize, LslError> {
        let channels = data.len() / stamps.len().max(1);
        if channels == 0 || stamps.is_empty() {
            return Ok(0);
        }
        let mut ec = 0;
        // SAFETY: the first row of `data` holds `channels` values.
        let stamp =
            unsafe { (self.lsl.fns.pull_sample_d)(self.ptr, data.as_mut_ptr(), channels as c_int, timeout, &mut ec) };
        LslError::check(ec)?;
        if stamp == 0.0 {
            return Ok(0);
        }
        stamps[0] = stamp;
        let rest = self.pull_available(&mut data[channels..], &mut stamps[1..])?;
        Ok(1 + rest)
    }

    /// The samples available now, without waiting.
    fn pull_available(&mut self, data: &mut [f64], stamps: &mut [f64]) -> Result<usize, LslError> {
        if stamps.is_empty() {
            return Ok(0);
        }
        let mut ec = 0;
        // SAFETY: the buffers are as long as we say.
        let values = unsafe {
            (self.lsl.fns.pull_chunk_d)(
                self.ptr,
                data.as_mut_ptr(),
                stamps.as_mut_ptr(),
                data.len() as c_long,
                stamps.len() as c_long,
                0.0,
                &mut ec,
            )
        };
        LslError::check(ec)?;
        let channels = data.len() / stamps.len();
        Ok(usize::try_from(values).unwrap_or(0) / channels.max(1))
    }
}

/// A stream outlet (`lsl_outlet`), owned.
pub struct Outlet {
    lsl: Arc<Lsl>,
    ptr: *mut c_void,
    channels: usize,
}

// SAFETY: liblsl outlets may be used from any thread, one call at a time (no Sync).
unsafe impl Send for Outlet {}

impl Drop for Outlet {
    fn drop(&mut self) {
        // SAFETY: owned pointer, destroyed once.
        unsafe { (self.lsl.fns.destroy_outlet)(self.ptr) }
    }
}

impl Outlet {
    /// Publishes `info` (buffering up to `max_buffered_seconds` for slow consumers).
    pub fn new(info: &StreamInfo, max_buffered_seconds: i32) -> Result<Outlet, String> {
        let lsl = Arc::clone(&info.lsl);
        // SAFETY: valid info; liblsl copies it.
        let ptr = unsafe { (lsl.fns.create_outlet)(info.ptr, 0, max_buffered_seconds) };
        if ptr.is_null() {
            return Err(format!("liblsl could not create the outlet {:?}", info.name()));
        }
        Ok(Outlet { lsl, ptr, channels: info.channel_count() })
    }

    /// Pushes one float sample stamped `timestamp` (liblsl clock), sent at once.
    pub fn push_f32(&mut self, sample: &[f32], timestamp: f64) -> Result<(), LslError> {
        assert_eq!(sample.len(), self.channels, "one value per channel");
        // SAFETY: the sample has one value per channel.
        LslError::check(unsafe { (self.lsl.fns.push_sample_ftp)(self.ptr, sample.as_ptr(), timestamp, 1) })
    }

    /// Pushes one string sample (one string per channel).
    pub fn push_str(&mut self, sample: &[&str], timestamp: f64) -> Result<(), LslError> {
        assert_eq!(sample.len(), self.channels, "one string per channel");
        let owned: Vec<CString> = sample.iter().map(|s| c(s)).collect();
        let ptrs: Vec<*const c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        // SAFETY: one string per channel, alive for the call.
        LslError::check(unsafe { (self.lsl.fns.push_sample_strtp)(self.ptr, ptrs.as_ptr(), timestamp, 1) })
    }

    pub fn has_consumers(&self) -> bool {
        // SAFETY: valid outlet.
        unsafe { (self.lsl.fns.have_consumers)(self.ptr) != 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_says_how_to_get_one() {
        let err = Lsl::load(Some(Path::new("/nonexistent/liblsl.so.2"))).unwrap_err();
        assert!(err.contains("/nonexistent/liblsl.so.2"), "{err}");
        assert!(err.contains("pip install pylsl") && err.contains("BCI2TOKEN_LIBLSL"), "{err}");
    }

    #[test]
    fn a_library_without_lsl_functions_is_refused_naming_one() {
        // libc is a real shared library without any lsl_ symbol.
        let err = Lsl::load(Some(Path::new("libc.so.6"))).unwrap_err();
        assert!(err.contains("no function lsl_library_version"), "{err}");
    }
}

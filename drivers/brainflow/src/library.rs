//! BrainFlow's board controller (`libBoardController.so`), loaded at run time with `libloading`.
//! [`BoardController::load`] finds the library (the admin's `[drivers.brainflow] library`, then
//! `$BCI2TOKEN_BRAINFLOW_LIB`, then the name through the dynamic linker's search path, which also
//! finds a copy the driver host preloaded) and resolves every function this driver calls, so a
//! library that lacks one is refused at load with the function named.
//!
//! BrainFlow serialises every call of its board controller behind one global lock, and a driver
//! host runs one session, so the calls here are plain C calls from the session's thread.

use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Environment variable naming the library file to load.
pub const LIBRARY_ENV: &str = "BCI2TOKEN_BRAINFLOW_LIB";
/// The library's name (its SONAME), looked up through the search path.
pub const LIBRARY_NAME: &str = "libBoardController.so";

/// How to get the library, for error messages.
pub const HOW_TO_INSTALL: &str = "install BrainFlow's board controller: `pip install brainflow` puts \
    libBoardController.so, with the vendor libraries it loads, in site-packages/brainflow/lib/ (for example \
    /usr/local/lib/python3.11/dist-packages/brainflow/lib/libBoardController.so); point the daemon at that file \
    with `[drivers.brainflow] library = \"/path/to/libBoardController.so\"` in bci2tokend.toml, or \
    BCI2TOKEN_BRAINFLOW_LIB=/path/to/libBoardController.so in its environment; the packages do not ship BrainFlow";

/// `BrainFlowExitCodes` by value: their names, as BrainFlow's own bindings print them.
const EXIT_CODES: &[&str] = &[
    "STATUS_OK",
    "PORT_ALREADY_OPEN_ERROR",
    "UNABLE_TO_OPEN_PORT_ERROR",
    "SER_PORT_ERROR",
    "BOARD_WRITE_ERROR",
    "INCOMMING_MSG_ERROR",
    "INITIAL_MSG_ERROR",
    "BOARD_NOT_READY_ERROR",
    "STREAM_ALREADY_RUN_ERROR",
    "INVALID_BUFFER_SIZE_ERROR",
    "STREAM_THREAD_ERROR",
    "STREAM_THREAD_IS_NOT_RUNNING",
    "EMPTY_BUFFER_ERROR",
    "INVALID_ARGUMENTS_ERROR",
    "UNSUPPORTED_BOARD_ERROR",
    "BOARD_NOT_CREATED_ERROR",
    "ANOTHER_BOARD_IS_CREATED_ERROR",
    "GENERAL_ERROR",
    "SYNC_TIMEOUT_ERROR",
    "JSON_NOT_FOUND_ERROR",
    "NO_SUCH_DATA_IN_JSON_ERROR",
];

/// Exit codes this driver acts on.
pub mod exit {
    pub const OK: i32 = 0;
    pub const UNABLE_TO_OPEN_PORT: i32 = 2;
    pub const BOARD_NOT_READY: i32 = 7;
    pub const UNSUPPORTED_BOARD: i32 = 14;
    pub const ANOTHER_BOARD_IS_CREATED: i32 = 16;
}

/// A BrainFlow call that did not return STATUS_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfError {
    pub call: &'static str,
    pub code: i32,
}

impl std::fmt::Display for BfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = usize::try_from(self.code).ok().and_then(|i| EXIT_CODES.get(i)).unwrap_or(&"unknown exit code");
        write!(f, "BrainFlow's {} failed: {name} ({})", self.call, self.code)?;
        let hint = match self.code {
            1 => "; another program (or session) has the port open",
            2 => "; check that the device is plugged in and the port name is right",
            6 | 7 => "; the board did not answer as expected: is it switched on, and is this the right board?",
            13 => "; BrainFlow refused the parameters for this board",
            14 => "; BrainFlow does not know this board",
            16 => "; this board, with these parameters, is already open in this process",
            18 => "; the board did not answer in time",
            _ => "",
        };
        f.write_str(hint)
    }
}

fn check(call: &'static str, code: c_int) -> Result<(), BfError> {
    if code == exit::OK {
        Ok(())
    } else {
        Err(BfError { call, code })
    }
}

/// The functions this driver calls, resolved once at load.
struct Fns {
    prepare_session: unsafe extern "C" fn(c_int, *const c_char) -> c_int,
    start_stream: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char) -> c_int,
    stop_stream: unsafe extern "C" fn(c_int, *const c_char) -> c_int,
    release_session: unsafe extern "C" fn(c_int, *const c_char) -> c_int,
    get_board_data_count: unsafe extern "C" fn(c_int, *mut c_int, c_int, *const c_char) -> c_int,
    get_board_data: unsafe extern "C" fn(c_int, c_int, *mut f64, c_int, *const c_char) -> c_int,
    get_board_descr: unsafe extern "C" fn(c_int, c_int, *mut c_char, *mut c_int, c_int) -> c_int,
    get_board_presets: unsafe extern "C" fn(c_int, *mut c_int, *mut c_int) -> c_int,
    get_version_board_controller: unsafe extern "C" fn(*mut c_char, *mut c_int, c_int) -> c_int,
    set_log_level_board_controller: unsafe extern "C" fn(c_int) -> c_int,
}

/// A loaded board controller. Loaded once per file and kept for the life of the process:
/// BrainFlow starts threads and registers C++ destructors, which unloading would leave dangling.
pub struct BoardController {
    fns: Fns,
    path: PathBuf,
    _library: libloading::Library,
}

impl std::fmt::Debug for BoardController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardController").field("path", &self.path).finish()
    }
}

/// BrainFlow's log levels (`LogLevels`): warnings and errors go to the driver host's stderr,
/// which the daemon logs.
const LOG_LEVEL_WARN: c_int = 3;

/// Largest board description the library is asked for (the biggest today is about 1 KB).
const DESCR_MAX: usize = 64 * 1024;

impl BoardController {
    /// Loads the library: `configured` if given; else the one this process has loaded already
    /// (a driver host preloads the admin's `[drivers.brainflow] library`, or the environment's,
    /// before its sandbox: a probe, which gets no configuration, finds that one by name); else
    /// `$BCI2TOKEN_BRAINFLOW_LIB`, else [`LIBRARY_NAME`] through the search path. The same file is
    /// loaded once per process.
    pub fn load(configured: Option<&Path>) -> Result<&'static BoardController, String> {
        let env = std::env::var_os(LIBRARY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        let explicit = match configured {
            Some(path) => Some(path.to_path_buf()),
            None if already_loaded() => None,
            None => env,
        };
        let wanted = explicit.clone().unwrap_or_else(|| PathBuf::from(LIBRARY_NAME));
        static LOADED: Mutex<Vec<&'static BoardController>> = Mutex::new(Vec::new());
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = loaded.iter().find(|b| b.path == wanted) {
            return Ok(found);
        }
        let controller = match &explicit {
            Some(path) if path.is_relative() => {
                return Err(format!(
                    "the BrainFlow library {} must be an absolute path; {HOW_TO_INSTALL}",
                    path.display()
                ))
            }
            Some(path) => BoardController::open(path),
            None => BoardController::open(Path::new(LIBRARY_NAME))
                .map_err(|e| format!("no {LIBRARY_NAME} in the library search path ({e})")),
        }
        .map_err(|e| format!("{e}; {HOW_TO_INSTALL}"))?;
        let controller: &'static BoardController = Box::leak(Box::new(controller));
        loaded.push(controller);
        Ok(controller)
    }

    fn open(path: &Path) -> Result<BoardController, String> {
        // SAFETY: loading runs the library's initialisers; the admin chose this file (or it is
        // the one the system's search path gives), and a driver host runs it in its sandbox.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load the BrainFlow library {}: {e}", path.display()))?;
        macro_rules! sym {
            ($name:ident) => {{
                // SAFETY: the type is the C signature of BrainFlow's board_controller.h /
                // board_info_getter.h for this function.
                let s = unsafe { library.get(concat!(stringify!($name), "\0").as_bytes()) }.map_err(|_| {
                    format!(
                        "{} has no function {}: it is not BrainFlow's board controller, or a version too old \
                         (BrainFlow 5 or later is needed)",
                        path.display(),
                        stringify!($name)
                    )
                })?;
                *s
            }};
        }
        let fns = Fns {
            prepare_session: sym!(prepare_session),
            start_stream: sym!(start_stream),
            stop_stream: sym!(stop_stream),
            release_session: sym!(release_session),
            get_board_data_count: sym!(get_board_data_count),
            get_board_data: sym!(get_board_data),
            get_board_descr: sym!(get_board_descr),
            get_board_presets: sym!(get_board_presets),
            get_version_board_controller: sym!(get_version_board_controller),
            set_log_level_board_controller: sym!(set_log_level_board_controller),
        };
        // SAFETY: a plain C call with a level BrainFlow defines.
        unsafe { (fns.set_log_level_board_controller)(LOG_LEVEL_WARN) };
        Ok(BoardController { fns, path: path.to_path_buf(), _library: library })
    }

    /// The file loaded (or the name found through the search path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// BrainFlow's version (`5.23.0`).
    pub fn version(&self) -> String {
        let mut buf = vec![0 as c_char; 64];
        let mut len: c_int = 0;
        // SAFETY: the buffer holds `max` bytes; BrainFlow writes at most that and the length.
        let code = unsafe { (self.fns.get_version_board_controller)(buf.as_mut_ptr(), &mut len, buf.len() as c_int) };
        if code != exit::OK {
            return "unknown version".into();
        }
        text(&buf, len)
    }

    /// The board's description (JSON), `None` when BrainFlow does not know the board.
    pub fn board_descr(&self, board: i32, preset: i32) -> Result<Option<String>, BfError> {
        let mut buf = vec![0 as c_char; DESCR_MAX];
        let mut len: c_int = 0;
        // SAFETY: as in `version`.
        let code = unsafe { (self.fns.get_board_descr)(board, preset, buf.as_mut_ptr(), &mut len, DESCR_MAX as c_int) };
        match code {
            exit::OK => Ok(Some(text(&buf, len))),
            exit::UNSUPPORTED_BOARD => Ok(None),
            code => Err(BfError { call: "get_board_descr", code }),
        }
    }

    /// The presets the board has (0 default, 1 auxiliary, 2 ancillary).
    pub fn board_presets(&self, board: i32) -> Result<Vec<i32>, BfError> {
        // BrainFlow's call takes no capacity: this is the room its own Python binding gives it.
        let mut buf = vec![0 as c_int; 512];
        let mut len: c_int = 0;
        // SAFETY: a board has three presets at most; the buffer holds 512, as BrainFlow's bindings'.
        check("get_board_presets", unsafe { (self.fns.get_board_presets)(board, buf.as_mut_ptr(), &mut len) })?;
        let n = usize::try_from(len).unwrap_or(0).min(buf.len());
        Ok(buf[..n].to_vec())
    }

    /// `prepare_session`: BrainFlow connects to the board. The returned [`Session`] releases it on
    /// drop, whatever happens after.
    pub fn prepare(&'static self, board: i32, params: &str) -> Result<Session, BfError> {
        let params = CString::new(params).map_err(|_| BfError { call: "prepare_session", code: 13 })?;
        // SAFETY: a NUL-terminated JSON string that lives through the call.
        check("prepare_session", unsafe { (self.fns.prepare_session)(board, params.as_ptr()) })?;
        Ok(Session { lib: self, board, params, streaming: false })
    }
}

/// Whether a library named [`LIBRARY_NAME`] (by file or SONAME) is loaded in this process.
fn already_loaded() -> bool {
    // SAFETY: RTLD_NOLOAD loads nothing (no initialiser runs); the handle is closed at once.
    unsafe { libloading::os::unix::Library::open(Some(LIBRARY_NAME), libc::RTLD_NOW | libc::RTLD_NOLOAD) }.is_ok()
}

/// Text of `len` bytes BrainFlow wrote into `buf`.
fn text(buf: &[c_char], len: c_int) -> String {
    let n = usize::try_from(len).unwrap_or(0).min(buf.len());
    let bytes: Vec<u8> = buf[..n].iter().map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A prepared BrainFlow session: a board and the input parameters that name it. Released
/// (`stop_stream` if streaming, then `release_session`) on drop.
pub struct Session {
    lib: &'static BoardController,
    board: i32,
    params: CString,
    streaming: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("board", &self.board).field("streaming", &self.streaming).finish()
    }
}

impl Session {
    /// `start_stream` into a ring of `ring` samples per row.
    pub fn start(&mut self, ring: usize) -> Result<(), BfError> {
        let ring = c_int::try_from(ring).unwrap_or(c_int::MAX);
        // SAFETY: an empty streamer list and the session's JSON, alive through the call.
        check("start_stream", unsafe {
            (self.lib.fns.start_stream)(ring, c"".as_ptr(), self.board, self.params.as_ptr())
        })?;
        self.streaming = true;
        Ok(())
    }

    pub fn stop(&mut self) -> Result<(), BfError> {
        if !self.streaming {
            return Ok(());
        }
        self.streaming = false;
        // SAFETY: as in `start`.
        check("stop_stream", unsafe { (self.lib.fns.stop_stream)(self.board, self.params.as_ptr()) })
    }

    /// Samples waiting in BrainFlow's ring for `preset`.
    pub fn count(&self, preset: i32) -> Result<usize, BfError> {
        let mut n: c_int = 0;
        // SAFETY: as in `start`; `n` is written once.
        check("get_board_data_count", unsafe {
            (self.lib.fns.get_board_data_count)(preset, &mut n, self.board, self.params.as_ptr())
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Takes the oldest `n` samples out of the ring into `out`, row-major: row `r` of sample `i`
    /// at `out[r * n + i]`. `out` holds `rows * n` values.
    pub fn take(&self, n: usize, preset: i32, rows: usize, out: &mut Vec<f64>) -> Result<(), BfError> {
        out.clear();
        out.resize(rows * n, 0.0);
        let count = c_int::try_from(n).map_err(|_| BfError { call: "get_board_data", code: 13 })?;
        // SAFETY: `out` holds rows × n doubles, what BrainFlow writes for n samples of this
        // board's preset (`rows` is the preset's num_rows).
        check("get_board_data", unsafe {
            (self.lib.fns.get_board_data)(count, preset, out.as_mut_ptr(), self.board, self.params.as_ptr())
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stop();
        // SAFETY: as in `start`. Always released, so the port and BrainFlow's slot are free again.
        unsafe { (self.lib.fns.release_session)(self.board, self.params.as_ptr()) };
    }
}

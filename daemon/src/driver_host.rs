//! Driver plugins in a process of their own (`driver_isolation = "process"`, the default): which
//! host executable runs, what a host may read and preload, and the session's `Source` (in this
//! process or in a host). The host itself, its sandbox and the daemon's client of it live in the
//! crate `bci2token-driver-host`.
//!
//! What a plugin does wrong costs only its session: a crash, a hang (a call not answered within
//! its time-out, `driver_hang_timeout` beyond a `read`'s own) or a runaway allocation
//! (`driver_memory_limit`) ends its host; a live device gets a new host (`driver_restarts`),
//! otherwise the session fails with the cause. A malicious plugin is confined by the host's
//! sandbox (docs/security.md, "Code the daemon runs").

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bci2token_config::Isolation;
use bci2token_driver_abi::host::{Device, DriverError, Read};
use bci2token_driver_abi::types::StreamInfo;
use bci2token_driver_host::client::{HostExe, Limits, RemoteDevice};

use crate::plugins::Driver;

/// Where the packages install the host (a build tree has it beside bci2tokend).
const LIBEXEC_HOST: &str = "/usr/libexec/bci2token/bci2token-driver-host";

/// The host executable: beside the daemon's own (a build tree), else the installed one.
pub fn host_exe() -> Result<&'static HostExe, String> {
    static HOST: std::sync::OnceLock<Result<HostExe, String>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let beside = std::env::current_exe().ok().and_then(|d| Some(d.parent()?.join("bci2token-driver-host")));
        let candidates: Vec<PathBuf> = beside.into_iter().chain([PathBuf::from(LIBEXEC_HOST)]).collect();
        for path in &candidates {
            if let Ok(exe) = HostExe::open(path) {
                return Ok(exe);
            }
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Err(format!(
            "the driver host (bci2token-driver-host) is not installed: looked for {}; reinstall the package, or set \
             driver_isolation = \"in-process\" (plugins then run inside the daemon)",
            tried.join(" and ")
        ))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// What a driver host may read besides the system's directories
/// ([`bci2token_driver_host::sandbox`]), and which libraries it loads before it confines itself.
/// Readable: the plugin's directory and file (the file a link leads to), the driver directories, the libraries and LSL
/// configuration the admin or the environment name (a driver's library for its own hosts only:
/// `[drivers.NAME] library`, else `$BCI2TOKEN_LIBLSL` or `lsl_library` for `lsl`,
/// `$BCI2TOKEN_BRAINFLOW_LIB` for `brainflow`), string settings of the admin's that are
/// absolute paths (host keys `_…`), in `--user` mode the caller's file keys (the caller is the
/// daemon's user), and the directory of each file named; as canonical paths. Preloaded: the
/// libraries among what the admin or the environment name (never a caller's file). Never
/// `data_dir`, a directory above it or a path in it: those are left out, with a warning.
pub fn readable_paths(
    cfg: &crate::config::Config,
    (plugin, driver): (&Path, &str),
    config: &serde_json::Map<String, serde_json::Value>,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    // A driver's library goes to its own hosts only: the admin's `[drivers.NAME] library` (host
    // key `_library`, below) or, where there is none, the one the environment names (for lsl,
    // else the outlets' `lsl_library`), never both (the driver looks its library up by name,
    // and finds the one loaded).
    let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut admin: Vec<PathBuf> = match (driver, config.contains_key("_library")) {
        (_, true) => Vec::new(),
        ("lsl", false) => env("BCI2TOKEN_LIBLSL").or_else(|| cfg.lsl_library.clone()).into_iter().collect(),
        ("brainflow", false) => env("BCI2TOKEN_BRAINFLOW_LIB").into_iter().collect(),
        _ => Vec::new(),
    };
    for (key, value) in config {
        if let (true, Some(p)) = (key.starts_with('_'), value.as_str()) {
            admin.push(PathBuf::from(p));
        }
    }
    let mut paths: Vec<PathBuf> = plugin.parent().map(Path::to_path_buf).into_iter().collect();
    paths.extend(cfg.driver_path.iter().cloned());
    paths.extend(admin.iter().cloned());
    paths.extend(std::env::var_os("LSLAPICFG").map(PathBuf::from));
    if let Some(dirs) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&dirs));
    }
    if config.get("_caller_paths").and_then(serde_json::Value::as_bool) == Some(true) {
        for (key, value) in config {
            if let (true, Some(p)) = (bci2token_api::is_file_key(key), value.as_str()) {
                paths.push(PathBuf::from(p));
            }
        }
    }
    // A library's own directory too: some load more of themselves from there at run time.
    let dirs: Vec<PathBuf> =
        paths.iter().filter(|p| p.is_file()).filter_map(|p| Some(p.parent()?.to_path_buf())).collect();
    paths.extend(dirs);
    // A plugin that is a symbolic link (a package's `libfoo.so -> libfoo.so.1`, a link into a
    // build tree): the file it leads to, not that file's directory.
    paths.push(plugin.to_path_buf());
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    // Canonical (the host opens them later; no symbolic link of the moment decides), absolute,
    // existing, and away from the store.
    let allowed = |p: &PathBuf| -> Option<PathBuf> {
        let real = std::fs::canonicalize(p).ok().filter(|_| p.is_absolute())?;
        if data_dir.starts_with(&real) || real.starts_with(&data_dir) {
            log::warn!(
                "driver hosts may not read {} (it holds or is within data_dir {}): left out of their sandbox",
                p.display(),
                data_dir.display()
            );
            return None;
        }
        Some(real)
    };
    let mut readable: Vec<PathBuf> = paths.iter().filter_map(allowed).collect();
    readable.sort();
    readable.dedup();
    let is_library = |p: &PathBuf| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (name.ends_with(".so") || name.contains(".so.")) && p.is_file()
    };
    let mut preload: Vec<PathBuf> = admin.iter().filter_map(allowed).filter(is_library).collect();
    preload.dedup();
    (readable, preload)
}

/// Logs what the first host could enforce; a kernel without Landlock is warned about once.
fn report_sandbox(sandbox: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if sandbox.contains("NOT confined") {
            log::warn!(
                "driver hosts: {sandbox}: a malicious plugin could read the daemon's files, the master key among them"
            );
        } else {
            log::info!("driver hosts: {sandbox}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The daemon's side.

/// A session's device: opened in this process or in a driver host.
pub enum Source {
    Local(Device),
    Remote(Box<RemoteDevice>),
}

impl Source {
    /// Opens `plugin`'s device with `config` where `isolation` says (`held`: the files `config`
    /// passes; `readable`: what a host may read and preloads, [`readable_paths`]).
    pub fn open(
        isolation: Isolation,
        driver: &Driver,
        config: &serde_json::Map<String, serde_json::Value>,
        held: &[OwnedFd],
        readable: (Vec<PathBuf>, Vec<PathBuf>),
        limits: Limits,
    ) -> Result<Source, DriverError> {
        match isolation {
            Isolation::InProcess => driver.in_process()?.open(config).map(Source::Local),
            Isolation::Process => {
                let exe = host_exe().map_err(|message| DriverError {
                    driver: driver.name.clone(),
                    message,
                    panicked: false,
                })?;
                let device =
                    RemoteDevice::open(exe, (&driver.path, &driver.name, driver.abi), config, held, readable, limits)?;
                report_sandbox(device.sandbox());
                Ok(Source::Remote(Box::new(device)))
            }
        }
    }

    pub fn info(&self) -> &StreamInfo {
        match self {
            Source::Local(d) => d.info(),
            Source::Remote(d) => d.info(),
        }
    }

    pub fn start(&mut self) -> Result<(), DriverError> {
        match self {
            Source::Local(d) => d.start(),
            Source::Remote(d) => d.start(),
        }
    }

    pub fn stop(&mut self) -> Result<(), DriverError> {
        match self {
            Source::Local(d) => d.stop(),
            Source::Remote(d) => d.stop(),
        }
    }

    /// As [`Device::read`].
    pub fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<Read, DriverError> {
        match self {
            Source::Local(d) => d.read(timeout, buf),
            Source::Remote(d) => d.read(timeout, buf),
        }
    }

    /// Calls `waiting` while a driver host is waited for (waiting within a deadline is not being
    /// stuck; a stopping session does not wait); a device in this process is the session's own
    /// loop's business.
    pub fn while_waiting(&mut self, waiting: Box<dyn Fn() -> bool + Send>) {
        if let Source::Remote(d) = self {
            d.while_waiting(waiting);
        }
    }
}

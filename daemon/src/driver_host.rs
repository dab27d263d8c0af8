//! Driver plugins in a process of their own (`driver_isolation = "process"`, the default): the
//! daemon's side of `bci2token-driver-host` (crate `bci2token-driver-host`, which holds the host
//! and the protocol).
//!
//! What a plugin does wrong costs only its session:
//! - a crash (segfault, `abort()`) ends the host; the session fails with the signal and the
//!   plugin's last words on stderr;
//! - a hang: a call not answered within its time-out (`driver_hang_timeout` beyond a `read`'s
//!   own) kills the host;
//! - runaway allocation: the host's address space is limited (`driver_memory_limit` above what it
//!   maps at start), so the plugin's allocation fails and the host ends;
//! - malice: the host confines itself before it loads the plugin (its `sandbox` module): no
//!   files but the system's and the paths named here, no signals, Unix sockets or scheduling of
//!   other processes.
//!
//! The host inherits no descriptor but its socket and the session's passed files, and none of
//! the daemon's environment but what drivers use.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bci2token_driver_abi::host::{Device, DriverError, Plugin, Read};
use bci2token_driver_abi::types::StreamInfo;
use bci2token_driver_host::client::{HostExe, Limits, RemoteDevice};
pub use bci2token_driver_host::{client::DEFAULT_HANG_SECONDS, DEFAULT_MEMORY_MIB};

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

/// What a driver may read besides the system's directories ([`bci2token_driver_host::sandbox`]):
/// the plugin's directory and the driver directories, the libraries and LSL configuration the
/// admin or the environment name, string settings of the admin's that are absolute paths (host
/// keys `_…`), and in `--user` mode the caller's file keys (the caller is the daemon's user);
/// the directory of each file named. The host loads the libraries among them before it confines
/// itself. Never `data_dir` or a directory above or in it: those are left out, with a warning.
pub fn readable_paths(
    cfg: &crate::config::Config,
    plugin: &Path,
    config: &serde_json::Map<String, serde_json::Value>,
) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = plugin.parent().map(Path::to_path_buf).into_iter().collect();
    paths.extend(cfg.driver_path.iter().cloned());
    paths.extend(cfg.lsl_library.iter().cloned());
    for var in ["LSLAPICFG", "BCI2TOKEN_LIBLSL"] {
        paths.extend(std::env::var_os(var).map(PathBuf::from));
    }
    if let Some(dirs) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&dirs));
    }
    let caller_paths = config.get("_caller_paths").and_then(serde_json::Value::as_bool) == Some(true);
    for (key, value) in config {
        let named = key.starts_with('_') || (caller_paths && bci2token_api::is_file_key(key));
        if let (true, Some(p)) = (named, value.as_str()) {
            paths.push(PathBuf::from(p));
        }
    }
    // A library's own directory too: some load more of themselves from there at run time.
    let dirs: Vec<PathBuf> =
        paths.iter().filter(|p| p.is_file()).filter_map(|p| Some(p.parent()?.to_path_buf())).collect();
    paths.extend(dirs);
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    paths.retain(|p| {
        if !p.is_absolute() {
            return false;
        }
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let holds_data = data_dir.starts_with(&real) || real.starts_with(&data_dir);
        if holds_data {
            log::warn!(
                "driver hosts may not read {} (it holds or is within data_dir {}): left out of their sandbox",
                p.display(),
                data_dir.display()
            );
        }
        !holds_data
    });
    paths.sort();
    paths.dedup();
    paths
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

/// Where a session's device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In a driver host process (the default).
    Process,
    /// In the daemon's own address space (for measurement; a crashing plugin ends the daemon).
    InProcess,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "process" => Ok(Isolation::Process),
            "in-process" => Ok(Isolation::InProcess),
            other => Err(format!("\"{other}\" is not a driver isolation: use \"process\" or \"in-process\"")),
        }
    }
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
    /// passes; `readable`: what a host may read, [`readable_paths`]).
    pub fn open(
        isolation: Isolation,
        plugin: &Arc<Plugin>,
        config: &serde_json::Map<String, serde_json::Value>,
        held: &[OwnedFd],
        readable: Vec<PathBuf>,
        limits: Limits,
    ) -> Result<Source, DriverError> {
        match isolation {
            Isolation::InProcess => plugin.open(config).map(Source::Local),
            Isolation::Process => {
                let exe = host_exe().map_err(|message| DriverError {
                    driver: plugin.name().to_string(),
                    message,
                    panicked: false,
                })?;
                let device = RemoteDevice::open(exe, (plugin.path(), plugin.name()), config, held, readable, limits)?;
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

    /// Beats `beat` while a driver host is waited for (waiting within a deadline is not being
    /// stuck); a device in this process beats through the session's own loop.
    pub fn beat_while_waiting(&mut self, beat: Arc<bci2token_sched::Heartbeat>) {
        if let Source::Remote(d) = self {
            d.beat_while_waiting(Box::new(move || beat.beat()));
        }
    }
}

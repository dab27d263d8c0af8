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

use std::collections::VecDeque;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bci2token_driver_abi::ffi::block_flags;
use bci2token_driver_abi::host::{check_stream, Device, DriverError, Plugin, Read};
use bci2token_driver_abi::types::{DriverEvent, StreamInfo};
pub use bci2token_driver_host::DEFAULT_MEMORY_MIB;
use bci2token_driver_host::{parse_frame, write_frame, HostReply, HostRequest, HOST_FD};

/// How much longer than its own time-out a `read` may take before the daemon calls the host
/// hung, by default (`driver_hang_timeout`): drivers reconnect a lost device inside `read`
/// (OpenBCI: reset and reply time-outs of up to a minute). The session's heartbeat is beaten
/// meanwhile.
pub const DEFAULT_HANG_SECONDS: f64 = 90.0;
/// Where the packages install the host (a build tree has it beside bci2tokend).
const LIBEXEC_HOST: &str = "/usr/libexec/bci2token/bci2token-driver-host";

/// The driver host's executable, found and opened once (at the daemon's start): a session runs
/// that file even after a package upgrade replaced it on disk, so a host always speaks its
/// daemon's protocol.
pub struct HostExe {
    pub path: PathBuf,
    file: std::fs::File,
}

/// The host executable: beside the daemon's own (a build tree), else the installed one.
pub fn host_exe() -> Result<&'static HostExe, String> {
    static HOST: std::sync::OnceLock<Result<HostExe, String>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let beside = std::env::current_exe().ok().and_then(|d| Some(d.parent()?.join("bci2token-driver-host")));
        let candidates: Vec<PathBuf> = beside.into_iter().chain([PathBuf::from(LIBEXEC_HOST)]).collect();
        for path in &candidates {
            // Above the descriptors a host is given (its socket goes on 3), so that no dup2
            // before the exec overwrites it.
            let high = std::fs::File::open(path).and_then(|f| {
                let fd = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                Ok(unsafe { std::fs::File::from_raw_fd(fd) })
            });
            if let Ok(file) = high {
                return Ok(HostExe { path: path.clone(), file });
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

/// Time-outs of the calls that have none of their own (an OpenBCI open with a minute's reply
/// time-out, an LSL resolve of up to a minute, then the inlet).
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);
const START_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the host's stderr kept for error messages.
const STDERR_LINES: usize = 8;

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
    Remote(RemoteDevice),
}

impl Source {
    pub fn info(&self) -> &StreamInfo {
        match self {
            Source::Local(d) => d.info(),
            Source::Remote(d) => &d.info,
        }
    }

    pub fn start(&mut self) -> Result<(), DriverError> {
        match self {
            Source::Local(d) => d.start(),
            Source::Remote(d) => d.done(&HostRequest::Start, "start", START_STOP_TIMEOUT),
        }
    }

    pub fn stop(&mut self) -> Result<(), DriverError> {
        match self {
            Source::Local(d) => d.stop(),
            Source::Remote(d) => d.done(&HostRequest::Stop, "stop", START_STOP_TIMEOUT),
        }
    }

    /// As [`Device::read`].
    pub fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<Read, DriverError> {
        match self {
            Source::Local(d) => d.read(timeout, buf),
            Source::Remote(d) => d.read(timeout, buf),
        }
    }
}

/// A device opened by a driver host process.
pub struct RemoteDevice {
    info: StreamInfo,
    /// The plugin's name, as it reports itself, and its file (for messages).
    driver: String,
    file: PathBuf,
    /// The host process (taken when it is killed or handed to a reaper).
    child: Option<Child>,
    sock: UnixStream,
    /// The last lines the host wrote to stderr (the plugin's last words).
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Why the host is gone, once it is: every later call says so.
    dead: Option<DriverError>,
    /// Its memory limit (`driver_memory_limit`), for messages.
    memory_mib: u64,
    /// How much longer than asked a `read` may take (`driver_hang_timeout`).
    read_grace: Duration,
    /// Beaten while a call waits (waiting for a host within a deadline is not being stuck).
    beat: Option<Arc<bci2token_sched::Heartbeat>>,
    /// How to restart the host (`None`: this session ends when its host does).
    relaunch: Option<Box<Relaunch>>,
    /// What `read` hands out before it asks the host again, and flags for the next block.
    pending: VecDeque<Read>,
    next_flags: u32,
}

/// How long one wait on the socket lasts before the heartbeat is beaten and the deadline checked.
const WAIT_SLICE: Duration = Duration::from_millis(500);

/// What a host needs to be started again after it died in `read` (a live device without passed
/// files: it can be opened again as it was).
struct Relaunch {
    config: serde_json::Map<String, serde_json::Value>,
    readable: Vec<PathBuf>,
    /// Restarts allowed in a row (`driver_restarts`); a host that ran [`HEALTHY`] starts the
    /// count again.
    max: u32,
    /// Restarts in a row so far.
    restarts: u32,
    /// When the running host was started.
    started: Instant,
    /// While the host is down: since when, why, and when to try again.
    down: Option<(Instant, DriverError, Instant)>,
    /// The stream time at the end of the last block, and what is added to a restarted device's
    /// times when its clock started again (so that time goes on across the outage).
    last_t: f64,
    offset: f64,
    /// Set by a restart: the next block's time is checked against `last_t` then.
    resumed_at: Option<f64>,
}

/// A host that ran this long before it died is restarted with a fresh count.
const HEALTHY: Duration = Duration::from_secs(60);

/// Waits before restart `n` (1-based): 1 s, 2 s, 4 s, … at most 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// Starts a host process: its socket on fd 3, `held` renumbered above every descriptor moved
/// (`config`'s `{"fd": N}` values follow them), a session of its own, a short environment.
/// Returns the process, the daemon's end of the socket, the host's last stderr lines (filled
/// by a thread of its own) and the config as the host sees it.
#[allow(clippy::type_complexity)]
fn spawn_host(
    name: &str,
    held: &[OwnedFd],
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Child, UnixStream, Arc<Mutex<VecDeque<String>>>, serde_json::Map<String, serde_json::Value>), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("cannot make the driver host's socket: {e}"))?;
    // The host's descriptors: its socket on 3, the passed files above every descriptor that
    // is moved (so that no dup2 overwrites one still to be moved).
    let srcs: Vec<RawFd> = held.iter().map(AsRawFd::as_raw_fd).collect();
    let host = host_exe()?;
    let base = srcs.iter().copied().chain([theirs.as_raw_fd(), host.file.as_raw_fd(), 9]).max().unwrap_or(9) + 1;
    let moves: Vec<(RawFd, RawFd)> = srcs.iter().enumerate().map(|(i, &fd)| (fd, base + i as RawFd)).collect();
    let mut config = config.clone();
    for value in config.values_mut() {
        if let Some(fd) = value.get("fd").and_then(serde_json::Value::as_i64) {
            if let Some((_, to)) = moves.iter().find(|(from, _)| i64::from(*from) == fd) {
                value["fd"] = (*to).into();
            }
        }
    }
    // The file opened at start, even if an upgrade has replaced it since; shown by its path.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", host.file.as_raw_fd()));
    cmd.arg0(&host.path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // Only what a driver may need of the environment: not the service manager's sockets,
    // credentials or directories, nor the daemon's own settings.
    cmd.env_clear();
    for (key, value) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let keep =
            matches!(&*k, "PATH" | "HOME" | "LANG" | "TZ" | "LSLAPICFG" | "LD_LIBRARY_PATH" | "BCI2TOKEN_LIBLSL")
                || k.starts_with("LC_");
        if keep {
            cmd.env(key, value);
        }
    }
    let sock_fd = theirs.as_raw_fd();
    let moves_in_child = moves.clone();
    // SAFETY: only async-signal-safe calls between fork and exec (close_range, dup2, fcntl,
    // setsid); the descriptors are open in the parent, so they are in the child.
    unsafe {
        cmd.pre_exec(move || {
            // Nothing of the daemon's is inherited by mistake (descriptors a library opened
            // without O_CLOEXEC: D-Bus callers' files in flight, liblsl's sockets).
            if libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) < 0 {
                // An older kernel, or a system call filter without it: one by one.
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            for &(from, to) in &moves_in_child {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::dup2(sock_fd, HOST_FD) < 0 || libc::fcntl(HOST_FD, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A session of its own: a terminal's Ctrl-C for a `--user` daemon reaches the
            // daemon, which stops its sessions, not the hosts underneath them.
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start a driver host: {e}"))?;
    drop(theirs);
    let stderr = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(err) = child.stderr.take() {
        let (lines, name) = (Arc::clone(&stderr), name.to_string());
        let _ =
            std::thread::Builder::new().name(format!("host-{name}")).spawn(move || drain_stderr(err, &lines, &name));
    }
    Ok((child, ours, stderr, config))
}

impl RemoteDevice {
    /// Starts a driver host for `plugin` and opens a device with `config`. `held`: the files the
    /// config passes (`{"fd": N, ...}`, N one of their descriptors here), handed to the host;
    /// `readable`: what the host may read ([`readable_paths`]). A live device without passed
    /// files is restarted up to `restarts` times in a row when its host dies in `read`.
    pub fn open(
        plugin: &Plugin,
        config: &serde_json::Map<String, serde_json::Value>,
        held: &[OwnedFd],
        readable: Vec<PathBuf>,
        (memory_mib, read_grace, restarts): (u64, Duration, u32),
    ) -> Result<RemoteDevice, DriverError> {
        let fail = |message: String| DriverError { driver: plugin.name().to_string(), message, panicked: true };
        let (child, sock, stderr, host_config) = spawn_host(plugin.name(), held, config).map_err(fail)?;
        let mut device = RemoteDevice {
            info: StreamInfo {
                channels: vec![],
                sample_rate: 0.0,
                max_block_frames: 0,
                realtime: true,
                description: String::new(),
                duration: None,
            },
            driver: plugin.name().to_string(),
            file: plugin.path().to_path_buf(),
            child: Some(child),
            sock,
            stderr,
            dead: None,
            memory_mib,
            read_grace,
            beat: None,
            relaunch: None,
            pending: VecDeque::new(),
            next_flags: 0,
        };
        device.info = device.open_in_host(host_config, readable.clone())?;
        if device.info.realtime && held.is_empty() && restarts > 0 {
            device.relaunch = Some(Box::new(Relaunch {
                config: config.clone(),
                readable,
                max: restarts,
                restarts: 0,
                started: Instant::now(),
                down: None,
                last_t: 0.0,
                offset: 0.0,
                resumed_at: None,
            }));
        }
        Ok(device)
    }

    /// Asks the host to load the plugin and open the device; its stream, checked.
    fn open_in_host(
        &mut self,
        config: serde_json::Map<String, serde_json::Value>,
        readable: Vec<PathBuf>,
    ) -> Result<StreamInfo, DriverError> {
        let open = HostRequest::Open { plugin: self.file.clone(), config, memory_mib: self.memory_mib, readable };
        match self.call(&open, "open", OPEN_TIMEOUT, None)? {
            HostReply::Opened { info, sandbox, .. } => {
                // What the host says is the plugin's word: checked as in-process.
                if let Err(m) = check_stream(&info) {
                    return Err(self.protocol_error("open", &m));
                }
                report_sandbox(&sandbox);
                Ok(info)
            }
            HostReply::Failed { message, panicked } => {
                Err(DriverError { driver: self.driver.clone(), message, panicked })
            }
            other => Err(self.protocol_error("open", &format!("{other:?}"))),
        }
    }

    /// The host died in `read` with `e`: a `Disconnected` event if it is to be restarted (after
    /// a back-off), else the error the session ends with.
    fn host_died(&mut self, e: DriverError) -> Result<Read, DriverError> {
        let Some(relaunch) = self.relaunch.as_mut() else {
            return Err(e);
        };
        if relaunch.started.elapsed() >= HEALTHY {
            relaunch.restarts = 0;
        }
        if relaunch.restarts >= relaunch.max {
            let message = format!("{} (its host was restarted {} times in a row)", e.message, relaunch.restarts);
            return Err(DriverError { message, ..e });
        }
        relaunch.restarts += 1;
        let now = Instant::now();
        let retry = now + backoff(relaunch.restarts);
        log::warn!(
            "driver `{}`: {}; restarting its host in {:.0} s ({} of {} in a row)",
            self.driver,
            e.message,
            (retry - now).as_secs_f64(),
            relaunch.restarts,
            relaunch.max
        );
        relaunch.down = Some((now, e.clone(), retry));
        Ok(Read::Event(DriverEvent::Disconnected { t: relaunch.last_t, reason: e.message }))
    }

    /// While the host is down: waits out the back-off (a `Timeout` at a time), then starts a new
    /// host and opens the device again. Back: a `Reconnected` event, then a `Gap`, and the next
    /// block flagged GAP and RECONNECTED, as a driver that reconnects itself says it.
    fn recover(&mut self, timeout: Duration) -> Result<Read, DriverError> {
        let Some(relaunch) = self.relaunch.as_mut() else {
            return Err(self.error("its host is gone".into()));
        };
        let Some((since, cause, retry)) = relaunch.down.clone() else {
            return Ok(Read::Timeout);
        };
        let now = Instant::now();
        if now < retry {
            std::thread::sleep((retry - now).min(timeout));
            return Ok(Read::Timeout);
        }
        let (config, readable) = (relaunch.config.clone(), relaunch.readable.clone());
        let attempt = spawn_host(&self.driver, &[], &config).map_err(|m| self.error(m)).and_then(
            |(child, sock, stderr, config)| {
                self.kill();
                self.child = Some(child);
                self.sock = sock;
                self.stderr = stderr;
                self.dead = None;
                let info = self.open_in_host(config, readable)?;
                let same = info.channels == self.info.channels && info.sample_rate == self.info.sample_rate;
                if !same || info.max_block_frames > self.info.max_block_frames {
                    return Err(self.error(format!(
                    "after a restart the device describes another stream ({} channels at {} Hz, blocks of {} frames; \
                     it was {} at {} Hz, {})",
                    info.channels.len(),
                    info.sample_rate,
                    info.max_block_frames,
                    self.info.channels.len(),
                    self.info.sample_rate,
                    self.info.max_block_frames
                )));
                }
                self.done(&HostRequest::Start, "start", START_STOP_TIMEOUT)
            },
        );
        let relaunch = self.relaunch.as_mut().expect("checked above");
        match attempt {
            Ok(()) => {
                let outage = since.elapsed().as_secs_f64();
                let t = relaunch.last_t + outage;
                relaunch.down = None;
                relaunch.started = Instant::now();
                relaunch.resumed_at = Some(t);
                log::warn!("driver `{}`: its host was restarted after {outage:.1} s", self.driver);
                self.pending.push_back(Read::Event(DriverEvent::Gap {
                    t: relaunch.last_t,
                    seconds: outage,
                    lost_samples: None,
                }));
                self.next_flags = block_flags::GAP | block_flags::RECONNECTED;
                Ok(Read::Event(DriverEvent::Reconnected { t, outage }))
            }
            Err(e) if relaunch.restarts < relaunch.max => {
                relaunch.restarts += 1;
                let retry = Instant::now() + backoff(relaunch.restarts);
                log::warn!("driver `{}`: restarting its host failed: {}; trying again", self.driver, e.message);
                relaunch.down = Some((since, cause, retry));
                Ok(Read::Timeout)
            }
            Err(e) => {
                let message = format!(
                    "{}; its host was restarted {} times in a row, the last time: {}",
                    cause.message, relaunch.restarts, e.message
                );
                Err(self.error(message))
            }
        }
    }

    /// Beats `beat` while a call waits for the host.
    pub fn beat_while_waiting(&mut self, beat: Arc<bci2token_sched::Heartbeat>) {
        self.beat = Some(beat);
    }

    fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<Read, DriverError> {
        if let Some(read) = self.pending.pop_front() {
            return Ok(read);
        }
        if self.relaunch.as_ref().is_some_and(|r| r.down.is_some()) {
            return self.recover(timeout);
        }
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let limit = timeout.saturating_add(self.read_grace);
        let reply = match self.call(&HostRequest::Read { timeout_ms }, "read", limit, Some(buf)) {
            Ok(reply) => reply,
            // The host died (not the plugin's own error): restarted, if it may be.
            Err(e) if self.dead.is_some() => return self.host_died(e),
            Err(e) => return Err(e),
        };
        match reply {
            HostReply::Read(Read::Block { frames, t, flags }) => Ok(self.block(frames, t, flags)),
            HostReply::Read(read) => Ok(read),
            HostReply::Failed { message, panicked } => {
                Err(DriverError { driver: self.driver.clone(), message, panicked })
            }
            other => Err(self.protocol_error("read", &format!("{other:?}"))),
        }
    }

    /// A block from the host, in the session's time: after a restart whose device clock
    /// started again, shifted to go on from the outage's end.
    fn block(&mut self, frames: usize, t: f64, flags: u32) -> Read {
        let flags = flags | std::mem::take(&mut self.next_flags);
        let Some(relaunch) = self.relaunch.as_mut() else {
            return Read::Block { frames, t, flags };
        };
        if let Some(resumed) = relaunch.resumed_at.take() {
            relaunch.offset = if t + relaunch.offset < relaunch.last_t { resumed - t } else { relaunch.offset };
        }
        let t = t + relaunch.offset;
        relaunch.last_t = t + frames as f64 / self.info.sample_rate;
        Read::Block { frames, t, flags }
    }

    fn done(&mut self, req: &HostRequest, what: &str, timeout: Duration) -> Result<(), DriverError> {
        match self.call(req, what, timeout, None)? {
            HostReply::Done => Ok(()),
            HostReply::Failed { message, panicked } => {
                Err(DriverError { driver: self.driver.clone(), message, panicked })
            }
            other => Err(self.protocol_error(what, &format!("{other:?}"))),
        }
    }

    /// The host broke the protocol: it is stopped, and every later call fails with this.
    fn protocol_error(&mut self, what: &str, said: &str) -> DriverError {
        let said = crate::caller_files::bounded(said);
        let e = self.error(format!("its driver host answered `{what}` with {said}; it was stopped"));
        self.kill();
        self.dead = Some(e.clone());
        e
    }

    fn error(&self, message: String) -> DriverError {
        DriverError { driver: self.driver.clone(), message, panicked: true }
    }

    /// Sends `req` and waits at most `limit` for the whole reply; a block's samples go into
    /// `buf`. A host that does not answer in time is killed; one that is gone is described.
    fn call(
        &mut self,
        req: &HostRequest,
        what: &str,
        limit: Duration,
        buf: Option<&mut [f32]>,
    ) -> Result<HostReply, DriverError> {
        if let Some(e) = &self.dead {
            return Err(e.clone());
        }
        let started = Instant::now();
        let deadline = started + limit;
        // A reply is a block of the described size at most, or a message (events are small).
        let max = if self.info.channels.is_empty() {
            1 << 20
        } else {
            self.info.channels.len() * self.info.max_block_frames as usize * 4 + (1 << 20)
        };
        let _ = self.sock.set_write_timeout(Some(limit.max(Duration::from_millis(1))));
        let sent = write_frame(&mut self.sock, req, &[]);
        let reply = sent.and_then(|()| self.receive(deadline, max));
        match reply {
            Ok((HostReply::Read(Read::Block { frames, t, flags }), data)) => {
                let values = frames.saturating_mul(self.info.channels.len());
                let fits = frames <= self.info.max_block_frames as usize && data.len() == values * 4;
                let Some(buf) = buf.filter(|b| fits && b.len() >= values) else {
                    return Err(
                        self.protocol_error(what, &format!("a block of {frames} frames in {} bytes", data.len()))
                    );
                };
                for (v, b) in buf.iter_mut().zip(data.chunks_exact(4)) {
                    *v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
                Ok(HostReply::Read(Read::Block { frames, t, flags }))
            }
            Ok((reply, _)) => Ok(reply),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.kill();
                let e = self.error(format!(
                    "`{what}` was not answered within {:.1} s: the plugin ({}) hangs; its host process was killed",
                    started.elapsed().as_secs_f64(),
                    self.file.display()
                ));
                self.dead = Some(e.clone());
                Err(e)
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(self.protocol_error(what, &e.to_string())),
            Err(_) => {
                let how = self.end_of_host();
                let e = self.error(format!("{how} in `{what}`{}", self.last_words()));
                self.dead = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Reads one frame of at most `max` bytes before `deadline`, in slices, beating meanwhile.
    /// A time-out is `TimedOut`, a malformed frame `InvalidData`, the host gone anything else.
    fn receive(&mut self, deadline: Instant, max: usize) -> std::io::Result<(HostReply, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.read_full(&mut len, deadline)?;
        let total = u32::from_le_bytes(len) as usize;
        if !(4..=max).contains(&total) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {total} bytes")));
        }
        let mut frame = vec![0u8; total];
        self.read_full(&mut frame, deadline)?;
        parse_frame(frame).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    fn read_full(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut off = 0;
        while off < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let _ = self.sock.set_read_timeout(Some(left.min(WAIT_SLICE)));
            match self.sock.read(&mut buf[off..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => off += n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if let Some(beat) = &self.beat {
                        beat.beat();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// How the host ended (it has closed its socket): waits a moment for its exit status.
    fn end_of_host(&mut self) -> String {
        let file = self.file.display().to_string();
        let Some(mut child) = self.child.take() else {
            return format!("the plugin ({file})'s host is gone");
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => break None,
            }
        };
        let Some(status) = status else {
            let _ = child.kill();
            reap_later(child);
            return format!("the plugin ({file}) closed its host's connection; the host was stopped");
        };
        let limit = format!("driver_memory_limit is {} MiB", self.memory_mib);
        match status.signal() {
            Some(sig) => {
                let name =
                    nix::sys::signal::Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.to_string());
                format!("the plugin ({file}) crashed: its host process was killed by {name} ({limit})")
            }
            None => format!(
                "the plugin ({file}) ended its host process with exit status {} ({limit})",
                status.code().unwrap_or(-1)
            ),
        }
    }

    /// ` (it said: …)`, the host's last stderr lines, when there are any.
    fn last_words(&self) -> String {
        // Give the reader thread a moment to take what the host wrote as it died.
        std::thread::sleep(Duration::from_millis(20));
        let lines = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            String::new()
        } else {
            let text: Vec<&str> = lines.iter().map(String::as_str).collect();
            format!(" (it said: {})", crate::caller_files::bounded(&text.join(" / ")))
        }
    }

    /// Kills the host now; it is reaped on a thread of its own (a process in uninterruptible
    /// sleep must not hold up the session's thread).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            reap_later(child);
        }
    }
}

/// Waits for `child` on a thread of its own, killing it after 5 s.
fn reap_later(mut child: Child) {
    let _ = std::thread::Builder::new().name("host-reaper".into()).spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    });
}

/// Logs the host's stderr a line at a time (at most 4 KiB a line, any bytes) and keeps the last
/// lines for error messages; reads to the end, so the host never writes into a closed pipe.
fn drain_stderr(err: std::process::ChildStderr, lines: &Mutex<VecDeque<String>>, name: &str) {
    let mut reader = std::io::BufReader::new(err);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match std::io::Read::take(&mut reader, 4096).read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        log::warn!("driver `{name}` (its host process): {line}");
        let mut l = lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == STDERR_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }
}

impl Drop for RemoteDevice {
    /// Closing the socket tells the host to close the device and exit; one that does not within
    /// a few seconds is killed (on a thread of its own: a session's end does not wait for it).
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(child) = self.child.take() {
            reap_later(child);
        }
    }
}

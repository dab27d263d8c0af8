//! The daemon's end of a driver host: starts `bci2token-driver-host` for one session's device,
//! drives it over the socket pair, reads blocks out of the shared sample buffer, and tells what
//! went wrong when the host dies, hangs or breaks the protocol. A live device's host that dies in
//! `read` is started again (with back-off) and the session sees a disconnection and a reconnect.

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
use bci2token_driver_abi::host::{bounded, check_identity, check_stream, unprintable, DriverError, Identity, Read};
use bci2token_driver_abi::types::{DeviceInfo, DriverEvent, StreamInfo};

use crate::{parse_frame, shm, write_frame, HostReply, HostRequest, Load, MAX_FRAME};

/// How much longer than its own time-out a `read` may take before the host is called hung, by
/// default (`driver_hang_timeout`): drivers reconnect a lost device inside `read` (OpenBCI: reset
/// and reply time-outs of up to a minute). The caller's heartbeat is beaten meanwhile.
pub const DEFAULT_HANG_SECONDS: f64 = 90.0;
/// Time-outs of the calls that have none of their own (an OpenBCI open with a minute's reply
/// time-out, an LSL resolve of up to a minute, then the inlet).
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);
const START_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A plugin's error message, at most (a session keeps and lists it).
const MAX_MESSAGE: usize = 4096;
/// Lines of a host's stderr written to the daemon's log, at most (the rest is only counted).
const LOGGED_LINES: usize = 64;
/// Lines of the host's stderr kept for error messages.
const STDERR_LINES: usize = 8;

/// The driver host's executable, found and opened once (at the daemon's start): a session runs
/// that file even after a package upgrade replaced it on disk, so a host always speaks its
/// daemon's protocol.
#[derive(Debug)]
pub struct HostExe {
    pub path: PathBuf,
    file: std::fs::File,
}

impl HostExe {
    /// Opens the executable at `path` (on a descriptor of 10 or above, out of stdio's way).
    pub fn open(path: &Path) -> std::io::Result<HostExe> {
        let f = std::fs::File::open(path)?;
        // SAFETY: fcntl F_DUPFD_CLOEXEC on an open descriptor; it returns a new one nothing
        // else owns.
        let fd = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: see above.
        Ok(HostExe { path: path.to_path_buf(), file: unsafe { std::fs::File::from_raw_fd(fd) } })
    }
}

/// What a host may use: its memory (`driver_memory_limit`, MiB), how much longer than asked a
/// `read` may take (`driver_hang_timeout`), restarts in a row (`driver_restarts`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_mib: u64,
    pub read_grace: Duration,
    pub restarts: u32,
}

/// A device opened by a driver host process.
pub struct RemoteDevice {
    info: StreamInfo,
    /// The plugin's name, as it reports itself, its ABI (major, minor) and its file.
    driver: String,
    abi: (u32, u32),
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
    /// Called while a call waits (waiting for a host within a deadline is not being stuck);
    /// `false`: give up, the session is stopping.
    waiting: Option<Box<dyn Fn() -> bool + Send>>,
    /// Given up by `waiting`: the host was killed for it, and is not restarted.
    stopped: bool,
    /// The host that runs (kept for restarts), and the sample buffer shared with it.
    exe: &'static HostExe,
    samples: shm::Mapping,
    /// What the host could enforce of its sandbox, in words.
    sandbox: String,
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
    config: Config,
    readable: Vec<PathBuf>,
    preload: Vec<PathBuf>,
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

/// Starts a host process with its socket, the sample buffer ([`shm`]) and the passed files
/// `held`, each at the descriptor number it has here (so `config`'s `{"fd": N}` values hold, and
/// nothing is moved onto a descriptor the spawn itself uses); a session and process group of its
/// own; a short environment.
fn spawn_host(host: &HostExe, name: &str, held: &[OwnedFd]) -> Result<Spawned, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("cannot make the driver host's socket: {e}"))?;
    // Waits on the socket are in slices of this (a deadline is checked, the caller asked).
    let _ = ours.set_read_timeout(Some(WAIT_SLICE));
    // A request fits the socket's buffer (nothing else is queued: see `call`); a write that
    // still waits this long means the host is gone.
    let _ = ours.set_write_timeout(Some(WAIT_SLICE));
    let samples = shm::create().map_err(|e| format!("cannot make the driver host's sample buffer: {e}"))?;
    let passed: Vec<RawFd> =
        [theirs.as_raw_fd(), samples.as_raw_fd()].into_iter().chain(held.iter().map(AsRawFd::as_raw_fd)).collect();
    // The file opened at start, even if an upgrade has replaced it since; shown by its path.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", host.file.as_raw_fd()));
    cmd.arg0(&host.path).arg("--socket").arg(theirs.as_raw_fd().to_string());
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // Only what a driver may need of the environment: not the service manager's sockets,
    // credentials or directories, nor the daemon's own settings.
    cmd.env_clear();
    for (key, value) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let keep = matches!(
            &*k,
            "PATH"
                | "HOME"
                | "LANG"
                | "TZ"
                | "LSLAPICFG"
                | "LD_LIBRARY_PATH"
                | "BCI2TOKEN_LIBLSL"
                | "BCI2TOKEN_BRAINFLOW_LIB"
        ) || k.starts_with("LC_");
        if keep {
            cmd.env(key, value);
        }
    }
    // Past the highest descriptor open now, for kernels without close_range's CLOEXEC flag (one
    // fcntl each: the soft limit may be in the millions).
    let max_fd = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).max().unwrap_or(1024))
        .unwrap_or(65536)
        .saturating_add(64);
    // SAFETY: only async-signal-safe calls between fork and exec (close_range, fcntl, setsid);
    // the descriptors are open in the parent, so they are in the child.
    unsafe {
        cmd.pre_exec(move || {
            // Nothing of the daemon's is inherited by mistake (descriptors a library opened
            // without O_CLOEXEC: D-Bus callers' files in flight, liblsl's sockets) ...
            if libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) < 0 {
                // An older kernel, or a system call filter without it: one by one.
                for fd in 3..max_fd {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // ... but what the host is given.
            for &fd in &passed {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A session and process group of its own: a terminal's Ctrl-C for a `--user`
            // daemon reaches the daemon, not the hosts underneath it, and the daemon ends a host
            // with everything it started by killing the group.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
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
    Ok(Spawned { child, sock: ours, stderr, samples })
}

type Config = serde_json::Map<String, serde_json::Value>;

/// A host just started: its process, the daemon's end of the socket, its last stderr lines
/// (filled by a thread of its own) and the sample buffer.
struct Spawned {
    child: Child,
    sock: UnixStream,
    stderr: Arc<Mutex<VecDeque<String>>>,
    samples: OwnedFd,
}

impl RemoteDevice {
    /// Starts a driver host (`exe`) for the plugin `file` (which calls itself `driver`) and
    /// opens a device with `config`. `held`: the files the config passes (`{"fd": N, ...}`, N one
    /// of their descriptors here), handed to the host; `readable`: what the host may read besides
    /// the system's directories ([`crate::sandbox`]); `preload`: libraries the host loads before
    /// it confines itself. A live device without passed files is restarted up to
    /// `limits.restarts` times in a row when its host dies in `read`.
    pub fn open(
        exe: &'static HostExe,
        (file, driver, abi): (&Path, &str, (u32, u32)),
        config: &Config,
        held: &[OwnedFd],
        (readable, preload): (Vec<PathBuf>, Vec<PathBuf>),
        limits: Limits,
    ) -> Result<RemoteDevice, DriverError> {
        let fail = |message: String| DriverError { driver: driver.to_string(), message, panicked: true };
        let spawned = spawn_host(exe, driver, held).map_err(fail)?;
        let restarts = limits.restarts;
        let mut device =
            RemoteDevice::connected(exe, (file, driver, abi), spawned.child, spawned.sock, spawned.stderr, limits);
        // A host whose device did not open goes now, with whatever its plugin started.
        device.info = match device.open_in_host(config.clone(), &spawned.samples, readable.clone(), preload.clone()) {
            Ok(info) => info,
            Err(e) => {
                device.kill();
                return Err(e);
            }
        };
        if device.info.realtime && held.is_empty() && restarts > 0 {
            device.relaunch = Some(Box::new(Relaunch {
                config: config.clone(),
                readable,
                preload,
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

    /// A device whose host has just been started, not yet open.
    fn connected(
        exe: &'static HostExe,
        (file, driver, abi): (&Path, &str, (u32, u32)),
        child: Child,
        sock: UnixStream,
        stderr: Arc<Mutex<VecDeque<String>>>,
        limits: Limits,
    ) -> RemoteDevice {
        RemoteDevice {
            info: StreamInfo {
                channels: vec![],
                sample_rate: 0.0,
                max_block_frames: 0,
                realtime: true,
                description: String::new(),
                duration: None,
            },
            driver: driver.to_string(),
            abi,
            file: file.to_path_buf(),
            child: Some(child),
            sock,
            stderr,
            dead: None,
            memory_mib: limits.memory_mib,
            read_grace: limits.read_grace,
            waiting: None,
            stopped: false,
            exe,
            samples: shm::Mapping::empty(),
            sandbox: String::new(),
            relaunch: None,
            pending: VecDeque::new(),
            next_flags: 0,
        }
    }

    /// Asks the host to load the plugin and open the device; its stream, checked, and the
    /// sample buffer mapped.
    fn open_in_host(
        &mut self,
        config: Config,
        samples: &OwnedFd,
        readable: Vec<PathBuf>,
        preload: Vec<PathBuf>,
    ) -> Result<StreamInfo, DriverError> {
        let load = Load { plugin: self.file.clone(), memory_mib: self.memory_mib, readable, preload };
        let expect = (self.driver.clone(), self.abi);
        let open = HostRequest::Open { load, config, samples: samples.as_raw_fd(), expect };
        match self.call(&open, "open", OPEN_TIMEOUT, None)? {
            HostReply::Opened { info, sandbox, name, abi } => {
                // The file may have been replaced since the daemon listed it: a session runs only
                // the driver (and ABI) it was started for.
                if name != self.driver || abi != self.abi {
                    let (major, minor) = abi;
                    let message = format!(
                        "{} now holds driver `{}` (ABI {major}.{minor}), not the one listed; reload the daemon \
                         (systemctl reload bci2tokend) to use it",
                        self.file.display(),
                        bounded(&name)
                    );
                    self.kill();
                    let e = self.error(message);
                    self.dead = Some(e.clone());
                    return Err(e);
                }
                // What the host says is the plugin's word: checked as in-process.
                if let Err(m) = check_stream(&info) {
                    return Err(self.protocol_error("open", &m));
                }
                match shm::Mapping::for_daemon(samples, info.buffer_len()) {
                    Ok(m) => self.samples = m,
                    Err(m) => return Err(self.protocol_error("open", &m)),
                }
                self.sandbox = bounded(&sandbox);
                Ok(info)
            }
            HostReply::Failed { message, panicked } => Err(self.failed(message, panicked)),
            other => Err(self.protocol_error("open", &format!("{other:?}"))),
        }
    }

    /// The host died in `read` with `e`: a `Disconnected` event if it is to be restarted (after
    /// a back-off), else the error the session ends with.
    fn host_died(&mut self, e: DriverError) -> Result<Read, DriverError> {
        let Some(relaunch) = self.relaunch.as_mut().filter(|_| !self.stopped) else {
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
        let preload = relaunch.preload.clone();
        if !self.go_on() {
            return Err(cause);
        }
        let attempt = spawn_host(self.exe, &self.driver, &[]).map_err(|m| self.error(m)).and_then(|spawned| {
            self.kill();
            self.child = Some(spawned.child);
            self.sock = spawned.sock;
            self.stderr = spawned.stderr;
            self.dead = None;
            let info = self.open_in_host(config, &spawned.samples, readable, preload)?;
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
        });
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

    /// Calls `waiting` while a call waits for the host, every half second at least; when it
    /// returns `false` the call gives up and the host is killed (a stopping session must not
    /// wait out a plugin's time-outs).
    pub fn while_waiting(&mut self, waiting: Box<dyn Fn() -> bool + Send>) {
        self.waiting = Some(waiting);
    }

    /// Whether to go on waiting.
    fn go_on(&self) -> bool {
        self.waiting.as_ref().is_none_or(|w| w())
    }

    /// The device's stream.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// What the host could enforce of its sandbox, in words.
    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }

    /// As [`bci2token_driver_abi::host::Device::start`].
    pub fn start(&mut self) -> Result<(), DriverError> {
        self.done(&HostRequest::Start, "start", START_STOP_TIMEOUT)
    }

    /// As [`bci2token_driver_abi::host::Device::stop`].
    pub fn stop(&mut self) -> Result<(), DriverError> {
        self.done(&HostRequest::Stop, "stop", START_STOP_TIMEOUT)
    }

    /// As [`bci2token_driver_abi::host::Device::read`]; a block's samples are copied into `buf`.
    pub fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<Read, DriverError> {
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
            HostReply::Read(Read::Event(event)) => Ok(Read::Event(clean_event(event))),
            HostReply::Read(read) => Ok(read),
            HostReply::Failed { message, panicked } => Err(self.failed(message, panicked)),
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
            HostReply::Failed { message, panicked } => Err(self.failed(message, panicked)),
            other => Err(self.protocol_error(what, &format!("{other:?}"))),
        }
    }

    /// The host broke the protocol: it is stopped, and every later call fails with this.
    fn protocol_error(&mut self, what: &str, said: &str) -> DriverError {
        let said = bounded(said);
        let e = self.error(format!("its driver host answered `{what}` with {said}; it was stopped"));
        self.kill();
        self.dead = Some(e.clone());
        e
    }

    /// The plugin's own error, as the host reports it: at most [`MAX_MESSAGE`] bytes of it.
    fn failed(&self, message: String, panicked: bool) -> DriverError {
        DriverError { driver: self.driver.clone(), message: clean(&message), panicked }
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
        // A host that never read the last request (its reply sent ahead) would fill the socket
        // until our write blocks: nothing may still be queued.
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
        let unread = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } == 0 && queued > 0;
        if unread {
            return Err(self.protocol_error(what, "replies to requests it had not read"));
        }
        let sent = write_frame(&mut self.sock, req);
        let reply = sent.and_then(|()| self.receive(deadline));
        match reply {
            Ok(HostReply::Read(Read::Block { frames, t, flags })) => {
                // The block is in the sample buffer: of the described size at most.
                let values = frames.saturating_mul(self.info.channels.len());
                let fits = frames <= self.info.max_block_frames as usize;
                let copied = fits && buf.is_some_and(|b| self.samples.copy_to(b, values));
                if !copied {
                    return Err(self.protocol_error(what, &format!("a block of {frames} frames")));
                }
                Ok(HostReply::Read(Read::Block { frames, t, flags }))
            }
            Ok(reply) => Ok(reply),
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
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                self.kill();
                self.stopped = true;
                let e = self.error(format!("the session stopped while `{what}` waited; its host process was killed"));
                self.dead = Some(e.clone());
                Err(e)
            }
            Err(_) => {
                let how = self.end_of_host();
                let e = self.error(format!("{how} in `{what}`{}", self.last_words()));
                self.dead = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Reads one frame before `deadline`, in slices, beating meanwhile. A time-out is
    /// `TimedOut`, a malformed or oversized frame `InvalidData`, the host gone anything else.
    fn receive(&mut self, deadline: Instant) -> std::io::Result<HostReply> {
        let mut len = [0u8; 4];
        self.read_full(&mut len, deadline)?;
        let total = u32::from_le_bytes(len) as usize;
        if total > MAX_FRAME {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {total} bytes")));
        }
        let mut frame = vec![0u8; total];
        self.read_full(&mut frame, deadline)?;
        parse_frame(&frame).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    fn read_full(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut off = 0;
        let mut asked = Instant::now();
        while off < buf.len() {
            let now = Instant::now();
            if now >= deadline {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            // Every WAIT_SLICE of waiting, however the bytes come (a host trickling a byte at a
            // time must not keep the caller from beating or from giving up).
            if now.duration_since(asked) >= WAIT_SLICE {
                asked = now;
                if !self.go_on() {
                    return Err(std::io::ErrorKind::ConnectionAborted.into());
                }
            }
            // The socket's read time-out is WAIT_SLICE: a deadline is kept to within that.
            match self.sock.read(&mut buf[off..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => off += n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
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
        while !ended(&child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Whatever the plugin started goes with it, before the host is reaped.
        kill_group(&child);
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            _ => {
                reap_later(child);
                return format!("the plugin ({file}) closed its host's connection; the host was stopped");
            }
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
            format!(" (it said: {})", bounded(&text.join(" / ")))
        }
    }

    /// Kills the host now; it is reaped on a thread of its own (a process in uninterruptible
    /// sleep must not hold up the session's thread).
    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            // The leader is not reaped yet, so its group is still its own.
            kill_group(&child);
            reap_later(child);
        }
    }
}

/// What a plugin file is, as a driver host found it ([`describe`]).
#[derive(Debug, Clone)]
pub struct Described {
    pub name: String,
    pub version: String,
    pub abi: (u32, u32),
    /// The devices its `probe` found, when asked, or its error.
    pub probe: Option<Result<Vec<DeviceInfo>, DriverError>>,
}

/// How long a host may take to load a plugin and describe it; with a probe (which may look at
/// serial ports or the network), [`PROBE_TIMEOUT`] (drivers are probed side by side: a
/// `devices` call answers within a D-Bus call's default 25 s).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Loads the plugin `file` in a driver host of its own (`exe`, `limits.memory_mib`; `readable` and
/// `preload` as for [`RemoteDevice::open`]) and asks what it is, and with `probe` what devices it
/// can open now. The host ends after answering. A plugin that crashes, hangs or is no plugin
/// costs only this answer: the error names the file and the cause.
pub fn describe(
    exe: &'static HostExe,
    file: &Path,
    (readable, preload): (Vec<PathBuf>, Vec<PathBuf>),
    limits: Limits,
    probe: bool,
) -> Result<Described, DriverError> {
    // Until it has said its name, the plugin is called by its file's.
    let label = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let label = bounded(&label);
    let spawned = spawn_host(exe, &label, &[]).map_err(|message| DriverError {
        driver: label.clone(),
        message,
        panicked: true,
    })?;
    // (What the plugin is, is the question: no name or ABI to hold it to.)
    let mut host =
        RemoteDevice::connected(exe, (file, &label, (0, 0)), spawned.child, spawned.sock, spawned.stderr, limits);
    let load = Load { plugin: file.to_path_buf(), memory_mib: limits.memory_mib, readable, preload };
    let timeout = if probe { PROBE_TIMEOUT } else { DESCRIBE_TIMEOUT };
    let reply = host.call(&HostRequest::Describe { load, probe }, "describe", timeout, None)?;
    match reply {
        HostReply::Described { name, version, abi, probe } => {
            // The host's word is the plugin's: held to what a plugin loaded here is held to.
            let checked =
                check_identity(Identity::Name, &name).and_then(|()| check_identity(Identity::Version, &version));
            if let Err(m) = checked {
                return Err(host.protocol_error("describe", &m));
            }
            host.driver = name.clone();
            // (The caller bounds what a probe lists, as it does a plugin's in its own process.)
            let probe = probe.map(|found| found.map_err(|message| host.failed(message, false)));
            Ok(Described { name, version, abi, probe })
        }
        HostReply::Failed { message, panicked } => Err(host.failed(message, panicked)),
        other => Err(host.protocol_error("describe", &format!("{other:?}"))),
    }
}

/// A host's text (a message, an event's): [`unprintable`] characters as `?`, at most [`MAX_MESSAGE`]
/// bytes (it goes into logs, the session's message and events).
fn clean(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().map(|c| if unprintable(c) { '?' } else { c }) {
        if out.len() + c.len_utf8() > MAX_MESSAGE {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// A driver event from a host, its text [`clean`]ed.
fn clean_event(event: DriverEvent) -> DriverEvent {
    match event {
        DriverEvent::Annotation { onset, duration, text } => {
            DriverEvent::Annotation { onset, duration, text: clean(&text) }
        }
        DriverEvent::Warning { message } => DriverEvent::Warning { message: clean(&message) },
        DriverEvent::Disconnected { t, reason } => DriverEvent::Disconnected { t, reason: clean(&reason) },
        other @ (DriverEvent::Gap { .. } | DriverEvent::Reconnected { .. }) => other,
    }
}

/// Kills a host's process group: the host and whatever its plugin started (which cannot leave
/// the group: the host's filter refuses setsid and setpgid).
fn kill_group(child: &Child) {
    // SAFETY: kill(2) with a negative pid; the group is the unreaped host's own.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
}

/// Whether `child` has ended, without reaping it (its pid, and so its process group's id, stay
/// reserved until then).
fn ended(child: &Child) -> bool {
    // SAFETY: waitid into a zeroed siginfo_t, with WNOWAIT: nothing is reaped.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    let r = unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, flags) };
    // SAFETY: si_pid is set by waitid when a child was found (0 when none has ended).
    r < 0 || unsafe { info.si_pid() } != 0
}

/// Waits for `child` on a thread of its own: once it has ended (or after 5 s, killed), its
/// process group is killed too, then it is reaped.
fn reap_later(mut child: Child) {
    let pid = child.id();
    let spawned = std::thread::Builder::new().name("host-reaper".into()).spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ended(&child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&child);
        let _ = child.wait();
    });
    if let Err(e) = spawned {
        // Not even a thread to spare: the group is killed (the zombie stays until the daemon ends).
        // SAFETY: kill(2) with a negative pid.
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        log::error!("cannot start a thread to reap driver host {pid}: {e}");
    }
}

/// Logs the host's first [`LOGGED_LINES`] stderr lines (at most 4 KiB a line, any bytes, control
/// characters shown as `?`) and keeps the last lines for error messages; reads to the end, so
/// the host never writes into a closed pipe. (It ends when the host's process group is gone.)
fn drain_stderr(err: std::process::ChildStderr, lines: &Mutex<VecDeque<String>>, name: &str) {
    let mut reader = std::io::BufReader::new(err);
    let mut raw = Vec::new();
    let mut count = 0usize;
    loop {
        raw.clear();
        match std::io::Read::take(&mut reader, 4096).read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = clean(String::from_utf8_lossy(&raw).trim_end());
        count += 1;
        if count <= LOGGED_LINES {
            log::warn!("driver `{name}` (its host process): {line}");
        }
        let mut l = lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == STDERR_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }
    if count > LOGGED_LINES {
        log::warn!("driver `{name}` (its host process): {} more lines on stderr, not logged", count - LOGGED_LINES);
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

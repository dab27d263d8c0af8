//! The driver host: one session's driver plugin in a process of its own.
//!
//! A plugin is third-party native code. Loaded into the daemon, one segfault in its `read` ends
//! every session of every user, and a hostile one reads the master key. Instead bci2tokend starts
//! `bci2token-driver-host --socket FD` per session, holding one end of a socket pair, the sample
//! buffer and the session's passed files, nothing else of the daemon's. The host restricts itself ([`sandbox`]), loads the
//! plugin, opens the device and answers the daemon's calls (`start`, `read`, `stop`) over the
//! socket, a sample block per `read`. It ends when the daemon closes the socket.
//!
//! This crate is both sides' protocol ([`HostRequest`], [`HostReply`], frames) and the host's
//! main. It links no libtorch, store or D-Bus: it starts fast and holds nothing worth stealing.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bci2token_driver_abi::host::{DriverError, Plugin, Read};
use bci2token_driver_abi::types::{DeviceInfo, StreamInfo};
use serde::{Deserialize, Serialize};

pub mod client;
pub mod sandbox;
pub mod shm;

/// A frame on the socket at most (samples go through the shared buffer; messages are small).
pub const MAX_FRAME: usize = 1 << 20;
/// The host's address space above what it maps at start, by default (`driver_memory_limit`).
pub const DEFAULT_MEMORY_MIB: u64 = 1024;

/// What a host needs to load a plugin: the plugin's file, its memory limit, `readable`: paths the
/// plugin may read besides the system's directories ([`sandbox`]), and `preload`: libraries the
/// admin or the environment name, loaded before the host confines itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Load {
    pub plugin: PathBuf,
    pub memory_mib: u64,
    pub readable: Vec<PathBuf>,
    pub preload: Vec<PathBuf>,
}

/// The daemon's calls. The first is `Open` or `Describe`.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostRequest {
    /// Load the plugin and open a device with `config` (passed files already renumbered to the
    /// host's descriptors). `samples`: the host's descriptor of the sample buffer ([`shm`]),
    /// which it sizes for the device.
    Open {
        load: Load,
        config: serde_json::Map<String, serde_json::Value>,
        samples: RawFd,
        /// The driver (name, ABI) the daemon listed for this file: another one is not opened.
        expect: (String, (u32, u32)),
    },
    /// Load the plugin, say what it is, with `probe` the devices it can open now; then the host
    /// ends. (The daemon learns what is in its driver path without loading any of it.)
    Describe {
        load: Load,
        probe: bool,
    },
    Start,
    Stop,
    Read {
        timeout_ms: u32,
    },
}

/// The host's answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostReply {
    /// The device is open. `name` and `abi`: the plugin's; `sandbox`: what the host could
    /// enforce, in words.
    Opened {
        info: StreamInfo,
        name: String,
        abi: (u32, u32),
        sandbox: String,
    },
    /// What `Describe` asked: the plugin's name, version and ABI (major, minor), and what its
    /// `probe` gave when asked (the devices, or its error).
    Described {
        name: String,
        version: String,
        abi: (u32, u32),
        probe: Option<Result<Vec<DeviceInfo>, String>>,
    },
    Done,
    Failed {
        message: String,
        panicked: bool,
    },
    /// What the device's `read` gave; a block's `channels × frames` f32 (channel-major) are in
    /// the sample buffer.
    Read(Read),
}

/// Writes one frame: its length (u32, little endian), then the message as JSON.
pub fn write_frame(out: &mut impl std::io::Write, msg: &impl Serialize) -> std::io::Result<()> {
    let json = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    out.write_all(&frame)
}

/// A frame's message (`frame`: what followed the length word).
pub fn parse_frame<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, String> {
    serde_json::from_slice(frame).map_err(|e| format!("an unreadable message: {e}"))
}

/// Reads one frame (the host's side: the daemon is trusted).
fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl std::io::Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let total = u32::from_le_bytes(len) as usize;
    if total > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {total} bytes")));
    }
    let mut frame = vec![0u8; total];
    input.read_exact(&mut frame)?;
    parse_frame(&frame).map_err(std::io::Error::other)
}

/// The host's main (`bci2token-driver-host --socket FD`): serves one device on the socket until
/// the daemon closes it.
pub fn host_main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let fd = match args.as_slice() {
        [_, flag, fd] if flag == "--socket" => fd.parse::<RawFd>().ok().filter(|fd| *fd > 2),
        _ => None,
    };
    let Some(fd) = fd else {
        eprintln!("bci2token-driver-host is started by bci2tokend for each session, not by hand");
        return ExitCode::from(2);
    };
    // No privilege gained through exec from here on (and seccomp needs it). Not
    // PR_SET_PDEATHSIG: it fires when the daemon *thread* that started the host ends, and those
    // come and go. A host learns that the daemon is gone from its socket; under systemd the
    // service's cgroup is killed as a whole.
    // The OOM killer takes this process first (not the daemon): memory a plugin holds outside
    // its address space (a memfd it never maps) escapes RLIMIT_AS. Before PR_SET_DUMPABLE: then
    // /proc/self belongs to root and an unprivileged host could not write it.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "1000") {
        eprintln!("driver host: cannot raise its OOM score: {e}");
    }
    // SAFETY: prctl with integer arguments, and PR_SET_NAME with a NUL-terminated string of at
    // most 16 bytes.
    unsafe {
        // Executed through a descriptor (/proc/self/fd/N), the process would be named "N" in
        // ps, top and the journal's _COMM.
        libc::prctl(libc::PR_SET_NAME, c"bci2token-host".as_ptr(), 0, 0, 0);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        // No core dump (it would hold the samples in flight), whatever the core pattern.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: the daemon passed the socket on this descriptor; nothing else here owns it.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    if let Err(e) = serve(&mut sock) {
        eprintln!("driver host: {e}");
    }
    // Done: the daemon has its answer or has gone. Whatever the plugin started goes with the
    // host, also when no daemon is left to kill the group (which it does when it ends a session).
    kill_own_group();
    ExitCode::SUCCESS
}

fn serve(sock: &mut UnixStream) -> std::io::Result<()> {
    let first = read_frame::<HostRequest>(sock)?;
    let load = match &first {
        HostRequest::Open { load, .. } | HostRequest::Describe { load, .. } => load,
        _ => return Err(std::io::Error::other("the first request is neither `open` nor `describe`")),
    };
    let refuse = |sock: &mut UnixStream, message: String, panicked: bool| {
        write_frame(sock, &HostReply::Failed { message, panicked })
    };
    limit_memory(load.memory_mib);
    preload_libraries(&load.preload);
    // Landlock confines the calling thread only: no library may have started one before.
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        if tasks.count() > 1 {
            return refuse(
                sock,
                "a preloaded library started threads before the driver host confined itself".into(),
                false,
            );
        }
    }
    // Before the plugin is loaded: its constructors run at load.
    let sandbox = match sandbox::apply(&load.readable) {
        Ok(s) => s,
        Err(e) => return refuse(sock, format!("the driver host {e}; the plugin was not loaded"), false),
    };
    // After the sandbox (a thread started now is confined as this one is), before the plugin.
    watch_daemon(sock.as_raw_fd());
    let loaded = match Plugin::load(&load.plugin) {
        Ok(p) => p,
        Err(e) => return refuse(sock, e.to_string(), false),
    };
    match first {
        HostRequest::Open { ref config, samples, ref expect, .. } => {
            // A file replaced since the daemon listed it: its plugin's `open` (which may reset a
            // board) is not run with this session's settings and files.
            let (name, abi) = (loaded.name(), loaded.abi());
            if (name, abi) != (expect.0.as_str(), expect.1) {
                let message = format!(
                    "{} now holds driver `{name}` (ABI {}.{}), not the one listed; its open was not run; reload \
                     the daemon (systemctl reload bci2tokend) to use it",
                    load.plugin.display(),
                    abi.0,
                    abi.1
                );
                // A driver error (not the caller's settings): the admin replaced the file.
                return refuse(sock, message, true);
            }
            serve_device(sock, &loaded, config, samples, sandbox)
        }
        HostRequest::Describe { probe, .. } => {
            let probe = probe.then(|| loaded.probe().map_err(|e| e.message));
            let (name, version) = (loaded.name().to_string(), loaded.version().to_string());
            write_frame(sock, &HostReply::Described { name, version, abi: loaded.abi(), probe })
        }
        _ => unreachable!("checked above"),
    }
}

/// Opens the device and answers `start`, `read` and `stop` until the daemon closes the socket.
fn serve_device(
    sock: &mut UnixStream,
    loaded: &std::sync::Arc<Plugin>,
    config: &serde_json::Map<String, serde_json::Value>,
    samples: RawFd,
    sandbox: String,
) -> std::io::Result<()> {
    let mut device = match loaded.open(config) {
        Ok(d) => d,
        Err(e) => return write_frame(sock, &HostReply::Failed { message: e.message, panicked: e.panicked }),
    };
    let info = device.info().clone();
    let mut buf = match shm::Mapping::for_host(samples, info.buffer_len()) {
        Ok(m) => m,
        Err(e) => {
            let message = format!("the driver host cannot map its sample buffer: {e}");
            return write_frame(sock, &HostReply::Failed { message, panicked: false });
        }
    };
    write_frame(sock, &HostReply::Opened { info, name: loaded.name().to_string(), abi: loaded.abi(), sandbox })?;
    loop {
        let request = match read_frame::<HostRequest>(sock) {
            Ok(r) => r,
            // The daemon closed the socket: the session is over.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let failed = |e: DriverError| HostReply::Failed { message: e.message, panicked: e.panicked };
        let reply = match request {
            HostRequest::Start => device.start().map_or_else(failed, |()| HostReply::Done),
            HostRequest::Stop => device.stop().map_or_else(failed, |()| HostReply::Done),
            HostRequest::Read { timeout_ms } => {
                let read = device.read(Duration::from_millis(timeout_ms.into()), buf.as_mut_slice());
                read.map_or_else(failed, HostReply::Read)
            }
            HostRequest::Open { .. } | HostRequest::Describe { .. } => {
                HostReply::Failed { message: "the device is open already".into(), panicked: false }
            }
        };
        write_frame(sock, &reply)?;
    }
}

/// How long a host whose daemon has closed its socket may still take to close its device and
/// exit on its own (its daemon kills it after as long when it ends a session itself).
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// Watches the daemon's end of the socket on a thread of its own: once the daemon is gone (or
/// has hung up) and the host has not ended within [`ORPHAN_GRACE`] (its plugin is stuck in a
/// call), the host's process group is killed, the plugin's children with it. Without this a
/// host of a daemon that died (kill -9, or a `--user` daemon outside systemd, whose cgroup would
/// otherwise take care of it) would live on as long as its plugin hangs. Not PR_SET_PDEATHSIG:
/// that fires when the daemon *thread* that started the host ends. (A hostile plugin can close
/// or replace the descriptor watched; only the service's cgroup holds against that.)
fn watch_daemon(fd: RawFd) {
    let watch = move || loop {
        let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: poll on one pollfd of a descriptor this process holds for its whole life.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            std::thread::sleep(ORPHAN_GRACE);
            kill_own_group();
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    };
    // A small stack: it counts against the plugin's address space (`driver_memory_limit`).
    if let Err(e) = std::thread::Builder::new().name("daemon-watch".into()).stack_size(64 << 10).spawn(watch) {
        eprintln!("driver host: cannot watch for its daemon's end: {e}");
    }
}

/// Kills this process's group, this process with it, if it leads the group (the daemon starts
/// each host in a session of its own); a host started otherwise (by hand) kills only itself.
fn kill_own_group() {
    // SAFETY: getpgrp/getpid have no preconditions; kill(2) of this process's own group or of
    // itself (the seccomp filter allows both).
    unsafe {
        let me = libc::getpid();
        libc::kill(if libc::getpgrp() == me { 0 } else { me }, libc::SIGKILL);
    }
}

/// Loads the libraries the admin or the environment name (e.g. liblsl): the plugin that later
/// opens one by its path gets it, with the libraries it depends on (which may lie anywhere its
/// RUNPATH says, out of the sandbox's reach). They are the daemon's own trusted libraries, which
/// it loads itself too; the plugin is not loaded yet.
fn preload_libraries(libraries: &[PathBuf]) {
    for library in libraries {
        // SAFETY: a library the daemon's configuration names, loaded as the daemon loads it.
        match unsafe { libloading::Library::new(library) } {
            // Kept for the host's life: the plugin's own open of it finds it loaded.
            Ok(loaded) => std::mem::forget(loaded),
            // The plugin, if it needs it, says why in its own words.
            Err(e) => eprintln!("driver host: cannot load {}: {e}", library.display()),
        }
    }
}

/// Limits the address space to what is mapped now plus `mib`, so that a plugin allocating
/// without bound fails instead of taking the machine's memory.
fn limit_memory(mib: u64) {
    let mapped_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmSize:").map(|v| v.trim().trim_end_matches(" kB").trim().to_string()))
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let limit = (mapped_kib * 1024).saturating_add(mib << 20);
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit) {
        eprintln!("driver host: cannot limit its memory: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_an_oversized_or_unreadable_one_is_refused() {
        let mut out = Vec::new();
        write_frame(&mut out, &HostReply::Read(Read::Block { frames: 2, t: 1.5, flags: 4 })).unwrap();
        let back = read_frame::<HostReply>(&mut &out[..]).unwrap();
        assert!(matches!(back, HostReply::Read(Read::Block { frames: 2, t, flags: 4 }) if t == 1.5));
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame::<HostReply>(&mut &huge[..]).unwrap_err().to_string().contains("a frame of"));
        assert!(parse_frame::<HostReply>(b"{").unwrap_err().contains("unreadable"));
    }
}

//! The driver host: one session's driver plugin in a process of its own.
//!
//! A plugin is third-party native code. Loaded into the daemon, one segfault in its `read` ends
//! every session of every user, and a hostile one reads the master key. Instead bci2tokend starts
//! `bci2token-driver-host` per session, holding one end of a socket pair on fd 3 and the session's
//! passed files, nothing else of the daemon's. The host restricts itself ([`sandbox`]), loads the
//! plugin, opens the device and answers the daemon's calls (`start`, `read`, `stop`) over the
//! socket, a sample block per `read`. It ends when the daemon closes the socket.
//!
//! This crate is both sides' protocol ([`HostRequest`], [`HostReply`], frames) and the host's
//! main. It links no libtorch, store or D-Bus: it starts fast and holds nothing worth stealing.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bci2token_driver_abi::host::{DriverError, Plugin, Read, MAX_BLOCK_FLOATS};
use bci2token_driver_abi::types::StreamInfo;
use serde::{Deserialize, Serialize};

pub mod sandbox;

/// The descriptor the host finds its socket on.
pub const HOST_FD: RawFd = 3;
/// A frame on the socket at most: a block of the largest size a device may describe, and room.
pub const MAX_FRAME: usize = MAX_BLOCK_FLOATS * 4 + (1 << 20);
/// The host's address space above what it maps at start, by default (`driver_memory_limit`).
pub const DEFAULT_MEMORY_MIB: u64 = 1024;

/// The daemon's calls.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostRequest {
    /// Load `plugin` and open a device with `config` (passed files already renumbered to the
    /// host's descriptors). `readable`: paths the plugin may read besides the system's
    /// directories ([`sandbox`]).
    Open {
        plugin: PathBuf,
        config: serde_json::Map<String, serde_json::Value>,
        memory_mib: u64,
        readable: Vec<PathBuf>,
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
    /// The device is open. `sandbox`: what the host could enforce, in words.
    Opened {
        info: StreamInfo,
        name: String,
        sandbox: String,
    },
    Done,
    Failed {
        message: String,
        panicked: bool,
    },
    /// What the device's `read` gave; a block's `channels × frames` f32 (little endian,
    /// channel-major) follow in the same frame.
    Read(Read),
}

/// Writes one frame: length, JSON length, JSON, then `data`.
pub fn write_frame(out: &mut impl std::io::Write, msg: &impl Serialize, data: &[u8]) -> std::io::Result<()> {
    let json = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let total = 4 + json.len() + data.len();
    let mut frame = Vec::with_capacity(4 + total);
    frame.extend_from_slice(&(total as u32).to_le_bytes());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    frame.extend_from_slice(data);
    out.write_all(&frame)
}

/// A frame's message and the bytes after it (`frame`: what followed the length word).
pub fn parse_frame<T: for<'de> Deserialize<'de>>(mut frame: Vec<u8>) -> Result<(T, Vec<u8>), String> {
    if frame.len() < 4 {
        return Err(format!("a frame of {} bytes", frame.len()));
    }
    let json_len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    if json_len > frame.len() - 4 {
        return Err("a frame whose message is longer than the frame".into());
    }
    let msg = serde_json::from_slice(&frame[4..4 + json_len]).map_err(|e| format!("an unreadable message: {e}"))?;
    let data = frame.split_off(4 + json_len);
    Ok((msg, data))
}

/// Reads one frame (the host's side: the daemon is trusted): the message and the bytes after it.
fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl std::io::Read) -> std::io::Result<(T, Vec<u8>)> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let total = u32::from_le_bytes(len) as usize;
    if !(4..=MAX_FRAME).contains(&total) {
        return Err(std::io::Error::other(format!("a frame of {total} bytes")));
    }
    let mut frame = vec![0u8; total];
    input.read_exact(&mut frame)?;
    parse_frame(frame).map_err(std::io::Error::other)
}

/// The host's main: serves one device on fd 3 until the daemon closes the socket.
pub fn host_main() -> ExitCode {
    // No privilege gained through exec from here on (and seccomp needs it). Not
    // PR_SET_PDEATHSIG: it fires when the daemon *thread* that started the host ends, and those
    // come and go. A host learns that the daemon is gone from its socket; under systemd the
    // service's cgroup is killed as a whole.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        // No core dump (it would hold the samples in flight), whatever the core pattern.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: the daemon put the socket on this descriptor; nothing else here owns it.
    let mut sock = unsafe { UnixStream::from_raw_fd(HOST_FD) };
    match serve(&mut sock) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("driver host: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(sock: &mut UnixStream) -> std::io::Result<()> {
    let (first, _) = read_frame::<HostRequest>(sock)?;
    let HostRequest::Open { plugin, config, memory_mib, readable } = first else {
        return Err(std::io::Error::other("the first request is not `open`"));
    };
    let refuse = |sock: &mut UnixStream, message: String, panicked: bool| {
        write_frame(sock, &HostReply::Failed { message, panicked }, &[])
    };
    limit_memory(memory_mib);
    preload_libraries(&readable);
    // Before the plugin is loaded: its constructors run at load.
    let sandbox = match sandbox::apply(&readable) {
        Ok(s) => s,
        Err(e) => return refuse(sock, format!("the driver host {e}; the plugin was not loaded"), false),
    };
    let loaded = match Plugin::load(&plugin) {
        Ok(p) => p,
        Err(e) => return refuse(sock, e.to_string(), false),
    };
    let mut device = match loaded.open(&config) {
        Ok(d) => d,
        Err(e) => return refuse(sock, e.message, e.panicked),
    };
    let info = device.info().clone();
    write_frame(sock, &HostReply::Opened { info, name: loaded.name().to_string(), sandbox }, &[])?;
    let mut buf = vec![0f32; device.info().buffer_len()];
    let mut bytes: Vec<u8> = Vec::with_capacity(buf.len() * 4);
    let channels = device.info().channels.len();
    loop {
        let request = match read_frame::<HostRequest>(sock) {
            Ok((r, _)) => r,
            // The daemon closed the socket: the session is over.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let failed = |e: DriverError| HostReply::Failed { message: e.message, panicked: e.panicked };
        bytes.clear();
        let reply = match request {
            HostRequest::Start => device.start().map_or_else(failed, |()| HostReply::Done),
            HostRequest::Stop => device.stop().map_or_else(failed, |()| HostReply::Done),
            HostRequest::Read { timeout_ms } => match device.read(Duration::from_millis(timeout_ms.into()), &mut buf) {
                Ok(read) => {
                    if let Read::Block { frames, .. } = read {
                        for v in &buf[..frames * channels] {
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    HostReply::Read(read)
                }
                Err(e) => failed(e),
            },
            HostRequest::Open { .. } => {
                HostReply::Failed { message: "the device is open already".into(), panicked: false }
            }
        };
        write_frame(sock, &reply, &bytes)?;
    }
}

/// Loads the shared libraries among `readable` (those the admin or the environment name, e.g.
/// liblsl): the plugin that later opens one by its path gets it, with the libraries it depends
/// on (which may lie anywhere its RUNPATH says, out of the sandbox's reach). They are the
/// daemon's own trusted libraries, which it loads itself too; the plugin is not loaded yet.
fn preload_libraries(readable: &[PathBuf]) {
    let libraries = readable.iter().filter(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (name.ends_with(".so") || name.contains(".so.")) && p.is_file()
    });
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
    fn a_frame_round_trips_and_a_short_or_lying_one_is_refused() {
        let mut out = Vec::new();
        let reply = HostReply::Read(Read::Block { frames: 2, t: 1.5, flags: 4 });
        write_frame(&mut out, &reply, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let (back, data) = read_frame::<HostReply>(&mut &out[..]).unwrap();
        assert!(matches!(back, HostReply::Read(Read::Block { frames: 2, t, flags: 4 }) if t == 1.5));
        assert_eq!(data, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(parse_frame::<HostReply>(vec![1, 0]).is_err());
        assert!(parse_frame::<HostReply>(vec![200, 0, 0, 0, b'{']).unwrap_err().contains("longer than the frame"));
    }
}

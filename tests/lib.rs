//! Harness for the end-to-end tests: starts the real `bci2tokend --user` with temporary
//! directories and a fake systemd notify socket, and runs the real `bci2tokenctl` against it.
//! The binaries and plugins come from the cargo target directory (build the workspace first:
//! `cargo build --workspace`, which the project's test command does).

pub mod cyton_emulator;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The shared EEG recordings: `$BCI2TOKEN_DATA` or `<root>/../shared/data`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("BCI2TOKEN_DATA").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("../shared/data"))
}

/// The Python interpreter of the reference tools (`$BCI2TOKEN_PYTHON`, else `python3`), checked
/// to import `modules`. Fails the test with what to do when it cannot: the reference peers
/// (pyedflib, scipy, ...) are installed in `.venv` by the project's test command.
pub fn reference_python(modules: &[&str]) -> String {
    let py = std::env::var("BCI2TOKEN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let import = format!("import {}", modules.join(", "));
    match Command::new(&py).args(["-c", &import]).output() {
        Ok(o) if o.status.success() => py,
        Ok(o) => panic!(
            "the Python interpreter `{py}` cannot `{import}` ({}).\nRun the project's test command, tools/test-all, \
             which installs the reference tools in .venv, or set BCI2TOKEN_PYTHON=$PWD/.venv/bin/python after \
             running tools/setup.",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run the Python interpreter `{py}`: {e}.\nRun tools/test-all, or set BCI2TOKEN_PYTHON \
             to the .venv that tools/setup creates."
        ),
    }
}

/// The directory holding the built binaries and driver plugins (`target/debug` for a dev build):
/// the test executable lives in `<that dir>/deps`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("test binary in <target>/<profile>/deps").to_path_buf();
    for needed in [
        "bci2tokend",
        "bci2tokenctl",
        "libbci2token_driver_openbci.so",
        "libbci2token_driver_replay.so",
        "libbci2token_driver_synthetic.so",
    ] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: build the workspace first (`cargo build --workspace`, as tools/test-all does)",
            dir.join(needed).display()
        );
    }
    dir
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bci2token-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake `$NOTIFY_SOCKET`: collects the datagrams the daemon sends.
pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
    received: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        // Non-blocking: draining must end even while a watchdog keeps pinging.
        socket.set_nonblocking(true).unwrap();
        NotifySocket { socket, path, received: Vec::new() }
    }

    fn drain(&mut self) {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.received.extend(text.lines().map(str::to_string));
        }
    }

    /// Waits until a line equal to `line` arrives; false on time-out.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if self.received.iter().any(|l| l == line) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn lines(&mut self) -> &[String] {
        self.drain();
        &self.received
    }
}

/// How to start a daemon for a test.
#[derive(Default)]
pub struct DaemonOptions {
    /// Driver plugin directories (default: the build's bin dir).
    pub driver_path: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Config file contents, if any.
    pub config: Option<String>,
    /// Runtime dir to use instead of a fresh one (to test a socket path that is taken).
    pub runtime_dir: Option<PathBuf>,
}

/// A running `bci2tokend --user`.
pub struct Daemon {
    pub child: Child,
    pub dir: TempDir,
    pub notify: NotifySocket,
    pub socket: PathBuf,
    pub runtime_dir: PathBuf,
    pub config_file: PathBuf,
    log: PathBuf,
}

/// Starts `bci2tokend --user` without waiting for anything.
pub fn spawn_daemon(opts: DaemonOptions) -> Daemon {
    let bin = bin_dir();
    let dir = TempDir::new("daemon");
    let runtime_dir = opts.runtime_dir.clone().unwrap_or_else(|| dir.path().join("run"));
    let data = dir.path().join("data");
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("daemon.log");
    let config_file = dir.path().join("bci2tokend.toml");
    let mut cmd = Command::new(bin.join("bci2tokend"));
    cmd.arg("--user");
    if let Some(text) = &opts.config {
        std::fs::write(&config_file, text).unwrap();
        cmd.arg("--config").arg(&config_file);
    }
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("BCI2TOKEN_RUNTIME_DIR", &runtime_dir)
        .env("BCI2TOKEN_DATA_DIR", &data)
        .env("BCI2TOKEN_DRIVER_PATH", opts.driver_path.clone().unwrap_or_else(|| bin.display().to_string()))
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn bci2tokend");
    let socket = runtime_dir.join("control.sock");
    Daemon { child, dir, notify, socket, runtime_dir, config_file, log }
}

/// Starts `bci2tokend --user` and waits for READY=1.
pub fn start_daemon(opts: DaemonOptions) -> Daemon {
    let mut d = spawn_daemon(opts);
    if !d.notify.wait_for("READY=1", Duration::from_secs(20)) {
        let status = d.child.try_wait().ok().flatten();
        panic!("bci2tokend sent no READY=1 (exit: {status:?}); its log:\n{}", d.log());
    }
    d
}

impl Daemon {
    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's log contains `needle`; false on time-out.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A `bci2tokenctl --socket <this daemon>` command.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join("bci2tokenctl"));
        cmd.arg("--socket").arg(&self.socket).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs `bci2tokenctl` to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().expect("run bci2tokenctl")
    }

    /// Runs `bci2tokenctl --json ARGS`, asserts success and parses stdout as one JSON value.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl(&full);
        assert!(
            out.status.success(),
            "bci2tokenctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("bci2tokenctl {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("bci2tokend did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Compiles a C file into a shared library with the system C compiler (for fake plugins).
pub fn compile_c_library(source: &str, out: &Path) {
    let src = out.with_extension("c");
    std::fs::write(&src, source).unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("run cc (the C compiler is installed by tools/setup)");
    assert!(status.success(), "cc failed for {}", src.display());
}

/// Reads all of a child's stdout as lines (for streaming commands).
pub fn read_lines(child: &mut Child) -> Vec<String> {
    let mut text = String::new();
    child.stdout.take().expect("stdout piped").read_to_string(&mut text).unwrap();
    text.lines().map(str::to_string).collect()
}

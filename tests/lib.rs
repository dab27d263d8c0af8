//! Harness for the end-to-end tests: starts the real `bci2tokend --user` with temporary
//! directories and a fake systemd notify socket, and runs the real `bci2tokenctl` against it.
//! The binaries and plugins come from the cargo target directory (build the workspace first:
//! `cargo build --workspace`, which the project's test command does).

pub mod cyton_emulator;
pub mod private_bus;
pub mod system_users;
pub mod tmux;

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

/// Raw little-endian f64 values, as the reference scripts (scipy, pyedflib, pyxdf, MNE) write them.
pub fn read_f64(path: &Path) -> Vec<f64> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The directory holding the built binaries and driver plugins (`target/debug` for a dev build):
/// the test executable lives in `<that dir>/deps`.
pub fn bin_dir() -> PathBuf {
    bin_dir_with(&[
        "bci2tokend",
        "bci2tokenctl",
        "bci2token-driver-host",
        "libbci2token_driver_brainflow.so",
        "libbci2token_driver_lsl.so",
        "libbci2token_driver_openbci.so",
        "libbci2token_driver_replay.so",
        "libbci2token_driver_synthetic.so",
    ])
}

/// The build's bin dir, asserting that the files a test or benchmark needs are there.
pub fn bin_dir_with(needed: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("test binary in <target>/<profile>/deps").to_path_buf();
    for needed in needed {
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
    /// Run as the system daemon (no `--user`; the test must be root), still with the temporary
    /// directories.
    pub system: bool,
    /// A program (and its arguments) that runs the daemon, e.g. `unshare --time …` for a time
    /// namespace; the daemon's path and arguments follow them.
    pub wrapper: Vec<String>,
}

/// A running `bci2tokend` (`--user` unless started with `system`).
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
    let mut cmd = match opts.wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin.join("bci2tokend"));
            cmd
        }
        None => Command::new(bin.join("bci2tokend")),
    };
    if !opts.system {
        cmd.arg("--user");
    }
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

/// A private Lab Streaming Layer world for one test: a liblsl config that keeps discovery on this
/// machine (`ResolveScope = machine`) with a session id of its own, so tests never see each other's
/// streams and nothing is sent off the machine. Give [`LslWorld::env`] to every LSL process.
pub struct LslWorld {
    pub config: PathBuf,
    /// The liblsl that pylsl carries (from `.venv`).
    pub liblsl: PathBuf,
    pub python: String,
    _dir: TempDir,
}

impl LslWorld {
    pub fn new(tag: &str) -> LslWorld {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = TempDir::new(&format!("lsl-{tag}"));
        let config = dir.path().join("lsl_api.cfg");
        let session = format!("bci2token-{tag}-{}-{n}", std::process::id());
        // KnownPeers: where the loopback interface has no multicast (containers, CI), liblsl's
        // machine scope reaches only one outlet process through 127.0.0.1; unicast queries to the
        // known peer's port range find them all. Nothing here leaves the machine.
        let text = format!(
            "[multicast]\nResolveScope = machine\n\n[lab]\nSessionID = {session}\nKnownPeers = {{127.0.0.1}}\n\n\
             [log]\nlevel = -2\n"
        );
        std::fs::write(&config, text).unwrap();
        let python = reference_python(&["pylsl"]);
        let out = Command::new(&python)
            .arg(workspace_root().join("tools/reference/lsl_peer.py"))
            .arg("lib")
            .env("LSLAPICFG", &config)
            .output()
            .expect("run lsl_peer.py lib");
        let liblsl = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(liblsl.exists(), "pylsl's liblsl not found: {}", String::from_utf8_lossy(&out.stderr));
        LslWorld { config, liblsl, python, _dir: dir }
    }

    /// Environment for the daemon: the private config and pylsl's liblsl.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LSLAPICFG".into(), self.config.display().to_string()),
            ("BCI2TOKEN_LIBLSL".into(), self.liblsl.display().to_string()),
        ]
    }

    /// `python tools/reference/lsl_peer.py ARGS` with stdout piped, in this world.
    pub fn peer(&self, args: &[&str]) -> Child {
        Command::new(&self.python)
            .arg(workspace_root().join("tools/reference/lsl_peer.py"))
            .args(args)
            .env("LSLAPICFG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lsl_peer.py")
    }
}

/// Reads one line of a child's piped stdout, byte by byte (nothing after the line is consumed).
pub fn read_line(child: &mut Child) -> String {
    let out = child.stdout.as_mut().expect("stdout piped");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// `bci2tokenctl --json ARGS` whose JSON lines (events of a `follow` or of `session start …
/// --follow`) are read on a thread.
pub struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Follower {
    /// `follow ID --samples`.
    pub fn start(daemon: &Daemon, id: &str) -> Follower {
        Follower::spawn(daemon, &["--json", "follow", id, "--samples"])
    }

    /// Any streaming ctl command (`--json session start … --follow --samples` subscribes before
    /// the first block).
    pub fn spawn(daemon: &Daemon, args: &[&str]) -> Follower {
        Follower::from_command(daemon.ctl_command(args))
    }

    /// A streaming ctl command built elsewhere (e.g. run as another user).
    pub fn from_command(mut cmd: Command) -> Follower {
        use std::io::BufRead;
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn bci2tokenctl");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str::<serde_json::Value>(&line).expect("JSON line")).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next event (replies without a `type` are skipped), or None after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v.get("type").is_none() => continue,
                Ok(v) => return Some(v),
                Err(_) => return None,
            }
        }
    }

    /// Events until `until` is true for one (included); panics after `timeout`.
    pub fn collect_until(
        &self,
        timeout: Duration,
        mut until: impl FnMut(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(ev) = self.next(left) else {
                panic!("timed out after {} events; last: {:?}", events.len(), events.last());
            };
            let done = until(&ev);
            events.push(ev);
            if done {
                return events;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `samples` event as rows.
pub struct SampleBlock {
    pub t: f64,
    pub flags: u64,
    pub rows: Vec<Vec<f32>>,
}

impl SampleBlock {
    /// The block of a `samples` event; None for other events.
    pub fn of(ev: &serde_json::Value) -> Option<SampleBlock> {
        if ev["type"] != "samples" {
            return None;
        }
        let data = ev["data"].as_array().unwrap();
        let frames = ev["frames"].as_u64().unwrap() as usize;
        let rows = (0..frames).map(|i| data.iter().map(|ch| ch[i].as_f64().unwrap() as f32).collect()).collect();
        Some(SampleBlock { t: ev["t"].as_f64().unwrap(), flags: ev["flags"].as_u64().unwrap(), rows })
    }
}

impl Follower {
    /// A live synthetic session (SSVEP at 14.1 Hz for 3 s, then 1 s of rest, over and over)
    /// decoded by the speller package `model`, started with `--follow` (and `extra` options,
    /// e.g. `--samples`). Returns the follower and the session's id, once its first event came.
    pub fn live_speller(daemon: &Daemon, model: &str, extra: &[&str]) -> (Follower, String) {
        let mut args = vec![
            "--json",
            "session",
            "start",
            "--driver",
            "synthetic",
            "--set",
            LIVE_SCRIPT,
            "--model",
            model,
            "--follow",
        ];
        args.extend_from_slice(extra);
        let live = Follower::spawn(daemon, &args);
        let first = live.next(Duration::from_secs(20)).expect("the live session's first event");
        let id = first["session"].as_str().expect("a session id in the first event").to_string();
        (live, id)
    }
}

/// The synthetic board's script of a live speller session: one target, then rest, in a loop.
pub const LIVE_SCRIPT: &str = "script=14.1Hz:3,rest:1";

/// A copy of the shipped speller-40 in `dir` with its policy relaxed so that every window emits a
/// token (the latency benchmarks need many to rank). Returns the package's directory.
pub fn relaxed_speller(dir: &TempDir) -> PathBuf {
    let src = workspace_root().join("models/speller-40");
    for f in ["model.pt", "model.toml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.path().join("model.toml")).unwrap();
    let policy = manifest.find("[policy]").unwrap();
    let end = manifest[policy + 1..].find("\n[").map_or(manifest.len(), |i| policy + 1 + i);
    let relaxed = format!(
        "{}[policy]\nconfidence_threshold = 0.01\nconsecutive = 1\nrefractory_seconds = 0.0\n{}",
        &manifest[..policy],
        &manifest[end..]
    );
    std::fs::write(dir.path().join("model.toml"), relaxed).unwrap();
    dir.path().to_path_buf()
}

/// The recordings of the SSVEP data set (`../shared/data/ssvep`), sorted.
pub fn ssvep_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(data_dir().join("ssvep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "edf"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

/// What the daemon does besides a live session, at its worst: `workers` threads each running
/// `bci2tokenctl evaluate` (a replay at full speed, decoded with ssvep-fbcca-3, followed
/// losslessly) again and again, and one decoded replay at full speed, looped, whose lossless
/// follower has stopped reading. Runs until [`EvaluateLoad::finish`].
pub struct EvaluateLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<Result<usize, String>>>,
    /// The replay whose follower stopped reading.
    pub stalled_id: String,
    /// The stalled follower's connection: nothing is read from it after the start reply.
    _stalled: std::os::unix::net::UnixStream,
}

impl EvaluateLoad {
    pub fn start(daemon: &Daemon, workers: usize) -> EvaluateLoad {
        use std::sync::atomic::{AtomicBool, Ordering};
        let files = ssvep_files();
        // The stalled follower speaks the protocol itself: a client program may buffer what it
        // reads (ctl does), this one reads nothing after the reply, so the daemon's queue to it
        // fills and the replay, whose follower it is, must wait.
        let mut stalled = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        let mut config = bci2token_api::ConfigMap::new();
        config.insert("path".into(), files[0].clone().into());
        config.insert("speed".into(), "0".into());
        // Looped: however large the daemon's queue to the follower, it fills.
        config.insert("loop".into(), true.into());
        let start = bci2token_api::Request::SessionStart {
            driver: "replay".into(),
            config,
            // Decoded: its tokens wait for the stalled follower too.
            model: Some("ssvep-fbcca-3".into()),
            follow: Some(bci2token_api::FollowOptions { samples: true }),
            lsl_outlets: false,
            subject: None,
        };
        bci2token_api::write_frame(&mut stalled, &start).unwrap();
        let reply = bci2token_api::read_frame(&mut stalled).unwrap().expect("the start reply");
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        let stalled_id = reply["ok"]["id"].as_str().unwrap_or_else(|| panic!("no session id in {reply}")).to_string();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|i| {
                let file = files[i % files.len()].clone();
                let stop = std::sync::Arc::clone(&stop);
                let mut cmd = daemon.ctl_command(&[
                    "--json",
                    "evaluate",
                    "--model",
                    "ssvep-fbcca-3",
                    "--classes",
                    "13Hz,17Hz,21Hz",
                    "--trial-start",
                    "stim_start",
                    "--trial-length",
                    "5",
                    &file,
                ]);
                std::thread::spawn(move || {
                    let mut runs = 0;
                    while !stop.load(Ordering::Acquire) {
                        let out = cmd.output().map_err(|e| e.to_string())?;
                        if !out.status.success() {
                            return Err(format!("evaluate {file}: {}", String::from_utf8_lossy(&out.stderr)));
                        }
                        runs += 1;
                    }
                    Ok(runs)
                })
            })
            .collect();
        EvaluateLoad { stop, workers, stalled_id, _stalled: stalled }
    }

    /// Stops starting evaluations, waits for those running, ends the stalled follower (its
    /// connection closes), and returns how many evaluations each worker completed (an error if
    /// one failed).
    pub fn finish(self) -> Result<Vec<usize>, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.workers.into_iter().map(|w| w.join().unwrap()).collect()
    }
}

/// Writes an EDF of the first `seconds` of `src` with some channels changed, in µV:
/// `zero` channels all 0, `clip` channels clipped at ± their own 60th percentile of |x| (so a
/// third and more of the samples sit on a "rail"). Returns the labels.
pub fn write_edf(src: &Path, dst: &Path, seconds: f64, zero: &[&str], clip: &[&str]) -> Vec<String> {
    const SCRIPT: &str = r#"
src, dst, seconds, zero, clip = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5])
r = pyedflib.EdfReader(src)
labels = r.getSignalLabels()
fs = r.getSampleFrequency(0)
n = int(seconds * fs)
rows = [r.readSignal(i)[:n].astype(np.float64) for i in range(len(labels))]
r.close()
for i, l in enumerate(labels):
    if l in zero:
        rows[i] = np.zeros(n)
    if l in clip:
        x = rows[i] - np.mean(rows[i])
        c = np.percentile(np.abs(x), 60)
        rows[i] = np.clip(x, -c, c)
write(dst, labels, fs, rows)
print(json.dumps(labels))
"#;
    let py = reference_python(&["pyedflib", "numpy"]);
    let json = |v: &[&str]| serde_json::to_string(v).unwrap();
    let script = format!("{WRITE_EDF}{SCRIPT}");
    let o = Command::new(py)
        .args(["-c", &script])
        .arg(src)
        .arg(dst)
        .arg(seconds.to_string())
        .arg(json(zero))
        .arg(json(clip))
        .output()
        .unwrap();
    assert!(o.status.success(), "writing {}: {}", dst.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Python: `write(dst, labels, fs, rows, annotations=())` writes an EDF+ of rows in µV, with
/// `(onset, duration, text)` annotations.
pub const WRITE_EDF: &str = r#"
import json, sys
import numpy as np
import pyedflib
def write(dst, labels, fs, rows, annotations=()):
  headers = []
  for i, l in enumerate(labels):
    lo, hi = float(np.min(rows[i])), float(np.max(rows[i]))
    if hi - lo < 1.0:
      lo, hi = lo - 100.0, hi + 100.0
    headers.append({"label": l, "dimension": "uV", "sample_frequency": fs, "physical_min": lo, "physical_max": hi,
                    "digital_min": -32768, "digital_max": 32767, "transducer": "", "prefilter": ""})
  w = pyedflib.EdfWriter(dst, len(labels), file_type=pyedflib.FILETYPE_EDFPLUS)
  w.setSignalHeaders(headers)
  w.writeSamples(rows)
  for onset, duration, text in annotations:
    w.writeAnnotation(onset, duration, text)
  w.close()
"#;

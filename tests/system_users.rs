//! Real users and groups for the tests of the system daemon (`groupadd`/`useradd`, callers run
//! through `setpriv`): an admin, two operators and a stranger. Needs root; CI runs as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{bin_dir, data_dir, start_daemon, workspace_root, Daemon, DaemonOptions, TempDir};

pub const ADMIN_GROUP: &str = "b2tt-admin";
pub const OPERATOR_GROUP: &str = "b2tt-op";

/// A user of the test, created once per machine.
#[derive(Clone)]
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Where the programs and the recording the users run and read are (see [`world`]).
    pub stage: PathBuf,
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group).unwrap().unwrap_or_else(|| panic!("group {group}")).gid.as_raw()
}

pub fn ensure_group(name: &str) {
    if nix::unistd::Group::from_name(name).unwrap().is_none() {
        run(Command::new("groupadd").arg("--system").arg(name));
    }
}

pub fn ensure_user(name: &'static str, groups: &[&str]) -> User {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        run(Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"])
            .arg(name));
    }
    if !groups.is_empty() {
        run(Command::new("usermod").arg("--append").arg("--groups").arg(groups.join(",")).arg(name));
    }
    let u = nix::unistd::User::from_name(name).unwrap().unwrap();
    let groups = groups.iter().map(|g| gid_of(g)).collect();
    User { name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), groups, stage: PathBuf::new() }
}

impl User {
    /// `program` run as this user, with their groups (as a login would give).
    pub fn setpriv(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid)).arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            cmd.arg(format!("--groups={}", list.join(",")));
        }
        cmd.arg("--").arg(program).stdin(Stdio::null()).env("HOME", "/nonexistent");
        cmd
    }

    /// `bci2tokenctl --socket … ARGS` as this user.
    pub fn ctl_command(&self, daemon: &Daemon, args: &[&str]) -> Command {
        let mut cmd = self.setpriv(&self.stage.join("bci2tokenctl"));
        cmd.arg("--socket").arg(&daemon.socket).args(args);
        cmd
    }

    pub fn ctl(&self, daemon: &Daemon, args: &[&str]) -> Output {
        self.ctl_command(daemon, args).output().expect("run bci2tokenctl through setpriv")
    }

    pub fn ctl_json(&self, daemon: &Daemon, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ctl(daemon, &full);
        assert!(
            out.status.success(),
            "{} {args:?}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The raw client (tests/fixtures/raw_client.py) as this user: requests bci2tokenctl never sends.
    pub fn raw(&self, daemon: &Daemon, args: &[&str]) -> serde_json::Value {
        // The system Python: the callers cannot reach root's own interpreters.
        let mut cmd = self.setpriv(Path::new("/usr/bin/python3"));
        cmd.arg(self.stage.join("raw_client.py")).arg(&daemon.socket).args(args);
        let out = cmd.output().expect("run raw_client.py");
        assert!(out.status.success(), "raw_client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

pub struct World {
    pub admin: User,
    pub alice: User,
    pub bob: User,
    pub eve: User,
    _stage: TempDir,
}

impl World {
    /// A recording every test user may read.
    pub fn recording(&self) -> PathBuf {
        self.alice.stage.join("S001R04.edf")
    }
}

/// True when the test runs as root; otherwise says why it skips (CI runs as root: there, not being
/// root is a failure). `what` names what needs root.
pub fn as_root(what: &str) -> bool {
    if nix::unistd::getuid().is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{what} need root, and CI runs as root");
    eprintln!("skipping: {what} need root");
    false
}

pub fn world() -> Option<World> {
    if !as_root("the system-mode tests (users, groups, setpriv)") {
        return None;
    }
    // Tests of one binary run at once: one of them creates the users and groups, the others
    // wait for it (groupadd and useradd refuse a name that a parallel call has just taken).
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let creating = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    ensure_group(ADMIN_GROUP);
    ensure_group(OPERATOR_GROUP);
    // The checkout may sit where the test users cannot go (a clone in a 0700 directory): what
    // they run and read is copied where they can.
    let stage = TempDir::new("system-stage");
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (from, to, mode) in [
        (bin_dir().join("bci2tokenctl"), "bci2tokenctl", 0o755),
        (workspace_root().join("tests/fixtures/raw_client.py"), "raw_client.py", 0o644),
        (data_dir().join("eegmmidb/S001R04.edf"), "S001R04.edf", 0o644),
    ] {
        std::fs::copy(&from, stage.path().join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        std::fs::set_permissions(stage.path().join(to), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let user = |name, groups: &[&str]| User { stage: stage.path().to_path_buf(), ..ensure_user(name, groups) };
    let (admin, alice, bob, eve) = (
        // Admins reach the socket as members of its group too (docs/security.md).
        user("b2tt-admin1", &[ADMIN_GROUP, OPERATOR_GROUP]),
        user("b2tt-alice", &[OPERATOR_GROUP]),
        user("b2tt-bob", &[OPERATOR_GROUP]),
        user("b2tt-eve", &[]),
    );
    drop(creating);
    Some(World { admin, alice, bob, eve, _stage: stage })
}

/// A system daemon for the test users; `extra` adds config lines (`socket_mode = "0666"` lets the
/// stranger reach it as a reader).
pub fn system_daemon(extra: &str) -> Daemon {
    system_daemon_with_env(extra, Vec::new())
}

/// [`system_daemon`] with extra environment variables.
pub fn system_daemon_with_env(extra: &str, env: Vec<(String, String)>) -> Daemon {
    let config =
        format!("socket_group = \"{OPERATOR_GROUP}\"\nadmin_group = \"{ADMIN_GROUP}\"\nrequest_timeout = 1.0\n{extra}");
    let d = start_daemon(DaemonOptions { config: Some(config), system: true, env, ..Default::default() });
    // The temporary directory is root's; the socket's directory must be reachable by the callers.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A directory only `user` may use (their "home"), holding `files`.
pub fn home_of(tmp: &TempDir, user: &User, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = tmp.path().join(format!("home-{}", user.name));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&p, Some(user.uid.into()), Some(user.gid.into())).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&dir, Some(user.uid.into()), Some(user.gid.into())).unwrap();
    dir
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Puts the Python client and jeepney (from the reference venv) where the test users can run them.
pub fn stage_python_client(user: &User) {
    let py = crate::reference_python(&["jeepney"]);
    let out = Command::new(&py)
        .args(["-c", "import jeepney, os; print(os.path.dirname(jeepney.__file__))"])
        .output()
        .unwrap();
    let jeepney = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let target = user.stage.join("py/jeepney");
    if !target.exists() {
        copy_dir(&jeepney, &target);
    }
    let client = user.stage.join("bus_client.py");
    std::fs::copy(workspace_root().join("tests/fixtures/bus_client.py"), &client).unwrap();
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "__pycache__" {
                copy_dir(&entry.path(), &dest);
            }
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

//! The daemon in system mode, as the people on a shared machine meet it: an admin, two operators
//! and a stranger, real users and groups (`groupadd`/`useradd`), each calling the real
//! `bci2tokenctl` through `setpriv`. The daemon runs as root (the worst case: it could open
//! anything), with temporary directories. Needs root; CI runs as root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bci2token_tests::{bin_dir, data_dir, start_daemon, workspace_root, Daemon, DaemonOptions, Follower, TempDir};

const ADMIN_GROUP: &str = "b2tt-admin";
const OPERATOR_GROUP: &str = "b2tt-op";

/// A user of the test, created once per machine.
#[derive(Clone)]
struct User {
    name: &'static str,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group).unwrap().unwrap_or_else(|| panic!("group {group}")).gid.as_raw()
}

fn ensure_group(name: &str) {
    if nix::unistd::Group::from_name(name).unwrap().is_none() {
        run(Command::new("groupadd").arg("--system").arg(name));
    }
}

fn ensure_user(name: &'static str, groups: &[&str]) -> User {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let mut cmd = Command::new("useradd");
        cmd.args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]);
        if !groups.is_empty() {
            cmd.arg("--groups").arg(groups.join(","));
        }
        run(cmd.arg(name));
    }
    let u = nix::unistd::User::from_name(name).unwrap().unwrap();
    User { name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), groups: groups.iter().map(|g| gid_of(g)).collect() }
}

impl User {
    /// `bci2tokenctl --socket … ARGS` as this user, with their groups (as a login would give).
    fn ctl_command(&self, daemon: &Daemon, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid)).arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            cmd.arg(format!("--groups={}", list.join(",")));
        }
        cmd.arg("--").arg(bin_dir().join("bci2tokenctl")).arg("--socket").arg(&daemon.socket);
        cmd.args(args).stdin(Stdio::null()).env("HOME", "/nonexistent");
        cmd
    }

    fn ctl(&self, daemon: &Daemon, args: &[&str]) -> Output {
        self.ctl_command(daemon, args).output().expect("run bci2tokenctl through setpriv")
    }

    fn ctl_json(&self, daemon: &Daemon, args: &[&str]) -> serde_json::Value {
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
    fn raw(&self, daemon: &Daemon, args: &[&str]) -> serde_json::Value {
        let script = workspace_root().join("tests/fixtures/raw_client.py");
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid)).arg(format!("--regid={}", self.gid));
        let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        if list.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.arg(format!("--groups={}", list.join(",")));
        }
        // The system Python: the callers cannot reach root's own interpreters.
        cmd.args(["--", "/usr/bin/python3"]).arg(script).arg(&daemon.socket).args(args);
        let out = cmd.output().expect("run raw_client.py");
        assert!(out.status.success(), "raw_client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

struct World {
    admin: User,
    alice: User,
    bob: User,
    eve: User,
}

fn world() -> Option<World> {
    if !nix::unistd::getuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "the system-mode tests need root, and CI runs as root");
        eprintln!("skipping: the system-mode tests need root (users, groups, setpriv)");
        return None;
    }
    ensure_group(ADMIN_GROUP);
    ensure_group(OPERATOR_GROUP);
    Some(World {
        admin: ensure_user("b2tt-admin1", &[ADMIN_GROUP]),
        alice: ensure_user("b2tt-alice", &[OPERATOR_GROUP]),
        bob: ensure_user("b2tt-bob", &[OPERATOR_GROUP]),
        eve: ensure_user("b2tt-eve", &[]),
    })
}

fn system_daemon(extra: &str) -> Daemon {
    let config = format!(
        "socket_group = \"{OPERATOR_GROUP}\"\nadmin_group = \"{ADMIN_GROUP}\"\nsocket_mode = \"0666\"\n\
         model_path = [\"{}\"]\nrequest_timeout = 1.0\n{extra}",
        workspace_root().join("models").display()
    );
    let d = start_daemon(DaemonOptions { config: Some(config), system: true, ..Default::default() });
    // The temporary directory is root's; the socket's directory must be reachable by the callers.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A directory only `user` may use (their "home"), holding `files`.
fn home_of(tmp: &TempDir, user: &User, files: &[(&str, &[u8])]) -> PathBuf {
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

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Neither the bytes of `secret` nor their hex appear in `seen`.
fn assert_no_leak(seen: &str, secret: &[u8], what: &str) {
    let head = &secret[..secret.len().min(8)];
    let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
    let spaced: String = head.iter().map(|b| format!("{b:02X} ")).collect();
    assert!(!seen.to_lowercase().contains(&hex), "{what}: the hex of the secret leaked: {seen}");
    assert!(!seen.contains(spaced.trim()), "{what}: the hex of the secret leaked: {seen}");
    if let Ok(s) = std::str::from_utf8(head) {
        assert!(!seen.contains(s), "{what}: the secret leaked: {seen}");
    }
}

fn audit(daemon: &Daemon, admin: &User) -> Vec<serde_json::Value> {
    admin.ctl_json(daemon, &["audit", "list"]).as_array().unwrap().clone()
}

#[test]
fn every_request_is_allowed_or_refused_by_role_and_ownership_and_every_refusal_is_audited() {
    let Some(w) = world() else { return };
    let d = system_daemon("max_sessions_per_uid = 2\n");
    let tmp = TempDir::new("system-table");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let outs: BTreeMap<&str, PathBuf> =
        [&w.admin, &w.alice, &w.bob, &w.eve].iter().map(|u| (u.name, home_of(&tmp, u, &[]))).collect();

    let a = w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    let b = w.bob.ctl_json(&d, &["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    let outs2 = outs.clone();
    let out_in_table = move |u: &User, name: &str| outs2[u.name].join(name).display().to_string();
    let out = |u: &User, name: &str| outs[u.name].join(name).display().to_string();

    // (request, its arguments per caller, who may) — in an order that leaves each step possible.
    type Case = (&'static str, Box<dyn Fn(&User) -> Vec<String>>, [bool; 4]);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (a2, a3, a4) = (a.clone(), a.clone(), a.clone());
    let cases: Vec<Case> = vec![
        ("status", Box::new(move |_| s(&["status"])), [true, true, true, true]),
        ("drivers", Box::new(move |_| s(&["drivers"])), [true, true, true, false]),
        ("devices", Box::new(move |_| s(&["devices", "--driver", "synthetic"])), [true, true, true, false]),
        ("models", Box::new(move |_| s(&["models"])), [true, true, true, false]),
        ("session_list", Box::new(move |_| s(&["session", "list"])), [true, true, true, false]),
        ("session_show", Box::new(move |_| s(&["session", "show", &a2])), [true, true, false, false]),
        ("follow", Box::new(move |_| s(&["follow", &a3, "--count", "1", "--samples"])), [true, true, false, false]),
        (
            "session_start",
            Box::new(move |_| s(&["session", "start", "--driver", "synthetic"])),
            [true, true, true, false],
        ),
        ("audit_list", Box::new(move |_| s(&["audit", "list"])), [true, false, false, false]),
        ("audit_verify", Box::new(move |_| s(&["audit", "verify"])), [true, false, false, false]),
        ("backup", Box::new(move |u| vec!["backup".into(), out_in_table(u, "backup.db")]), [true, false, false, false]),
        ("key_rotate", Box::new(move |_| s(&["key", "rotate"])), [true, false, false, false]),
        // The admin stops alice's session first; the owner's own stop then finds it stopped.
        ("session_stop", Box::new(move |_| s(&["session", "stop", &a4])), [true, true, false, false]),
    ];
    let users = [&w.admin, &w.alice, &w.bob, &w.eve];
    let mut refused: BTreeMap<(u32, &str), usize> = BTreeMap::new();
    let mut table = String::new();
    for (method, args, allowed) in &cases {
        for (user, may) in users.iter().zip(allowed) {
            let args = args(user);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = user.ctl(&d, &argv);
            table.push_str(&format!(
                "{method:15} {:12} {}\n",
                user.name,
                if o.status.success() { "allowed" } else { "refused" }
            ));
            if *may {
                assert!(o.status.success(), "{} may {method}: {}\n{}", user.name, text(&o), d.log());
            } else {
                assert_eq!(o.status.code(), Some(5), "{} may not {method}: {}", user.name, text(&o));
                *refused.entry((user.uid, *method)).or_default() += 1;
            }
        }
    }
    eprintln!("{table}");
    // Lists show what the caller owns; an admin sees everything.
    let ids = |u: &User| -> Vec<String> {
        u.ctl_json(&d, &["session", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ids(&w.alice).contains(&a) && !ids(&w.alice).contains(&b));
    assert!(ids(&w.admin).contains(&a) && ids(&w.admin).contains(&b));
    // Alice runs two sessions (one from the table): a third is beyond max_sessions_per_uid = 2.
    w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic"]);
    let o = w.alice.ctl(&d, &["session", "start", "--driver", "synthetic"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(text(&o).contains("max_sessions_per_uid = 2"), "{}", text(&o));
    *refused.entry((w.alice.uid, "session_start")).or_default() += 1;
    // The owner exports her own (stopped) session; others may not; only an admin deletes it.
    let stopped = w.alice.ctl_json(&d, &["session", "show", &a]);
    assert_eq!(stopped["state"], "stopped");
    w.alice.ctl_json(&d, &["export", &a, "--format", "csv", "--output", &out(&w.alice, "mine.csv")]);
    let exported = std::fs::metadata(outs[w.alice.name].join("mine.csv")).unwrap();
    assert!(exported.len() > 0);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&exported), w.alice.uid, "the export is the caller's own file");
    for u in [&w.bob, &w.eve] {
        let o = u.ctl(&d, &["export", &a, "--format", "csv", "--output", &out(u, "a.csv")]);
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        *refused.entry((u.uid, "export")).or_default() += 1;
        assert!(!outs[u.name].join("a.csv").exists(), "the refused caller's output file is removed again");
    }
    w.admin.ctl_json(&d, &["export", &a, "--format", "edf", "--output", &out(&w.admin, "a.edf")]);
    for u in [&w.alice, &w.bob, &w.eve] {
        let o = u.ctl(&d, &["session", "delete", &a]);
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        *refused.entry((u.uid, "session_delete")).or_default() += 1;
    }
    w.admin.ctl_json(&d, &["session", "delete", &a]);

    // Every refusal is in the audit log, with the caller's uid and the request.
    let entries = audit(&d, &w.admin);
    for ((uid, method), n) in &refused {
        let found = entries
            .iter()
            .filter(|e| {
                e["uid"] == *uid && e["action"] == *method && e["outcome"].as_str().unwrap().starts_with("refused")
            })
            .count();
        assert!(found >= *n, "{n} refusal(s) of {method} by uid {uid}, {found} audited:\n{entries:#?}");
    }
    let verify = w.admin.ctl_json(&d, &["audit", "verify"]);
    assert_eq!(verify["intact"], true, "{verify}");
}

#[test]
fn no_request_reads_a_file_the_caller_cannot_or_loads_a_library() {
    let Some(w) = world() else { return };
    let d = system_daemon("[drivers.lsl]\nlibrary = \"/nonexistent/liblsl.so\"\n");
    let tmp = TempDir::new("system-files");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let master_key = std::fs::read(d.dir.path().join("data/master.key")).expect("the daemon's master key");
    let bob_secret = b"BOBSECRET-0123456789";
    let bob_home = home_of(&tmp, &w.bob, &[("secret.edf", bob_secret)]);
    let shadow = std::fs::read("/etc/shadow").unwrap();
    let targets: [(&Path, &[u8]); 3] = [
        (&d.dir.path().join("data/master.key"), &master_key),
        (Path::new("/etc/shadow"), &shadow),
        (&bob_home.join("secret.edf"), bob_secret),
    ];
    // A library whose constructor leaves a mark if it is ever loaded.
    let mark = tmp.path().join("loaded");
    let evil = tmp.path().join("evil.so");
    bci2token_tests::compile_c_library(
        &format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void hit(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            mark.display()
        ),
        &evil,
    );
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut seen = String::new();
    for (path, secret) in &targets {
        let p = path.display().to_string();
        // Through bci2tokenctl: it opens the file with alice's rights, and cannot.
        for args in [
            vec!["session", "start", "--driver", "replay", "--set"],
            vec!["evaluate", "--model", "ssvep-fbcca-3"],
            vec!["restore"],
            vec!["session", "start", "--driver", "openbci", "--set"],
        ] {
            let mut argv = args.clone();
            let set = match args[0] {
                "session" if args[3] == "openbci" => format!("port={p}"),
                "session" => format!("path={p}"),
                _ => p.clone(),
            };
            argv.push(&set);
            let o = w.alice.ctl(&d, &argv);
            assert!(!o.status.success(), "alice {argv:?} succeeded");
            seen.push_str(&text(&o));
        }
        // Around bci2tokenctl: the path itself, and descriptors the request never passed.
        for config in [
            serde_json::json!({"path": p}),
            serde_json::json!({"path": {"fd": 0, "name": "x.edf"}}),
            serde_json::json!({"path": {"fd": 3}}),
            serde_json::json!({"_caller_paths": true, "path": p}),
        ] {
            let req = serde_json::json!({"method": "session_start", "params": {"driver": "replay", "config": config}});
            let r = w.alice.raw(&d, &["request", &req.to_string()]);
            assert!(r.get("error").is_some(), "{req}: {r}");
            seen.push_str(&r.to_string());
        }
        for req in [
            serde_json::json!({"method": "restore", "params": {"path": p}}),
            serde_json::json!({"method": "backup", "params": {"path": p}}),
            serde_json::json!({"method": "model_show", "params": {"model": p}}),
            serde_json::json!({"method": "session_start", "params": {"driver": "synthetic", "model": p}}),
        ] {
            let r = w.alice.raw(&d, &["request", &req.to_string()]);
            assert!(r.get("error").is_some(), "{req}: {r}");
            seen.push_str(&r.to_string());
        }
        assert_no_leak(&seen, secret, &p);
    }
    // The system daemon refuses a caller's path outright, naming the way that works.
    let req = serde_json::json!({"method": "session_start", "params": {"driver": "replay",
        "config": {"path": data_dir().join("eegmmidb/S001R04.edf").display().to_string()}}});
    let r = w.alice.raw(&d, &["request", &req.to_string()]);
    assert!(r["error"]["message"].as_str().unwrap().contains("pass the file"), "{r}");
    // A character device that is not a serial line is not opened as one.
    let o = w.alice.ctl(&d, &["session", "start", "--driver", "openbci", "--set", "port=/dev/null"]);
    assert!(text(&o).contains("is not a serial device"), "{}", text(&o));
    // Model names cannot climb out of model_path.
    let r = w.alice.raw(&d, &["request", r#"{"method":"model_show","params":{"model":".."}}"#]);
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    // A library: not a session key, not as a host key, and the admin's setting is what is used.
    for set in [format!("library={}", evil.display()), format!("_library={}", evil.display())] {
        let o = w.alice.ctl(&d, &["session", "start", "--driver", "lsl", "--set", "name=x", "--set", &set]);
        assert!(!o.status.success(), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains("no config key `library`") || t.contains("set by the daemon's administrator"), "{t}");
    }
    let o = w.alice.ctl(&d, &["session", "start", "--driver", "lsl", "--set", "name=x"]);
    assert!(text(&o).contains("/nonexistent/liblsl.so"), "the admin's library is the one tried: {}", text(&o));
    assert!(!mark.exists(), "the daemon loaded a caller's library");
    // What does work for alice: her own recording, passed as a descriptor, replayed.
    let mine = tmp.path().join("mine.edf");
    std::fs::copy(data_dir().join("eegmmidb/S001R04.edf"), &mine).unwrap();
    nix::unistd::chown(&mine, Some(w.alice.uid.into()), Some(w.alice.gid.into())).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    let set = format!("path={}", mine.display());
    let started = w.alice.ctl_json(&d, &["session", "start", "--driver", "replay", "--set", &set, "--set", "speed=0"]);
    assert!(started["description"].as_str().unwrap().contains("mine.edf"), "{started}");
    // A model directory is an admin's exception.
    let dir = workspace_root().join("models/speller-40").display().to_string();
    assert_eq!(w.alice.ctl(&d, &["session", "start", "--driver", "synthetic", "--model", &dir]).status.code(), Some(5));
    assert!(w.admin.ctl(&d, &["session", "start", "--driver", "synthetic", "--model", &dir]).status.success());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn strangers_cannot_exhaust_the_socket_and_live_sessions_keep_streaming() {
    let Some(w) = world() else { return };
    let d = system_daemon("max_connections_per_uid = 32\nrequests_per_second = 20\nrequest_burst = 40\n");
    let id = w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic", "--set", "sample_rate=250"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let follower = Follower::start(&d, &id);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(d.child.id());
    let started = Instant::now();

    let r = w.bob.raw(&d, &["oversized"]);
    assert_eq!(r["error"]["code"], "request_too_large", "{r}");
    let r = w.bob.raw(&d, &["silence"]);
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    assert!(r["waited"].as_f64().unwrap() < 5.0, "refused after request_timeout: {r}");
    let r = w.bob.raw(&d, &["connections", "1000"]);
    assert_eq!(r["ok"], 32, "32 connections per uid are served: {r}");
    assert_eq!(r["too_many_connections"], 968, "{r}");
    let r = w.eve.raw(&d, &["flood", "500"]);
    let limited = r["rate_limited"].as_u64().unwrap_or(0);
    assert!(r["ok"].as_u64().unwrap() >= 40 && limited >= 400, "a burst of 40, then 20/s: {r}");
    let attack = started.elapsed();
    let rss_after = rss_kib(d.child.id());
    eprintln!("attack took {attack:?}; daemon RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");

    // The live session streamed on without a hole.
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_secs(1);
    while let Some(ev) = follower.next(until.saturating_duration_since(Instant::now())) {
        events.push(ev);
    }
    let blocks = events.iter().filter(|e| e["type"] == "samples").count();
    assert!(blocks > 0, "the follower received no sample blocks");
    let lost: Vec<_> = events.iter().filter(|e| e["type"] == "lost").collect();
    assert!(lost.is_empty(), "the follower lost events: {lost:?}");
    let info = w.alice.ctl_json(&d, &["session", "show", &id]);
    assert_eq!(info["state"], "running");
    assert_eq!(info["gaps"], 0, "{info}");
    assert_eq!(info["store_dropped"], 0, "{info}");
    // The daemon still answers, and the refusals are in the audit log (rate-limited there too).
    let entries = audit(&d, &w.admin);
    for (uid, what) in [(w.bob.uid, "max_connections_per_uid"), (w.eve.uid, "requests_per_second")] {
        let n = entries.iter().filter(|e| e["uid"] == uid && e["outcome"].as_str().unwrap().contains(what)).count();
        assert!(n >= 1, "no audited refusal of uid {uid} for {what}");
    }
    assert!(entries.len() < 400, "refusals are rate-limited in the audit log: {}", entries.len());
    assert_eq!(w.admin.ctl_json(&d, &["audit", "verify"])["intact"], true);
}

#[test]
fn with_record_off_refusals_and_privileged_calls_are_still_audited() {
    let Some(w) = world() else { return };
    let d = system_daemon("record = false\n");
    assert_eq!(w.eve.ctl(&d, &["drivers"]).status.code(), Some(5));
    assert_eq!(w.alice.ctl(&d, &["audit", "list"]).status.code(), Some(5));
    let id = w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    w.alice.ctl_json(&d, &["session", "stop", &id]);
    w.admin.ctl_json(&d, &["key", "rotate"]);
    let entries = audit(&d, &w.admin);
    let has = |uid: u32, action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["uid"] == uid && e["action"] == action && e["outcome"].as_str().unwrap().starts_with(outcome))
    };
    assert!(has(w.eve.uid, "drivers", "refused"), "{entries:#?}");
    assert!(has(w.alice.uid, "audit_list", "refused"), "{entries:#?}");
    assert!(has(w.alice.uid, "session_start", "ok"), "{entries:#?}");
    assert!(has(w.alice.uid, "session_stop", "ok"), "{entries:#?}");
    assert!(has(w.admin.uid, "key_rotate", "ok"), "{entries:#?}");
    assert_eq!(w.admin.ctl_json(&d, &["audit", "verify"])["intact"], true);
    // The store holds the audit log only: the session was not recorded.
    let shown = w.alice.ctl_json(&d, &["session", "show", &id]);
    assert_eq!(shown["stored_blocks"], 0, "{shown}");
    // Its files are private.
    for f in ["sessions.db", "master.key"] {
        let mode = std::fs::metadata(d.dir.path().join("data").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let mode = std::fs::metadata(d.dir.path().join("data")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn concurrent_starts_never_exceed_max_sessions() {
    let d = start_daemon(DaemonOptions {
        config: Some("max_sessions = 4\nmax_sessions_per_uid = 16\n".into()),
        ..Default::default()
    });
    let codes: Vec<Option<i32>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..16).map(|_| s.spawn(|| d.ctl(&["session", "start", "--driver", "synthetic"]).status.code())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(8)).count(), 12, "the others hit the limit: {codes:?}");
    let running =
        d.ctl_json(&["session", "list"]).as_array().unwrap().iter().filter(|s| s["state"] == "running").count();
    assert_eq!(running, 4);
}

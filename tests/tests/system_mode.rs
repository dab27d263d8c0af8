//! The daemon in system mode, as the people on a shared machine meet it: an admin, two operators
//! and a stranger, real users and groups (`groupadd`/`useradd`), each calling the real
//! `bci2tokenctl` through `setpriv`. The daemon runs as root (the worst case: it could open
//! anything), with temporary directories. Needs root; CI runs as root.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bci2token_tests::system_users::{home_of, system_daemon, text, world, User};
use bci2token_tests::{workspace_root, Daemon, Follower, TempDir};

/// Neither the bytes of `secret` nor their hex appear in `seen`.
/// No 8 consecutive bytes of the first 64 of `secret` appear in `seen`: as hex (either case,
/// spaced or not), or as text when they hold a letter (digits and punctuation alone would match
/// harmless numbers in messages).
fn assert_no_leak(seen: &str, secret: &[u8], what: &str) {
    let lower = seen.to_lowercase();
    for window in secret[..secret.len().min(64)].windows(8) {
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        let spaced: String = window.iter().map(|b| format!("{b:02x} ")).collect();
        assert!(
            !lower.contains(&hex) && !lower.contains(spaced.trim()),
            "{what}: the hex of the secret leaked: {seen}"
        );
        if let Ok(text) = std::str::from_utf8(window) {
            if text.chars().any(char::is_alphabetic) {
                assert!(!seen.contains(text), "{what}: the secret leaked ({text:?}): {seen}");
            }
        }
    }
}

fn audit(daemon: &Daemon, admin: &User) -> Vec<serde_json::Value> {
    admin.ctl_json(daemon, &["audit", "list"]).as_array().unwrap().clone()
}

#[test]
fn every_request_is_allowed_or_refused_by_role_and_ownership_and_every_refusal_is_audited() {
    let Some(w) = world() else { return };
    let d = system_daemon("socket_mode = \"0666\"\nmax_sessions_per_uid = 2\n");
    let tmp = TempDir::new("system-table");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let outs: BTreeMap<&str, PathBuf> =
        [&w.admin, &w.alice, &w.bob, &w.eve].iter().map(|u| (u.name, home_of(&tmp, u, &[]))).collect();

    let a = w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    let b = w.bob.ctl_json(&d, &["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    let out = |u: &User, name: &str| outs[u.name].join(name).display().to_string();

    // Request, its arguments (`{A}`: alice's session, `{OUT}`: a new file in the caller's home),
    // and whether admin, alice, bob and eve may: in an order that leaves each step possible.
    let cases: &[(&str, &[&str], [bool; 4])] = &[
        ("status", &["status"], [true, true, true, true]),
        ("drivers", &["drivers"], [true, true, true, false]),
        ("devices", &["devices", "--driver", "synthetic"], [true, true, true, false]),
        ("models", &["models"], [true, true, true, false]),
        ("session_list", &["session", "list"], [true, true, true, false]),
        ("session_show", &["session", "show", "{A}"], [true, true, false, false]),
        ("follow", &["follow", "{A}", "--count", "1", "--samples"], [true, true, false, false]),
        ("session_start", &["session", "start", "--driver", "synthetic"], [true, true, true, false]),
        ("audit_list", &["audit", "list"], [true, false, false, false]),
        ("audit_verify", &["audit", "verify"], [true, false, false, false]),
        // The key first: a backup restores only under the key it was written with.
        ("key_rotate", &["key", "rotate"], [true, false, false, false]),
        ("backup", &["backup", "{OUT}"], [true, false, false, false]),
        // The admin stops alice's session first; the owner's own stop then finds it stopped.
        ("session_stop", &["session", "stop", "{A}"], [true, true, false, false]),
    ];
    let users = [&w.admin, &w.alice, &w.bob, &w.eve];
    let mut refused: BTreeMap<(u32, &str), usize> = BTreeMap::new();
    let mut table = String::new();
    for (method, template, allowed) in cases {
        for (user, may) in users.iter().zip(allowed) {
            let file = out(user, &format!("{method}.out"));
            let argv: Vec<&str> = template
                .iter()
                .map(|t| match *t {
                    "{A}" => a.as_str(),
                    "{OUT}" => file.as_str(),
                    t => t,
                })
                .collect();
            let o = user.ctl(&d, &argv);
            let verdict = if o.status.success() { "allowed" } else { "refused" };
            table.push_str(&format!("{method:15} {:12} {verdict}\n", user.name));
            if *may {
                assert!(o.status.success(), "{} may {method}: {}\n{}", user.name, text(&o), d.log());
            } else {
                assert_eq!(o.status.code(), Some(5), "{} may not {method}: {}", user.name, text(&o));
                *refused.entry((user.uid, *method)).or_default() += 1;
            }
        }
    }
    // model_show has no command of its own (evaluate uses it): the raw request, by name.
    let show = r#"{"method":"model_show","params":{"model":"speller-40"}}"#;
    for (user, may) in users.iter().zip([true, true, true, false]) {
        let r = user.raw(&d, &["request", show]);
        table.push_str(&format!("{:15} {:12} {}\n", "model_show", user.name, if may { "allowed" } else { "refused" }));
        if may {
            assert_eq!(r["ok"]["name"], "speller-40", "{r}");
        } else {
            assert_eq!(r["error"]["code"], "permission_denied", "{r}");
            *refused.entry((user.uid, "model_show")).or_default() += 1;
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
    // A private release spends a budget every session of the subject shares: the admin's call,
    // even for the owner of the session.
    let o = w.alice.ctl(
        &d,
        &[
            "export",
            &a,
            "--format",
            "csv",
            "--output",
            &out(&w.alice, "dp.csv"),
            "--features",
            "bandpower",
            "--dp-epsilon",
            "0.5",
            "--dp-delta",
            "1e-6",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    *refused.entry((w.alice.uid, "export")).or_default() += 1;
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
    // Restore: an admin's, with no session running, from the backup the admin's ctl passes.
    let backup = out(&w.alice, "backup.out");
    std::fs::write(&backup, b"not mine to restore").unwrap();
    nix::unistd::chown(Path::new(&backup), Some(w.alice.uid.into()), None).unwrap();
    assert_eq!(w.alice.ctl(&d, &["restore", &backup]).status.code(), Some(5));
    *refused.entry((w.alice.uid, "restore")).or_default() += 1;
    for s in w.admin.ctl_json(&d, &["session", "list"]).as_array().unwrap() {
        if s["state"] == "running" {
            w.admin.ctl_json(&d, &["session", "stop", s["id"].as_str().unwrap()]);
        }
    }
    let restored = w.admin.ctl_json(&d, &["restore", &out(&w.admin, "backup.out")]);
    assert!(restored["restored_from"].as_str().unwrap().ends_with("backup.out"), "{restored}");

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
        "config": {"path": w.recording().display().to_string()}}});
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
    std::fs::copy(w.recording(), &mine).unwrap();
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

/// The daemon's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn strangers_cannot_exhaust_the_socket_and_live_sessions_keep_streaming() {
    let Some(w) = world() else { return };
    // A follower's queue of 16 events: a stall of 0.64 s in the daemon (25 blocks/s) would lose some.
    let d = system_daemon(
        "socket_mode = \"0666\"\nsubscriber_queue = 16\nmax_connections_per_uid = 32\nrequests_per_second = 20\n\
         request_burst = 40\n",
    );
    let id = w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic", "--set", "sample_rate=250"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The owner follows her session, as an operator (held to every limit root is not).
    let follower = Follower::from_command(w.alice.ctl_command(&d, &["--json", "follow", &id, "--samples"]));
    std::thread::sleep(Duration::from_millis(500));
    let (rss_before, fds_before) = (peak_rss_kib(d.child.id()), open_fds(d.child.id()));
    let started = Instant::now();

    // All at once: an oversized frame, an unfinished one, descriptors piled a byte at a time,
    // 1000 connections of one uid, and a stranger's flood.
    let (oversized, silence, (fds, fds_burst), (connections, bodies), flood) = std::thread::scope(|s| {
        let oversized = s.spawn(|| w.alice.raw(&d, &["oversized"]));
        let silence = s.spawn(|| w.alice.raw(&d, &["silence"]));
        let fds = s.spawn(|| w.eve.raw(&d, &["fds", "20", "8"]));
        let fds_burst = s.spawn(|| w.eve.raw(&d, &["fds", "1", "20"]));
        let connections = s.spawn(|| w.bob.raw(&d, &["connections", "1000"]));
        let bodies = s.spawn(|| w.eve.raw(&d, &["bodies", "16"]));
        let flood = s.spawn(|| w.eve.raw(&d, &["flood", "500"]));
        (
            oversized.join(),
            silence.join(),
            (fds.join(), fds_burst.join()),
            (connections.join(), bodies.join()),
            flood.join(),
        )
    });
    let r = oversized.unwrap();
    assert_eq!(r["error"]["code"], "request_too_large", "{r}");
    let r = silence.unwrap();
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    assert!(r["waited"].as_f64().unwrap() < 5.0, "refused after request_timeout: {r}");
    for r in [fds.unwrap(), fds_burst.unwrap()] {
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("file descriptors"), "{r}");
    }
    let r = bodies.unwrap();
    assert_eq!(r["timeout"], 16, "unfinished 1 MiB requests are dropped after request_timeout: {r}");
    let r = connections.unwrap();
    assert_eq!(r["ok"], 32, "32 connections per uid are served: {r}");
    assert_eq!(r["too_many_connections"], 968, "{r}");
    let r = flood.unwrap();
    let limited = r["rate_limited"].as_u64().unwrap_or(0);
    assert!(r["ok"].as_u64().unwrap() >= 40 && limited >= 400, "a burst of 40, then 20/s: {r}");
    let attack = started.elapsed();
    // The closer may still be closing what the attacks passed.
    std::thread::sleep(Duration::from_millis(200));
    let (rss_after, fds_after) = (peak_rss_kib(d.child.id()), open_fds(d.child.id()));
    eprintln!(
        "attack took {attack:?}; daemon peak RSS {rss_before} KiB before, {rss_after} KiB after; open \
         descriptors {fds_before} before, {fds_after} after"
    );
    assert!(rss_after < rss_before + 64 * 1024, "peak RSS grew from {rss_before} to {rss_after} KiB");
    assert_eq!(fds_after, fds_before, "descriptors were kept: {fds_before} before, {fds_after} after");

    // The live session streamed on without a hole: every block since the follower started, in
    // sequence, nothing lost.
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_secs(1);
    while let Some(ev) = follower.next(until.saturating_duration_since(Instant::now())) {
        events.push(ev);
    }
    let seqs: Vec<u64> = events.iter().filter(|e| e["type"] == "samples").map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.len() as f64 > attack.as_secs_f64() * 20.0, "{} blocks in {attack:?}", seqs.len());
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "a hole in the block sequence: {seqs:?}");
    let lost: Vec<_> = events.iter().filter(|e| e["type"] == "lost").collect();
    assert!(lost.is_empty(), "the follower lost events: {lost:?}");
    let info = w.alice.ctl_json(&d, &["session", "show", &id]);
    assert_eq!(info["state"], "running");
    assert_eq!(info["events_dropped"], 0, "{info}");
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
    let d = system_daemon("socket_mode = \"0666\"\nrecord = false\nidle_timeout = 1\n");
    // A connection that says nothing is closed after idle_timeout, with the reason.
    let r = w.eve.raw(&d, &["idle"]);
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("idle_timeout"), "{r}");
    assert!((0.9..5.0).contains(&r["waited"].as_f64().unwrap()), "{r}");
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
    let Some(w) = world() else { return };
    let d = system_daemon("max_sessions = 4\nmax_sessions_per_uid = 16\n");
    // Three users, 16 starts at once, each opening a recording (milliseconds of work inside the
    // driver's open, which is where a check-then-act limit would let more through).
    let set = format!("path={}", w.recording().display());
    let users = [&w.admin, &w.alice, &w.bob];
    let codes: Vec<Option<i32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (user, set, d) = (users[i % 3], &set, &d);
                s.spawn(move || user.ctl(d, &["session", "start", "--driver", "replay", "--set", set]).status.code())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 4, "{codes:?}\n{}", d.log());
    assert_eq!(codes.iter().filter(|c| **c == Some(8)).count(), 12, "the others hit the limit: {codes:?}");
    let running = w
        .admin
        .ctl_json(&d, &["session", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "running")
        .count();
    assert_eq!(running, 4);
}

#[test]
fn by_default_only_the_groups_reach_the_socket() {
    let Some(w) = world() else { return };
    let d = system_daemon("");
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let o = w.eve.ctl(&d, &["status"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("permission denied on the control socket"), "{}", text(&o));
    assert_eq!(w.alice.ctl_json(&d, &["status"])["caller_role"], "operator");
    assert_eq!(w.admin.ctl_json(&d, &["status"])["caller_role"], "admin");
}

#[test]
fn an_admin_installs_a_model_package_that_operators_then_use_by_name() {
    let Some(w) = world() else { return };
    let d = system_daemon("");
    // A package of the admin's: the shipped speller under another name.
    let tmp = TempDir::new("system-install");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pkg = tmp.path().join("mine");
    std::fs::create_dir(&pkg).unwrap();
    for f in ["model.pt", "test_vectors.json"] {
        std::fs::copy(workspace_root().join("models/speller-40").join(f), pkg.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(workspace_root().join("models/speller-40/model.toml")).unwrap();
    std::fs::write(pkg.join("model.toml"), manifest.replacen("name = \"speller-40\"", "name = \"speller-mine\"", 1))
        .unwrap();
    for f in ["model.pt", "test_vectors.json", "model.toml"] {
        std::fs::set_permissions(pkg.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let dir = pkg.display().to_string();
    assert_eq!(w.alice.ctl(&d, &["model", "install", &dir]).status.code(), Some(5), "an operator may not install");
    let installed = w.admin.ctl_json(&d, &["model", "install", &dir]);
    assert_eq!(installed["name"], "speller-mine", "{installed}");
    assert!(installed["dir"].as_str().unwrap().starts_with(&d.dir.path().join("data/models").display().to_string()));
    let o = w.admin.ctl(&d, &["model", "install", &dir]);
    assert!(text(&o).contains("--replace"), "installed already: {}", text(&o));
    assert!(w.admin.ctl(&d, &["model", "install", &dir, "--replace"]).status.success());
    // Operators find it by name and attach it.
    let names: Vec<String> = w.alice.ctl_json(&d, &["models"])["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"speller-mine".to_string()), "{names:?}");
    let started = w.alice.ctl_json(&d, &["session", "start", "--driver", "synthetic", "--model", "speller-mine"]);
    assert_eq!(started["model"], "speller-mine");
    // A broken package is checked before it replaces anything: the installed files stay as they were.
    let installed_pt = d.dir.path().join("data/models/speller-mine/model.pt");
    let good = std::fs::read(&installed_pt).unwrap();
    assert_eq!(good, std::fs::read(workspace_root().join("models/speller-40/model.pt")).unwrap());
    std::fs::write(pkg.join("model.pt"), b"not TorchScript").unwrap();
    let o = w.admin.ctl(&d, &["model", "install", &dir, "--replace"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert_eq!(std::fs::read(&installed_pt).unwrap(), good, "the broken package replaced the installed one");
    // Names that are not plain file names, and packages without their two files, are refused.
    let r = w.admin.raw(&d, &["request", r#"{"method":"model_install","params":{"files":[{"fd":0,"name":".."}]}}"#]);
    assert!(r["error"]["message"].as_str().unwrap().contains("not a file name of a model package"), "{r}");
    let only = pkg.join("model.toml").display().to_string();
    let req = r#"{"method":"model_install","params":{"files":[{"fd":0,"name":"model.toml"}]}}"#;
    let r = w.admin.raw(&d, &["request", req, &only]);
    assert!(r["error"]["message"].as_str().unwrap().contains("model.pt"), "{r}");
    let audited = audit(&d, &w.admin);
    assert!(audited.iter().any(|e| e["action"] == "model_install" && e["uid"] == w.alice.uid), "{audited:#?}");
    // Only the package is left in the model directory: no scratch or replaced copies.
    let left: Vec<String> = std::fs::read_dir(d.dir.path().join("data/models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["speller-mine"]);
}

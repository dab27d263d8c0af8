//! The D-Bus door on a private, system-like bus (tests/private_bus.rs: the stock policy plus the
//! project's policy file), with real clients: `busctl`, `gdbus`, `dbus-send` and a Python app
//! (jeepney, tests/fixtures/bus_client.py), run as the test users of the system-mode tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bci2token_tests::private_bus::PrivateBus;
use bci2token_tests::system_users::{
    as_root, home_of, stage_python_client, system_daemon, system_daemon_with_env, text, world, User, ADMIN_GROUP,
    OPERATOR_GROUP,
};
use bci2token_tests::{data_dir, start_daemon, workspace_root, Daemon, DaemonOptions, TempDir};

const NAME: &str = "org.bci2token.Daemon1";

/// `program args…` as `user` (or as root, the test's own user, for `None`).
fn as_user(user: Option<&User>, program: &str, args: &[&str]) -> Output {
    let mut cmd = match user {
        Some(u) => u.setpriv(Path::new(program)),
        None => Command::new(program),
    };
    cmd.args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn gdbus(user: Option<&User>, bus: &PrivateBus, path: &str, method: &str, args: &[&str]) -> Output {
    let mut full = vec!["call", "--address", &bus.address, "--dest", NAME, "--object-path", path, "--method", method];
    full.extend_from_slice(args);
    as_user(user, "gdbus", &full)
}

/// The Python client, as `user`, with jeepney from the test venv copied beside it.
fn python_client(user: &User, bus: &PrivateBus, args: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = user.setpriv(Path::new("/usr/bin/python3"));
    cmd.arg(user.stage.join("bus_client.py")).arg(&bus.address).args(args).env("PYTHONPATH", user.stage.join("py"));
    let out = cmd.output().expect("run bus_client.py");
    assert!(out.status.success(), "bus_client {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn bus_daemon(bus: &PrivateBus, extra: &str) -> Daemon {
    let d = system_daemon(&format!("bus = \"{}\"\n{extra}", bus.address));
    assert!(d.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)), "{}", d.log());
    d
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn audit(daemon: &Daemon, admin: &User) -> Vec<serde_json::Value> {
    admin.ctl_json(daemon, &["audit", "list"]).as_array().unwrap().clone()
}

#[test]
fn apps_on_the_bus_start_a_speller_session_and_receive_its_tokens() {
    let Some(w) = world() else { return };
    stage_python_client(&w.admin);
    let bus = PrivateBus::system_like(OPERATOR_GROUP, ADMIN_GROUP);
    let daemon = bus_daemon(&bus, "");

    // Properties, as an operator reads them with busctl.
    let version = as_user(
        Some(&w.alice),
        "busctl",
        &["--address", &bus.address, "get-property", NAME, "/org/bci2token", NAME, "Version"],
    );
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("s \"{}\"", env!("CARGO_PKG_VERSION")));
    let mode = as_user(
        Some(&w.alice),
        "busctl",
        &["--address", &bus.address, "get-property", NAME, "/org/bci2token", NAME, "Mode"],
    );
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "s \"system\"");
    // Anyone may ask for the status; the role the daemon saw is the caller's, not the daemon's.
    let status = gdbus(Some(&w.eve), &bus, "/org/bci2token", "org.bci2token.Daemon1.Status", &[]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("'caller_role': <'reader'>"), "{}", text(&status));
    let status = gdbus(Some(&w.alice), &bus, "/org/bci2token", "org.bci2token.Daemon1.Status", &[]);
    assert!(text(&status).contains("'caller_role': <'operator'>"), "{}", text(&status));

    // The Python app: starts the speller, sees the object appear, subscribes, gets the tokens,
    // sees the end, deletes the session (an admin) and sees the object go.
    let script = Command::new("python3")
        .arg(workspace_root().join("tools/speller_demo.py"))
        .args(["script", &workspace_root().join("models/speller-40").display().to_string(), "hi"])
        .output()
        .unwrap();
    let script = String::from_utf8(script.stdout).unwrap();
    // Meanwhile another operator and a stranger ask the bus for every signal of the daemon.
    stage_python_client(&w.bob);
    let listeners: Vec<_> = [w.bob.clone(), w.eve.clone()]
        .into_iter()
        .map(|u| {
            let bus_address = bus.address.clone();
            std::thread::spawn(move || {
                let mut cmd = u.setpriv(Path::new("/usr/bin/python3"));
                cmd.arg(u.stage.join("bus_client.py")).args([bus_address.as_str(), "listen", "16"]);
                cmd.env("PYTHONPATH", u.stage.join("py"));
                let out = cmd.output().unwrap();
                let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("{}").to_string();
                serde_json::from_str::<serde_json::Value>(&last).unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let lines = python_client(&w.admin, &bus, &["speller", script.trim()]);
    let tokens: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("token").is_some()).collect();
    let labels: Vec<&str> = tokens.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(labels, ["h", "i"], "{lines:?}");
    // gpt2's ids of "h" and "i" (byte-level BPE: single letters are their own tokens).
    let ids: Vec<serde_json::Value> = tokens.iter().map(|t| t["token_ids"].clone()).collect();
    assert_eq!(ids, [serde_json::json!([71]), serde_json::json!([72])]);
    for t in &tokens {
        assert!(t["probability"].as_f64().unwrap() > 0.5, "{t}");
        let id = t["token_ids"][0].to_string();
        let bias = t["logit_bias"].as_object().unwrap();
        let top = bias.iter().max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap()).unwrap();
        assert_eq!(top.0, &id, "the decoded token has the largest bias: {t}");
        assert!(t["latency"].as_f64().unwrap() < 1.0, "{t}");
    }
    // The session's signal quality came as a signal too: the synthetic board's channels are good.
    let quality: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("quality").is_some()).collect();
    assert!(!quality.is_empty(), "no QualityChanged: {lines:?}");
    assert!(quality.iter().all(|q| q["quality"] == 1.0 && q["bad"] == serde_json::json!({})), "{quality:?}");
    assert!(quality[0]["t"].as_f64().unwrap() > 0.9, "a second of signal first: {:?}", quality[0]);
    let end = lines.last().unwrap();
    assert_eq!(end["added"], true, "InterfacesAdded for the session: {lines:?}");
    assert_eq!(end["ended"], "finished", "{lines:?}");
    assert_eq!(end["removed"], true, "InterfacesRemoved after DeleteSession: {lines:?}");
    assert_eq!(end["state_property"].as_array().unwrap().last().unwrap(), "finished", "PropertiesChanged: {lines:?}");
    // Tokens go to their subscriber alone: the other operator sees the session come and go (a
    // member), not its tokens; the stranger sees nothing at all.
    let mut heard = listeners.into_iter().map(|l| l.join().unwrap());
    let (bob, eve) = (heard.next().unwrap(), heard.next().unwrap());
    assert!(bob["signals"]["InterfacesAdded"].as_u64().unwrap_or(0) >= 1, "{bob}");
    assert_eq!(bob["signals"].get("TokenDecoded"), None, "another operator received the tokens: {bob}");
    assert_eq!(eve["signals"], serde_json::json!({}), "a stranger received the daemon's signals: {eve}");

    // busctl and dbus-send: an operator starts a looping session and stops it.
    let started = as_user(
        Some(&w.alice),
        "busctl",
        &[
            "--address",
            &bus.address,
            "--json=short",
            "call",
            NAME,
            "/org/bci2token",
            NAME,
            "StartSession",
            "sa{sv}a{sv}",
            "synthetic",
            "1",
            "script",
            "s",
            "13Hz:1,rest:1",
            "0",
        ],
    );
    assert!(started.status.success(), "{}", text(&started));
    let reply: serde_json::Value = serde_json::from_slice(&started.stdout).unwrap();
    let path = reply["data"][0].as_str().unwrap().to_string();
    assert!(path.starts_with("/org/bci2token/session/"), "{reply}");
    let state = || {
        let out = as_user(
            Some(&w.alice),
            "busctl",
            &["--address", &bus.address, "get-property", NAME, &path, "org.bci2token.Session1", "State"],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_until("the session to run", Duration::from_secs(10), || state() == "s \"running\"");
    let stop = as_user(
        Some(&w.alice),
        "dbus-send",
        &[
            &format!("--bus={}", bus.address),
            "--print-reply",
            &format!("--dest={NAME}"),
            &path,
            "org.bci2token.Session1.Stop",
        ],
    );
    assert!(stop.status.success(), "{}", text(&stop));
    wait_until("the State property to say stopped", Duration::from_secs(5), || state() == "s \"stopped\"");
    drop(daemon);
}

#[test]
fn the_bus_refuses_by_role_and_ownership_and_audits_every_refusal() {
    let Some(w) = world() else { return };
    stage_python_client(&w.bob);
    let bus = PrivateBus::system_like(OPERATOR_GROUP, ADMIN_GROUP);
    let daemon = bus_daemon(&bus, "");

    // Another uid cannot take the name (the policy lets only the daemon's user and root own it).
    let own = as_user(
        Some(&w.alice),
        "dbus-send",
        &[
            &format!("--bus={}", bus.address),
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            &format!("string:{NAME}"),
            "uint32:0",
        ],
    );
    assert!(!own.status.success() && text(&own).contains("AccessDenied"), "{}", text(&own));

    // A stranger learns nothing of the sessions from the bus: no introspection (which lists the
    // session objects), no properties.
    for args in [
        vec!["--address", bus.address.as_str(), "introspect", NAME, "/org/bci2token"],
        vec!["--address", bus.address.as_str(), "get-property", NAME, "/org/bci2token", NAME, "ActiveSessions"],
    ] {
        let out = as_user(Some(&w.eve), "busctl", &args);
        assert!(!out.status.success() && text(&out).contains("denied"), "{args:?}: {}", text(&out));
    }

    // A stranger: operator and admin methods refused with the named error.
    for (method, args) in [
        ("ListSessions", vec![]),
        ("Drivers", vec![]),
        ("StopSession", vec!["nope"]),
        ("VerifyAudit", vec![]),
        ("RotateKey", vec![]),
    ] {
        let out = gdbus(Some(&w.eve), &bus, "/org/bci2token", &format!("org.bci2token.Daemon1.{method}"), &args);
        assert!(!out.status.success(), "{method}: {}", text(&out));
        assert!(text(&out).contains("org.bci2token.Error.PermissionDenied"), "{method}: {}", text(&out));
    }
    // Health is anyone's (their own sessions only); the metrics are the operators'.
    let out = gdbus(Some(&w.eve), &bus, "/org/bci2token", "org.bci2token.Daemon1.Health", &[]);
    assert!(out.status.success() && text(&out).contains("'verdict'"), "{}", text(&out));
    let out = gdbus(Some(&w.eve), &bus, "/org/bci2token", "org.bci2token.Daemon1.Metrics", &[]);
    assert!(text(&out).contains("org.bci2token.Error.PermissionDenied"), "{}", text(&out));
    let out = gdbus(Some(&w.alice), &bus, "/org/bci2token", "org.bci2token.Daemon1.Metrics", &[]);
    assert!(out.status.success() && text(&out).contains("bci2token_build_info"), "{}", text(&out));
    // An operator: admin methods refused, with the group to join in the message.
    for method in ["RotateKey", "VerifyAudit"] {
        let out = gdbus(Some(&w.alice), &bus, "/org/bci2token", &format!("org.bci2token.Daemon1.{method}"), &[]);
        assert!(text(&out).contains("org.bci2token.Error.PermissionDenied"), "{method}: {}", text(&out));
        assert!(text(&out).contains(ADMIN_GROUP), "{method}: {}", text(&out));
    }
    // Methods that take dictionaries, lists or descriptors are the members' alone: the bus itself
    // refuses a stranger (the daemon would decode the message before it could refuse it).
    let out = gdbus(
        Some(&w.eve),
        &bus,
        "/org/bci2token",
        "org.bci2token.Daemon1.StartSession",
        &["synthetic", "{'script': <'13Hz:1'>}", "{}"],
    );
    assert!(text(&out).contains("org.freedesktop.DBus.Error.AccessDenied"), "{}", text(&out));
    // Nor does a stranger pass a descriptor, to any method; a member's reaches the daemon (which
    // refuses these arguments for this method itself).
    stage_python_client(&w.eve);
    let lines = python_client(&w.eve, &bus, &["passfd", "DeleteSession"]);
    assert_eq!(lines[0]["error"], "org.freedesktop.DBus.Error.AccessDenied", "{lines:?}");
    let lines = python_client(&w.alice, &bus, &["passfd", "DeleteSession"]);
    assert!(lines[0]["message"].as_str().unwrap().contains("Signature mismatch"), "the daemon's own answer: {lines:?}");
    let out = gdbus(Some(&w.alice), &bus, "/org/bci2token", "org.bci2token.Daemon1.ShowSession", &["nope"]);
    assert!(text(&out).contains("org.bci2token.Error.NotFound"), "{}", text(&out));

    // Alice's session: Bob may neither stream it nor subscribe to it nor stop it.
    let started = gdbus(
        Some(&w.alice),
        &bus,
        "/org/bci2token",
        "org.bci2token.Daemon1.StartSession",
        &["synthetic", "{'script': <'13Hz:1,rest:1'>}", "{}"],
    );
    assert!(started.status.success(), "{}", text(&started));
    let path = text(&started).split('\'').nth(1).unwrap().to_string();
    assert!(path.starts_with("/org/bci2token/session/"), "{}", text(&started));
    let id = path.rsplit('/').next().unwrap().to_string();
    for method in ["OpenStream", "Subscribe", "Stop"] {
        let args: &[&str] = if method == "OpenStream" { &["{}"] } else { &[] };
        let out = gdbus(Some(&w.bob), &bus, &path, &format!("org.bci2token.Session1.{method}"), args);
        assert!(text(&out).contains("org.bci2token.Error.PermissionDenied"), "{method}: {}", text(&out));
        assert!(text(&out).contains("belongs to another user"), "{method}: {}", text(&out));
    }
    let lines = python_client(&w.bob, &bus, &["subscribe", &path]);
    assert_eq!(lines[0]["error"], "org.bci2token.Error.PermissionDenied", "{lines:?}");
    // Its owner may stream it.
    stage_python_client(&w.alice);
    let stop_later = {
        let (bus_address, path) = (bus.address.clone(), path.clone());
        let alice = w.alice.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            as_user(
                Some(&alice),
                "dbus-send",
                &[
                    &format!("--bus={bus_address}"),
                    "--print-reply",
                    &format!("--dest={NAME}"),
                    &path,
                    "org.bci2token.Session1.Stop",
                ],
            )
        })
    };
    let lines = python_client(&w.alice, &bus, &["stream", &path]);
    assert!(stop_later.join().unwrap().status.success());
    assert!(lines[0]["events"].as_u64().unwrap() > 5, "{lines:?}");
    assert_eq!(lines[0]["last"]["type"], "state", "{lines:?}");
    assert_eq!(lines[0]["last"]["state"], "stopped", "{lines:?}");

    // Every refusal is in the audit log, with the uid that asked.
    let entries = audit(&daemon, &w.admin);
    let refused = |uid: u32, action: &str| {
        entries
            .iter()
            .any(|e| e["uid"] == uid && e["action"] == action && e["outcome"].as_str().unwrap().starts_with("refused"))
    };
    for action in ["session_list", "drivers", "session_stop", "audit_verify", "key_rotate"] {
        assert!(refused(w.eve.uid, action), "eve's {action} refusal is audited: {entries:#?}");
    }
    assert!(refused(w.alice.uid, "key_rotate") && refused(w.alice.uid, "audit_verify"), "{entries:#?}");
    let bobs_follows = entries
        .iter()
        .filter(|e| e["uid"] == w.bob.uid && e["action"] == "follow" && e["object"] == id.as_str())
        .filter(|e| e["outcome"].as_str().unwrap().starts_with("refused"))
        .count();
    assert_eq!(bobs_follows, 3, "OpenStream, Subscribe and the Python Subscribe, each audited: {entries:#?}");
    assert!(refused(w.bob.uid, "session_stop"), "{entries:#?}");
    assert!(entries.iter().any(|e| e["uid"] == w.alice.uid && e["action"] == "follow" && e["object"] == id.as_str()));
}

#[test]
fn a_recording_only_its_owner_can_read_replays_through_a_descriptor_passed_over_the_bus() {
    let Some(w) = world() else { return };
    stage_python_client(&w.alice);
    let bus = PrivateBus::system_like(OPERATOR_GROUP, ADMIN_GROUP);
    let daemon = bus_daemon(&bus, "");
    let tmp = TempDir::new("bus-replay");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let edf = std::fs::read(data_dir().join("eegmmidb/S001R04.edf")).unwrap();
    let home = home_of(&tmp, &w.alice, &[("private.edf", &edf)]);
    let file = home.join("private.edf");
    let lines = python_client(&w.alice, &bus, &["replay", &file.display().to_string()]);
    let info = &lines[0]["info"];
    assert_eq!(info["driver"], "replay", "{lines:?}");
    assert_eq!(info["channels"].as_array().unwrap().len(), 64, "{lines:?}");
    let id = info["id"].as_str().unwrap();
    wait_until("the replay to finish", Duration::from_secs(60), || {
        let s = w.alice.ctl_json(&daemon, &["session", "show", id]);
        s["state"] == "finished"
    });
    let shown = w.alice.ctl_json(&daemon, &["session", "show", id]);
    assert!(shown["frames"].as_u64().unwrap() >= 19_000, "{shown}");
    // By path, the system daemon opens nothing for a caller, over the bus as on the socket.
    let by_path = gdbus(
        Some(&w.alice),
        &bus,
        "/org/bci2token",
        "org.bci2token.Daemon1.StartSession",
        &["replay", &format!("{{'path': <'{}'>}}", file.display()), "{}"],
    );
    assert!(text(&by_path).contains("org.bci2token.Error.PermissionDenied"), "{}", text(&by_path));
    assert!(text(&by_path).contains("pass the file as a descriptor"), "{}", text(&by_path));
}

/// Our interfaces as the live objects introspect them equal docs/dbus/*.xml
/// (`BCI2TOKEN_BLESS=1` rewrites the files from the live daemon).
#[test]
fn live_introspection_equals_the_checked_in_interface_xml() {
    if !as_root("the D-Bus tests (the bus policy lets root own the name)") {
        return;
    }
    let bus = PrivateBus::system_like("bci2token", "bci2token-admin");
    let d =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), bus.address.clone())], ..Default::default() });
    assert!(d.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)), "{}", d.log());
    let started = d.ctl_json(&["session", "start", "--driver", "synthetic", "--set", "script=13Hz:1"]);
    let path = format!("/org/bci2token/session/{}", started["id"].as_str().unwrap());
    for (object, interface) in [("/org/bci2token", "org.bci2token.Daemon1"), (path.as_str(), "org.bci2token.Session1")]
    {
        let out = Command::new("dbus-send")
            .args([
                &format!("--bus={}", bus.address),
                "--print-reply=literal",
                &format!("--dest={NAME}"),
                object,
                "org.freedesktop.DBus.Introspectable.Introspect",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let introspected = String::from_utf8_lossy(&out.stdout).to_string();
        let live = interface_xml(&introspected, interface);
        let file = workspace_root().join(format!("docs/dbus/{interface}.xml"));
        let live_file = format!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<!-- {interface}: see docs/dbus.md. \
             Checked against the live daemon by tests/tests/dbus.rs. -->\n<node>\n  {}\n</node>\n",
            element(&introspected, interface).trim()
        );
        if std::env::var_os("BCI2TOKEN_BLESS").is_some() {
            std::fs::write(&file, &live_file).unwrap();
        }
        let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(
            interface_xml(&checked_in, interface),
            live,
            "{} differs from the live introspection of {object}; if the change is intended, rerun with BCI2TOKEN_BLESS=1",
            file.display()
        );
    }
}

/// The `<interface name="NAME">…</interface>` element of an introspection.
fn element<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml.find(&format!("<interface name=\"{name}\">")).unwrap_or_else(|| panic!("no {name} in {xml}"));
    let end = start + xml[start..].find("</interface>").unwrap() + "</interface>".len();
    &xml[start..end]
}

/// [`element`] with each line trimmed (indentation is not part of the interface).
fn interface_xml(xml: &str, name: &str) -> String {
    element(xml, name).lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

/// What one `bci2tokenctl` run printed.
#[derive(Debug, PartialEq)]
struct Printed {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn printed(out: Output) -> Printed {
    Printed {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Lines of `text` without those containing any of `volatile` (an uptime, a time stamp).
fn steady(text: &str, volatile: &[&str]) -> String {
    text.lines().filter(|l| !volatile.iter().any(|v| l.contains(v))).collect::<Vec<_>>().join("\n")
}

/// `bci2tokenctl --bus` and the socket print the same for every command: the same bytes on
/// stdout and stderr and the same exit status, in human and in JSON form. Where the daemon's
/// state moves between two calls (an uptime, the audit entry the first call added, a new session's
/// id, an output file's name), the test says which part it leaves out.
#[test]
fn bci2tokenctl_prints_the_same_over_the_bus_and_the_socket() {
    if !as_root("the D-Bus tests (the bus policy lets root own the name)") {
        return;
    }
    let bus = PrivateBus::system_like("bci2token", "bci2token-admin");
    let d =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), bus.address.clone())], ..Default::default() });
    assert!(d.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)), "{}", d.log());
    let tmp = TempDir::new("bus-parity");
    let socket = |args: &[&str]| printed(d.ctl(args));
    let over_bus = |args: &[&str]| {
        let flag = format!("--bus={}", bus.address);
        let mut full = vec![flag.as_str()];
        full.extend_from_slice(args);
        let mut cmd = Command::new(bci2token_tests::bin_dir().join("bci2tokenctl"));
        printed(cmd.args(&full).output().unwrap())
    };
    let both = |args: &[&str]| (socket(args), over_bus(args));
    let same = |args: &[&str]| {
        let (s, b) = both(args);
        assert_eq!(s, b, "bci2tokenctl {args:?}: the bus printed otherwise than the socket");
        assert_eq!(s.code, Some(0), "bci2tokenctl {args:?}: {s:?}");
        s
    };
    // Two finished sessions, one started through each door (their ids differ, nothing else).
    let start = ["session", "start", "--driver", "synthetic", "--set", "script=13Hz:0.5", "--set", "loop=false"];
    let (s, b) = both(&start);
    assert_eq!((s.code, b.code), (Some(0), Some(0)), "{s:?} {b:?}");
    let (id_s, id_b) = (s.stdout.trim().to_string(), b.stdout.trim().to_string());
    assert!(id_s.len() == 12 && id_b.len() == 12 && id_s != id_b, "{s:?} {b:?}");
    wait_until("both sessions to finish", Duration::from_secs(20), || {
        [&id_s, &id_b].iter().all(|id| d.ctl_json(&["session", "show", id])["state"] == "finished")
    });
    let (s, b) = both(&["--json", "session", "show", &id_s]);
    assert_eq!(s, b);
    let (s2, b2) = both(&["--json", "session", "show", &id_b]);
    assert_eq!(s2, b2);
    // Started through either door, the sessions are alike but for their ids, times and the pid.
    let alike = |text: &str, id: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        for k in ["id", "created"] {
            v[k] = serde_json::Value::Null;
        }
        v["started_by"]["pid"] = serde_json::Value::Null;
        assert!(text.contains(id));
        v
    };
    assert_eq!(alike(&s.stdout, &id_s), alike(&b2.stdout, &id_b), "a session started over the bus is the same session");

    for args in [
        vec!["drivers"],
        vec!["--json", "drivers"],
        vec!["devices", "--driver", "synthetic"],
        vec!["--json", "devices", "--driver", "synthetic"],
        vec!["models"],
        vec!["--json", "models"],
        vec!["session", "list"],
        vec!["--json", "session", "list"],
        vec!["session", "show", &id_s],
        vec!["session", "stop", &id_s],
        vec!["--json", "session", "stop", &id_s],
        vec!["key", "rotate"],
        vec!["--json", "key", "rotate"],
    ] {
        same(&args);
    }
    // Verifying the audit log: the bus counts one entry more, the socket's own verification.
    let (s, b) = both(&["--json", "audit", "verify"]);
    let (s, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&s.stdout).unwrap(), serde_json::from_str(&b.stdout).unwrap());
    assert_eq!(b["entries"].as_u64(), s["entries"].as_u64().map(|n| n + 1));
    assert_eq!((&s["intact"], &s["problem"]), (&b["intact"], &b["problem"]));
    let (s, b) = both(&["audit", "verify"]);
    let n = |t: &str| t.split_whitespace().find_map(|w| w.parse::<u64>().ok()).unwrap();
    assert_eq!(n(&b.stdout), n(&s.stdout) + 1);
    assert_eq!(s.stdout.replace(&n(&s.stdout).to_string(), "N"), b.stdout.replace(&n(&b.stdout).to_string(), "N"));
    // Status: all but the uptime.
    for json in [false, true] {
        let args: &[&str] = if json { &["--json", "status"] } else { &["status"] };
        let (s, b) = both(args);
        let volatile = if json { vec![] } else { vec!["Uptime"] };
        if json {
            let strip = |t: &str| {
                let mut v: serde_json::Value = serde_json::from_str(t).unwrap();
                v["uptime_seconds"] = serde_json::Value::Null;
                v
            };
            assert_eq!(strip(&s.stdout), strip(&b.stdout));
        } else {
            assert_eq!(steady(&s.stdout, &volatile), steady(&b.stdout, &volatile));
        }
        assert_eq!((s.code, &s.stderr), (b.code, &b.stderr));
    }
    // Health: all but the uptime and the store's size (the audit log grows with every call); the
    // store's facts are the same cached read. The metrics: the same families either way.
    for json in [false, true] {
        let args: &[&str] = if json { &["--json", "health"] } else { &["health"] };
        let (s, b) = both(args);
        assert_eq!((s.code, b.code), (Some(0), Some(0)), "{s:?} {b:?}");
        if json {
            let strip = |t: &str| {
                let mut v: serde_json::Value = serde_json::from_str(t).unwrap();
                v["uptime_seconds"] = serde_json::Value::Null;
                for k in ["size_bytes", "wal_bytes", "free_bytes"] {
                    v["store"][k] = serde_json::Value::Null;
                }
                v
            };
            assert_eq!(strip(&s.stdout), strip(&b.stdout));
            assert_eq!(strip(&s.stdout)["verdict"], "ok", "{}", s.stdout);
        } else {
            let volatile = ["Uptime", "Store"];
            assert_eq!(steady(&s.stdout, &volatile), steady(&b.stdout, &volatile));
        }
    }
    let (s, b) = both(&["metrics"]);
    assert_eq!((s.code, b.code), (Some(0), Some(0)), "{s:?} {b:?}");
    let families = |t: &str| t.lines().filter(|l| l.starts_with("# TYPE ")).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(families(&s.stdout), families(&b.stdout));
    assert!(s.stdout.contains("bci2token_build_info{version="), "{}", s.stdout);
    // The audit log: the bus sees one entry more, the socket's own listing.
    let (s, b) = both(&["--json", "audit", "list"]);
    let (s, b): (Vec<serde_json::Value>, Vec<serde_json::Value>) =
        (serde_json::from_str(&s.stdout).unwrap(), serde_json::from_str(&b.stdout).unwrap());
    assert_eq!(b.len(), s.len() + 1);
    assert_eq!(b[..s.len()], s[..]);
    // Errors: the same message and exit status.
    for args in [
        vec!["session", "show", "000000000000"],
        vec!["--json", "session", "show", "000000000000"],
        vec!["follow", &id_s],
        vec!["session", "start", "--driver", "nope"],
        vec!["session", "start", "--driver", "synthetic", "--set", "_library=/x"],
        vec!["session", "start", "--driver", "synthetic", "--model", "no-such-model"],
    ] {
        let (s, b) = both(&args);
        assert_ne!(s.code, Some(0), "{args:?}: {s:?}");
        assert_eq!(s, b, "bci2tokenctl {args:?}: the bus printed otherwise than the socket");
    }
    // Files: exports and backups are written by bci2tokenctl through descriptors either way.
    for (format, json) in [("edf", false), ("csv", true)] {
        let (fs, fb) = (tmp.path().join(format!("s.{format}")), tmp.path().join(format!("b.{format}")));
        let mut args_s = vec!["export", &id_s, "--format", format, "--output"];
        let fs_text = fs.display().to_string();
        args_s.push(&fs_text);
        let fb_text = fb.display().to_string();
        let mut args_b = args_s.clone();
        *args_b.last_mut().unwrap() = &fb_text;
        if json {
            args_s.insert(0, "--json");
            args_b.insert(0, "--json");
        }
        let (s, b) = (socket(&args_s), over_bus(&args_b));
        assert_eq!(s.code, Some(0), "{s:?}");
        assert_eq!(s.stdout.replace(&fs_text, "FILE"), b.stdout.replace(&fb_text, "FILE"));
        assert_eq!(std::fs::read(&fs).unwrap(), std::fs::read(&fb).unwrap(), "{format}: the same bytes");
    }
    let (bs, bb) = (tmp.path().join("s.backup"), tmp.path().join("b.backup"));
    let (s, b) = (socket(&["backup", &bs.display().to_string()]), over_bus(&["backup", &bb.display().to_string()]));
    assert_eq!(s.code, Some(0), "{s:?}");
    assert_eq!(
        s.stdout.replace(&bs.display().to_string(), "FILE"),
        b.stdout.replace(&bb.display().to_string(), "FILE")
    );
    // Deleting (one session through each door): the same words about each.
    let (s, b) = (socket(&["session", "delete", &id_s]), over_bus(&["session", "delete", &id_b]));
    assert_eq!(s.stdout.replace(&id_s, "ID"), b.stdout.replace(&id_b, "ID"));
    assert_eq!((s.code, b.code), (Some(0), Some(0)));
    // A follow over the bus streams the same events as over the socket.
    let start = [
        "--json",
        "session",
        "start",
        "--driver",
        "synthetic",
        "--set",
        "script=13Hz:0.5",
        "--set",
        "loop=false",
        "--follow",
    ];
    let (s, b) = both(&start);
    assert_eq!((s.code, b.code), (Some(0), Some(0)), "{s:?} {b:?}");
    let kinds = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
            .collect()
    };
    assert_eq!(kinds(&s.stdout), kinds(&b.stdout));
    assert_eq!(kinds(&b.stdout).last().map(String::as_str), Some("\"state\""), "{b:?}");
    assert!(kinds(&b.stdout).len() >= 3, "{b:?}");
    // A model package, installed by an admin through either door (replacing the one before).
    let package = workspace_root().join("models/ssvep-fbcca-3").display().to_string();
    let (s, b) = both(&["model", "install", &package, "--replace"]);
    assert_eq!(s.code, Some(0), "{s:?}");
    assert_eq!(s, b);
    // An evaluation (many sessions, a recording passed to each): the same report, but for the ids.
    let recording = std::fs::read_dir(data_dir().join("ssvep"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("subject03"))
        .unwrap();
    let evaluate = [
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
    ];
    let mut args = evaluate.to_vec();
    let recording = recording.display().to_string();
    args.push(&recording);
    let (s, b) = both(&args);
    assert_eq!(s.code, Some(0), "{s:?}");
    let without_ids = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        strip(&mut v, "session");
        v
    };
    assert_eq!(without_ids(&s.stdout), without_ids(&b.stdout));
    assert_eq!(without_ids(&b.stdout)["files"][0]["trials"], 24, "{}", b.stdout);
    assert_eq!(s.stderr, b.stderr);
    // Restoring: no session runs now.
    let (s, b) = (socket(&["restore", &bs.display().to_string()]), over_bus(&["restore", &bs.display().to_string()]));
    assert_eq!((s.code, &s.stdout, &s.stderr), (b.code, &b.stdout, &b.stderr));
}

/// Files the polkit test puts on the machine, taken away again when it ends.
struct Installed(Vec<PathBuf>);

impl Drop for Installed {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// polkit, for real: polkitd on the private bus with the project's actions and a local rule that
/// grants one action to one operator. That operator may then do that admin operation over the
/// bus (audited as admin by polkit); another operator, and the same operator for another action,
/// are refused as before.
#[test]
fn polkit_grants_an_admin_action_to_whom_its_rules_say() {
    let Some(w) = world() else { return };
    let polkitd = Path::new("/usr/lib/polkit-1/polkitd");
    assert!(polkitd.exists(), "polkitd is missing (Debian: polkitd; tools/setup installs it)");
    let actions = PathBuf::from("/usr/share/polkit-1/actions/org.bci2token.policy");
    let rules = PathBuf::from("/etc/polkit-1/rules.d/49-bci2token-test.rules");
    let _installed = Installed(vec![actions.clone(), rules.clone()]);
    std::fs::copy(workspace_root().join("systemd/org.bci2token.policy"), &actions).unwrap();
    std::fs::write(
        &rules,
        format!(
            "polkit.addRule(function(action, subject) {{\n  if (action.id == \"org.bci2token.key.rotate\" && \
             subject.user == \"{}\") {{ return polkit.Result.YES; }}\n}});\n",
            w.alice.name
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bus = PrivateBus::system_like_with(
        OPERATOR_GROUP,
        ADMIN_GROUP,
        &["/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"],
    );
    let mut polkit = Command::new(polkitd)
        .arg("--no-debug")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("polkitd on the bus", Duration::from_secs(20), || {
        let out = as_user(
            None,
            "busctl",
            &[
                "--address",
                &bus.address,
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                "org.freedesktop.PolicyKit1",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "b true"
    });
    // polkit is asked on the system bus only (where only polkitd may own its name): the private
    // bus stands in for it.
    let daemon =
        system_daemon_with_env("bus = \"system\"\n", vec![("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone())]);
    assert!(daemon.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)), "{}", daemon.log());
    let rotate = gdbus(Some(&w.alice), &bus, "/org/bci2token", "org.bci2token.Daemon1.RotateKey", &[]);
    assert!(rotate.status.success(), "the rule grants alice key rotation: {}\n{}", text(&rotate), daemon.log());
    assert!(text(&rotate).contains("rewrapped_sessions"), "{}", text(&rotate));
    for (user, method) in [(&w.bob, "RotateKey"), (&w.alice, "VerifyAudit"), (&w.eve, "RotateKey")] {
        let out = gdbus(Some(user), &bus, "/org/bci2token", &format!("org.bci2token.Daemon1.{method}"), &[]);
        assert!(text(&out).contains("org.bci2token.Error.PermissionDenied"), "{} {method}: {}", user.name, text(&out));
    }
    // On the socket, polkit has no say: the groups decide.
    let out = w.alice.ctl(&daemon, &["key", "rotate"]);
    assert!(!out.status.success() && text(&out).contains("needs the admin role"), "{}", text(&out));
    let entries = audit(&daemon, &w.admin);
    assert!(
        entries
            .iter()
            .any(|e| e["uid"] == w.alice.uid && e["action"] == "key_rotate" && e["outcome"] == "ok (admin by polkit)"),
        "{entries:#?}"
    );
    assert!(entries.iter().any(|e| e["uid"] == w.bob.uid
        && e["action"] == "key_rotate"
        && e["outcome"].as_str().unwrap().starts_with("refused")));
    // The same bus named by its address: polkit is not trusted there, the groups decide.
    drop(daemon);
    let daemon = bus_daemon(&bus, "");
    let out = gdbus(Some(&w.alice), &bus, "/org/bci2token", "org.bci2token.Daemon1.RotateKey", &[]);
    assert!(text(&out).contains("org.bci2token.Error.PermissionDenied"), "{}", text(&out));
    assert!(!daemon.log().contains("polkit authorized"), "{}", daemon.log());
    let _ = polkit.kill();
    let _ = polkit.wait();
}

/// docs/examples/dbus_speller.py, as docs/dbus.md tells an app developer to run it, spells what
/// the session spells and ends with the logit bias of the last letter.
#[test]
fn the_documented_python_example_spells_a_session() {
    let Some(w) = world() else { return };
    stage_python_client(&w.alice);
    let example = w.alice.stage.join("dbus_speller.py");
    std::fs::copy(workspace_root().join("docs/examples/dbus_speller.py"), &example).unwrap();
    std::fs::set_permissions(&example, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bus = PrivateBus::system_like(OPERATOR_GROUP, ADMIN_GROUP);
    let _daemon = bus_daemon(&bus, "");
    let script = Command::new("python3")
        .arg(workspace_root().join("tools/speller_demo.py"))
        .args(["script", &workspace_root().join("models/speller-40").display().to_string(), "ab"])
        .output()
        .unwrap();
    let script = String::from_utf8(script.stdout).unwrap();
    let config = format!("{{'script': <'{}'>, 'loop': <false>}}", script.trim().replace('\'', "\\'"));
    let started = gdbus(
        Some(&w.alice),
        &bus,
        "/org/bci2token",
        "org.bci2token.Daemon1.StartSession",
        &["synthetic", &config, "{'model': <'speller-40'>}"],
    );
    assert!(started.status.success(), "{}", text(&started));
    let path = text(&started).split('\'').nth(1).unwrap().to_string();
    let mut cmd = w.alice.setpriv(Path::new("/usr/bin/python3"));
    cmd.arg(&example).args(["--bus", &bus.address, &path]).env("PYTHONPATH", w.alice.stage.join("py"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["text"], "ab", "{}", text(&out));
    let bias = last["logit_bias"].as_object().unwrap();
    let top = bias.iter().max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap()).unwrap();
    assert_eq!(top.0, "65", "gpt2's id of \"b\" has the largest bias: {bias:?}");
}

/// Without a bus the daemon serves its socket alone, and says so.
#[test]
fn without_a_bus_the_daemon_runs_with_its_socket_only() {
    let tmp = TempDir::new("no-bus");
    let address = format!("unix:path={}", tmp.path().join("nothing-here").display());
    let d = start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), address)], ..Default::default() });
    assert!(d.wait_log("running with the control socket only", Duration::from_secs(10)), "{}", d.log());
    assert_eq!(d.ctl_json(&["status"])["mode"], "user");
    let off = start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), "none".into())], ..Default::default() });
    assert!(off.wait_log("D-Bus: off", Duration::from_secs(10)), "{}", off.log());
}

/// Removes every `key` from a JSON document (ids that differ between two runs).
fn strip(v: &mut serde_json::Value, key: &str) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|v| strip(v, key));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| strip(v, key)),
        _ => {}
    }
}

/// The bus may come later than the daemon, or go and come back: the daemon serves its socket
/// meanwhile and takes its name again when the bus is there.
#[test]
fn the_door_comes_back_when_the_bus_does() {
    if !as_root("the D-Bus tests (the bus policy lets root own the name)") {
        return;
    }
    let mut bus = PrivateBus::system_like("bci2token", "bci2token-admin");
    bus.stop();
    let d =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), bus.address.clone())], ..Default::default() });
    assert!(d.wait_log("running with the control socket only", Duration::from_secs(10)), "{}", d.log());
    assert_eq!(d.ctl_json(&["status"])["mode"], "user");
    let on_the_bus = || d.log().matches("D-Bus: org.bci2token.Daemon1 on").count();
    let version = |bus: &PrivateBus| {
        let out = as_user(
            None,
            "busctl",
            &["--address", &bus.address, "get-property", NAME, "/org/bci2token", NAME, "Version"],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    bus.restart();
    wait_until("the daemon on the bus that came", Duration::from_secs(30), || on_the_bus() == 1);
    assert_eq!(version(&bus), format!("s \"{}\"", env!("CARGO_PKG_VERSION")));
    bus.stop();
    wait_until("the daemon to notice the bus went", Duration::from_secs(30), || d.log().contains("is lost"));
    bus.restart();
    wait_until("the daemon back on the bus", Duration::from_secs(30), || on_the_bus() == 2);
    assert_eq!(version(&bus), format!("s \"{}\"", env!("CARGO_PKG_VERSION")));
}

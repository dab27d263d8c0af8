//! Bad input gets a clear error naming the input, and the daemon stays up where it should.

use std::time::Duration;

use bci2token_tests::{bin_dir, compile_c_library, data_dir, spawn_daemon, start_daemon, DaemonOptions, TempDir};

/// A plugin directory with the real drivers plus three files that must be refused.
fn plugin_dir_with_impostors() -> TempDir {
    let dir = TempDir::new("plugins");
    for lib in ["libbci2token_driver_replay.so", "libbci2token_driver_synthetic.so"] {
        std::os::unix::fs::symlink(bin_dir().join(lib), dir.path().join(lib)).unwrap();
    }
    // Exports the entry point, but its table header says ABI 99.0.
    compile_c_library(
        r#"
        struct header { unsigned major, minor, size; };
        static const struct header table = { 99, 0, 4096 };
        const void *bci2token_driver_entry(void) { return &table; }
        "#,
        &dir.path().join("libwrong_abi.so"),
    );
    // A perfectly good shared library that is not a driver.
    compile_c_library("int add(int a, int b) { return a + b; }\n", &dir.path().join("libnot_a_plugin.so"));
    std::fs::write(dir.path().join("junk.so"), b"this is not an ELF file").unwrap();
    dir
}

#[test]
fn wrong_abi_and_non_plugins_are_refused_and_the_rest_load() {
    let plugins = plugin_dir_with_impostors();
    let daemon =
        start_daemon(DaemonOptions { driver_path: Some(plugins.path().display().to_string()), ..Default::default() });
    let list = daemon.ctl_json(&["drivers"]);
    let names: Vec<&str> = list["drivers"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["replay", "synthetic"]);
    let failed = list["failed"].as_array().unwrap();
    let error_of = |file: &str| -> String {
        failed
            .iter()
            .find(|f| f["file"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("{file} not reported: {list}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let wrong = error_of("libwrong_abi.so");
    assert!(wrong.contains("driver ABI 99.0 is not supported") && wrong.contains("ABI 1."), "{wrong}");
    assert!(error_of("libnot_a_plugin.so").contains("not a bci2token driver plugin"));
    assert!(error_of("junk.so").contains("cannot be loaded as a shared library"));
    // The log says the same, for an administrator reading the journal.
    assert!(daemon.log().contains("libwrong_abi.so: driver ABI 99.0"), "{}", daemon.log());
    // A plugin that is a symbolic link (as a package's `libfoo.so -> libfoo.so.1`) runs in its
    // driver host, whose sandbox lets it read where the link leads.
    let id = daemon.ctl_json(&["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while daemon.ctl_json(&["session", "show", &id])["blocks"].as_u64() == Some(0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = daemon.ctl_json(&["session", "show", &id]);
    assert!(show["state"] == "running" && show["blocks"].as_u64() > Some(0), "{show}");
}

#[test]
fn bad_config_key_or_value_stops_startup_naming_it() {
    let mut d = spawn_daemon(DaemonOptions { config: Some("max_session = 3\n".into()), ..Default::default() });
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(78));
    assert!(d.log().contains("unknown key `max_session`"), "{}", d.log());
    assert!(!d.notify.lines().iter().any(|l| l == "READY=1"));

    let mut d = spawn_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_LOG_LEVEL".into(), "chatty".into())],
        ..Default::default()
    });
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(78));
    assert!(d.log().contains("BCI2TOKEN_LOG_LEVEL") && d.log().contains("chatty"), "{}", d.log());
}

#[test]
fn a_taken_socket_path_is_refused() {
    let first = start_daemon(DaemonOptions::default());
    let mut second = spawn_daemon(DaemonOptions { runtime_dir: Some(first.runtime_dir.clone()), ..Default::default() });
    assert_eq!(second.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(second.log().contains("another bci2tokend is already listening"), "{}", second.log());
    // The first daemon is untouched.
    assert_eq!(first.ctl_json(&["status"])["mode"], "user");

    let dir = TempDir::new("notsocket");
    std::fs::write(dir.path().join("control.sock"), "a regular file").unwrap();
    let mut third = spawn_daemon(DaemonOptions { runtime_dir: Some(dir.path().to_path_buf()), ..Default::default() });
    assert_eq!(third.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(third.log().contains("exists and is not a socket"), "{}", third.log());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("control.sock")).unwrap(),
        "a regular file",
        "nothing is deleted"
    );
}

#[test]
fn a_stale_socket_from_a_crash_is_replaced() {
    let dir = TempDir::new("stale");
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("control.sock")).unwrap());
    let d = start_daemon(DaemonOptions { runtime_dir: Some(dir.path().to_path_buf()), ..Default::default() });
    assert_eq!(d.ctl_json(&["status"])["mode"], "user");
}

#[test]
fn malformed_recordings_and_bad_session_config_are_refused_and_the_daemon_stays_up() {
    let daemon = start_daemon(DaemonOptions::default());
    let tmp = TempDir::new("malformed");
    let bytes = std::fs::read(data_dir().join("eegmmidb/S001R04.edf")).unwrap();
    let truncated = tmp.path().join("truncated.edf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut bad_field = bytes.clone();
    bad_field[236..244].copy_from_slice(b"12x     ");
    let non_numeric = tmp.path().join("non-numeric.edf");
    std::fs::write(&non_numeric, &bad_field).unwrap();

    for (file, must_mention) in [(&truncated, "truncated"), (&non_numeric, "offset 236")] {
        let arg = format!("path={}", file.display());
        let out = daemon.ctl(&["session", "start", "--driver", "replay", "--set", &arg]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&file.display().to_string()) && err.contains(must_mention), "{err}");
    }

    let arg = format!("path={}", truncated.display());
    let out = daemon.ctl(&["session", "start", "--driver", "replay", "--set", &arg, "--set", "sped=0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no config key `sped`") && err.contains("speed"), "{err}");
    let out = daemon.ctl(&["session", "start", "--driver", "replay", "--set", "path=/no/such.edf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--set path: /no/such.edf") && err.contains("No such file"), "{err}");
    let out = daemon.ctl(&["session", "start", "--driver", "synthetic", "--set", "channels=0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("channels"), "{err}");
    let out = daemon.ctl(&["session", "start", "--driver", "nonesuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("loaded drivers: brainflow, lsl, openbci, replay, synthetic"),
        "{err}"
    );

    assert_eq!(daemon.ctl_json(&["status"])["sessions_total"], 0, "nothing half-started was kept");
}

#[test]
fn ctl_says_when_the_daemon_is_not_running() {
    let tmp = TempDir::new("nodaemon");
    let sock = tmp.path().join("control.sock");
    let out = std::process::Command::new(bin_dir().join("bci2tokenctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.contains(&sock.display().to_string()) && err.contains("bci2tokend --user"),
        "{err}"
    );
}

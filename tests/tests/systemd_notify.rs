//! The systemd notification protocol as a service manager sees it, through a fake NOTIFY_SOCKET.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bci2token_tests::{start_daemon, DaemonOptions};
use nix::sys::signal::Signal;

#[test]
fn ready_status_and_socket_permissions() {
    let mut daemon = start_daemon(DaemonOptions::default());
    let lines = daemon.notify.lines().to_vec();
    assert!(lines.iter().any(|l| l.starts_with("STATUS=ready")), "{lines:?}");
    // READY=1 means the socket accepts connections: no retry needed.
    let status = daemon.ctl_json(&["status"]);
    assert_eq!(status["caller_role"], "admin");
    let mode = std::fs::metadata(&daemon.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "control socket mode");
    let dir_mode = std::fs::metadata(&daemon.runtime_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "a --user runtime directory is private");

    // The caller is identified by SO_PEERCRED and recorded with the session.
    let info = daemon.ctl_json(&["session", "start", "--driver", "synthetic"]);
    assert_eq!(info["started_by"]["uid"], nix::unistd::Uid::current().as_raw());
    assert!(info["started_by"]["pid"].as_i64().unwrap() > 0);
    assert!(
        daemon.notify.wait_for("STATUS=1 active session(s)", Duration::from_secs(5)),
        "{:?}",
        daemon.notify.lines()
    );

    daemon.signal(Signal::SIGINT);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(daemon.notify.lines().iter().any(|l| l == "STOPPING=1"));
}

#[test]
fn watchdog_pings_at_half_the_interval_only_for_its_own_pid() {
    // 200 ms watchdog, no WATCHDOG_PID (as some service managers do): pings every 100 ms.
    let mut daemon =
        start_daemon(DaemonOptions { env: vec![("WATCHDOG_USEC".into(), "200000".into())], ..Default::default() });
    std::thread::sleep(Duration::from_millis(1000));
    let pings = daemon.notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(pings >= 4, "expected about 10 pings in 1 s, got {pings}");

    // WATCHDOG_PID names another process: the watchdog is not ours, no pings.
    let mut other = start_daemon(DaemonOptions {
        env: vec![("WATCHDOG_USEC".into(), "200000".into()), ("WATCHDOG_PID".into(), "1".into())],
        ..Default::default()
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(!other.notify.lines().iter().any(|l| l == "WATCHDOG=1"), "{:?}", other.notify.lines());
}

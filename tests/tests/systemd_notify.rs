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

/// The watchdog means the daemon works, not only that its runtime answers: while another process
/// holds the store's write lock, the store writer makes no progress; the daemon stops feeding the
/// watchdog (systemd would restart it), names the thread in `status` and in its log, and feeds
/// the watchdog again once the lock is gone.
#[test]
fn a_stuck_store_writer_stops_the_watchdog_until_it_recovers() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    // A 2 s watchdog: pings every 1 s, a thread silent for more than 1 s is stuck.
    let mut daemon =
        start_daemon(DaemonOptions { env: vec![("WATCHDOG_USEC".into(), "2000000".into())], ..Default::default() });
    assert!(daemon.notify.wait_for("WATCHDOG=1", Duration::from_secs(5)), "{:?}", daemon.notify.lines());
    // (Threads at the lowest priority may be reported on a loaded machine; they are marked.)
    let foreground = |status: &serde_json::Value| -> Vec<String> {
        let all = status["stuck"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string());
        all.filter(|s| !s.contains("(background)")).collect()
    };
    assert_eq!(foreground(&daemon.ctl_json(&["status"])), Vec::<String>::new());
    // A recording session keeps the writer busy.
    let info = daemon.ctl_json(&["session", "start", "--driver", "synthetic"]);
    let id = info["id"].as_str().unwrap().to_string();

    // Another process takes the database's write lock and holds it.
    let python = std::env::var("BCI2TOKEN_PYTHON").unwrap_or_else(|_| "python3".into());
    let db = daemon.dir.path().join("data/sessions.db");
    let mut locker = Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             c.execute('COMMIT')\n",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(locker.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");

    // The writer is named in `status` (which never waits for the store) and in the log.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let stuck = loop {
        let stuck = daemon.ctl_json(&["status"])["stuck"].clone();
        if stuck.as_array().is_some_and(|a| !a.is_empty()) || std::time::Instant::now() > deadline {
            break stuck;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let names: Vec<&str> = stuck.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(names.iter().any(|s| s.starts_with("store-writer: no progress for")), "{stuck}");
    assert!(daemon.wait_log("watchdog: stuck: store-writer", Duration::from_secs(5)), "{}", daemon.log());
    assert!(
        daemon.notify.wait_for("STATUS=stuck: store-writer", Duration::from_secs(5)),
        "{:?}",
        daemon.notify.lines()
    );
    // No pings while it is stuck: a healthy daemon sends 4 in 4 s. (The writer beats briefly
    // between failed writes, each a 5 s wait for the lock, so one ping may slip through.)
    let pings = |d: &mut bci2token_tests::Daemon| d.notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count();
    let before = pings(&mut daemon);
    std::thread::sleep(Duration::from_secs(4));
    let during = pings(&mut daemon) - before;
    assert!(during <= 1, "{during} pings in 4 s while the store writer was stuck");

    // The lock goes: the writer catches up, the pings come back, status is clean again.
    writeln!(locker.stdin.as_mut().unwrap()).unwrap();
    assert!(locker.wait().unwrap().success());
    let before = pings(&mut daemon);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pings(&mut daemon) < before + 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pings(&mut daemon) >= before + 2, "the watchdog is fed again: {:?}", daemon.notify.lines());
    assert_eq!(foreground(&daemon.ctl_json(&["status"])), Vec::<String>::new());
    assert!(daemon.wait_log("every worker thread makes progress again", Duration::from_secs(5)));
    daemon.ctl_json(&["session", "stop", &id]);
}

/// A service manager that stops reading notifications (its socket's queue full) holds up
/// nothing: notifications are sent by a thread of their own. Each reload sends two state changes
/// (RELOADING=1, READY=1); the socket queues `net.unix.max_dgram_qlen` of them (10 by default,
/// 512 where systemd raised it), the daemon 64 more before it drops the oldest and says so. Had
/// the signal loop sent them itself, it would have stopped once the socket's queue was full.
#[test]
fn a_service_manager_that_does_not_read_notifications_holds_up_nothing() {
    let daemon = start_daemon(DaemonOptions::default());
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    let queued: usize = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|q| q.trim().parse().ok())
        .unwrap_or(10);
    let reloads = (queued + 64) / 2 + 10;
    let done = || daemon.log().matches("configuration reloaded").count();
    for n in 1..=reloads {
        nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done(), n, "reload {n} of {reloads} did not happen: {}", daemon.log());
    }
    assert!(daemon.log().contains("the service manager does not take notifications"), "{}", daemon.log());
    assert_eq!(daemon.ctl_json(&["status"])["sessions_active"], 0);
}

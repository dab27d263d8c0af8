//! Live sessions: follow, stop, list; SIGTERM with a session running; SIGHUP reload.

use std::time::Duration;

use bci2token_tests::{start_daemon, DaemonOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

fn lines_of(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn live_session_can_be_followed_and_stopped() {
    let mut daemon = start_daemon(DaemonOptions::default());
    let info = daemon.ctl_json(&["session", "start", "--driver", "synthetic", "--set", "script=13Hz:2,rest:1"]);
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["sample_rate"], 250.0);

    // A second follower sees stats (one per second) and the intents as annotations.
    let out = daemon.ctl(&["--json", "follow", &id, "--count", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = lines_of(&out);
    assert_eq!(events.len(), 5, "the reply plus 4 events: {events:?}");
    assert!(events[1..].iter().all(|e| e["type"] != "samples"), "no samples without --samples");
    let stats: Vec<&Value> = events.iter().filter(|e| e["type"] == "stats").collect();
    assert!(!stats.is_empty(), "{events:?}");
    for ch in stats[0]["channels"].as_array().unwrap() {
        let rms = ch["rms"].as_f64().unwrap();
        assert!(rms > 1.0 && rms < 100.0, "synthetic EEG has a plausible RMS: {ch}");
        assert!(ch["line_noise"].as_f64().unwrap() > 1.0, "50 Hz mains is simulated: {ch}");
    }

    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped");
    let list = daemon.ctl_json(&["session", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "stopped");
    let status = daemon.ctl_json(&["status"]);
    assert_eq!(status["sessions_active"], 0);

    // SIGTERM with a running session: it is stopped and the daemon exits 0.
    daemon.ctl_json(&["session", "start", "--driver", "synthetic"]);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(daemon.log().contains("stopped after"), "{}", daemon.log());
}

#[test]
fn sighup_reloads_what_it_can_and_says_what_it_cannot() {
    let mut daemon = start_daemon(DaemonOptions { config: Some("max_sessions = 2\n".into()), ..Default::default() });
    assert_eq!(daemon.ctl_json(&["status"])["max_sessions"], 2);
    std::fs::write(&daemon.config_file, "max_sessions = 5\nlog_level = \"debug\"\nstats_interval = 0.5\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(daemon.notify.wait_for("RELOADING=1", Duration::from_secs(5)));
    assert!(daemon.wait_log("configuration reloaded", Duration::from_secs(5)), "{}", daemon.log());
    assert_eq!(daemon.ctl_json(&["status"])["max_sessions"], 5);

    // A key that cannot change at run time is named; a broken file keeps the running config.
    std::fs::write(&daemon.config_file, "max_sessions = 5\nlog_target = \"syslog\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    let needle = "these keys need a restart to change: log_target";
    assert!(daemon.wait_log(needle, Duration::from_secs(5)), "{}", daemon.log());
    std::fs::write(&daemon.config_file, "max_sessions = \"lots\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(daemon.wait_log("reload failed", Duration::from_secs(5)), "{}", daemon.log());
    assert!(daemon.log().contains("max_sessions"), "the error names the key: {}", daemon.log());
    assert_eq!(daemon.ctl_json(&["status"])["max_sessions"], 5);
    assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon stays up");
}

#[test]
fn max_sessions_is_enforced() {
    let daemon =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_MAX_SESSIONS".into(), "1".into())], ..Default::default() });
    daemon.ctl_json(&["session", "start", "--driver", "synthetic"]);
    let out = daemon.ctl(&["session", "start", "--driver", "synthetic"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_sessions = 1"), "{err}");
}

#[test]
fn a_stalled_follower_loses_events_and_is_told_how_many_while_acquisition_goes_on() {
    let daemon = start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_SUBSCRIBER_QUEUE".into(), "16".into())],
        ..Default::default()
    });
    // 20 s of signal at 20× real time: 500 blocks in about one second of wall time.
    let info = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "synthetic",
        "--set",
        "script=13Hz:10,rest:10",
        "--set",
        "loop=false",
        "--set",
        "speed=20",
    ]);
    let id = info["id"].as_str().unwrap().to_string();
    let mut follower = daemon
        .ctl_command(&["--json", "follow", &id, "--samples"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(follower.id() as i32);
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    // The session runs to its end while the follower sleeps.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while daemon.ctl_json(&["session", "show", &id])["state"] == "running" {
        assert!(std::time::Instant::now() < deadline, "the session did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    let lines = bci2token_tests::read_lines(&mut follower);
    let status = follower.wait().unwrap();
    assert!(status.success(), "follow exited with {status:?}");

    let show = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(show["state"], "finished");
    assert_eq!(show["frames"], 5000, "acquisition delivered everything to the pipeline");
    let events: Vec<Value> = lines[1..].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let lost: u64 = events.iter().filter(|e| e["type"] == "lost").map(|e| e["count"].as_u64().unwrap()).sum();
    assert!(lost > 0, "the follower was told it lost events");
    assert_eq!(show["events_dropped"], lost, "every dropped event was reported");
    let received = events.iter().filter(|e| e["type"] == "samples").count() as u64;
    let blocks = show["blocks"].as_u64().unwrap();
    assert!(received < blocks, "received {received} of {blocks}");
    assert_eq!(events.last().unwrap()["state"], "finished", "the final state still arrives");
}

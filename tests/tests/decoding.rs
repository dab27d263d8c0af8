//! Decoding through the real daemon: model packages attached to sessions, token events, and
//! every way a model can be wrong while sessions keep recording.

use std::process::Stdio;

use bci2token_tests::{data_dir, read_lines, start_daemon, workspace_root, DaemonOptions, TempDir};
use serde_json::Value;

fn fixture(name: &str) -> String {
    workspace_root().join("tests/fixtures/models").join(name).display().to_string()
}

/// Runs `session start ... --follow --json` to the end; returns the reply and the events.
fn run_session(daemon: &bci2token_tests::Daemon, args: &[&str]) -> (Value, Vec<Value>) {
    let mut full = vec!["--json", "session", "start"];
    full.extend_from_slice(args);
    full.push("--follow");
    let mut child = daemon.ctl_command(&full).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = read_lines(&mut child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), daemon.log());
    let reply = serde_json::from_str(&lines[0]).unwrap();
    (reply, lines[1..].iter().map(|l| serde_json::from_str(l).unwrap()).collect())
}

fn ctl_error(daemon: &bci2token_tests::Daemon, args: &[&str]) -> String {
    let out = daemon.ctl(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_model_that_throws_raises_decoder_errors_and_the_session_keeps_recording() {
    let daemon = start_daemon(DaemonOptions::default());
    let (reply, events) = run_session(
        &daemon,
        &[
            "--driver",
            "synthetic",
            "--set",
            "speed=0",
            "--set",
            "script=rest:5",
            "--set",
            "loop=false",
            "--model",
            &fixture("throws"),
        ],
    );
    assert_eq!(reply["model"], "throws");
    let errors: Vec<&Value> = events.iter().filter(|e| e["type"] == "decoder_error").collect();
    assert!(!errors.is_empty(), "the fixture refuses about half of the windows");
    assert!(errors[0]["message"].as_str().unwrap().contains("refusing a window"), "{}", errors[0]);
    assert_eq!(events.last().unwrap()["state"], "finished");
    let id = reply["id"].as_str().unwrap();
    assert_eq!(daemon.ctl_json(&["session", "show", id])["frames"], 1250, "every sample was still acquired");
    // Tokens come only from windows the model accepted, never invented for failed ones.
    for token in events.iter().filter(|e| e["type"] == "token") {
        assert!(!errors.iter().any(|e| e["t"] == token["t"]), "a token for a failed window: {token}");
    }
}

#[test]
fn broken_and_misfitting_models_are_refused_with_what_is_wrong() {
    let daemon = start_daemon(DaemonOptions::default());
    // A live session keeps running while other starts fail.
    let live = daemon.ctl_json(&["session", "start", "--driver", "synthetic"]);
    let live_id = live["id"].as_str().unwrap().to_string();

    // The synthetic board's model (8 occipital channels, 250 Hz) on a 64-channel recording at
    // 160 Hz: the channels are found by label (eegmmidb's "O1.." is O1), the rate is not.
    let edf = format!("path={}", data_dir().join("eegmmidb/S001R04.edf").display());
    let err =
        ctl_error(&daemon, &["session", "start", "--driver", "replay", "--set", &edf, "--model", &fixture("throws")]);
    assert!(err.contains("needs 250 Hz, the device delivers 160 Hz") && !err.contains("missing"), "{err}");
    // ... and on BioSemi's 16 + Status channels at 256 Hz: neither rate nor channels fit.
    let bdf = format!("path={}", data_dir().join("bdf/Newtest17-256.bdf").display());
    let err =
        ctl_error(&daemon, &["session", "start", "--driver", "replay", "--set", &bdf, "--model", &fixture("throws")]);
    assert!(err.contains("needs 250 Hz, the device delivers 256 Hz"), "{err}");
    assert!(
        err.contains("the model needs 8 channels") && err.contains("the device has 17") && err.contains("missing: O1"),
        "{err}"
    );

    // A corrupt model.pt and a manifest with a missing field.
    let tmp = TempDir::new("badmodels");
    let corrupt = tmp.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::copy(workspace_root().join("tests/fixtures/models/throws/model.toml"), corrupt.join("model.toml"))
        .unwrap();
    std::fs::write(corrupt.join("model.pt"), b"not a zip archive").unwrap();
    let err = ctl_error(&daemon, &["session", "start", "--driver", "synthetic", "--model", corrupt.to_str().unwrap()]);
    assert!(err.contains("model.pt") && err.contains("cannot load the TorchScript model"), "{err}");

    let missing = tmp.path().join("missing-field");
    std::fs::create_dir_all(&missing).unwrap();
    let manifest = std::fs::read_to_string(corrupt.join("model.toml")).unwrap().replace("sample_rate = 250.0\n", "");
    std::fs::write(missing.join("model.toml"), manifest).unwrap();
    let err = ctl_error(&daemon, &["session", "start", "--driver", "synthetic", "--model", missing.to_str().unwrap()]);
    assert!(err.contains("missing field `sample_rate`") && err.contains("model.toml"), "{err}");

    let err = ctl_error(&daemon, &["session", "start", "--driver", "synthetic", "--model", "no-such-model"]);
    assert!(err.contains("no model `no-such-model`"), "{err}");

    let show = daemon.ctl_json(&["session", "show", &live_id]);
    assert_eq!(show["state"], "running", "the live session kept recording");
    assert_eq!(daemon.ctl_json(&["status"])["sessions_total"], 1, "no half-started sessions");
}

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

    // A window times decoder_queue beyond what a session may hold in flight (1 GiB): the 8 × 125
    // frame window of `throws` (0.5 s at 250 Hz) with the largest queue the configuration allows.
    let greedy = start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_DECODER_QUEUE".into(), "1048576".into())],
        ..Default::default()
    });
    let err = ctl_error(&greedy, &["session", "start", "--driver", "synthetic", "--model", &fixture("throws")]);
    assert!(err.contains("decoder_queue (1048576)") && err.contains("more than the 1024 MiB"), "{err}");
    assert_eq!(greedy.ctl_json(&["status"])["sessions_total"], 0, "{err}");
}

fn ssvep_file(subject: &str) -> String {
    let dir = data_dir().join("ssvep");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(subject))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn ssvep_tokens_carry_probabilities_token_ids_and_latency() {
    let daemon = start_daemon(DaemonOptions::default());
    let models = daemon.ctl_json(&["models"]);
    let names: Vec<&str> = models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ssvep-fbcca-3") && names.contains(&"speller-40"), "{models}");
    let path = format!("path={}", ssvep_file("subject03"));
    let (reply, events) =
        run_session(&daemon, &["--driver", "replay", "--set", &path, "--set", "speed=0", "--model", "ssvep-fbcca-3"]);
    assert_eq!(reply["model"], "ssvep-fbcca-3");
    let tokens: Vec<&Value> = events.iter().filter(|e| e["type"] == "token").collect();
    assert!(tokens.len() >= 24, "at least one token per trial: {}", tokens.len());
    let ids = |text: &str| match text {
        // GPT-2 ids of the model's texts (see the tokenizer test in the decoder crate).
        " yes" => vec![3763],
        " no" => vec![645],
        " help" => vec![1037],
        other => panic!("unexpected text {other:?}"),
    };
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["seq"], i as u64);
        assert_eq!(t["tokenizer"], "gpt2");
        let p: f64 = t["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-4, "{t}");
        assert!(t["confidence"].as_f64().unwrap() >= 0.6, "{t}");
        let label = t["label"].as_str().unwrap();
        assert_eq!(t["probabilities"][label], t["confidence"]);
        let want: Vec<u64> = ids(t["text"].as_str().unwrap()).into_iter().collect();
        let got: Vec<u64> = t["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(got, want, "{t}");
        assert_eq!(t["logit_bias"].as_object().unwrap().len(), 3, "one biased token per class");
        assert!(t["entered_ns"].as_u64().unwrap() > 0 && t["latency_us"].as_u64().is_some());
    }
}

/// The accuracy bar, through the real path: `bci2tokenctl evaluate` replays the recordings
/// through the daemon at full speed with the shipped model (3 classes, 2 s windows).
#[test]
fn ssvep_evaluation_reaches_the_accuracy_bar() {
    let daemon = start_daemon(DaemonOptions::default());
    let files: Vec<String> =
        ["subject01", "subject03", "subject04", "subject05"].iter().map(|s| ssvep_file(s)).collect();
    let mut args = vec![
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
    args.extend(files.iter().map(String::as_str));
    let out = daemon.ctl(&args);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), daemon.log());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_file: Vec<f64> =
        report["files"].as_array().unwrap().iter().map(|f| f["accuracy"].as_f64().unwrap()).collect();
    assert_eq!(per_file.len(), 4);
    for f in report["files"].as_array().unwrap() {
        assert_eq!(f["trials"], 24, "8 trials of each of 3 classes: {f}");
        eprintln!("{}: accuracy {} ITR {} bits/min", f["file"], f["accuracy"], f["itr_bits_per_min"]);
    }
    let mean = per_file.iter().sum::<f64>() / 4.0;
    assert!(mean >= 0.85, "mean accuracy {mean} over subjects 01, 03, 04, 05: {per_file:?}");
    assert!((report["overall"]["mean_file_accuracy"].as_f64().unwrap() - mean).abs() < 1e-9);
}

/// The learned motor-imagery model on the run it was not trained on (S001R10; trained on R06
/// only), through `bci2tokenctl evaluate` and the real daemon. The bar is the 0.80 with
/// the first token of a trial deciding it (`--partial-windows`: a window that began before the
/// cue may decide, as in the model's own evaluation; docs/models.md has every figure).
#[test]
fn motor_imagery_model_reaches_the_accuracy_bar_on_a_held_out_run() {
    let daemon = start_daemon(DaemonOptions::default());
    let file = data_dir().join("eegmmidb/S001R10.edf").display().to_string();
    let args = [
        "--json",
        "evaluate",
        "--model",
        "mi-eegnet",
        "--map",
        "T0=rest,T1=hands,T2=feet",
        "--classes",
        "T1,T2",
        "--partial-windows",
        &file,
    ];
    let out = daemon.ctl(&args);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), daemon.log());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &report["files"][0];
    eprintln!(
        "{}: accuracy {} ITR {} bits/min confusion {}",
        f["file"], f["accuracy"], f["itr_bits_per_min"], f["confusion"]
    );
    assert_eq!(f["trials"], 15, "R10 has 15 imagery trials (T1/T2): {f}");
    let accuracy = f["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.80, "accuracy {accuracy} on S001R10: {f}");
}

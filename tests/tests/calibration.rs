//! Per-person models through the daemon (issue 17): sessions recorded by replaying the shared
//! recordings, `bci2tokenctl model train` on them, then `bci2tokenctl evaluate` with the trained
//! model on a run it never saw.

use std::time::{Duration, Instant};

use bci2token_tests::{data_dir, start_daemon, Daemon, DaemonOptions};

/// Replays `file` at full speed into a recorded session and waits until it has ended.
fn record(daemon: &Daemon, file: &str) -> String {
    let path = format!("path={}", data_dir().join(file).display());
    let started = daemon.ctl_json(&["session", "start", "--driver", "replay", "--set", &path, "--set", "speed=0"]);
    let id = started["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let show = daemon.ctl_json(&["session", "show", &id]);
        match show["state"].as_str().unwrap() {
            "finished" => return id,
            "failed" => panic!("recording {file} failed: {show}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "recording {file} did not end: {show}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The motor-imagery bar: trained on S001R06 (hands vs feet imagery), evaluated on
/// S001R10 through the daemon. Every method with the same window (2 s, every 0.25 s) and the same
/// decision rule: the most frequent label among the tokens of windows lying wholly in the trial.
#[test]
fn motor_imagery_models_trained_on_one_run_classify_the_next() {
    let daemon = start_daemon(DaemonOptions::default());
    let r06 = record(&daemon, "eegmmidb/S001R06.edf");
    let r10 = data_dir().join("eegmmidb/S001R10.edf").display().to_string();
    let mut best = 0.0f64;
    for method in ["csp-lda", "riemann-mdm", "riemann-ts"] {
        let name = format!("mine-{method}");
        let started = Instant::now();
        let trained = daemon.ctl_json(&[
            "model",
            "train",
            "--name",
            &name,
            "--method",
            method,
            "--from",
            &r06,
            "--map",
            "T1=hands,T2=feet",
        ]);
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(trained["trials"], serde_json::json!([["hands", 7], ["feet", 8]]), "{trained}");
        let cv = trained["cv_accuracy"].as_f64().unwrap();
        let report = daemon.ctl_json(&[
            "evaluate",
            "--model",
            &name,
            "--map",
            "T1=hands,T2=feet",
            "--decision",
            "majority",
            &r10,
        ]);
        let f = &report["files"][0];
        assert_eq!(f["trials"], 15, "{f}");
        let accuracy = f["accuracy"].as_f64().unwrap();
        eprintln!(
            "{method}: trained in {seconds:.1} s, cross-validated {cv:.3}; S001R10 {accuracy:.3} {}",
            f["confusion"]
        );
        best = best.max(accuracy);
    }
    assert!(best >= 0.85, "best accuracy {best}");
}

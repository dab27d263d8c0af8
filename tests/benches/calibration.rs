//! Benchmark (not a test): per-person training through the daemon and the decoding cost of the
//! models it makes, beside the shipped ones, in one run.
//!
//! - Training: `bci2tokenctl model train` on eegmmidb S001R06 (hands vs feet imagery, 64 channels
//!   at 160 Hz, 15 trials) for the motor-imagery methods, on the first 12 trials of SSVEP subject01
//!   (8 channels at 256 Hz) for fbtrca, each three times; the median wall time of the request
//!   (reading the session, filtering, cutting, 5-fold cross-validation, the final fit, tracing, the
//!   load check).
//! - Decoding: every trained model and the shipped `mi-eegnet` (the learned model for the same
//!   task) and `ssvep-fbcca-3`, loaded as the daemon loads them, one thread, batch 1: p50 and p99
//!   of a forward pass, and each against `mi-eegnet` (the ratio).
//!
//! `cargo bench -p bci2token-tests --bench calibration` (after a release build: the daemon the
//! benchmark starts is the one of its own profile).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bci2token_decoder::Model;
use bci2token_tests::{data_dir, start_daemon, workspace_root, Daemon, DaemonOptions};

const METHODS: [&str; 3] = ["csp-lda", "riemann-mdm", "riemann-ts"];
const TRAININGS: usize = 3;
const WINDOWS: usize = 1000;

fn window(len: usize, seed: &mut u64) -> Vec<f32> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 20.0
        })
        .collect()
}

/// p50 and p99 of one forward pass at batch 1, in µs.
fn latency(model: &Model) -> (f64, f64) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        model.forward(&window(model.input_len(), &mut seed), 1).unwrap();
    }
    let mut lat: Vec<f64> = (0..WINDOWS)
        .map(|_| {
            let w = window(model.input_len(), &mut seed);
            let start = Instant::now();
            model.forward(&w, 1).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    (lat[WINDOWS / 2], lat[WINDOWS * 99 / 100])
}

/// Trains `method` on `file` [`TRAININGS`] times (the first run records the file, the others
/// train on that session), prints the times, and returns the model's directory.
fn time_trainings(daemon: &Daemon, method: &str, file: &str, options: &[&str], what: &str) -> PathBuf {
    let name = format!("bench-{method}");
    let mut source = file.to_string();
    let mut times = Vec::new();
    let mut last = serde_json::Value::Null;
    for run in 0..TRAININGS {
        let mut args = vec!["model", "train", "--name", &name, "--method", method, "--from", &source];
        args.extend_from_slice(options);
        if run > 0 {
            args.push("--replace");
        }
        let start = Instant::now();
        last = daemon.ctl_json(&args);
        times.push(start.elapsed().as_secs_f64());
        source = last["model"]["trained_on"][0].as_str().unwrap().to_string();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  {method:12} median {:6.2} s (min {:.2}, max {:.2})   {} windows, cross-validated {:.3}{what}",
        times[TRAININGS / 2],
        times[0],
        times[TRAININGS - 1],
        last["windows"],
        last["cv_accuracy"].as_f64().unwrap()
    );
    PathBuf::from(last["model"]["dir"].as_str().unwrap())
}

fn main() {
    let daemon = start_daemon(DaemonOptions::default());
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    println!("training on eegmmidb S001R06 (64 channels, 160 Hz, 15 trials; 2 s windows every 0.25 s, 5 folds), {TRAININGS} runs each:");
    let mi = data_dir().join("eegmmidb/S001R06.edf").display().to_string();
    for method in METHODS {
        let dir = time_trainings(&daemon, method, &mi, &["--map", "T1=hands,T2=feet"], "");
        dirs.push((format!("{method} (trained)"), dir));
    }
    // SSVEP: fbtrca on the first 12 trials of subject01 (8 channels at 256 Hz, 2 s windows).
    let ssvep = bci2token_tests::ssvep_files()[0].clone();
    let options = [
        "--classes",
        "13Hz,17Hz,21Hz",
        "--trial-start",
        "stim_start",
        "--trial-length",
        "5",
        "--trials",
        "1-12",
        "--notch",
        "50",
    ];
    let dir = time_trainings(&daemon, "fbtrca", &ssvep, &options, "   (ssvep subject01, trials 1-12)");
    dirs.push(("fbtrca (trained)".into(), dir));
    for shipped in ["mi-eegnet", "ssvep-fbcca-3"] {
        dirs.push((format!("{shipped} (shipped)"), workspace_root().join("models").join(shipped)));
    }
    bci2token_decoder::model::set_threads(1);
    println!("decoding, 1 thread, batch 1, {WINDOWS} windows of seeded noise:");
    let mut results = Vec::new();
    for (label, dir) in &dirs {
        let model = Model::load(dir, tch::Device::Cpu).expect("a model that loads");
        let (p50, p99) = latency(&model);
        results.push((label.clone(), model.channels(), model.manifest.window_frames(), p50, p99));
    }
    let (_, _, _, base50, base99) = results.iter().find(|r| r.0.starts_with("mi-eegnet")).cloned().unwrap();
    for (label, channels, frames, p50, p99) in results {
        println!(
            "  {label:26} {channels:3} × {frames:4}   p50 {p50:9.1} µs   p99 {p99:9.1} µs   vs mi-eegnet: p50 {:.2}×, p99 {:.2}×",
            p50 / base50,
            p99 / base99
        );
    }
    std::thread::sleep(Duration::from_millis(10));
}

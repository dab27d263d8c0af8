//! Benchmark (not a test): DSP throughput against scipy, in the same run.
//!
//! Filtering: 64 channels × 60 s at 250 Hz through notch 50 Hz + 4th-order Butterworth band-pass
//! 1–40 Hz + CAR, fed to the `Preprocessor` in 25-frame blocks (the daemon's path), against scipy
//! `sosfilt` with the same sections over the whole array at once, then CAR with numpy (timed inside
//! Python by `tools/reference/dsp_bench.py`). Welch: the PSD of every channel of a 64 × 500 window
//! (nperseg 250), and of the whole 64 × 15000 array, against `scipy.signal.welch` called once on the
//! 2-D array. Reports samples per second and the ratio (goal: ≥ 3× scipy for filtering).
//!
//! `cargo bench -p bci2token-dsp` (Python from `$BCI2TOKEN_PYTHON`, e.g. `.venv/bin/python`).

use std::process::Command;
use std::time::Instant;

use bci2token_dsp::pipeline::{PreprocessConfig, Preprocessor};
use bci2token_dsp::spectrum::Welch;
use bci2token_dsp::Sample;
use serde_json::Value;

const CHANNELS: usize = 64;
const FS: f64 = 250.0;
const SECONDS: f64 = 60.0;
const BLOCK: usize = 25;
const ROUNDS: usize = 15;
const WELCH_WINDOW: usize = 500;
const WELCH_NPERSEG: usize = 250;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Deterministic pseudo-random µV-scale data, channel-major.
fn data(frames: usize) -> Vec<f64> {
    let mut s = 0x1234_5678_9abc_def0u64;
    (0..CHANNELS * frames)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 70.0
        })
        .collect()
}

/// Seconds (best, median) to run the preprocessor over the stream in `BLOCK`-frame blocks.
fn time_blocks<T: Sample>(cfg: &PreprocessConfig, x: &[f64], frames: usize) -> (f64, f64) {
    let n_blocks = frames / BLOCK;
    let pristine: Vec<Vec<T>> = (0..n_blocks)
        .map(|b| {
            (0..CHANNELS)
                .flat_map(|c| x[c * frames + b * BLOCK..c * frames + (b + 1) * BLOCK].iter().map(|&v| T::from_f64(v)))
                .collect()
        })
        .collect();
    let mut times = Vec::new();
    for round in 0..=ROUNDS {
        let mut blocks = pristine.clone();
        let mut pre = Preprocessor::new(cfg, FS, CHANNELS).unwrap();
        let t0 = Instant::now();
        for b in &mut blocks {
            pre.process(b, BLOCK);
        }
        let t = t0.elapsed().as_secs_f64();
        std::hint::black_box(&blocks);
        if round > 0 {
            times.push(t);
        }
    }
    (times.iter().copied().fold(f64::INFINITY, f64::min), median(times))
}

fn time_welch(x: &[f64], frames: usize, len: usize, rounds: usize) -> (f64, f64) {
    let mut w = Welch::new(FS, WELCH_NPERSEG).unwrap();
    let mut psd = vec![0.0; w.bins()];
    let rows: Vec<Vec<f32>> =
        (0..CHANNELS).map(|c| x[c * frames..c * frames + len].iter().map(|&v| v as f32).collect()).collect();
    let mut times = Vec::new();
    for round in 0..=rounds {
        let t0 = Instant::now();
        for r in &rows {
            w.psd(r, &mut psd).unwrap();
            std::hint::black_box(&psd);
        }
        let t = t0.elapsed().as_secs_f64();
        if round > 0 {
            times.push(t);
        }
    }
    (times.iter().copied().fold(f64::INFINITY, f64::min), median(times))
}

fn scipy_peer() -> Result<Value, String> {
    let python = std::panic::catch_unwind(|| bci2token_tests::reference_python(&["scipy", "numpy"]))
        .map_err(|_| "no Python with scipy (set BCI2TOKEN_PYTHON=.venv/bin/python after tools/setup)".to_string())?;
    let script = bci2token_tests::workspace_root().join("tools/reference/dsp_bench.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([CHANNELS.to_string(), SECONDS.to_string(), FS.to_string(), ROUNDS.to_string()])
        .args([WELCH_WINDOW.to_string(), WELCH_NPERSEG.to_string()])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad output from {}: {e}", script.display()))
}

fn row(what: &str, samples: f64, rust: (f64, f64), peer: Option<(f64, f64)>) {
    let rate = |t: f64| samples / t / 1e6;
    match peer {
        Some(p) => println!(
            "  {what:<44} {:>8.1} M samples/s (median {:>7.1})   scipy {:>7.1} (median {:>7.1})   \
             ratio {:>5.1}x (median {:>5.1}x)",
            rate(rust.0),
            rate(rust.1),
            rate(p.0),
            rate(p.1),
            p.0 / rust.0,
            p.1 / rust.1
        ),
        None => println!("  {what:<44} {:>8.1} M samples/s (median {:>7.1})", rate(rust.0), rate(rust.1)),
    }
}

fn main() {
    let frames = (SECONDS * FS) as usize;
    let samples = (CHANNELS * frames) as f64;
    let x = data(frames);
    let with_car: PreprocessConfig =
        toml::from_str("notch_hz = 50\nbandpass_hz = [1, 40]\nfilter_order = 4\ncar = true").unwrap();
    let without_car = PreprocessConfig { car: false, ..with_car.clone() };
    let peer = scipy_peer();
    let p =
        |key: &str| peer.as_ref().ok().map(|v| (v[key]["best"].as_f64().unwrap(), v[key]["median"].as_f64().unwrap()));
    match &peer {
        Ok(v) => println!(
            "bci2token-dsp vs scipy {} (numpy {}): {CHANNELS} ch × {SECONDS} s at {FS} Hz; best (median) of {ROUNDS}",
            v["scipy"].as_str().unwrap_or("?"),
            v["numpy"].as_str().unwrap_or("?")
        ),
        Err(e) => println!("bci2token-dsp alone ({e}): {CHANNELS} ch × {SECONDS} s at {FS} Hz"),
    }
    println!(
        "filtering: notch 50 Hz + butter(4, [1, 40]) band-pass (5 sections); Rust in {BLOCK}-frame blocks, scipy \
         on the whole array"
    );
    row("notch + band-pass + CAR, f32 blocks", samples, time_blocks::<f32>(&with_car, &x, frames), p("filter"));
    row("notch + band-pass + CAR, f64 blocks", samples, time_blocks::<f64>(&with_car, &x, frames), p("filter"));
    row("notch + band-pass, f32 blocks", samples, time_blocks::<f32>(&without_car, &x, frames), p("filter_only"));
    println!("Welch PSD (hann, nperseg {WELCH_NPERSEG}, 50% overlap); scipy: one call on the 2-D array");
    let win_samples = (CHANNELS * WELCH_WINDOW) as f64;
    row(
        &format!("{CHANNELS} × {WELCH_WINDOW} window, channel by channel"),
        win_samples,
        time_welch(&x, frames, WELCH_WINDOW, ROUNDS * 20),
        p("welch_windows"),
    );
    row(&format!("{CHANNELS} × {frames} signal"), samples, time_welch(&x, frames, frames, ROUNDS), p("welch_long"));
}

//! bci2token-dsp against scipy: Butterworth and notch design (`butter(..., output="sos")`,
//! `iirnotch`), streaming filtering (`sosfilt`, the Rust side fed in random block sizes with its
//! state carried across blocks, scipy filtering the whole signal at once), the preprocessing
//! cascade with CAR, steady-state priming (`sosfilt_zi`), Welch PSD and band power.
//!
//! Tolerances: f64 output within 1e-9 of scipy relative to the largest |value| of scipy's output
//! for the case; f32 input/output within 1e-4 on the same scale; coefficients within 1e-9 relative
//! to the largest coefficient of their polynomial.
//!
//! Needs Python with numpy and scipy (`tools/setup` installs them into .venv; set
//! `BCI2TOKEN_PYTHON=$PWD/.venv/bin/python`). The reference script is
//! `tools/reference/dsp_reference.py`; data go through files in a temporary directory.

use std::process::Command;

use bci2token_dsp::design::{butter, iirnotch, Band, Sos};
use bci2token_dsp::filter::SosFilter;
use bci2token_dsp::pipeline::{PreprocessConfig, Preprocessor};
use bci2token_dsp::spectrum::{band_power, Welch};
use bci2token_dsp::Sample;
use bci2token_tests::{read_f64, reference_python, workspace_root, TempDir};
use serde_json::{json, Value};

const CHANNELS: usize = 11; // lane groups of 8, 2 and 1
const FRAMES: usize = 2000;
const RATES: [f64; 4] = [160.0, 250.0, 256.0, 1000.0];
const TOL_F64: f64 = 1e-9;
const TOL_F32: f64 = 1e-4;

/// splitmix64: a small seeded generator, enough for test signals and block sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Approximately normal (Irwin–Hall with 12 terms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Channel-major random EEG-like test signal: white noise of a different scale per channel, a
/// per-channel offset and a slow drift, in µV.
fn test_signal(rng: &mut Rng) -> Vec<f64> {
    let mut x = Vec::with_capacity(CHANNELS * FRAMES);
    for c in 0..CHANNELS {
        let (scale, offset) = (5.0 + 10.0 * rng.uniform(), 200.0 * (rng.uniform() - 0.5));
        for i in 0..FRAMES {
            x.push(offset + scale * rng.normal() + 30.0 * (i as f64 * 0.003 * (c + 1) as f64).sin());
        }
    }
    x
}

/// The first `channels` channels and first `frames` frames of a channel-major signal.
fn slice(x: &[f64], channels: usize, frames: usize) -> Vec<f64> {
    (0..channels).flat_map(|c| x[c * FRAMES..c * FRAMES + frames].iter().copied()).collect()
}

/// Streams a channel-major signal through `process` in random block sizes (0 to 100 frames).
fn stream<T: Sample>(x: &[T], channels: usize, rng: &mut Rng, mut process: impl FnMut(&mut [T], usize)) -> Vec<T> {
    let frames = x.len() / channels;
    let mut out = x.to_vec();
    let mut block = Vec::new();
    let mut pos = 0;
    while pos < frames {
        let n = rng.below(101).min(frames - pos);
        block.clear();
        for c in 0..channels {
            block.extend_from_slice(&x[c * frames + pos..c * frames + pos + n]);
        }
        process(&mut block, n);
        for c in 0..channels {
            out[c * frames + pos..c * frames + pos + n].copy_from_slice(&block[c * n..(c + 1) * n]);
        }
        pos += n;
    }
    out
}

/// Largest |a - b| over the largest |b|.
fn rel_err<T: Sample>(got: &[T], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((a.to_f64() - b).abs()));
    if scale == 0.0 {
        err
    } else {
        err / scale
    }
}

/// Compares sections coefficient by coefficient, relative to the largest coefficient of the same
/// polynomial (b or a) of the section.
fn check_sos(what: &str, got: &[Sos], want: &Value) -> f64 {
    let want: Vec<Vec<f64>> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: {} sections, scipy has {}", got.len(), want.len());
    let mut worst = 0.0f64;
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        for half in [0..3, 3..6] {
            let scale = w[half.clone()].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for k in half {
                let e = (g[k] - w[k]).abs() / scale;
                worst = worst.max(e);
                assert!(
                    e <= TOL_F64,
                    "{what}: section {s} coefficient {k}: {} vs scipy {} (rel {e:e})\n{got:?}\n{want:?}",
                    g[k],
                    w[k]
                );
            }
        }
    }
    worst
}

fn band_of(btype: &str, wn: &[f64]) -> Band {
    match btype {
        "lowpass" => Band::Lowpass(wn[0]),
        "highpass" => Band::Highpass(wn[0]),
        "bandpass" => Band::Bandpass(wn[0], wn[1]),
        "bandstop" => Band::Bandstop(wn[0], wn[1]),
        _ => unreachable!(),
    }
}

fn notch_cascade(f0: f64, harmonics: u32, q: f64, fs: f64) -> Vec<Sos> {
    (1..=harmonics).map(|k| iirnotch(f0 * f64::from(k), q, fs).unwrap()).collect()
}

#[derive(Default)]
struct Worst {
    coeff: f64,
    f64: f64,
    f64_case: String,
    f32: f64,
}

impl Worst {
    fn filtered(
        &mut self,
        what: &str,
        x: &[f64],
        channels: usize,
        want: &[f64],
        rng: &mut Rng,
        make: impl Fn() -> SosFilter,
    ) {
        let mut f = make();
        let got = stream(x, channels, rng, |b, n| f.process(b, n));
        let e = rel_err(&got, want);
        assert!(e <= TOL_F64, "{what}: f64 output differs from sosfilt by {e:e} (relative)");
        if e > self.f64 {
            self.f64 = e;
            self.f64_case = what.to_string();
        }
        let mut f = make();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let got = stream(&x32, channels, rng, |b, n| f.process(b, n));
        let e = rel_err(&got, want);
        assert!(e <= TOL_F32, "{what}: f32 output differs from sosfilt by {e:e} (relative)");
        self.f32 = self.f32.max(e);
    }
}

#[test]
fn filters_psd_and_band_power_match_scipy() {
    let python = reference_python(&["scipy", "numpy"]);
    let dir = TempDir::new("dsp-scipy");
    let mut rng = Rng(0x5EED_0B0E);
    let x = test_signal(&mut rng);
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("signal.f64"), bytes).unwrap();

    // ---- the cases ----
    let mut butter_cases = Vec::new();
    for &fs in &RATES {
        let bands: Vec<(&str, Vec<f64>)> = vec![
            ("lowpass", vec![5.0]),
            ("lowpass", vec![40.0]),
            ("lowpass", vec![0.45 * fs]),
            ("highpass", vec![0.5]),
            ("highpass", vec![1.0]),
            ("highpass", vec![0.3 * fs]),
            ("bandpass", vec![0.5, 4.0]),
            ("bandpass", vec![1.0, 40.0]),
            ("bandpass", vec![8.0, 0.45 * fs]),
            ("bandstop", vec![45.0, 55.0]),
            ("bandstop", vec![0.2 * fs, 0.3 * fs]),
        ];
        for order in 1..=8 {
            for (btype, wn) in &bands {
                butter_cases.push(json!({"order": order, "btype": btype, "wn": wn, "fs": fs, "channels": 3}));
            }
        }
    }
    let mut notch_cases = Vec::new();
    for &fs in &RATES {
        for f0 in [50.0, 60.0] {
            let max = ((fs / 2.0 / f0).ceil() as u32) - 1;
            for harmonics in [1, max] {
                for q in [30.0, 10.0] {
                    notch_cases.push(json!({"f0": f0, "harmonics": harmonics, "q": q, "fs": fs, "channels": 3}));
                }
            }
        }
    }
    let pipeline_configs = [
        (250.0, "notch_hz = 50\nbandpass_hz = [1, 40]\ncar = true"),
        (160.0, "notch_hz = 60\nhighpass_hz = 0.5\nlowpass_hz = 30\nfilter_order = 3\ncar = true"),
        (256.0, "notch_hz = 50\nnotch_harmonics = 2\nnotch_q = 20\nbandpass_hz = [8, 30]\nfilter_order = 8"),
        (1000.0, "notch_hz = 60\nnotch_harmonics = 8\nhighpass_hz = 0.1\nfilter_order = 2\ncar = true"),
        (250.0, "lowpass_hz = 45\nfilter_order = 5"),
        (250.0, "car = true"),
    ];
    let mut pipeline_cases = Vec::new();
    let mut pipelines = Vec::new();
    for (fs, text) in pipeline_configs {
        let cfg: PreprocessConfig = toml::from_str(text).unwrap();
        let mut bands = Vec::new();
        if let Some(wn) = cfg.bandpass_hz {
            bands.push(json!({"btype": "bandpass", "wn": wn}));
        }
        if let Some(h) = cfg.highpass_hz {
            bands.push(json!({"btype": "highpass", "wn": [h]}));
        }
        if let Some(l) = cfg.lowpass_hz {
            bands.push(json!({"btype": "lowpass", "wn": [l]}));
        }
        pipeline_cases.push(json!({
            "fs": fs, "channels": CHANNELS, "notch_hz": cfg.notch_hz, "notch_harmonics": cfg.notch_harmonics,
            "notch_q": cfg.notch_q, "order": cfg.filter_order, "bands": bands, "car": cfg.car,
        }));
        pipelines.push((fs, text, cfg));
    }
    let prime_cases = vec![
        json!({"order": 4, "btype": "highpass", "wn": [1.0], "fs": 250.0, "channels": CHANNELS, "offset": 40000.0}),
        json!({"order": 4, "btype": "bandpass", "wn": [1.0, 40.0], "fs": 250.0, "channels": 5, "offset": -25000.0}),
        json!({"order": 3, "btype": "lowpass", "wn": [30.0], "fs": 160.0, "channels": 3, "offset": 1000.0}),
        json!({"order": 8, "btype": "bandstop", "wn": [45.0, 55.0], "fs": 1000.0, "channels": 2, "offset": 300.0}),
    ];
    let bands_hz = |fs: f64| {
        vec![
            [1.0, 4.0],
            [4.0, 8.0],
            [8.0, 13.0],
            [13.0, 30.0],
            [30.0, 45.0],
            [49.0, 51.0],
            [59.0, 61.0],
            [0.0, fs / 2.0],
        ]
    };
    let mut welch_cases = Vec::new();
    for &fs in &RATES {
        for nperseg in [fs as usize, 128, 99, 256] {
            for (frames, noverlap) in [(FRAMES, None), (777.max(nperseg), None), (FRAMES, Some(nperseg * 3 / 4))] {
                welch_cases.push(json!({
                    "fs": fs, "nperseg": nperseg, "noverlap": noverlap, "frames": frames, "channels": 4,
                    "bands": bands_hz(fs),
                }));
            }
        }
    }
    let cases = json!({
        "signal": {"channels": CHANNELS, "frames": FRAMES},
        "butter": butter_cases, "notch": notch_cases, "pipeline": pipeline_cases, "prime": prime_cases,
        "welch": welch_cases,
    });
    std::fs::write(dir.path().join("cases.json"), cases.to_string()).unwrap();

    // ---- scipy ----
    let script = workspace_root().join("tools/reference/dsp_reference.py");
    let out = Command::new(&python).arg(&script).arg(dir.path()).output().expect("run the reference script");
    assert!(out.status.success(), "{} {} failed:\n{}", python, script.display(), String::from_utf8_lossy(&out.stderr));
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap()).unwrap();
    let file = |name: String| read_f64(&dir.path().join(name));
    let mut worst = Worst::default();

    // ---- Butterworth ----
    for (i, c) in cases["butter"].as_array().unwrap().iter().enumerate() {
        let (order, btype, fs) =
            (c["order"].as_u64().unwrap() as usize, c["btype"].as_str().unwrap(), c["fs"].as_f64().unwrap());
        let wn: Vec<f64> = serde_json::from_value(c["wn"].clone()).unwrap();
        let what = format!("butter({order}, {wn:?}, {btype}, fs={fs})");
        let sos = butter(order, band_of(btype, &wn), fs).unwrap();
        worst.coeff = worst.coeff.max(check_sos(&what, &sos, &results["butter"][i]["sos"]));
        let channels = c["channels"].as_u64().unwrap() as usize;
        let xs = slice(&x, channels, FRAMES);
        worst.filtered(&what, &xs, channels, &file(format!("butter_{i}.f64")), &mut rng, || {
            SosFilter::new(&sos, channels)
        });
    }

    // ---- notches ----
    for (i, c) in cases["notch"].as_array().unwrap().iter().enumerate() {
        let (f0, h, q, fs) = (
            c["f0"].as_f64().unwrap(),
            c["harmonics"].as_u64().unwrap() as u32,
            c["q"].as_f64().unwrap(),
            c["fs"].as_f64().unwrap(),
        );
        let what = format!("iirnotch({f0} Hz × {h} harmonics, Q={q}, fs={fs})");
        let sos = notch_cascade(f0, h, q, fs);
        worst.coeff = worst.coeff.max(check_sos(&what, &sos, &results["notch"][i]["sos"]));
        let xs = slice(&x, 3, FRAMES);
        worst.filtered(&what, &xs, 3, &file(format!("notch_{i}.f64")), &mut rng, || SosFilter::new(&sos, 3));
    }

    // ---- the preprocessing cascade (notch → band → CAR) ----
    for (i, (fs, text, cfg)) in pipelines.iter().enumerate() {
        let what = format!("Preprocessor at {fs} Hz with {text:?}");
        let want = file(format!("pipeline_{i}.f64"));
        let mut p = Preprocessor::new(cfg, *fs, CHANNELS).unwrap();
        let got = stream(&x, CHANNELS, &mut rng, |b, n| p.process(b, n));
        let e = rel_err(&got, &want);
        assert!(e <= TOL_F64, "{what}: f64 differs from scipy by {e:e}");
        if e > worst.f64 {
            worst.f64 = e;
            worst.f64_case = what.clone();
        }
        let mut p = Preprocessor::new(cfg, *fs, CHANNELS).unwrap();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let got = stream(&x32, CHANNELS, &mut rng, |b, n| p.process(b, n));
        let e = rel_err(&got, &want);
        assert!(e <= TOL_F32, "{what}: f32 differs from scipy by {e:e}");
        worst.f32 = worst.f32.max(e);
    }

    // ---- priming = sosfilt_zi (relative to the output, which is much smaller than the offset) ----
    let mut worst_primed = 0.0f64;
    for (i, c) in cases["prime"].as_array().unwrap().iter().enumerate() {
        let (order, btype, fs) =
            (c["order"].as_u64().unwrap() as usize, c["btype"].as_str().unwrap(), c["fs"].as_f64().unwrap());
        let wn: Vec<f64> = serde_json::from_value(c["wn"].clone()).unwrap();
        let channels = c["channels"].as_u64().unwrap() as usize;
        let offset = c["offset"].as_f64().unwrap();
        let what = format!("primed butter({order}, {wn:?}, {btype}, fs={fs}) with offset {offset}");
        let sos = butter(order, band_of(btype, &wn), fs).unwrap();
        let xs: Vec<f64> = slice(&x, channels, FRAMES).iter().map(|v| v + offset).collect();
        let want = file(format!("prime_{i}.f64"));
        let mut f = SosFilter::new(&sos, channels);
        let mut primed = false;
        let got = stream(&xs, channels, &mut rng, |b, n| {
            if !primed && n > 0 {
                f.prime(b, n);
                primed = true;
            }
            f.process(b, n)
        });
        let e = rel_err(&got, &want);
        assert!(e <= TOL_F64, "{what}: differs from sosfilt with sosfilt_zi by {e:e}");
        worst_primed = worst_primed.max(e);
    }

    // ---- Welch and band power ----
    let (mut worst_psd, mut worst_psd32, mut worst_bp) = (0.0f64, 0.0f64, 0.0f64);
    for (i, c) in cases["welch"].as_array().unwrap().iter().enumerate() {
        let fs = c["fs"].as_f64().unwrap();
        let nperseg = c["nperseg"].as_u64().unwrap() as usize;
        let frames = c["frames"].as_u64().unwrap() as usize;
        let channels = c["channels"].as_u64().unwrap() as usize;
        let mut w = match c["noverlap"].as_u64() {
            Some(o) => Welch::with_overlap(fs, nperseg, o as usize).unwrap(),
            None => Welch::new(fs, nperseg).unwrap(),
        };
        let what = format!("welch(fs={fs}, nperseg={nperseg}, noverlap={}, {frames} samples)", c["noverlap"]);
        let freqs = file(format!("welch_{i}_freqs.f64"));
        let want_bps = file(format!("welch_{i}_band_power.f64"));
        assert_eq!(w.frequencies(), &freqs[..], "{what}: frequencies");
        let want = file(format!("welch_{i}.f64"));
        let bins = w.bins();
        assert_eq!(want.len(), channels * bins, "{what}: bins");
        let bands: Vec<[f64; 2]> = serde_json::from_value(c["bands"].clone()).unwrap();
        for ch in 0..channels {
            let sig = &x[ch * FRAMES..ch * FRAMES + frames];
            let want_ch = &want[ch * bins..(ch + 1) * bins];
            let mut psd = vec![0.0; bins];
            w.psd(sig, &mut psd).unwrap();
            let e = rel_err(&psd, want_ch);
            assert!(e <= TOL_F64, "{what}, channel {ch}: PSD differs by {e:e}");
            worst_psd = worst_psd.max(e);
            for (b, [lo, hi]) in bands.iter().enumerate() {
                let want_bp = want_bps[b * channels + ch];
                let got_bp = band_power(w.frequencies(), &psd, *lo, *hi);
                assert_eq!(got_bp, w.band_power(&psd, *lo, *hi));
                let e = (got_bp - want_bp).abs() / want_bp.abs().max(f64::MIN_POSITIVE);
                assert!(e <= TOL_F64, "{what}, channel {ch}, band [{lo}, {hi}]: {got_bp} vs numpy {want_bp} ({e:e})");
                worst_bp = worst_bp.max(e);
            }
            let sig32: Vec<f32> = sig.iter().map(|&v| v as f32).collect();
            w.psd(&sig32, &mut psd).unwrap();
            let e = rel_err(&psd, want_ch);
            assert!(e <= TOL_F32, "{what}, channel {ch}: f32 PSD differs by {e:e}");
            worst_psd32 = worst_psd32.max(e);
        }
    }

    println!(
        "scipy {} / numpy {}: {} butter, {} notch, {} pipeline, {} primed, {} welch cases agree; worst relative \
         differences: coefficients {:.1e}, f64 output {:.1e} ({}), primed {:.1e}, f32 output {:.1e}, PSD {:.1e} (f32 {:.1e}), \
         band power {:.1e}",
        results["scipy"].as_str().unwrap(),
        results["numpy"].as_str().unwrap(),
        cases["butter"].as_array().unwrap().len(),
        cases["notch"].as_array().unwrap().len(),
        pipelines.len(),
        cases["prime"].as_array().unwrap().len(),
        cases["welch"].as_array().unwrap().len(),
        worst.coeff,
        worst.f64,
        worst.f64_case,
        worst_primed,
        worst.f32,
        worst_psd,
        worst_psd32,
        worst_bp
    );
}

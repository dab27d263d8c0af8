//! Decode speed of the replay driver's EDF/BDF reader against pyedflib, in the same run.
//!
//! `cargo bench -p bci2token-driver-replay --bench decode`
//!
//! For S001R04.edf (EDF+C, 16-bit) and Newtest17-256.bdf (BDF, 24-bit), each pass decodes the whole
//! file:
//! - Rust, `Recording` path: `open_recording` + `next_chunk` until the end (f32 µV, channel-major,
//!   annotations parsed and delivered) — what the plugin does;
//! - Rust, `EdfReader` f64 path: open + `read_record` + `decode_physical` of every ordinary signal
//!   (float64 physical values, like pyedflib);
//! - pyedflib: `tools/reference/edf_decode_bench.py` (open `EdfReader`, `readSignal(i)` for every
//!   signal, close).
//!
//! Reports the median pass: MB/s of file bytes, samples/s, and the speed ratio Rust / pyedflib.
//! Passes: `$BCI2TOKEN_BENCH_REPS` (default 30). Python: `$BCI2TOKEN_PYTHON` (default `python3`).
//! It only reports; without pyedflib it prints the Rust numbers and says why the peer is missing.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bci2token_driver_replay::edf::EdfReader;
use bci2token_driver_replay::recording::open_recording;

fn data_dir() -> PathBuf {
    std::env::var_os("BCI2TOKEN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One pass through the Recording path; returns samples decoded.
fn rust_recording_pass(path: &Path) -> u64 {
    let mut rec = open_recording(path, None).expect("open");
    let mut out = vec![0f32; rec.channels().len() * rec.max_chunk_frames()];
    let mut samples = 0u64;
    let mut events = 0usize;
    while let Some(c) = rec.next_chunk(&mut out).expect("read") {
        samples += (c.frames * rec.channels().len()) as u64;
        events += c.events.len();
        black_box(&out);
    }
    black_box(events);
    samples
}

/// One pass through the f64 EdfReader path; returns samples decoded.
fn rust_f64_pass(path: &Path) -> u64 {
    let mut r = EdfReader::open(path).expect("open");
    let sigs: Vec<usize> = r.header().ordinary_signals().map(|s| s.index).collect();
    let max = r.header().signals.iter().map(|s| s.samples_per_record).max().unwrap_or(0);
    let mut buf = vec![0f64; max];
    let mut samples = 0u64;
    while r.read_record().expect("read") {
        for &s in &sigs {
            samples += r.decode_physical(s, &mut buf) as u64;
            black_box(&buf);
        }
        black_box(r.annotations());
    }
    samples
}

fn time_passes(reps: usize, mut f: impl FnMut() -> u64) -> (Vec<f64>, u64) {
    let samples = f(); // warm-up
    let passes = (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    (passes, samples)
}

struct Peer {
    name: String,
    seconds: f64,
    samples: u64,
}

fn pyedflib_passes(py: &str, path: &Path, reps: usize) -> Result<Peer, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/reference/edf_decode_bench.py");
    let o = Command::new(py)
        .arg(&script)
        .arg(path)
        .arg(reps.to_string())
        .output()
        .map_err(|e| format!("cannot run `{py}`: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "`{py} {}` failed ({}): {} — run tools/test-all (installs pyedflib in a venv) or set \
             BCI2TOKEN_PYTHON",
            script.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| format!("bad output: {e}"))?;
    let passes: Vec<f64> =
        v["passes"].as_array().ok_or("no passes")?.iter().filter_map(serde_json::Value::as_f64).collect();
    Ok(Peer {
        name: v["reader"].as_str().unwrap_or("pyedflib").to_string(),
        seconds: median(passes),
        samples: v["samples"].as_u64().unwrap_or(0),
    })
}

fn line(what: &str, bytes: u64, samples: u64, seconds: f64) {
    println!(
        "  {what:<38} {:>9.3} ms/pass {:>9.1} MB/s {:>8.1} Msamples/s",
        seconds * 1e3,
        bytes as f64 / seconds / 1e6,
        samples as f64 / seconds / 1e6
    );
}

fn main() {
    // `cargo test --benches`/`--all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("decode benchmark: run with `cargo bench -p bci2token-driver-replay --bench decode`");
        return;
    }
    let reps: usize = std::env::var("BCI2TOKEN_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let py = std::env::var("BCI2TOKEN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let data = data_dir();
    let files = [data.join("eegmmidb/S001R04.edf"), data.join("bdf/Newtest17-256.bdf")];
    println!("decode benchmark: {reps} passes per reader, median pass; Python: {py}");
    for path in &files {
        let bytes = std::fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or_else(|e| panic!("{}: {e} (set BCI2TOKEN_DATA to the shared data directory)", path.display()));
        println!("{} ({bytes} bytes)", path.file_name().unwrap().to_string_lossy());
        let (rec_passes, rec_samples) = time_passes(reps, || rust_recording_pass(path));
        let (f64_passes, f64_samples) = time_passes(reps, || rust_f64_pass(path));
        let rec_s = median(rec_passes);
        let f64_s = median(f64_passes);
        line("Rust Recording (f32 µV, chunks)", bytes, rec_samples, rec_s);
        line("Rust EdfReader (f64 physical)", bytes, f64_samples, f64_s);
        match pyedflib_passes(&py, path, reps) {
            Ok(p) => {
                line(&format!("{} readSignal (f64)", p.name), bytes, p.samples, p.seconds);
                if p.samples != f64_samples {
                    println!("  note: sample counts differ (Rust {f64_samples}, pyedflib {})", p.samples);
                }
                println!(
                    "  ratio: Rust Recording is {:.1}x pyedflib's speed, Rust f64 reader {:.1}x",
                    p.seconds / rec_s,
                    p.seconds / f64_s
                );
            }
            Err(e) => println!("  pyedflib: not measured: {e}"),
        }
    }
}

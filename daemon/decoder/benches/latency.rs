//! Benchmark (not a test): the Rust decoder against Python torch running the same TorchScript
//! model (models/speller-40), one thread each, in the same run: per-window latency at batch 1
//! (p50, p99), back to back and with an idle pause before each window (in the daemon a window
//! comes every hop, 250 ms for the speller, and the caches go cold in between), and windows per
//! second at growing batch sizes. The Python peer needs the export
//! environment (`tools/models/setup-export-env`); set BCI2TOKEN_TORCH_PYTHON to use another.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bci2token_decoder::Model;
use tch::Device;

const WINDOWS: usize = 2000;
/// Windows measured after an idle pause, and the pause.
const IDLE_WINDOWS: usize = 150;
const IDLE_MS: u64 = 20;
const BATCHES: [usize; 6] = [1, 4, 16, 64, 256, 1024];

/// A seeded pseudo-random window (xorshift), about ±10 µV.
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

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("models/speller-40");
    bci2token_decoder::model::set_threads(1);
    let model = Model::load(&dir, Device::Cpu).expect("load speller-40");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        model.forward(&window(model.input_len(), &mut seed), 1).unwrap();
    }
    let mut latencies = |n: usize, idle: Duration| {
        let mut lat: Vec<f64> = (0..n)
            .map(|_| {
                let w = window(model.input_len(), &mut seed);
                std::thread::sleep(idle);
                let start = Instant::now();
                model.forward(&w, 1).unwrap();
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        (lat[n / 2], lat[n * 99 / 100])
    };
    let (p50, p99) = latencies(WINDOWS, Duration::ZERO);
    let (idle_p50, idle_p99) = latencies(IDLE_WINDOWS, Duration::from_millis(IDLE_MS));
    let mut rust_tp = Vec::new();
    for b in BATCHES {
        let input: Vec<f32> = (0..b).flat_map(|_| window(model.input_len(), &mut seed)).collect();
        model.forward(&input, b).unwrap();
        let reps = (2000 / b).max(3);
        let start = Instant::now();
        for _ in 0..reps {
            model.forward(&input, b).unwrap();
        }
        rust_tp.push((b * reps) as f64 / start.elapsed().as_secs_f64());
    }

    println!(
        "decoder latency, {} ({} × {} input), 1 thread, {WINDOWS} windows",
        model.name(),
        model.channels(),
        model.manifest.window_frames()
    );
    println!("  Rust (tch)       p50 {p50:8.1} µs   p99 {p99:8.1} µs   after {IDLE_MS} ms idle: p50 {idle_p50:8.1} µs   p99 {idle_p99:8.1} µs");
    let python = std::env::var("BCI2TOKEN_TORCH_PYTHON")
        .unwrap_or_else(|_| root.join(".cache/export-venv/bin/python").display().to_string());
    let mut args =
        vec![root.join("tools/reference/torchscript_bench.py").display().to_string(), dir.display().to_string()];
    args.extend([WINDOWS.to_string(), IDLE_WINDOWS.to_string(), IDLE_MS.to_string(), "1".into()]);
    args.extend(BATCHES.iter().map(|b| b.to_string()));
    let peer = Command::new(&python).args(&args).env_remove("LD_LIBRARY_PATH").output();
    let peer: Option<serde_json::Value> = match peer {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).ok(),
        Ok(o) => {
            println!("  Python peer failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
            None
        }
        Err(e) => {
            println!("  Python peer not run ({python}: {e}); run tools/models/setup-export-env");
            None
        }
    };
    if let Some(p) = &peer {
        let (pp50, pp99) = (p["p50_us"].as_f64().unwrap(), p["p99_us"].as_f64().unwrap());
        let (ip50, ip99) = (p["idle_p50_us"].as_f64().unwrap(), p["idle_p99_us"].as_f64().unwrap());
        println!(
            "  Python torch     p50 {pp50:8.1} µs   p99 {pp99:8.1} µs   after {IDLE_MS} ms idle: p50 {ip50:8.1} µs   p99 {ip99:8.1} µs"
        );
        println!(
            "  ratio (Python / Rust): p50 {:.2}×, p99 {:.2}×; after idle: p50 {:.2}×, p99 {:.2}×",
            pp50 / p50,
            pp99 / p99,
            ip50 / idle_p50,
            ip99 / idle_p99
        );
    }
    println!("  batched windows/s:      Rust      Python   ratio");
    for (b, tp) in BATCHES.iter().zip(&rust_tp) {
        let py = peer.as_ref().and_then(|p| p["throughput"][b.to_string()].as_f64());
        match py {
            Some(py) => println!("    batch {b:5}   {tp:10.0}  {py:10.0}   {:.2}×", tp / py),
            None => println!("    batch {b:5}   {tp:10.0}"),
        }
    }
    println!("  CUDA: {}", bci2token_decoder::model::cuda_available().err().unwrap_or_else(|| "available".into()));
}

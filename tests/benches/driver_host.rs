//! Benchmark (not a test): what a driver host adds per block. The same plugin and device settings
//! read in this process (`Device::read`, as `driver_isolation = "in-process"`) and through a
//! `bci2token-driver-host` process driven by the daemon's own client (`RemoteDevice`: the
//! request, the plugin's read there into the shared sample buffer, the reply, the copy out),
//! alternating, in one run:
//! - the synthetic driver at `speed=0`: per-block latency (p50, p99) and what the host adds;
//! - the replay driver on S001R04.edf (64 ch × 160 Hz, 125 s): the whole file, times real time.
//!
//! Build the host and the plugins in release mode first (`tools/bench` builds the workspace).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bci2token_driver_abi::host::{Device, Plugin, Read};
use bci2token_driver_host::client::{HostExe, Limits, RemoteDevice};
use bci2token_tests::data_dir;
use serde_json::{json, Map, Value};

/// Where cargo put the host and the plugins (the bench's profile; the daemon is not needed).
fn bin_dir() -> PathBuf {
    bci2token_tests::bin_dir_with(&[
        "bci2token-driver-host",
        "libbci2token_driver_synthetic.so",
        "libbci2token_driver_replay.so",
    ])
}

enum Side {
    Local(Device),
    Host(Box<RemoteDevice>),
}

impl Side {
    fn read(&mut self, buf: &mut [f32]) -> Read {
        match self {
            Side::Local(d) => d.read(Duration::from_secs(1), buf).unwrap(),
            Side::Host(h) => h.read(Duration::from_secs(1), buf).unwrap(),
        }
    }
}

fn open(side: &str, plugin: &Path, config: &Map<String, Value>, readable: Vec<PathBuf>) -> Side {
    if side == "host" {
        // The daemon's own client of the host, as a session uses it.
        let exe: &'static HostExe =
            Box::leak(Box::new(HostExe::open(&bin_dir().join("bci2token-driver-host")).unwrap()));
        let limits = Limits { memory_mib: 1024, read_grace: Duration::from_secs(90), restarts: 0 };
        // The name and ABI the plugin reports (the daemon's listing), which the host's must match.
        let listed = Plugin::load(plugin).unwrap();
        let expect = (plugin, listed.name(), listed.abi());
        let mut d = RemoteDevice::open(exe, expect, config, &[], (readable, vec![]), limits).unwrap();
        d.start().unwrap();
        Side::Host(Box::new(d))
    } else {
        let mut d = Plugin::load(plugin).unwrap().open(config).unwrap();
        d.start().unwrap();
        Side::Local(d)
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

/// Per-block read latency of the synthetic driver (blocks ready at once: `speed=0`).
fn block_latency(channels: usize, block_frames: usize) {
    let plugin = bin_dir().join("libbci2token_driver_synthetic.so");
    let config: Map<String, Value> = json!({
        "channels": channels, "sample_rate": 250.0, "block_frames": block_frames, "speed": 0, "loop": true,
    })
    .as_object()
    .unwrap()
    .clone();
    let blocks = 20_000;
    let mut lat = [Vec::with_capacity(blocks), Vec::with_capacity(blocks)];
    // What the daemon lets a host read of its own: the plugin's directory.
    let readable = vec![bin_dir()];
    let mut sides = [open("host", &plugin, &config, readable.clone()), open("in-process", &plugin, &config, readable)];
    let mut buf = vec![0f32; channels * block_frames * 4];
    // Alternating rounds of 1000 blocks, so that both see the same machine.
    for round in 0..blocks / 1000 + 1 {
        for (i, side) in sides.iter_mut().enumerate() {
            for _ in 0..1000 {
                let t = Instant::now();
                let read = side.read(&mut buf);
                let dt = t.elapsed().as_secs_f64() * 1e6;
                assert!(matches!(read, Read::Block { .. }), "{read:?}");
                if round > 0 {
                    lat[i].push(dt); // round 0 warms up
                }
            }
        }
    }
    let [mut host, mut local] = lat;
    let (h50, h99, l50, l99) =
        (quantile(&mut host, 0.5), quantile(&mut host, 0.99), quantile(&mut local, 0.5), quantile(&mut local, 0.99));
    println!(
        "  synthetic {channels:>2} ch × {block_frames:>3} frames: driver host p50 {h50:>6.1} µs p99 {h99:>6.1} µs | \
         in-process p50 {l50:>6.1} µs p99 {l99:>6.1} µs | added at p50 {:+.1} µs (goal ≤ 50)",
        h50 - l50
    );
}

/// The whole of S001R04.edf through the replay driver at `speed=0`.
fn replay_throughput() {
    let plugin = bin_dir().join("libbci2token_driver_replay.so");
    let file = data_dir().join("eegmmidb/S001R04.edf");
    let config: Map<String, Value> =
        json!({ "path": file.display().to_string(), "speed": 0, "_caller_paths": true }).as_object().unwrap().clone();
    let real_time = 125.0;
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..11 {
        for (i, side) in ["host", "in-process"].into_iter().enumerate() {
            let t = Instant::now();
            let mut d = open(side, &plugin, &config, vec![bin_dir(), file.clone()]);
            let mut buf = vec![0f32; 64 * 4096];
            let mut blocks = 0;
            while !matches!(d.read(&mut buf), Read::End) {
                blocks += 1;
            }
            drop(d);
            assert!(blocks >= 125, "{blocks} blocks");
            if round > 0 {
                times[i].push(t.elapsed().as_secs_f64());
            }
        }
    }
    let [mut host, mut local] = times;
    let (h, l) = (quantile(&mut host, 0.5), quantile(&mut local, 0.5));
    println!(
        "  replay of S001R04.edf (64 ch × 160 Hz, {real_time} s), opened, read to the end, closed: driver host \
         {:.1} ms ({:.0}× real time, goal ≥ 3000×) | in-process {:.1} ms ({:.0}× real time) | host/in-process ×{:.2}",
        h * 1e3,
        real_time / h,
        l * 1e3,
        real_time / l,
        h / l
    );
}

fn main() {
    println!(
        "driver host against in-process, same plugin, same settings, alternating (bci2token-driver-host from {}):",
        bin_dir().display()
    );
    block_latency(8, 25);
    block_latency(64, 160);
    replay_throughput();
}

//! Benchmark (not a test): replays S001R04.edf (64 ch × 160 Hz, 125 s) at `speed=0` through the
//! real daemon and reports the ratio to real time, for a follower without samples (the pipeline
//! alone) and one with every sample as JSON (pipeline + socket + ctl). Build the workspace in
//! release mode first; `tools/bench` does both and also runs the EDF decode benchmark against
//! pyedflib.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bci2token_tests::{data_dir, start_daemon, DaemonOptions};

fn run_once(daemon: &bci2token_tests::Daemon, path_arg: &str, samples: bool) -> (Duration, usize) {
    let mut args =
        vec!["--json", "session", "start", "--driver", "replay", "--set", path_arg, "--set", "speed=0", "--follow"];
    if samples {
        args.push("--samples");
    }
    let start = Instant::now();
    let out = daemon.ctl_command(&args).stdout(Stdio::piped()).output().unwrap();
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (elapsed, out.stdout.len())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let file = data_dir().join("eegmmidb/S001R04.edf");
    let real_time = 125.0;
    let daemon_with = |isolation: &str| {
        start_daemon(DaemonOptions {
            env: vec![
                ("BCI2TOKEN_MAX_SESSIONS".into(), "1024".into()),
                ("BCI2TOKEN_LOG_LEVEL".into(), "warn".into()),
                ("BCI2TOKEN_DECODER_THREADS".into(), "1".into()),
                ("BCI2TOKEN_DRIVER_ISOLATION".into(), isolation.into()),
            ],
            ..Default::default()
        })
    };
    let daemon = daemon_with("process");
    let in_process = daemon_with("in-process");
    let path_arg = format!("path={}", file.display());
    let rounds = 15;
    println!(
        "replay of {} ({real_time} s of 64-channel EEG) at speed=0 through bci2tokend, median of {rounds}, the device \
         read by a driver host process (the default) and in the daemon's own process, alternating",
        file.display()
    );
    for samples in [false, true] {
        let mut times = [Vec::new(), Vec::new()];
        let mut bytes = 0;
        for d in [&daemon, &in_process] {
            run_once(d, &path_arg, samples); // warm the page cache and the plugin
        }
        for _ in 0..rounds {
            for (i, d) in [&daemon, &in_process].into_iter().enumerate() {
                let (t, b) = run_once(d, &path_arg, samples);
                times[i].push(t);
                bytes = b;
            }
        }
        let [host, local] = times.map(median);
        println!(
            "  follow {:<10} driver host {:>7.1} ms {:>6.0}x real time | in-process {:>7.1} ms {:>6.0}x real time | \
             host/in-process ×{:.2} (a host's start included; per block: --bench driver_host) ({:.1} MB of JSON lines)",
            if samples { "--samples" } else { "(stats)" },
            host.as_secs_f64() * 1e3,
            real_time / host.as_secs_f64(),
            local.as_secs_f64() * 1e3,
            real_time / local.as_secs_f64(),
            host.as_secs_f64() / local.as_secs_f64(),
            bytes as f64 / 1e6
        );
    }
    drop(in_process);
    token_latency(&daemon);
}

/// CLOCK_MONOTONIC now, in ns (the clock of the daemon's `entered_ns`).
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// End-to-end latency with the speller model on the CPU: from the last sample of a window entering
/// the daemon (`entered_ns`) to its token event arriving at a subscriber on the control socket.
/// The model's policy is relaxed in a copy (every window emits) so there are enough tokens to rank.
/// Measured twice in the same run: the live session alone, and with four `evaluate` replays at
/// full speed and a stalled lossless follower going (what must not slow a live session down).
fn token_latency(daemon: &bci2token_tests::Daemon) {
    let tmp = bci2token_tests::TempDir::new("latency-model");
    let model = bci2token_tests::relaxed_speller(&tmp);
    let seconds = 30.0;
    let alone = live_latency(daemon, &model, seconds);
    let load = bci2token_tests::EvaluateLoad::start(daemon, 4);
    let loaded = live_latency(daemon, &model, seconds);
    let runs = load.finish().expect("the evaluations succeed");
    let (p50, p99) = (|l: &[f64]| l[l.len() / 2], |l: &[f64]| l[l.len() * 99 / 100]);
    println!(
        "token latency, speller-40 on CPU, last sample in the daemon → token at a socket subscriber \
         (goal: p50 < 1 ms, p99 < 5 ms, whatever else runs):"
    );
    println!(
        "  live session alone                 ({:4} tokens): p50 {:7.0} µs, p99 {:7.0} µs",
        alone.len(),
        p50(&alone),
        p99(&alone)
    );
    println!(
        "  with 4 evaluate + a stalled follower ({:4} tokens, {} evaluations): p50 {:7.0} µs, p99 {:7.0} µs  (×{:.2} / ×{:.2} alone)",
        loaded.len(),
        runs.iter().sum::<usize>(),
        p50(&loaded),
        p99(&loaded),
        p50(&loaded) / p50(&alone),
        p99(&loaded) / p99(&alone)
    );
}

/// Token latencies (µs, sorted) of a live synthetic session with `model`, over `seconds`.
fn live_latency(daemon: &bci2token_tests::Daemon, model: &std::path::Path, seconds: f64) -> Vec<f64> {
    use bci2token_api::{read_frame, write_frame, FollowOptions, Request};
    let info = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "synthetic",
        "--set",
        "speed=4",
        "--set",
        "script=14.1Hz:3,rest:1,17.7Hz:3,rest:1",
        "--model",
        model.to_str().unwrap(),
    ]);
    let id = info["id"].as_str().unwrap().to_string();
    let mut sock = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    write_frame(&mut sock, &Request::Follow { id: id.clone(), options: FollowOptions::default() }).unwrap();
    read_frame(&mut sock).unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let Some(body) = read_frame(&mut sock).unwrap() else { break };
        let now = monotonic_ns();
        let ev: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if ev["type"] == "token" {
            lat.push((now - ev["entered_ns"].as_u64().unwrap()) as f64 / 1e3);
        }
    }
    daemon.ctl_json(&["session", "stop", &id]);
    lat.sort_by(f64::total_cmp);
    assert!(!lat.is_empty(), "no token in {seconds} s");
    lat
}

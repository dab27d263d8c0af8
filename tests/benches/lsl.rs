//! Benchmark (not a test): latency of LSL samples from the outlet's push to the daemon's `follow`
//! subscriber, against a pylsl inlet pulling the same outlet in the same run (p50, p99).
//!
//! A pylsl outlet (tools/reference/lsl_peer.py) pushes 8 channels at 250 Hz, each sample stamped
//! with liblsl's clock when it is due and pushed at once; both readers compare their own
//! CLOCK_MONOTONIC (liblsl's clock on Linux) at arrival with the sample's stamp. The daemon side:
//! a socket subscriber with samples, timing each block's last sample. Runs in a private LSL world.

use std::io::BufRead;
use std::time::{Duration, Instant};

use bci2token_api::{read_frame, write_frame, FollowOptions, Request};
use bci2token_tests::{read_line, start_daemon, DaemonOptions, LslWorld};

const SECONDS: u64 = 20;

fn monotonic() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let world = LslWorld::new("bench");
    let mut outlet = world.peer(&["outlet", "bci2token-bench", "src-bench", "8", "250", &(SECONDS + 15).to_string()]);
    read_line(&mut outlet);
    let daemon = start_daemon(DaemonOptions { env: world.env(), ..Default::default() });
    let info = daemon.ctl_json(&["session", "start", "--driver", "lsl", "--set", "name=bci2token-bench"]);
    let id = info["id"].as_str().unwrap().to_string();
    let mut sock = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    write_frame(&mut sock, &Request::Follow { id: id.clone(), options: FollowOptions { samples: true } }).unwrap();
    read_frame(&mut sock).unwrap();

    let mut peer = world.peer(&["latency", "bci2token-bench", &SECONDS.to_string()]);
    let out = peer.stdout.take().unwrap();
    let pylsl = std::thread::spawn(move || {
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .map(|v| (v["pulled"].as_f64().unwrap() - v["stamp"].as_f64().unwrap()) * 1e6)
            .collect::<Vec<f64>>()
    });

    let mut ours = Vec::new();
    let end = Instant::now() + Duration::from_secs(SECONDS);
    while Instant::now() < end {
        let Some(body) = read_frame(&mut sock).unwrap() else { break };
        let now = monotonic();
        let ev: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if ev["type"] != "samples" {
            continue;
        }
        let frames = ev["frames"].as_u64().unwrap() as f64;
        let last = ev["t"].as_f64().unwrap() + (frames - 1.0) / 250.0;
        ours.push((now - last) * 1e6);
    }
    daemon.ctl_json(&["session", "stop", &id]);
    let mut theirs = pylsl.join().unwrap();
    let _ = peer.wait();
    let _ = outlet.kill();
    let (o50, o99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    let (p50, p99) = (percentile(&mut theirs, 0.5), percentile(&mut theirs, 0.99));
    println!(
        "LSL latency, pylsl outlet push → bci2tokend follow subscriber ({} blocks): p50 {o50:.0} µs, p99 {o99:.0} µs; \
         pylsl inlet on the same outlet ({} samples): p50 {p50:.0} µs, p99 {p99:.0} µs; ratio (daemon / pylsl) p50 \
         {:.2}×, p99 {:.2}×",
        ours.len(),
        theirs.len(),
        o50 / p50,
        o99 / p99
    );
}

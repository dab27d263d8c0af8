//! Benchmark (not a test): how many 64-channel, 1 kHz sessions the daemon records at once on this
//! machine without backlog. Doubles the number of synthetic sessions (64 ch, 1000 Hz, 25-frame
//! blocks, real time) until one of them falls behind: a session keeps up when, after 8 s, the store
//! dropped nothing and has committed all but at most one second of what it acquired, and the
//! board itself delivered its samples in real time.

use std::time::Duration;

use bci2token_tests::{start_daemon, DaemonOptions};

const SECONDS: u64 = 8;

fn main() {
    let mut best = 0;
    // 128 synthetic sessions saturate a 2-core machine with signal generation and statistics alone
    // (the daemon stops answering in time), so 64 is the largest step tried here.
    for k in [1usize, 2, 4, 8, 16, 32, 64] {
        let daemon = start_daemon(DaemonOptions {
            config: Some("store_queue = 65536\nmax_sessions = 256\n".into()),
            ..Default::default()
        });
        let ids: Vec<String> = (0..k)
            .map(|i| {
                let seed = format!("seed={i}");
                daemon.ctl_json(&[
                    "session",
                    "start",
                    "--driver",
                    "synthetic",
                    "--set",
                    "channels=64",
                    "--set",
                    "sample_rate=1000",
                    "--set",
                    "block_frames=25",
                    "--set",
                    &seed,
                ])["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        std::thread::sleep(Duration::from_secs(SECONDS));
        let mut worst_lag = 0u64;
        let mut dropped = 0u64;
        let mut slowest_frames = u64::MAX;
        for id in &ids {
            let s = daemon.ctl_json(&["session", "show", id]);
            let (blocks, stored) = (s["blocks"].as_u64().unwrap(), s["stored_blocks"].as_u64().unwrap());
            worst_lag = worst_lag.max(blocks.saturating_sub(stored));
            dropped += s["store_dropped"].as_u64().unwrap();
            slowest_frames = slowest_frames.min(s["frames"].as_u64().unwrap());
        }
        for id in &ids {
            daemon.ctl_json(&["session", "stop", id]);
        }
        let realtime = slowest_frames as f64 >= (SECONDS as f64 - 1.0) * 1000.0;
        let keeps_up = dropped == 0 && worst_lag <= 40 && realtime;
        println!(
            "{k:3} sessions × 64 ch × 1 kHz: worst store lag {worst_lag} blocks, dropped {dropped}, slowest source {:.0}% of \
             real time → {}",
            slowest_frames as f64 / (SECONDS as f64 * 1000.0) * 100.0,
            if keeps_up { "keeps up" } else if !realtime { "the sources fall behind (CPU)" } else { "the store falls behind" }
        );
        if !keeps_up {
            break;
        }
        best = k;
    }
    println!("recorded at once without backlog on this machine: {best} sessions of 64 channels at 1 kHz (64 is the largest step tried)");
}

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
    let daemon = start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_MAX_SESSIONS".into(), "1024".into()), ("BCI2TOKEN_LOG_LEVEL".into(), "warn".into())],
        ..Default::default()
    });
    let path_arg = format!("path={}", file.display());
    let rounds = 15;
    println!(
        "replay of {} ({real_time} s of 64-channel EEG) at speed=0 through bci2tokend, median of {rounds}",
        file.display()
    );
    for samples in [false, true] {
        run_once(&daemon, &path_arg, samples); // warm the page cache and the plugin
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..rounds {
            let (t, b) = run_once(&daemon, &path_arg, samples);
            times.push(t);
            bytes = b;
        }
        let t = median(times);
        println!(
            "  follow {:<10} {:>8.1} ms  {:>7.0}x real time  ({:.1} MB of JSON lines)",
            if samples { "--samples" } else { "(stats)" },
            t.as_secs_f64() * 1e3,
            real_time / t.as_secs_f64(),
            bytes as f64 / 1e6
        );
    }
}

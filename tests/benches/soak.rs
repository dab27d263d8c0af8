//! Soak benchmark (not a test; `tools/soak [MINUTES] [SESSIONS]`): SESSIONS synthetic 8-channel
//! 250 Hz sessions (default 64), each decoded by speller-40 and recorded, for MINUTES (default
//! 10), on this machine; then the ceiling: more sessions, a step at a time, until one drops a
//! window or a block. Reports windows dropped, blocks dropped (gaps and store drops), the
//! daemon's RSS at start and end, and its CPU.

use std::time::{Duration, Instant};

use bci2token_tests::{start_daemon, Daemon, DaemonOptions};

/// The daemon's resident memory (KiB) and CPU time (s, user + system) so far.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    (rss, ticks / 100.0)
}

/// Starts `n` live sessions; their ids.
fn start_sessions(daemon: &Daemon, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let seed = format!("seed={i}");
            let started = daemon.ctl_json(&[
                "session",
                "start",
                "--driver",
                "synthetic",
                "--set",
                &seed,
                "--model",
                "speller-40",
            ]);
            started["id"].as_str().expect("a session id").to_string()
        })
        .collect()
}

/// Sums of (windows dropped, gaps, store drops, blocks) over `ids`, and how many are running;
/// an error when the daemon did not answer (its threads' stacks are then saved for a look).
fn totals(daemon: &Daemon, ids: &[String]) -> Result<(u64, u64, u64, u64, usize), String> {
    let mut t = (0, 0, 0, 0, 0);
    for id in ids {
        let out = daemon.ctl(&["--json", "session", "show", id]);
        let Ok(s) = serde_json::from_slice::<serde_json::Value>(&out.stdout).map_err(|_| ()).and_then(|s| {
            if out.status.success() {
                Ok(s)
            } else {
                Err(())
            }
        }) else {
            let pid = daemon.child.id();
            let stacks = std::env::temp_dir().join(format!("soak-stacks-{pid}.txt"));
            if let Ok(gdb) = std::process::Command::new("gdb")
                .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 25"])
                .output()
            {
                let _ = std::fs::write(&stacks, gdb.stdout);
            }
            return Err(format!(
                "`session show {id}` failed: {}; the daemon's thread stacks: {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                stacks.display()
            ));
        };
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        t.0 += n("windows_dropped");
        t.1 += n("gaps");
        t.2 += n("store_dropped");
        t.3 += n("blocks");
        t.4 += usize::from(s["state"] == "running");
    }
    Ok(t)
}

fn env_number(key: &str, default: f64) -> f64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let minutes = env_number("BCI2TOKEN_SOAK_MINUTES", 10.0);
    let sessions = env_number("BCI2TOKEN_SOAK_SESSIONS", 64.0) as usize;
    let daemon = start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_MAX_SESSIONS".into(), "1024".into()), ("BCI2TOKEN_LOG_LEVEL".into(), "warn".into())],
        ..Default::default()
    });
    let pid = daemon.child.id();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "soak: {sessions} synthetic sessions (8 ch, 250 Hz, speller-40, recorded) for {minutes} min, {cores} cores"
    );
    let (rss0, _) = usage(pid);
    let ids = start_sessions(&daemon, sessions);
    std::thread::sleep(Duration::from_secs(5)); // started and warm
    let (rss_started, cpu0) = usage(pid);
    let t0 = Instant::now();
    let soak_totals = |ids: &[String]| totals(&daemon, ids).unwrap_or_else(|e| panic!("{e}"));
    let before = soak_totals(&ids);
    let total = Duration::from_secs_f64(minutes * 60.0);
    while t0.elapsed() < total {
        std::thread::sleep(Duration::from_secs(60).min(total.saturating_sub(t0.elapsed())));
        let (rss, cpu) = usage(pid);
        let (w, g, s, b, running) = soak_totals(&ids);
        println!(
            "  {:>5.1} min: {running}/{sessions} running, {} blocks, windows dropped {w}, gaps {g}, store drops {s}, \
             RSS {:.1} MiB, CPU {:.0}% of one core",
            t0.elapsed().as_secs_f64() / 60.0,
            b - before.3,
            rss as f64 / 1024.0,
            (cpu - cpu0) / t0.elapsed().as_secs_f64() * 100.0
        );
    }
    let (rss1, cpu1) = usage(pid);
    let after = soak_totals(&ids);
    let seconds = t0.elapsed().as_secs_f64();
    // The synthetic driver's blocks at 250 Hz: 10 frames, 25 a second.
    let expected_blocks = sessions as f64 * seconds * 25.0;
    println!(
        "soak result: windows dropped {}, gaps {}, store drops {}, blocks {} of ~{:.0} expected; RSS {:.1} MiB idle, \
         {:.1} MiB started, {:.1} MiB at the end; CPU {:.0}% of one core ({:.0}% of the machine)",
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        after.3 - before.3,
        expected_blocks,
        rss0 as f64 / 1024.0,
        rss_started as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (cpu1 - cpu0) / seconds * 100.0,
        (cpu1 - cpu0) / seconds * 100.0 / cores as f64
    );
    for id in &ids {
        daemon.ctl_json(&["session", "stop", id]);
    }

    // The ceiling: 16 more sessions at a time, 30 s each, until one drops anything.
    let step = 16;
    let mut running: Vec<String> = Vec::new();
    loop {
        running.extend(start_sessions(&daemon, step));
        std::thread::sleep(Duration::from_secs(5));
        let measured = totals(&daemon, &running).and_then(|before| {
            std::thread::sleep(Duration::from_secs(30));
            totals(&daemon, &running).map(|after| (before, after))
        });
        let (before, after) = match measured {
            Ok(m) => m,
            Err(e) => {
                println!("ceiling: at {} sessions the daemon stopped answering: {e}", running.len());
                break;
            }
        };
        let dropped = (after.0 - before.0) + (after.1 - before.1) + (after.2 - before.2);
        let (rss, _) = usage(pid);
        println!(
            "  ceiling: {} sessions: windows dropped {}, gaps {}, store drops {}, RSS {:.1} MiB",
            running.len(),
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            rss as f64 / 1024.0
        );
        if dropped > 0 || running.len() >= 1024 {
            println!("ceiling: the first drops at {} sessions (steps of {step})", running.len());
            break;
        }
    }
}

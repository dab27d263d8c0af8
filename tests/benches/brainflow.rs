//! Benchmark of the brainflow driver against the native openbci driver (not a test; nothing here
//! fails on speed). One daemon runs two sessions at once, each on its own Cyton emulator sending
//! the same packets: `openbci` reading the pty itself, and `brainflow` with BrainFlow's Cyton board
//! (libBoardController.so from the `brainflow` wheel in .venv). Reported for each:
//! - latency from a packet's last byte written to the pty to its block reaching a `follow`
//!   subscriber (p50, p99);
//! - CPU of the session's driver host process over the run (utime + stime, % of one core).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bci2token_tests::cyton_emulator::{follow_latency, Emulator, EmulatorConfig};
use bci2token_tests::{reference_python, start_daemon, workspace_root, DaemonOptions, TempDir};

const SECONDS: f64 = 30.0;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The daemon's driver hosts: (pid, whether it has `library` mapped).
fn hosts_with(daemon_pid: u32, library: &str) -> Vec<(u32, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        // The daemon's children are its driver hosts (started through /proc/self/fd, so their
        // command name is a number).
        if ppid != daemon_pid {
            continue;
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        found.push((pid, maps.contains(library)));
    }
    found
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn main() {
    let out = Command::new(reference_python(&["brainflow"]))
        .arg(workspace_root().join("tools/reference/brainflow_peer.py"))
        .arg("lib")
        .output()
        .unwrap();
    let lib = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(Path::new(&lib).is_file(), "BrainFlow's library: {lib:?}");
    let dir = TempDir::new("bench-brainflow");
    let emulator = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let e = Emulator::start(&d, EmulatorConfig::default());
        e.record_write_times();
        e
    };
    let (native_board, bf_board) = (emulator("native"), emulator("brainflow"));
    let daemon =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BRAINFLOW_LIB".into(), lib)], ..Default::default() });
    let start = |args: &[&str]| -> String {
        let mut all = vec!["session", "start"];
        all.extend_from_slice(args);
        daemon.ctl_json(&all)["id"].as_str().unwrap().to_string()
    };
    let native = start(&["--driver", "openbci", "--set", &format!("port={}", native_board.path().display())]);
    let bf = start(&[
        "--driver",
        "brainflow",
        "--set",
        "board=Cyton",
        "--set",
        &format!("serial_port={}", bf_board.path().display()),
    ]);
    let hosts = hosts_with(daemon.child.id(), "libbci2token_driver_brainflow.so");
    assert_eq!(hosts.len(), 2, "two driver hosts: {hosts:?}");
    let bf_host = hosts.iter().find(|h| h.1).expect("BrainFlow's host").0;
    let native_host = hosts.iter().find(|h| !h.1).expect("openbci's host").0;
    let cpu0 = (cpu_seconds(native_host), cpu_seconds(bf_host));
    let wall = Instant::now();
    let (mut native_lat, mut bf_lat) = std::thread::scope(|s| {
        let a = s.spawn(|| follow_latency(&daemon, &native, &native_board, SECONDS));
        let b = s.spawn(|| follow_latency(&daemon, &bf, &bf_board, SECONDS));
        (a.join().unwrap(), b.join().unwrap())
    });
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu = |pid: u32, before: f64| 100.0 * (cpu_seconds(pid) - before) / elapsed;
    let (native_cpu, bf_cpu) = (cpu(native_host, cpu0.0), cpu(bf_host, cpu0.1));
    for id in [&native, &bf] {
        daemon.ctl_json(&["session", "stop", id]);
    }
    let (n50, n99) = (percentile(&mut native_lat, 0.5), percentile(&mut native_lat, 0.99));
    let (b50, b99) = (percentile(&mut bf_lat, 0.5), percentile(&mut bf_lat, 0.99));
    println!(
        "Cyton on the emulator, packet's last byte on the pty → block at a follow subscriber, {SECONDS} s, both \
         sessions at once:\n  openbci (native):  {} blocks, p50 {n50:.0} µs, p99 {n99:.0} µs, driver host CPU \
         {native_cpu:.2} % of a core\n  brainflow (Cyton): {} blocks, p50 {b50:.0} µs, p99 {b99:.0} µs, driver host \
         CPU {bf_cpu:.2} % of a core\n  brainflow / openbci: latency p50 {:.2}x, p99 {:.2}x, CPU {:.2}x",
        native_lat.len(),
        bf_lat.len(),
        b50 / n50,
        b99 / n99,
        bf_cpu / native_cpu.max(1e-9)
    );
}

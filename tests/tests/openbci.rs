//! The `openbci` driver end to end: the real daemon and ctl against a Cyton emulator on a
//! pseudo-terminal (tests/cyton_emulator.rs), through the plugin's C ABI.

use std::time::{Duration, Instant};

use bci2token_tests::cyton_emulator::{counts, scale_uv, Emulator, EmulatorConfig, Firmware, Signal};
use bci2token_tests::{data_dir, start_daemon, Daemon, DaemonOptions, Follower, SampleBlock, TempDir};

const GAP: u64 = 1;
const RECONNECTED: u64 = 4;

/// The packet index a row carries in channel 1, checked to be a whole number of counts.
fn index_of(row: &[f32], gain: u8) -> u64 {
    let k = (f64::from(row[0]) / scale_uv(gain)).round();
    assert_eq!(row[0], (k * scale_uv(gain)) as f32, "channel 1 is not a whole number of counts");
    k as u64
}

/// Every channel of a row equals the emulator's counts × the scale, rounded once to f32.
fn assert_row_exact(row: &[f32], k_board: u64, gains: &[u8]) {
    for (ch, (&v, &gain)) in row.iter().zip(gains).enumerate() {
        let k = if ch < 8 { k_board } else { k_board + 1 };
        let want = (f64::from(counts(k, ch)) * scale_uv(gain)) as f32;
        assert_eq!(v.to_bits(), want.to_bits(), "packet {k} channel {}: {v} µV, want {want}", ch + 1);
    }
}

fn start_session(daemon: &Daemon, emulator: &Emulator, extra: &[&str]) -> String {
    start_decoding(daemon, emulator, extra, &[])
}

/// A session with `--set` items `extra` and further ctl arguments `args` (e.g. `--model`).
fn start_decoding(daemon: &Daemon, emulator: &Emulator, extra: &[&str], more: &[&str]) -> String {
    let port = format!("port={}", emulator.path().display());
    let mut args = vec!["session", "start", "--driver", "openbci", "--set", &port];
    for e in extra {
        args.push("--set");
        args.push(e);
    }
    args.extend_from_slice(more);
    daemon.ctl_json(&args)["id"].as_str().unwrap().to_string()
}

#[test]
fn a_default_config_sends_only_stop_reset_start_stop_and_every_value_is_exact() {
    let dir = TempDir::new("cyton-legacy");
    // Old firmware that answers only s, v and b, with its own banner.
    let emulator = Emulator::start(dir.path(), EmulatorConfig { firmware: Firmware::Legacy, ..Default::default() });
    let daemon = start_daemon(DaemonOptions::default());
    let id = start_session(&daemon, &emulator, &[]);
    let info = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(info["sample_rate"], 250.0);
    assert_eq!(info["channels"].as_array().unwrap().len(), 8);
    assert!(info["description"].as_str().unwrap().contains("OpenBCI V3 8bit Board"), "{info}");

    let follower = Follower::start(&daemon, &id);
    let mut rows = 0;
    let mut next_k = None;
    follower.collect_until(Duration::from_secs(20), |ev| {
        if let Some(b) = SampleBlock::of(ev) {
            assert_eq!(b.flags & GAP, 0, "no gap without faults");
            for (i, row) in b.rows.iter().enumerate() {
                let k = index_of(row, 24);
                if let Some(want) = next_k {
                    assert_eq!(k, want, "rows are consecutive packets");
                }
                assert!((b.t + i as f64 / 250.0 - k as f64 / 250.0).abs() < 1e-9, "t is the packet's frame time");
                assert_row_exact(row, k, &[24; 8]);
                next_k = Some(k + 1);
                rows += 1;
            }
        }
        rows >= 500
    });
    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["gaps"], 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(emulator.received(), "svbs", "the driver sent more than the default needs");
    assert_eq!(emulator.overflow(), 0);
}

#[test]
fn every_footer_and_every_injected_drop_and_garbage_is_handled_exactly() {
    let dir = TempDir::new("cyton-faults");
    let config = EmulatorConfig { footers: vec![0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6], ..Default::default() };
    let emulator = Emulator::start(dir.path(), config);
    let daemon = start_daemon(DaemonOptions::default());
    // Decoded with the speller (its montage's labels on the Cyton's 8 channels): every outage
    // must restart the filters and the window.
    let id = start_decoding(
        &daemon,
        &emulator,
        &["ch2=gain:8", "ch8=gain:1,input:normal", "labels=O1,Oz,O2,PO3,POz,PO4,PO7,PO8"],
        &["--model", "speller-40"],
    );
    let gains = [24, 8, 24, 24, 24, 24, 24, 1];
    let follower = Follower::start(&daemon, &id);

    // Faults once streaming runs: drops of 1, 3 and 100 packets, garbage between packets.
    let mut injected = 0;
    let mut seen: Vec<u64> = Vec::new();
    let mut gaps: Vec<(f64, u64)> = Vec::new();
    let mut flagged: Vec<u64> = Vec::new();
    let mut restarts: Vec<f64> = Vec::new();
    follower.collect_until(Duration::from_secs(30), |ev| {
        if ev["type"] == "decoder_restart" {
            assert_eq!(ev["reason"], "gap", "{ev}");
            restarts.push(ev["t"].as_f64().unwrap());
        }
        if ev["type"] == "gap" {
            gaps.push((ev["t"].as_f64().unwrap(), ev["lost_samples"].as_u64().unwrap()));
        }
        if let Some(b) = SampleBlock::of(ev) {
            for (i, row) in b.rows.iter().enumerate() {
                let k = index_of(row, 24);
                assert_row_exact(row, k, &gains);
                assert!((b.t + i as f64 / 250.0 - k as f64 / 250.0).abs() < 1e-9, "t counts lost samples");
                if i == 0 && b.flags & GAP != 0 {
                    flagged.push(k);
                }
                seen.push(k);
            }
            let n = seen.len();
            let step = [100, 150, 200, 250, 300, 350];
            if injected < step.len() && n >= step[injected] {
                match injected {
                    0 => emulator.drop_packets(1),
                    1 => emulator.inject_garbage(b"garbage\x00\xff\xc0\x33"),
                    2 => emulator.drop_packets(3),
                    3 => {
                        emulator.inject_garbage(b"\x11\x22");
                        emulator.drop_packets(1);
                    }
                    4 => emulator.drop_packets(100),
                    _ => emulator.inject_garbage(b"\xc0\xc1\xc2"),
                }
                injected += 1;
            }
        }
        seen.len() >= 600
    });
    daemon.ctl_json(&["session", "stop", &id]);

    let skipped: Vec<u64> = emulator.skipped().into_iter().filter(|&k| k < *seen.last().unwrap()).collect();
    assert_eq!(skipped.len(), 1 + 3 + 1 + 100, "the emulator dropped what it was told");
    // Every packet is either delivered or counted lost, and the gaps are where the drops were.
    let first = seen[0];
    let mut all: Vec<u64> = seen.clone();
    all.extend(&skipped);
    all.sort_unstable();
    assert_eq!(all, (first..=*seen.last().unwrap()).collect::<Vec<_>>(), "delivered ∪ dropped = every packet");
    let lost: Vec<u64> = gaps.iter().map(|g| g.1).collect();
    assert_eq!(lost, [1, 3, 1, 100], "one gap event per drop, with its exact count");
    for ((t, n), k) in gaps.iter().zip(&flagged) {
        assert!(
            (t + *n as f64 / 250.0 - *k as f64 / 250.0).abs() < 1e-9,
            "the gap ends where the flagged block starts"
        );
    }
    assert_eq!(flagged.len(), 4, "each gap flags the block after it: {flagged:?}");
    let info = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(info["gaps"], 4, "4 outages, each a gap event and a flagged block, counted once: {info}");
    // One restart of the decoding per outage, at the first block after it.
    let after: Vec<f64> = flagged.iter().map(|&k| k as f64 / 250.0).collect();
    assert_eq!(restarts.len(), 4, "one decoder_restart per outage: {restarts:?}");
    for (r, a) in restarts.iter().zip(&after) {
        assert!((r - a).abs() < 1e-9, "restart at {r}, the block after the outage at {a}");
    }
}

#[test]
fn daisy_rows_pair_odd_with_even_and_a_lost_half_loses_exactly_its_row() {
    let dir = TempDir::new("cyton-daisy");
    let emulator = Emulator::start(dir.path(), EmulatorConfig { daisy: true, ..Default::default() });
    let daemon = start_daemon(DaemonOptions::default());
    let id = start_session(&daemon, &emulator, &["daisy=on", "ch12=gain:2"]);
    let info = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(info["sample_rate"], 125.0);
    assert_eq!(info["channels"].as_array().unwrap().len(), 16);
    let mut gains = [24u8; 16];
    gains[11] = 2;

    let follower = Follower::start(&daemon, &id);
    let mut rows: Vec<u64> = Vec::new();
    let mut lost_total = 0;
    let mut drops = 0;
    follower.collect_until(Duration::from_secs(30), |ev| {
        if ev["type"] == "gap" {
            lost_total += ev["lost_samples"].as_u64().unwrap();
        }
        if let Some(b) = SampleBlock::of(ev) {
            for row in &b.rows {
                let k = index_of(row, 24);
                assert_eq!(k % 2, 1, "a row starts with the board's odd packet");
                assert_row_exact(row, k, &gains); // channel 9 is packet k + 1: the pair is right
                rows.push(k);
            }
            // Drop one packet at a time, alternately the board's and the Daisy's half.
            if rows.len() > 50 * (drops + 1) && drops < 6 {
                emulator.drop_packets(1);
                drops += 1;
            }
        }
        rows.len() >= 400
    });
    daemon.ctl_json(&["session", "stop", &id]);
    let last = *rows.last().unwrap();
    let expected_rows = (last - rows[0]) / 2 + 1;
    assert_eq!(lost_total, 6, "each lost half loses exactly one row");
    assert_eq!(rows.len() as u64 + lost_total, expected_rows);
    assert!(emulator.received().starts_with("svC"), "{}", emulator.received());
}

#[test]
fn a_stall_is_detected_within_stall_timeout_and_streaming_resumes() {
    let dir = TempDir::new("cyton-stall");
    let emulator = Emulator::start(dir.path(), EmulatorConfig::default());
    let daemon = start_daemon(DaemonOptions::default());
    let id = start_session(&daemon, &emulator, &["stall_timeout=0.5", "reply_timeout=0.3"]);
    let follower = Follower::start(&daemon, &id);
    follower.collect_until(Duration::from_secs(10), |ev| SampleBlock::of(ev).is_some());

    emulator.stall(Duration::from_secs(2));
    let stalled_at = Instant::now();
    let events = follower.collect_until(Duration::from_secs(5), |ev| ev["state"] == "reconnecting");
    let detected = stalled_at.elapsed().as_secs_f64();
    assert!(detected < 0.5 + 0.3, "stall detected after {detected:.3} s with stall_timeout 0.5 s");
    let reason = events.last().unwrap()["message"].as_str().unwrap().to_string();
    assert!(reason.contains("no data") && reason.contains("stall_timeout 0.5 s"), "{reason}");
    assert_eq!(daemon.ctl_json(&["session", "show", &id])["state"], "reconnecting");

    // The board answers again after 2 s: the driver resets it, streams again, reports the gap.
    let events = follower
        .collect_until(Duration::from_secs(15), |ev| SampleBlock::of(ev).is_some_and(|b| b.flags & RECONNECTED != 0));
    let gap = events.iter().find(|e| e["type"] == "gap").expect("a gap event for the outage");
    let seconds = gap["seconds"].as_f64().unwrap();
    assert!(seconds > 1.0 && seconds < 10.0, "outage of {seconds} s");
    assert!(gap["lost_samples"].is_null(), "an outage's sample count is not known exactly");
    assert!(events.iter().any(|e| e["state"] == "running"));
    let block = SampleBlock::of(events.last().unwrap()).unwrap();
    assert_ne!(block.flags & GAP, 0);
    let k = index_of(&block.rows[0], 24);
    assert_row_exact(&block.rows[0], k, &[24; 8]);
    assert_eq!(daemon.ctl_json(&["session", "show", &id])["state"], "running");
    assert!(emulator.starts() >= 2, "streaming was started again");
}

#[test]
fn an_unplugged_dongle_is_lost_at_once_and_streaming_resumes_when_it_returns() {
    let dir = TempDir::new("cyton-unplug");
    let emulator = Emulator::start(dir.path(), EmulatorConfig::default());
    let daemon = start_daemon(DaemonOptions::default());
    let id = start_session(&daemon, &emulator, &[]);
    let follower = Follower::start(&daemon, &id);
    follower.collect_until(Duration::from_secs(10), |ev| SampleBlock::of(ev).is_some());

    emulator.unplug();
    let unplugged = Instant::now();
    let events = follower.collect_until(Duration::from_secs(5), |ev| ev["state"] == "reconnecting");
    assert!(
        unplugged.elapsed() < Duration::from_millis(1500),
        "a read error is not a stall: {:?}",
        unplugged.elapsed()
    );
    let reason = events.last().unwrap()["message"].as_str().unwrap();
    assert!(reason.contains(&emulator.path().display().to_string()), "{reason}");

    std::thread::sleep(Duration::from_millis(1500));
    emulator.replug();
    let replugged = Instant::now();
    let events = follower
        .collect_until(Duration::from_secs(15), |ev| SampleBlock::of(ev).is_some_and(|b| b.flags & RECONNECTED != 0));
    assert!(replugged.elapsed() < Duration::from_secs(6), "back-off is at most 4 s");
    let gap = events.iter().find(|e| e["type"] == "gap").unwrap();
    assert!(gap["seconds"].as_f64().unwrap() >= 1.5, "{gap}");
    let block = SampleBlock::of(events.last().unwrap()).unwrap();
    let k = index_of(&block.rows[0], 24);
    assert_row_exact(&block.rows[0], k, &[24; 8]);
    daemon.ctl_json(&["session", "stop", &id]);
}

#[test]
fn a_board_that_refuses_a_channel_setting_fails_session_start_with_its_message() {
    let dir = TempDir::new("cyton-failure");
    let config = EmulatorConfig { channel_failure: Some("Channel setting rejected".into()), ..Default::default() };
    let emulator = Emulator::start(dir.path(), config);
    let daemon = start_daemon(DaemonOptions::default());
    let port = format!("port={}", emulator.path().display());
    let out = daemon.ctl(&["session", "start", "--driver", "openbci", "--set", &port, "--set", "ch3=gain:12"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the board refused `x3050110X`: Failure: Channel setting rejected"), "{err}");

    // A board that never answers a configured command: the error names the command.
    drop(emulator);
    let legacy = Emulator::start(dir.path(), EmulatorConfig { firmware: Firmware::Legacy, ..Default::default() });
    let out = daemon.ctl(&[
        "session",
        "start",
        "--driver",
        "openbci",
        "--set",
        &port,
        "--set",
        "sample_rate=250",
        "--set",
        "reply_timeout=0.5",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no reply to `~6`"), "{err}");
    drop(legacy);

    // No board at all.
    let out = daemon.ctl(&["session", "start", "--driver", "openbci", "--set", &port]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ttyCYTON") && err.contains("plugged in"), "{err}");
    assert_eq!(daemon.ctl_json(&["status"])["sessions_active"], 0);
}

/// The real Cyton recording: counts recovered from the GUI's µV, played through the emulator at
/// 10× real time, must come out of the daemon as the recording's values.
#[test]
fn the_real_cyton_recording_comes_out_as_recorded() {
    let path = data_dir().join("openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut recorded: Vec<(u8, [f64; 8])> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('%') && !l.starts_with("Sample Index")) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let uv: [f64; 8] = std::array::from_fn(|i| f[1 + i].parse().unwrap());
        recorded.push((f[0].parse().unwrap(), uv));
    }
    let scale = scale_uv(24);
    let rows: Vec<(u8, [i32; 8])> =
        recorded.iter().map(|(c, uv)| (*c, std::array::from_fn(|i| (uv[i] / scale).round() as i32))).collect();
    let n = rows.len();
    let dir = TempDir::new("cyton-recording");
    let config = EmulatorConfig {
        packet_rate: 2500.0,
        signal: Signal::Recording(std::sync::Arc::new(rows)),
        ..Default::default()
    };
    let emulator = Emulator::start(dir.path(), config);
    // 2500 blocks a second: a queue deep enough that this follower loses nothing.
    let daemon =
        start_daemon(DaemonOptions { config: Some("subscriber_queue = 100000\n".into()), ..Default::default() });
    let port = format!("port={}", emulator.path().display());
    let follower = Follower::spawn(
        &daemon,
        &["--json", "session", "start", "--driver", "openbci", "--set", &port, "--follow", "--samples"],
    );
    let mut got: Vec<Vec<f32>> = Vec::with_capacity(n);
    follower.collect_until(Duration::from_secs(60), |ev| {
        assert_ne!(ev["type"], "lost", "the follower fell behind");
        if ev["type"] == "gap" {
            panic!("gap after {} rows: {ev}; emulator overflow {}", got.len(), emulator.overflow());
        }
        if let Some(b) = SampleBlock::of(ev) {
            got.extend(b.rows);
        }
        got.len() >= n
    });
    let id = daemon.ctl_json(&["session", "list"])[0]["id"].as_str().unwrap().to_string();
    daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(got.len(), n);
    for (i, (row, (_, uv))) in got.iter().zip(&recorded).enumerate() {
        for ch in 0..8 {
            // Exactly the recording's counts (the file's µV / scale, rounded), scaled once to f32.
            let counts = (uv[ch] / scale).round();
            assert_eq!(row[ch], (counts * scale) as f32, "row {i} channel {}: {} vs {}", ch + 1, row[ch], uv[ch]);
            // Which is the file's value but for its two decimals (the GUI's own float rounding
            // makes that up to 0.01) and the f32 rounding of values up to ~10^5 µV.
            let half_ulp = f64::from(row[ch].abs()) * f64::from(f32::EPSILON) / 2.0;
            assert!((f64::from(row[ch]) - uv[ch]).abs() <= 0.01 + half_ulp, "row {i} channel {}", ch + 1);
        }
    }
    assert_eq!(emulator.overflow(), 0);
}

/// A daemon killed with SIGKILL leaves the board streaming; the next session stops it, resets it
/// and streams cleanly from the new start.
#[test]
fn a_board_left_streaming_by_a_killed_daemon_is_stopped_and_reset() {
    let dir = TempDir::new("cyton-crash");
    let emulator = Emulator::start(dir.path(), EmulatorConfig::default());
    let mut first = start_daemon(DaemonOptions::default());
    let id = start_session(&first, &emulator, &[]);
    Follower::start(&first, &id).collect_until(Duration::from_secs(10), |ev| SampleBlock::of(ev).is_some());
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let sent_while_orphaned = emulator.packets_sent();

    let second = start_daemon(DaemonOptions::default());
    let id = start_session(&second, &emulator, &[]);
    let follower = Follower::start(&second, &id);
    let mut rows = 0;
    follower.collect_until(Duration::from_secs(10), |ev| {
        assert_ne!(ev["type"], "gap", "the new session starts from a clean stream");
        if let Some(b) = SampleBlock::of(ev) {
            for row in &b.rows {
                assert_row_exact(row, index_of(row, 24), &[24; 8]);
                rows += 1;
            }
        }
        rows >= 100
    });
    second.ctl_json(&["session", "stop", &id]);
    assert!(sent_while_orphaned > 0);
    assert_eq!(
        emulator.received().matches("svb").count(),
        2,
        "each session stopped, reset, started: {}",
        emulator.received()
    );
    assert_eq!(emulator.starts(), 2);
}

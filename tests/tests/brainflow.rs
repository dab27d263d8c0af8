//! The `brainflow` driver end to end: the real daemon and ctl with BrainFlow's own
//! libBoardController.so (the `brainflow` wheel in .venv, loaded through
//! BCI2TOKEN_BRAINFLOW_LIB), its synthetic and playback boards, and its Cyton board on the pty
//! Cyton emulator beside our native `openbci` driver. BrainFlow's Python binding is the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bci2token_tests::cyton_emulator::{counts, scale_uv, Emulator, EmulatorConfig};
use bci2token_tests::{
    reference_python, ssvep_files, start_daemon, workspace_root, Daemon, DaemonOptions, Follower, SampleBlock, TempDir,
};

const GAP: u64 = 1;
const RECONNECTED: u64 = 4;

/// `brainflow_peer.py ARGS`' stdout.
fn peer(args: &[&str]) -> String {
    let out = Command::new(reference_python(&["brainflow"]))
        .arg(workspace_root().join("tools/reference/brainflow_peer.py"))
        .args(args)
        .output()
        .expect("run brainflow_peer.py");
    assert!(out.status.success(), "brainflow_peer.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn library() -> PathBuf {
    let lib = PathBuf::from(peer(&["lib"]).trim());
    assert!(lib.is_file(), "{}", lib.display());
    lib
}

fn descr(board: i32) -> serde_json::Value {
    serde_json::from_str(&peer(&["descr", &board.to_string()])).unwrap()
}

fn daemon_with(lib: &Path, config: Option<String>) -> Daemon {
    start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_BRAINFLOW_LIB".into(), lib.display().to_string())],
        config,
        ..Default::default()
    })
}

fn labels(info: &serde_json::Value) -> Vec<String> {
    info["channels"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap().to_string()).collect()
}

fn failure(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_synthetic_board_gives_its_described_channels_at_its_rate_with_nothing_lost() {
    let lib = library();
    let daemon = daemon_with(&lib, None);
    let want = descr(-1);
    let id = daemon.ctl_json(&["session", "start", "--driver", "brainflow", "--set", "board=Synthetic"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let info = daemon.ctl_json(&["session", "show", &id]);
    let names: Vec<String> = want["eeg_names"].as_str().unwrap().split(',').map(str::to_string).collect();
    assert_eq!(names.len(), want["eeg_channels"].as_array().unwrap().len());
    assert_eq!(labels(&info), names, "{info}");
    assert_eq!(info["sample_rate"].as_f64(), want["sampling_rate"].as_f64(), "{info}");
    assert!(info["channels"].as_array().unwrap().iter().all(|c| c["unit"] == "uV"), "{info}");
    assert!(info["description"].as_str().unwrap().contains("Synthetic"), "{info}");
    let rate = want["sampling_rate"].as_f64().unwrap();

    // Six seconds of blocks: each starts where the last ended, none flagged, and they come at the
    // board's rate (frames over the wall-clock time between the first and the last block).
    let follower = Follower::start(&daemon, &id);
    let mut frames = 0usize;
    let mut next_t: Option<f64> = None;
    let mut first: Option<(Instant, usize)> = None;
    let mut last = Instant::now();
    follower.collect_until(Duration::from_secs(30), |ev| {
        assert_ne!(ev["type"], "gap", "{ev}");
        let Some(b) = SampleBlock::of(ev) else { return false };
        assert_eq!(b.flags & GAP, 0, "no gap on the synthetic board");
        if let Some(t) = next_t {
            assert!((b.t - t).abs() < 1e-9, "block at {} after one ending at {t}", b.t);
        }
        assert!(b.rows.iter().flatten().all(|v| v.is_finite()));
        next_t = Some(b.t + b.rows.len() as f64 / rate);
        let now = Instant::now();
        if first.is_none() {
            first = Some((now, b.rows.len()));
        }
        frames += b.rows.len();
        last = now;
        frames >= (6.0 * rate) as usize
    });
    let (t0, f0) = first.unwrap();
    let measured = (frames - f0) as f64 / last.duration_since(t0).as_secs_f64();
    assert!((measured / rate - 1.0).abs() < 0.1, "{measured:.1} samples/s from a {rate} Hz board");
    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["gaps"], 0, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    // Every data row, when asked: the description's rows but the counter, time stamp and marker.
    let all =
        daemon.ctl_json(&["session", "start", "--driver", "brainflow", "--set", "board=-1", "--set", "channels=all"]);
    let info = daemon.ctl_json(&["session", "show", all["id"].as_str().unwrap()]);
    let rows = want["num_rows"].as_u64().unwrap() as usize;
    let bookkeeping = ["package_num_channel", "timestamp_channel", "marker_channel"].map(|k| want[k].as_u64().unwrap());
    let channels = info["channels"].as_array().unwrap();
    assert_eq!(channels.len(), rows - bookkeeping.len(), "{info}");
    let units: Vec<&str> = channels.iter().map(|c| c["unit"].as_str().unwrap()).collect();
    assert_eq!(units.iter().filter(|u| **u == "uV").count(), names.len(), "{units:?}");
    assert_eq!(units.iter().filter(|u| **u == "g").count(), want["accel_channels"].as_array().unwrap().len());
    assert!(labels(&info).contains(&"gyro1".to_string()) && labels(&info).contains(&"battery1".to_string()));
}

/// BrainFlow's playback board plays a BrainFlow CSV (written by BrainFlow's DataFilter from a
/// real recording): every EEG value the daemon delivers is the file's, in order, with no gap,
/// and the session finishes when the file is played.
#[test]
fn the_playback_board_delivers_every_value_of_the_file_in_order() {
    let lib = library();
    let dir = TempDir::new("brainflow-playback");
    let csv = dir.path().join("ssvep.csv");
    let edf = &ssvep_files()[0];
    let written: serde_json::Value =
        serde_json::from_str(&peer(&["playback", edf, csv.to_str().unwrap(), "12"])).unwrap();
    let n = written["samples"].as_u64().unwrap() as usize;
    // The file as text: one sample a line, BrainFlow's rows in columns (EEG in 1..=8).
    let file: Vec<Vec<f64>> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(|v| v.trim().parse::<f64>().unwrap()).collect())
        .collect();
    assert_eq!(file.len(), n);

    let daemon = daemon_with(&lib, None);
    let file_arg = format!("file={}", csv.display());
    let follower = Follower::spawn(
        &daemon,
        &[
            "--json",
            "session",
            "start",
            "--driver",
            "brainflow",
            "--set",
            "board=PlayBack",
            "--set",
            "master_board=Cyton",
            "--set",
            &file_arg,
            "--set",
            "stall_timeout=1",
            "--follow",
            "--samples",
        ],
    );
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let events = follower.collect_until(Duration::from_secs(60), |ev| {
        if let Some(b) = SampleBlock::of(ev) {
            assert_eq!(b.flags & GAP, 0, "a gap in a file without one");
            assert!((b.t - rows.len() as f64 / 250.0).abs() < 1e-9, "t counts the samples");
            rows.extend(b.rows);
        }
        ev["state"] == "finished" || ev["state"] == "failed"
    });
    assert_eq!(events.last().unwrap()["state"], "finished", "{:?}", events.last());
    assert!(!events.iter().any(|e| e["type"] == "gap"), "no gap events");
    // BrainFlow's playback clears the marker row, so no annotation (the driver's markers are
    // unit-tested in drivers/brainflow/src/blocks.rs).
    assert!(!events.iter().any(|e| e["type"] == "annotation"));
    assert_eq!(rows.len(), n, "every sample of the file, once");
    for (k, (row, line)) in rows.iter().zip(&file).enumerate() {
        assert_eq!(row.len(), 8);
        for ch in 0..8 {
            let want = line[1 + ch] as f32;
            assert_eq!(row[ch].to_bits(), want.to_bits(), "sample {k} channel {}: {} µV, file {want}", ch + 1, row[ch]);
        }
    }
}

/// BrainFlow's Cyton board and our `openbci` driver, each on its own Cyton emulator sending the
/// same packets (channel 1 holds the packet's index): the same µV values for every packet both
/// delivered, in the same run.
#[test]
fn brainflow_s_cyton_gives_the_values_the_native_driver_gives_for_the_same_packets() {
    let lib = library();
    let dir = TempDir::new("brainflow-cyton");
    let sub = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let native_board = Emulator::start(&sub("native"), EmulatorConfig::default());
    let bf_board = Emulator::start(&sub("bf"), EmulatorConfig::default());
    let daemon = daemon_with(&lib, None);
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
    let info = daemon.ctl_json(&["session", "show", &bf]);
    assert_eq!(labels(&info), ["Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"], "BrainFlow's Cyton montage");
    assert_eq!(info["sample_rate"], 250.0);

    let by_index = |id: &str| -> HashMap<u64, Vec<f32>> {
        let follower = Follower::start(&daemon, id);
        let mut rows = HashMap::new();
        follower.collect_until(Duration::from_secs(20), |ev| {
            if let Some(b) = SampleBlock::of(ev) {
                for row in b.rows {
                    let k = (f64::from(row[0]) / scale_uv(24)).round() as u64;
                    rows.insert(k, row);
                }
            }
            rows.len() >= 500
        });
        rows
    };
    let (native_rows, bf_rows) = std::thread::scope(|s| {
        let a = s.spawn(|| by_index(&native));
        let b = s.spawn(|| by_index(&bf));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut compared = 0;
    for (k, row) in &bf_rows {
        // Both are the emulator's counts × 4.5 V / 24 / (2^23 - 1) in double, rounded once to f32:
        // the same bits.
        for (ch, v) in row.iter().enumerate() {
            let want = (f64::from(counts(*k, ch)) * scale_uv(24)) as f32;
            assert_eq!(
                v.to_bits(),
                want.to_bits(),
                "packet {k} channel {}: {v} µV through BrainFlow, {want} from the counts",
                ch + 1
            );
        }
        if let Some(theirs) = native_rows.get(k) {
            let same = row.iter().zip(theirs).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "packet {k}: BrainFlow {row:?}, native {theirs:?}");
            compared += 1;
        }
    }
    assert!(compared >= 100, "only {compared} packets seen by both");

    // Packets the board never sent: BrainFlow's package counter jumps, and the driver reports
    // exactly that many samples lost, at the right stream time.
    let follower = Follower::start(&daemon, &bf);
    let mut before: Option<u64> = None;
    let last_k = |b: &SampleBlock| (f64::from(b.rows.last().unwrap()[0]) / scale_uv(24)).round() as u64;
    follower.collect_until(Duration::from_secs(10), |ev| {
        SampleBlock::of(ev).inspect(|b| before = Some(last_k(b))).is_some()
    });
    bf_board.drop_packets(3);
    let events = follower.collect_until(Duration::from_secs(10), |ev| {
        let Some(b) = SampleBlock::of(ev) else { return false };
        let k = (f64::from(b.rows[0][0]) / scale_uv(24)).round() as u64;
        if b.flags & GAP == 0 {
            before = Some(last_k(&b));
            return false;
        }
        assert_eq!(Some(k), before.map(|p| p + 4), "three packets missing before the flagged block");
        assert!((b.t - k as f64 / 250.0).abs() < 1e-9, "t counts the lost samples");
        true
    });
    let gap = events.iter().find(|e| e["type"] == "gap").expect("a gap event");
    assert_eq!(gap["lost_samples"], 3, "{gap}");
    assert_eq!(daemon.ctl_json(&["session", "stop", &native])["gaps"], 0);
    assert_eq!(daemon.ctl_json(&["session", "stop", &bf])["gaps"], 1);
}

/// No library, an unknown board, a port that is not there, and a board that stops sending: each a
/// clear error or a reconnecting state, and the daemon answers throughout.
#[test]
fn bad_input_gives_clear_errors_and_a_silent_board_reconnects() {
    let lib = library();
    // No library: the plugin loads, and both `devices` and `session start` say how to get one.
    let none = start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_BRAINFLOW_LIB".into(), "/nonexistent/libBoardController.so".into())],
        ..Default::default()
    });
    let drivers = none.ctl_json(&["drivers"]);
    assert!(drivers.to_string().contains("\"brainflow\""), "{drivers}");
    let out = none.ctl(&["devices", "--driver", "brainflow"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("pip install brainflow") && text.contains("/nonexistent"), "{text}");
    let e = failure(&none.ctl(&["session", "start", "--driver", "brainflow", "--set", "board=Synthetic"]));
    assert!(e.contains("pip install brainflow") && e.contains("[drivers.brainflow] library"), "{e}");
    assert!(none.ctl(&["status"]).status.success());
    drop(none);

    let daemon = daemon_with(&lib, None);
    // `devices` lists the library's boards by name and id.
    let devices = daemon.ctl_json(&["devices", "--driver", "brainflow"]).to_string();
    for name in ["Synthetic (board id -1)", "Cyton (board id 0)", "Muse2 (board id 38)", "PlayBack (board id -3)"] {
        assert!(devices.contains(name), "{name} not in {devices}");
    }
    let start = |sets: &[&str]| {
        let mut args = vec!["session", "start", "--driver", "brainflow"];
        for s in sets {
            args.extend(["--set", s]);
        }
        daemon.ctl(&args)
    };
    let e = failure(&start(&["board=NoSuchBoard"]));
    assert!(e.contains("\"NoSuchBoard\"") && e.contains("devices --driver brainflow"), "{e}");
    let e = failure(&start(&["board=Ganglion"]));
    assert!(e.contains("ids 1, 46"), "{e}");
    let e = failure(&start(&["board=Cyton", "serial_port=/dev/ttyUSB77"]));
    assert!(e.contains("/dev/ttyUSB77") && e.contains("no such port"), "{e}");
    let e = failure(&start(&["board=Cyton", "serial_port=/etc/passwd"]));
    assert!(e.contains("is not a serial port"), "{e}");
    let e = failure(&start(&["board=PlayBack"]));
    assert!(e.contains("master_board"), "{e}");
    // A master board is for PlayBack and Streaming only (BrainFlow writes the board's own rows).
    let e = failure(&start(&["board=Synthetic", "master_board=Cyton"]));
    assert!(e.contains("`master_board` is for BrainFlow's PlayBack"), "{e}");
    let e = failure(&start(&["board=Synthetic", "timeout=600"]));
    assert!(e.contains("`timeout`") && e.contains("from 0 to 60"), "{e}");
    let e = failure(&start(&["board=Synthetic", "stall_timeout=0.001"]));
    assert!(e.contains("`stall_timeout`") && e.contains("0.1"), "{e}");
    let e = failure(&start(&["board=Synthetic", "library=/tmp/evil.so"]));
    assert!(e.contains("no config key `library`"), "{e}");
    let dir = TempDir::new("brainflow-bad");
    // A file beyond what the driver copies into memory: refused from its size, before a copy.
    let big = dir.path().join("big.csv");
    std::fs::File::create(&big).unwrap().set_len(300 << 20).unwrap();
    let e = failure(&start(&["board=PlayBack", "master_board=Cyton", &format!("file={}", big.display())]));
    assert!(e.contains("`file`") && e.contains("big.csv") && e.contains("256 MiB at most"), "{e}");
    // A Cyton that does not answer: BrainFlow's error, named.
    let silent = Emulator::start(dir.path(), EmulatorConfig::default());
    silent.stall(Duration::from_secs(30));
    let e = failure(&start(&["board=Cyton", &format!("serial_port={}", silent.path().display())]));
    assert!(e.contains("cannot open board \"Cyton\"") && e.contains("BrainFlow's prepare_session failed"), "{e}");
    drop(silent);
    assert!(daemon.ctl(&["status"]).status.success());

    // A board that stops sending: reconnecting within stall_timeout, then streaming again.
    std::fs::create_dir_all(dir.path().join("live")).unwrap();
    let board = Emulator::start(&dir.path().join("live"), EmulatorConfig::default());
    let port = format!("serial_port={}", board.path().display());
    let id = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "brainflow",
        "--set",
        "board=Cyton",
        "--set",
        &port,
        "--set",
        "stall_timeout=0.5",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let follower = Follower::start(&daemon, &id);
    follower.collect_until(Duration::from_secs(10), |ev| SampleBlock::of(ev).is_some());
    board.stall(Duration::from_secs(2));
    let stalled_at = Instant::now();
    let events = follower.collect_until(Duration::from_secs(5), |ev| ev["state"] == "reconnecting");
    let detected = stalled_at.elapsed().as_secs_f64();
    assert!(detected < 1.5, "stall detected after {detected:.3} s with stall_timeout 0.5 s");
    let reason = events.last().unwrap()["message"].as_str().unwrap().to_string();
    assert!(reason.contains("no data from the board") && reason.contains("stall_timeout 0.5 s"), "{reason}");
    assert_eq!(daemon.ctl_json(&["session", "show", &id])["state"], "reconnecting");
    assert!(daemon.ctl(&["status"]).status.success());
    let events = follower
        .collect_until(Duration::from_secs(20), |ev| SampleBlock::of(ev).is_some_and(|b| b.flags & RECONNECTED != 0));
    let gap = events.iter().find(|e| e["type"] == "gap").expect("a gap event for the outage");
    assert!(gap["seconds"].as_f64().unwrap() > 1.0, "{gap}");
    assert_eq!(daemon.ctl_json(&["session", "show", &id])["state"], "running");
    assert!(board.starts() >= 2, "streaming was started again");
    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped");
}

/// A system daemon (real users through setpriv): the library is the admin's `[drivers.brainflow]
/// library` (no environment), also for `devices`; a caller's playback file works only as the file
/// bci2tokenctl passes, never by path; a pseudo-terminal is not a serial port without the admin's
/// allow_pty, and a library is no session key.
#[test]
fn a_system_daemon_loads_the_admin_s_library_and_opens_nothing_by_a_caller_s_name() {
    use bci2token_tests::system_users::{system_daemon, text, world};
    use std::os::unix::fs::PermissionsExt;
    let Some(w) = world() else { return };
    let lib = library();
    let d = system_daemon(&format!("[drivers.brainflow]\nlibrary = \"{}\"\n", lib.display()));
    let devices = text(&w.alice.ctl(&d, &["devices", "--driver", "brainflow"]));
    assert!(devices.contains("Synthetic (board id -1)") && devices.contains("Cyton (board id 0)"), "{devices}");
    let started = w.alice.ctl_json(&d, &["session", "start", "--driver", "brainflow", "--set", "board=Synthetic"]);
    assert!(started["description"].as_str().unwrap().contains("Synthetic (board id -1)"), "{started}");

    // Alice's own BrainFlow file, readable by her only: passed, it plays.
    let tmp = TempDir::new("brainflow-system");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let csv = tmp.path().join("mine.csv");
    peer(&["playback", &ssvep_files()[0], csv.to_str().unwrap(), "2"]);
    nix::unistd::chown(&csv, Some(w.alice.uid.into()), Some(w.alice.gid.into())).unwrap();
    std::fs::set_permissions(&csv, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = format!("file={}", csv.display());
    let playback = ["session", "start", "--driver", "brainflow", "--set", "board=PlayBack", "--set", "master_board=0"];
    let follower = Follower::from_command(
        w.alice.ctl_command(&d, &[&["--json"][..], &playback[..], &["--set", &file, "--follow", "--samples"]].concat()),
    );
    let first = follower.next(Duration::from_secs(20)).expect("the playback session's first event");
    let mine = w.alice.ctl_json(&d, &["session", "show", first["session"].as_str().unwrap()]);
    assert!(
        mine["description"].as_str().unwrap().contains("PlayBack (board id -3) with the rows of Cyton (board id 0)"),
        "{mine}"
    );
    let mut frames = SampleBlock::of(&first).map_or(0, |b| b.rows.len());
    let events = follower.collect_until(Duration::from_secs(30), |ev| {
        frames += SampleBlock::of(ev).map_or(0, |b| b.rows.len());
        ev["state"] == "finished" || ev["state"] == "failed"
    });
    assert_eq!(events.last().unwrap()["state"], "finished", "{:?}", events.last());
    assert_eq!(frames, 512, "the passed file played, all of it (2 s at 256 Hz, from the driver's copy)");
    // Bob cannot read it, so bci2tokenctl cannot pass it; by path the daemon refuses it.
    let o = w.bob.ctl(&d, &[&playback[..], &["--set", &file]].concat());
    assert!(!o.status.success(), "{}", text(&o));
    let req = serde_json::json!({"method": "session_start", "params": {"driver": "brainflow",
        "config": {"board": "PlayBack", "master_board": "0", "file": csv.display().to_string()}}});
    let r = w.bob.raw(&d, &["request", &req.to_string()]);
    assert!(r["error"]["message"].as_str().unwrap_or("").contains("pass the file"), "{r}");

    // A pseudo-terminal (the emulator) is refused without allow_pty; a library is no session key.
    let board = Emulator::start(tmp.path(), EmulatorConfig::default());
    let port = format!("serial_port={}", std::fs::read_link(board.path()).unwrap().display());
    let o = w.alice.ctl(&d, &["session", "start", "--driver", "brainflow", "--set", "board=Cyton", "--set", &port]);
    assert!(text(&o).contains("is not a serial port") && text(&o).contains("allow_pty"), "{}", text(&o));
    for set in ["library=/tmp/evil.so", "_library=/tmp/evil.so"] {
        let o = w.alice.ctl(&d, &["session", "start", "--driver", "brainflow", "--set", "board=-1", "--set", set]);
        assert!(!o.status.success(), "{}", text(&o));
    }
}

/// The board table in docs/drivers.md is BrainFlow's library's (through its Python binding's
/// list of board ids), and the driver's `devices` lists exactly those boards.
#[test]
fn the_board_table_in_the_docs_is_the_library_s() {
    let boards: Vec<serde_json::Value> = peer(&["boards"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(boards.len() > 60, "{} boards", boards.len());
    let daemon = daemon_with(&library(), None);
    let devices = daemon.ctl_json(&["devices", "--driver", "brainflow"]).to_string();
    for b in &boards {
        let shown = format!("{} (board id {})", b["name"].as_str().unwrap(), b["id"]);
        assert!(devices.contains(&shown), "{shown} not listed: {devices}");
    }
    assert_eq!(devices.matches("(board id ").count(), boards.len(), "the driver lists the same boards");

    let preset_names = |p: &serde_json::Value| -> String {
        let names: Vec<&str> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|v| match v.as_i64() {
                Some(0) => "default",
                Some(1) => "auxiliary",
                _ => "ancillary",
            })
            .collect();
        names.join(", ")
    };
    let mut table =
        String::from("| Id | Board | EEG channels | Rate (default preset) | Presets |\n|---|---|---|---|---|\n");
    for b in &boards {
        let rate = b["rate"].as_f64().map_or("the master board's".to_string(), |r| format!("{r} Hz"));
        table.push_str(&format!(
            "| {} | {} | {} | {rate} | {} |\n",
            b["id"],
            b["name"].as_str().unwrap(),
            b["eeg"],
            preset_names(&b["presets"])
        ));
    }
    let path = workspace_root().join("docs/drivers.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- brainflow boards: generated -->\n", "<!-- end of brainflow boards -->");
    let a = doc.find(start).expect("the table's start marker") + start.len();
    let b = doc.find(end).expect("the table's end marker");
    if std::env::var_os("BCI2TOKEN_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &doc[..a], &doc[b..])).unwrap();
        return;
    }
    assert_eq!(&doc[a..b], table, "docs/drivers.md's board table is not BrainFlow's: rerun with BCI2TOKEN_BLESS=1");
}

//! The `lsl` driver end to end: pylsl outlets (tools/reference/lsl_peer.py) read through the real
//! daemon. Every test runs in its own LSL world (tests/lib.rs LslWorld: ResolveScope = machine and
//! a session id of its own), so no discovery packet leaves this machine.

use std::time::{Duration, Instant};

use bci2token_tests::{read_line, start_daemon, DaemonOptions, Follower, LslWorld, SampleBlock};
use serde_json::Value;

const GAP: u64 = 1;
const RECONNECTED: u64 = 4;

/// value(k, c) of lsl_peer.py.
fn value(k: u64, c: usize) -> f32 {
    ((k % 100_000) as f64 + c as f64 / 8.0) as f32
}

fn daemon_in(world: &LslWorld) -> bci2token_tests::Daemon {
    start_daemon(DaemonOptions { env: world.env(), ..Default::default() })
}

/// Starts an outlet and returns it with its t0 (sample k is stamped t0 + k / rate).
fn outlet(world: &LslWorld, args: &[&str]) -> (std::process::Child, f64) {
    let mut full = vec!["outlet"];
    full.extend_from_slice(args);
    let mut child = world.peer(&full);
    let ready: Value = serde_json::from_str(&read_line(&mut child)).expect("the outlet's ready line");
    (child, ready["ready"].as_f64().unwrap())
}

#[test]
fn a_pylsl_outlet_arrives_exactly_with_its_time_stamps() {
    let world = LslWorld::new("exact");
    let (mut peer, t0) = outlet(&world, &["bci2token-exact", "src-exact", "8", "250", "30"]);
    let daemon = daemon_in(&world);

    // devices lists it.
    let devices = daemon.ctl_json(&["devices", "--driver", "lsl"]);
    let listed = devices["devices"].as_array().unwrap();
    assert!(
        listed.iter().any(|d| d["id"] == "src-exact" && d["description"].as_str().unwrap().contains("8 channels")),
        "{devices}"
    );

    let follower = Follower::spawn(
        &daemon,
        &["--json", "session", "start", "--driver", "lsl", "--set", "name=bci2token-exact", "--follow", "--samples"],
    );
    let mut next_k: Option<u64> = None;
    let mut rows = 0;
    let mut last_t = f64::NEG_INFINITY;
    let mut worst_dt: f64 = 0.0;
    follower.collect_until(Duration::from_secs(30), |ev| {
        assert_ne!(ev["type"], "gap", "no sample may be lost: {ev}");
        if let Some(b) = SampleBlock::of(ev) {
            assert_eq!(b.flags & GAP, 0);
            for (i, row) in b.rows.iter().enumerate() {
                let k = row[0].round() as u64;
                if let Some(want) = next_k {
                    assert_eq!(k, want, "samples are consecutive");
                }
                for (c, &v) in row.iter().enumerate() {
                    assert_eq!(v, value(k, c), "sample {k} channel {}", c + 1);
                }
                let t = b.t + i as f64 / 250.0;
                assert!(t > last_t, "time stamps are monotonic");
                last_t = t;
                worst_dt = worst_dt.max((t - (t0 + k as f64 / 250.0)).abs());
                next_k = Some(k + 1);
                rows += 1;
            }
        }
        rows >= 1000
    });
    assert!(worst_dt < 0.001, "time stamps within 1 ms of the outlet's after correction: worst {worst_dt}");
    let list = daemon.ctl_json(&["session", "list"]);
    let info = &list[0];
    assert_eq!(info["sample_rate"], 250.0);
    assert_eq!(info["channels"][7]["label"], "C8");
    assert_eq!(info["channels"][0]["unit"], "uV");
    let desc = info["description"].as_str().unwrap();
    assert!(desc.contains("clock offset") && desc.contains("±"), "the mapping's uncertainty is reported: {desc}");
    let _ = peer.kill();
    let _ = peer.wait();
}

#[test]
fn units_in_the_description_are_converted_to_microvolts_for_every_numeric_format() {
    let world = LslWorld::new("units");
    let daemon = daemon_in(&world);
    for (format, unit, factor) in [("double64", "millivolts", 1000.0), ("int16", "", 1.0), ("int32", "V", 1e6)] {
        let name = format!("bci2token-{format}");
        let (mut peer, _) = outlet(&world, &[&name, &name, "2", "100", "20", format, unit]);
        let set = format!("name={name}");
        let follower = Follower::spawn(
            &daemon,
            &["--json", "session", "start", "--driver", "lsl", "--set", &set, "--follow", "--samples"],
        );
        let mut checked = 0;
        follower.collect_until(Duration::from_secs(20), |ev| {
            if let Some(b) = SampleBlock::of(ev) {
                for row in &b.rows {
                    let k = (f64::from(row[0]) / factor).round() as u64;
                    for (c, &v) in row.iter().enumerate() {
                        let raw = if format.starts_with("int") { value(k, c).trunc() } else { value(k, c) };
                        assert_eq!(v, (f64::from(raw) * factor) as f32, "{format} in {unit:?}: sample {k}");
                    }
                    checked += 1;
                }
            }
            checked >= 50
        });
        drop(follower);
        let _ = peer.kill();
        let _ = peer.wait();
    }
}

#[test]
fn a_killed_and_restarted_outlet_is_reported_as_an_outage_and_streaming_resumes() {
    let world = LslWorld::new("restart");
    let (mut first, _) = outlet(&world, &["bci2token-restart", "src-restart", "4", "250", "60"]);
    let daemon = daemon_in(&world);
    let info = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "lsl",
        "--set",
        "source_id=src-restart",
        "--set",
        "stall_timeout=0.5",
    ]);
    let id = info["id"].as_str().unwrap().to_string();
    let follower = Follower::start(&daemon, &id);
    let mut last_k = 0;
    follower.collect_until(Duration::from_secs(10), |ev| {
        if let Some(b) = SampleBlock::of(ev) {
            last_k = b.rows.last().unwrap()[0].round() as u64;
        }
        last_k > 100
    });

    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    let events = follower.collect_until(Duration::from_secs(10), |ev| ev["state"] == "reconnecting");
    assert!(killed.elapsed() < Duration::from_secs(3), "the outage is noticed after stall_timeout");
    assert!(events.last().unwrap()["message"].as_str().unwrap().contains("bci2token-restart"));

    // The outlet comes back 2 s later, continuing its sample numbering where the clock says.
    std::thread::sleep(Duration::from_secs(2));
    let restart_k = (last_k + 1000).to_string();
    let (mut second, _) =
        outlet(&world, &["bci2token-restart", "src-restart", "4", "250", "60", "float32", "microvolts", &restart_k]);
    let events = follower
        .collect_until(Duration::from_secs(20), |ev| SampleBlock::of(ev).is_some_and(|b| b.flags & RECONNECTED != 0));
    assert!(events.iter().any(|e| e["state"] == "running"), "{events:?}");
    let gap = events.iter().find(|e| e["type"] == "gap").expect("a gap event");
    let seconds = gap["seconds"].as_f64().unwrap();
    assert!(seconds > 1.0, "the gap covers the outage: {gap}");
    let block = SampleBlock::of(events.last().unwrap()).unwrap();
    assert_ne!(block.flags & GAP, 0);
    let k = block.rows[0][0].round() as u64;
    assert!(k >= last_k + 1000, "samples of the new outlet: {k}");
    for (c, &v) in block.rows[0].iter().enumerate() {
        assert_eq!(v, value(k, c));
    }
    assert_eq!(daemon.ctl_json(&["session", "show", &id])["state"], "running");
    daemon.ctl_json(&["session", "stop", &id]);
    let _ = second.kill();
    let _ = second.wait();
}

#[test]
fn unusable_streams_and_a_missing_liblsl_are_refused_with_what_to_do() {
    let world = LslWorld::new("bad");
    let daemon = daemon_in(&world);
    let (mut strings, _) = outlet(&world, &["bci2token-strings", "src-strings", "2", "100", "30", "string"]);
    let (mut empty, _) = outlet(&world, &["bci2token-empty", "src-empty", "0", "100", "30"]);
    for (name, needle) in [
        ("bci2token-strings", "channel format string is not supported"),
        ("bci2token-empty", "has 0 channels"),
        ("bci2token-nowhere", "no LSL stream with name='bci2token-nowhere' appeared within 1 s"),
    ] {
        let set = format!("name={name}");
        let out = daemon.ctl(&["session", "start", "--driver", "lsl", "--set", &set, "--set", "timeout=1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{name}: {err}");
    }
    let _ = strings.kill();
    let _ = empty.kill();

    // Without liblsl the plugin still loads; devices and session start say how to get it.
    let without = start_daemon(DaemonOptions {
        env: vec![
            ("LSLAPICFG".into(), world.config.display().to_string()),
            ("BCI2TOKEN_LIBLSL".into(), "/nonexistent/liblsl.so.2".into()),
        ],
        ..Default::default()
    });
    let drivers = without.ctl_json(&["drivers"]);
    assert!(drivers.to_string().contains("\"lsl\""), "{drivers}");
    let out = without.ctl(&["session", "start", "--driver", "lsl", "--set", "name=x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/liblsl.so.2") && err.contains("pip install pylsl"), "{err}");
    let devices = without.ctl_json(&["devices", "--driver", "lsl"]);
    assert!(devices["errors"].to_string().contains("BCI2TOKEN_LIBLSL"), "{devices}");
}

/// The daemon's outlets: a pylsl inlet receives every token (as its JSON event) on the marker
/// stream and every decoded window's probabilities, while the session decodes.
#[test]
fn pylsl_inlets_receive_the_token_markers_and_probabilities_of_a_decoding_session() {
    let world = LslWorld::new("outlets");
    let daemon = daemon_in(&world);
    // The speller's "h" (14.1 Hz) and "i" (14.4 Hz), 3 s each, as in the demo.
    let script = r#"script=[{"label":"rest","seconds":2},{"label":"h","frequency":14.1,"seconds":3},
        {"label":"rest","seconds":1},{"label":"i","frequency":14.4,"seconds":3},{"label":"rest","seconds":2}]"#;
    let follower = Follower::spawn(
        &daemon,
        &[
            "--json",
            "session",
            "start",
            "--driver",
            "synthetic",
            "--set",
            script,
            "--set",
            "loop=false",
            "--model",
            "speller-40",
            "--lsl-outlets",
            "--follow",
        ],
    );
    let id = loop {
        let list = daemon.ctl_json(&["session", "list"]);
        if let Some(id) = list[0]["id"].as_str() {
            break id.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut markers = world.peer(&["inlet", &format!("bci2token tokens {id}"), "Markers", "12"]);
    let mut probs = world.peer(&["inlet", &format!("bci2token probabilities {id}"), "Probabilities", "12"]);
    let events = follower.collect_until(Duration::from_secs(30), |ev| ev["state"] == "finished");
    let tokens: Vec<&Value> = events.iter().filter(|e| e["type"] == "token").collect();
    let texts: Vec<&str> = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["h", "i"], "the session decoded the script");

    let lines = |child: &mut std::process::Child| -> Vec<Value> {
        let out = bci2token_tests::read_lines(child);
        let _ = child.wait();
        out.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let marker_lines = lines(&mut markers);
    let desc = marker_lines[0]["desc"].as_str().unwrap();
    assert!(desc.contains(&format!("<session>{id}</session>")) && desc.contains("<model>speller-40</model>"), "{desc}");
    assert!(desc.contains("<type>Markers</type>") && desc.contains("<tokenizer>"), "{desc}");
    let received: Vec<Value> =
        marker_lines[1..].iter().map(|m| serde_json::from_str(m["sample"][0].as_str().unwrap()).unwrap()).collect();
    assert_eq!(received.len(), 2, "{received:?}");
    for (got, want) in received.iter().zip(&tokens) {
        assert_eq!(&got, want, "the marker is the token event");
    }

    let prob_lines = lines(&mut probs);
    let desc = prob_lines[0]["desc"].as_str().unwrap();
    assert!(desc.contains("<label>a</label>") && desc.contains("<label>?</label>"), "channels are the labels");
    assert!(desc.contains("<nominal_srate>4"), "one window per 0.25 s hop: {desc}");
    let rows: Vec<Vec<f64>> = prob_lines[1..]
        .iter()
        .map(|l| l["sample"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    assert!(rows.len() >= 20, "a row per decoded window: {}", rows.len());
    for r in &rows {
        assert_eq!(r.len(), 40);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-4, "probabilities sum to 1: {r:?}");
    }
    // The row of the window that emitted "h" has "h" (index 7) as its most probable label.
    let best = |r: &Vec<f64>| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert!(rows.iter().any(|r| best(r) == 7 && r[7] > 0.7), "some windows are confidently 'h'");
    let stamps: Vec<f64> = prob_lines[1..].iter().map(|l| l["t"].as_f64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[1] > w[0]), "stamped in order on liblsl's clock");
}

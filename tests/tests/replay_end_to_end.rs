//! The real daemon, the real ctl and the real plugins: a replayed recording arrives complete and
//! exact through `session start --follow --samples --json`, and systemd sees READY/STOPPING.

use std::process::Stdio;
use std::time::Duration;

use bci2token_driver_replay::recording::{open_recording, RecordingEvent};
use bci2token_tests::{data_dir, read_lines, start_daemon, DaemonOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

/// What a recording holds: channel labels, samples per channel, annotations (onset, text).
type Contents = (Vec<String>, Vec<Vec<f32>>, Vec<(f64, String)>);

/// Every sample and annotation of a file, read with the replay driver's own reader.
fn expected(path: &std::path::Path) -> Contents {
    let mut rec = open_recording(path, None).unwrap();
    let labels: Vec<String> = rec.channels().iter().map(|c| c.label.clone()).collect();
    let mut buf = vec![0f32; labels.len() * rec.max_chunk_frames()];
    let mut data = vec![Vec::new(); labels.len()];
    let mut annotations = Vec::new();
    while let Some(chunk) = rec.next_chunk(&mut buf).unwrap() {
        for e in chunk.events {
            if let RecordingEvent::Annotation { onset, text, .. } = e {
                annotations.push((onset, text));
            }
        }
        for (ch, column) in data.iter_mut().enumerate() {
            column.extend_from_slice(&buf[ch * chunk.frames..(ch + 1) * chunk.frames]);
        }
    }
    (labels, data, annotations)
}

#[test]
fn replay_at_full_speed_delivers_every_sample_and_annotation() {
    let file = data_dir().join("eegmmidb/S001R04.edf");
    let (labels, want, want_annotations) = expected(&file);
    assert_eq!(labels.len(), 64);
    assert_eq!(want[0].len(), 20_000);
    assert_eq!(want_annotations.len(), 30);

    let mut daemon = start_daemon(DaemonOptions::default());

    let drivers = daemon.ctl_json(&["drivers"]);
    let names: Vec<&str> = drivers["drivers"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"replay") && names.contains(&"synthetic"), "drivers: {drivers}");

    let path_arg = format!("path={}", file.display());
    let mut child = daemon
        .ctl_command(&[
            "--json",
            "session",
            "start",
            "--driver",
            "replay",
            "--set",
            &path_arg,
            "--set",
            "speed=0",
            "--follow",
            "--samples",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_lines(&mut child);
    let status = child.wait().unwrap();
    assert!(status.success(), "session start --follow failed: {}", daemon.log());

    let info: Value = serde_json::from_str(&lines[0]).unwrap();
    let id = info["id"].as_str().unwrap().to_string();
    let got_labels: Vec<&str> =
        info["channels"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(got_labels, labels);

    let mut got: Vec<Vec<f32>> = (0..64).map(|_| Vec::with_capacity(20_000)).collect();
    let mut annotations = Vec::new();
    let mut next_seq = 0;
    let mut last_state = String::new();
    for line in &lines[1..] {
        let ev: Value = serde_json::from_str(line).unwrap();
        assert_eq!(ev["session"], id.as_str());
        match ev["type"].as_str().unwrap() {
            "samples" => {
                assert_eq!(ev["seq"], next_seq, "blocks arrive in order without holes");
                next_seq += 1;
                let frames = ev["frames"].as_u64().unwrap() as usize;
                let t = ev["t"].as_f64().unwrap();
                assert!((t - got[0].len() as f64 / 160.0).abs() < 1e-9, "block time {t}");
                for (ch, row) in ev["data"].as_array().unwrap().iter().enumerate() {
                    let row = row.as_array().unwrap();
                    assert_eq!(row.len(), frames);
                    got[ch].extend(row.iter().map(|v| v.as_f64().unwrap() as f32));
                }
            }
            "annotation" => annotations.push((ev["onset"].as_f64().unwrap(), ev["text"].as_str().unwrap().to_string())),
            "state" => last_state = ev["state"].as_str().unwrap().to_string(),
            "lost" => panic!("the first follower of a full-speed replay must not lose events: {ev}"),
            _ => {}
        }
    }
    assert_eq!(last_state, "finished");
    let total: usize = got.iter().map(Vec::len).sum();
    assert_eq!(total, 64 * 20_000);
    for (ch, (g, w)) in got.iter().zip(&want).enumerate() {
        if let Some(i) = g.iter().zip(w).position(|(a, b)| a.to_bits() != b.to_bits()) {
            panic!("channel {ch} ({}) sample {i}: got {} want {}", labels[ch], g[i], w[i]);
        }
    }
    assert_eq!(annotations, want_annotations);

    let show = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(show["state"], "finished");
    assert_eq!(show["frames"], 20_000);
    assert_eq!(show["annotations"], 30);

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(daemon.notify.lines().iter().any(|l| l == "STOPPING=1"), "notify: {:?}", daemon.notify.lines());
    assert!(!daemon.socket.exists(), "the control socket is removed on exit");
}

/// Every format the replay driver reads goes through the daemon with the reader's channels, rate
/// and frame count: BDF (24-bit, with its Status channel), EDF+ from another lab, and the OpenBCI
/// GUI text format. `channels` selects and orders channels by label.
#[test]
fn every_format_replays_through_the_daemon() {
    let daemon = start_daemon(DaemonOptions::default());
    let cases = [
        data_dir().join("bdf/Newtest17-256.bdf"),
        data_dir().join("ssvep/subject01_2012.07.06-19.02.16.edf"),
        data_dir().join("openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"),
    ];
    for file in &cases {
        let (labels, want, annotations) = expected(file);
        let path_arg = format!("path={}", file.display());
        let mut child = daemon
            .ctl_command(&[
                "--json", "session", "start", "--driver", "replay", "--set", &path_arg, "--set", "speed=0", "--follow",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = read_lines(&mut child);
        assert!(child.wait().unwrap().success(), "{}: {}", file.display(), daemon.log());
        let info: Value = serde_json::from_str(&lines[0]).unwrap();
        let id = info["id"].as_str().unwrap();
        let got_labels: Vec<&str> =
            info["channels"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
        assert_eq!(got_labels, labels, "{}", file.display());
        let events: Vec<Value> = lines[1..].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events.last().unwrap()["state"], "finished", "{}", file.display());
        assert_eq!(events.iter().filter(|e| e["type"] == "annotation").count(), annotations.len());
        let show = daemon.ctl_json(&["session", "show", id]);
        assert_eq!(show["frames"].as_u64().unwrap() as usize, want[0].len(), "{}", file.display());
    }

    let file = data_dir().join("ssvep/subject01_2012.07.06-19.02.16.edf");
    let info = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "replay",
        "--set",
        &format!("path={}", file.display()),
        "--set",
        "channels=Oz,O1",
        "--set",
        "speed=0",
    ]);
    let labels: Vec<&str> = info["channels"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["Oz", "O1"]);
    let out = daemon.ctl(&[
        "session",
        "start",
        "--driver",
        "replay",
        "--set",
        &format!("path={}", file.display()),
        "--set",
        "channels=Cz",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Cz") && err.contains("Oz"),
        "names the unknown label and the choices: {err}"
    );
}

//! XDF replay through the daemon: the replay of `minimal.xdf` and `clock_resets.xdf` agrees with
//! pyxdf's reading (tools/reference/xdf_reference.py): every sample of the replayed stream, its
//! time (within the replay's 0.5 ms bound) and every string marker as an annotation at its
//! synchronised time. Bad files and stream choices are refused with what is wrong.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bci2token_tests::{
    data_dir, read_f64, reference_python, start_daemon, workspace_root, DaemonOptions, Follower, SampleBlock, TempDir,
};
use serde_json::Value;

/// pyxdf's streams of `file`, with their stamps and values.
fn pyxdf(file: &Path, tmp: &Path) -> Vec<(Value, Vec<f64>, Vec<f64>)> {
    let py = reference_python(&["pyxdf", "numpy"]);
    let o = Command::new(py)
        .arg(workspace_root().join("tools/reference/xdf_reference.py"))
        .arg(file)
        .arg(tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let streams: Vec<Value> = serde_json::from_slice(&std::fs::read(tmp.join("streams.json")).unwrap()).unwrap();
    streams
        .into_iter()
        .map(|s| {
            let id = s["id"].as_u64().unwrap();
            let stamps = read_f64(&tmp.join(format!("{id}.stamps.f64")));
            let values =
                if s["format"] == "string" { Vec::new() } else { read_f64(&tmp.join(format!("{id}.values.f64"))) };
            (s, stamps, values)
        })
        .collect()
}

#[test]
fn xdf_replays_agree_with_pyxdf() {
    let daemon = start_daemon(DaemonOptions::default());
    for (file, stream) in [("minimal.xdf", "SendDataC"), ("clock_resets.xdf", "BioSemi")] {
        let path = data_dir().join("xdf").join(file);
        let tmp = TempDir::new("xdf-ref");
        let reference = pyxdf(&path, tmp.path());
        let (info, stamps, values) = reference.iter().find(|(s, _, _)| s["name"] == stream).unwrap();
        let channels = info["channel_count"].as_u64().unwrap() as usize;
        let rate = info["nominal_srate"].as_f64().unwrap();
        let origin = stamps[0];

        let set_path = format!("path={}", path.display());
        let follower = Follower::spawn(
            &daemon,
            &[
                "--json",
                "session",
                "start",
                "--driver",
                "replay",
                "--set",
                &set_path,
                "--set",
                "speed=0",
                "--follow",
                "--samples",
            ],
        );
        let events = follower.collect_until(Duration::from_secs(60), |ev| ev["state"] == "finished");
        let mut k = 0;
        let mut worst: f64 = 0.0;
        for b in events.iter().filter_map(SampleBlock::of) {
            for (i, row) in b.rows.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    assert_eq!(v, values[k * channels + c] as f32, "{file}: sample {k} channel {c}");
                }
                worst = worst.max((b.t + i as f64 / rate - (stamps[k] - origin)).abs());
                k += 1;
            }
        }
        assert_eq!(k, stamps.len(), "{file}: every sample of {stream}");
        assert!(worst <= 0.0005 + 1e-9, "{file}: sample times within 0.5 ms of pyxdf's: worst {worst}");

        // Every string marker of every string stream, at its time.
        let mut want: Vec<(f64, String)> = reference
            .iter()
            .filter(|(s, _, _)| s["format"] == "string")
            .flat_map(|(s, st, _)| {
                let strings: Vec<Vec<String>> = serde_json::from_value(s["strings"].clone()).unwrap();
                st.iter().zip(strings).map(|(t, row)| (t - origin, row.join(" "))).collect::<Vec<_>>()
            })
            .collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0));
        let got: Vec<(f64, String)> = events
            .iter()
            .filter(|e| e["type"] == "annotation")
            .map(|e| (e["onset"].as_f64().unwrap(), e["text"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(got.len(), want.len(), "{file}: markers");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.1, w.1, "{file}");
            assert!((g.0 - w.0).abs() < 1e-6, "{file}: marker {:?} at {} vs pyxdf {}", g.1, g.0, w.0);
        }
    }
}

#[test]
fn bad_xdf_files_and_stream_choices_are_refused_with_what_is_wrong() {
    let daemon = start_daemon(DaemonOptions::default());
    let resets = data_dir().join("xdf/clock_resets.xdf");
    let start = |path: &Path, extra: &[&str]| -> String {
        let set = format!("path={}", path.display());
        let mut args = vec!["session", "start", "--driver", "replay", "--set", &set];
        for e in extra {
            args.push("--set");
            args.push(e);
        }
        let out = daemon.ctl(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = start(&resets, &["stream=MyMarkerStream"]);
    assert!(err.contains("is a string stream") && err.contains("annotations"), "{err}");
    let err = start(&resets, &["stream=Nope"]);
    assert!(
        err.contains("no stream matches") && err.contains("\"BioSemi\" (type \"EEG\", 8 × float32, 100 Hz)"),
        "{err}"
    );
    let err = start(&data_dir().join("eegmmidb/S001R04.edf"), &["stream_type=EEG"]);
    assert!(err.contains("not XDF"), "{err}");
    let ok = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "replay",
        "--set",
        &format!("path={}", resets.display()),
        "--set",
        "stream_type=EEG",
    ]);
    assert_eq!(ok["channels"].as_array().unwrap().len(), 8);
    daemon.ctl_json(&["session", "stop", ok["id"].as_str().unwrap()]);

    // A Samples chunk whose variable-length sample count claims 3 length bytes.
    let tmp = TempDir::new("xdf-bad");
    let mut bytes = std::fs::read(data_dir().join("xdf/minimal.xdf")).unwrap();
    let at = find_samples_chunk(&bytes);
    let count_pos = at.body + 2 + 4; // after the tag and the stream id
    bytes[count_pos] = 3;
    let bad = tmp.path().join("bad.xdf");
    std::fs::write(&bad, &bytes).unwrap();
    let err = start(&bad, &[]);
    assert!(
        err.contains("bad.xdf")
            && err.contains("Samples chunk")
            && err.contains(&format!("byte offset {}", at.start))
            && err.contains("3 length bytes"),
        "{err}"
    );
    // Cut inside the last chunk: replayed up to there, with a warning.
    let cut = tmp.path().join("cut.xdf");
    let full = std::fs::read(data_dir().join("xdf/minimal.xdf")).unwrap();
    std::fs::write(&cut, &full[..full.len() - 10]).unwrap();
    let info = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "replay",
        "--set",
        &format!("path={}", cut.display()),
        "--set",
        "speed=0",
    ]);
    assert!(info["id"].is_string());
}

struct ChunkAt {
    start: usize,
    body: usize,
}

/// The first Samples chunk (tag 3) of an XDF file.
fn find_samples_chunk(bytes: &[u8]) -> ChunkAt {
    let mut pos = 4;
    loop {
        let nlen = bytes[pos] as usize;
        let len = match nlen {
            1 => bytes[pos + 1] as usize,
            4 => u32::from_le_bytes(bytes[pos + 1..pos + 5].try_into().unwrap()) as usize,
            _ => u64::from_le_bytes(bytes[pos + 1..pos + 9].try_into().unwrap()) as usize,
        };
        let body = pos + 1 + nlen;
        if u16::from_le_bytes([bytes[body], bytes[body + 1]]) == 3 {
            return ChunkAt { start: pos, body };
        }
        pos = body + len;
    }
}

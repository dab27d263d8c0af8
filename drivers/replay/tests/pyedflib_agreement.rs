//! The Rust EDF/BDF reader agrees with pyedflib (EDFlib) on every EDF/BDF file of the shared
//! data set: labels, sample rates, digital steps, units, annotations and every sample.
//!
//! For each file in `<data>/eegmmidb`, `<data>/ssvep` and `<data>/bdf`, runs
//! `tools/reference/edf_reference.py` (pyedflib) which dumps the header facts and annotations as
//! JSON and each signal's physical values as raw little-endian f64, and compares:
//! - same ordinary signals (pyedflib does not list EDF+ annotation signals; it parses them into
//!   `readAnnotations()`, which is what the annotations are compared with): labels, units, rates,
//!   digital steps (relative 1e-12);
//! - same annotations, in the same order: onset and duration within 1e-6 s, same text;
//! - every sample: the f32 values `Recording::next_chunk` delivers (µV) within half a digital step
//!   of pyedflib's value times the µV scale, and the f64 physical values of
//!   `EdfReader::decode_physical` within half a digital step too.
//!
//! The BDF `Status` channel (unit "Boolean") is an ordinary signal for both readers: it is
//! compared like the others, in its own unit.
//!
//! Data: `<workspace>/../shared/data`, or `$BCI2TOKEN_DATA`. Python: `$BCI2TOKEN_PYTHON` or
//! `python3`; it must import pyedflib and numpy (the project's test command, tools/test-all,
//! installs them in a venv).

use std::path::{Path, PathBuf};
use std::process::Command;

use bci2token_driver_replay::edf::EdfReader;
use bci2token_driver_replay::recording::{open_recording, RecordingEvent};
use bci2token_tests::{data_dir, read_f64, reference_python, workspace_root};
use serde_json::Value;

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e} (set BCI2TOKEN_DATA?)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case(ext)))
        .collect();
    v.sort();
    v
}

struct Counts {
    samples: u64,
    annotations: usize,
}

fn compare_file(py: &str, file: &Path, tmp: &Path) -> Counts {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let out = tmp.join(&name);
    let script = workspace_root().join("tools/reference/edf_reference.py");
    let o = Command::new(py).arg(&script).arg(file).arg(&out).output().expect("run python");
    assert!(
        o.status.success(),
        "{} {} failed ({}): {}",
        script.display(),
        file.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let json: Value = serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap();
    let ref_sigs = json["signals"].as_array().unwrap();

    // Header facts.
    let mut reader = EdfReader::open(file).unwrap_or_else(|e| panic!("{e}"));
    let h = reader.header().clone();
    let ours: Vec<_> = h.ordinary_signals().cloned().collect();
    assert_eq!(ours.len(), ref_sigs.len(), "{name}: number of ordinary signals");
    assert_eq!(h.num_records, json["n_records"].as_u64().unwrap(), "{name}: records");
    assert_eq!(h.record_duration, json["record_duration"].as_f64().unwrap(), "{name}: record duration");
    for (s, r) in ours.iter().zip(ref_sigs) {
        assert_eq!(s.label, r["label"].as_str().unwrap(), "{name}: label of signal {}", s.index);
        assert_eq!(s.unit, r["unit"].as_str().unwrap(), "{name}: unit of {}", s.label);
        let rate = r["sample_rate"].as_f64().unwrap();
        assert!(
            (s.sample_rate - rate).abs() <= 1e-9 * rate,
            "{name}: rate of {}: {} vs {rate}",
            s.label,
            s.sample_rate
        );
        let step = r["digital_step"].as_f64().unwrap();
        assert!(
            (s.digital_step - step).abs() <= 1e-12 * step.abs(),
            "{name}: digital step of {}: {} vs {step}",
            s.label,
            s.digital_step
        );
        assert_eq!(
            (s.samples_per_record as u64) * h.num_records,
            r["n_samples"].as_u64().unwrap(),
            "{name}: samples of {}",
            s.label
        );
    }

    // Annotations.
    let ref_ann = json["annotations"].as_array().unwrap();
    let anns = reader.read_all_annotations().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(anns.len(), ref_ann.len(), "{name}: number of annotations");
    for (i, (a, r)) in anns.iter().zip(ref_ann).enumerate() {
        let onset = r["onset"].as_f64().unwrap();
        assert!((a.onset - onset).abs() <= 1e-6, "{name}: annotation {i} onset {} vs {onset}", a.onset);
        match (a.duration, r["duration"].as_f64()) {
            (None, None) => {}
            (Some(d), Some(rd)) => assert!((d - rd).abs() <= 1e-6, "{name}: annotation {i} duration {d} vs {rd}"),
            (d, rd) => panic!("{name}: annotation {i} duration {d:?} vs {rd:?}"),
        }
        assert_eq!(a.text, r["text"].as_str().unwrap(), "{name}: annotation {i} text");
    }

    // Samples: the f64 physical path of EdfReader ...
    let refs: Vec<Vec<f64>> = ref_sigs.iter().map(|r| read_f64(&out.join(r["file"].as_str().unwrap()))).collect();
    let mut pos = vec![0usize; ours.len()];
    let mut buf = vec![0f64; ours.iter().map(|s| s.samples_per_record).max().unwrap()];
    while reader.read_record().unwrap() {
        for (c, s) in ours.iter().enumerate() {
            let n = reader.decode_physical(s.index, &mut buf);
            assert_eq!(n, s.samples_per_record);
            let half = s.digital_step.abs() / 2.0;
            for (i, &v) in buf[..n].iter().enumerate() {
                let r = refs[c][pos[c] + i];
                assert!(
                    (v - r).abs() <= half,
                    "{name}: {} sample {}: {v} vs pyedflib {r} (half step {half})",
                    s.label,
                    pos[c] + i
                );
            }
            pos[c] += n;
        }
    }
    for (c, s) in ours.iter().enumerate() {
        assert_eq!(pos[c], refs[c].len(), "{name}: samples of {}", s.label);
    }

    // ... and the f32 µV values the plugin delivers, with the events it delivers.
    let mut rec = open_recording(file, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.channels().len(), ours.len(), "{name}: channels (one rate in these files)");
    assert!(rec.warnings().is_empty(), "{name}: warnings {:?}", rec.warnings());
    let mut out_buf = vec![0f32; rec.channels().len() * rec.max_chunk_frames()];
    let mut pos = 0usize;
    let mut samples = 0u64;
    let mut delivered = Vec::new();
    let mut expect_t = 0.0;
    while let Some(chunk) = rec.next_chunk(&mut out_buf).unwrap_or_else(|e| panic!("{e}")) {
        assert!((chunk.t - expect_t).abs() < 1e-9, "{name}: chunk time {} vs {expect_t}", chunk.t);
        expect_t += chunk.frames as f64 / rec.sample_rate();
        let end = chunk.t + chunk.frames as f64 / rec.sample_rate();
        for e in &chunk.events {
            if let RecordingEvent::Annotation { onset, text, .. } = e {
                delivered.push((*onset, text.clone()));
                assert!(
                    *onset < end || pos + chunk.frames == refs[0].len(),
                    "{name}: {text} at {onset} delivered early"
                );
            }
        }
        for (c, s) in ours.iter().enumerate() {
            assert_eq!(rec.channels()[c].label, s.label);
            let scale = s.uv_scale.unwrap_or(1.0);
            let half = (s.digital_step * scale).abs() / 2.0;
            for i in 0..chunk.frames {
                let v = f64::from(out_buf[c * chunk.frames + i]);
                let r = refs[c][pos + i] * scale;
                assert!(
                    (v - r).abs() <= half,
                    "{name}: {} sample {}: delivered {v} vs pyedflib {r} (half step {half})",
                    s.label,
                    pos + i
                );
            }
            samples += chunk.frames as u64;
        }
        pos += chunk.frames;
    }
    assert_eq!(pos, refs[0].len(), "{name}: frames delivered");
    let mut expected: Vec<(f64, String)> = anns.iter().map(|a| (a.onset, a.text.clone())).collect();
    let mut got = delivered.clone();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    got.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(got, expected, "{name}: every annotation is delivered once");
    let _ = std::fs::remove_dir_all(&out);
    Counts { samples, annotations: anns.len() }
}

#[test]
fn rust_reader_agrees_with_pyedflib_on_every_edf_and_bdf_file() {
    let py = reference_python(&["pyedflib", "numpy"]);
    let data = data_dir();
    let mut files = files_in(&data.join("eegmmidb"), "edf");
    let n_eeg = files.len();
    files.extend(files_in(&data.join("ssvep"), "edf"));
    let n_ssvep = files.len() - n_eeg;
    files.extend(files_in(&data.join("bdf"), "bdf"));
    let n_bdf = files.len() - n_eeg - n_ssvep;
    assert!(
        n_eeg >= 8 && n_ssvep >= 5 && n_bdf >= 1,
        "expected the shared data set in {} (8 eegmmidb, 5 ssvep, 1 bdf files), found {n_eeg}, \
         {n_ssvep}, {n_bdf}",
        data.display()
    );
    let tmp = std::env::temp_dir().join(format!("bci2token-pyedflib-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut total_samples = 0;
    let mut total_annotations = 0;
    for f in &files {
        let c = compare_file(&py, f, &tmp);
        eprintln!(
            "{}: {} samples, {} annotations agree",
            f.file_name().unwrap().to_string_lossy(),
            c.samples,
            c.annotations
        );
        total_samples += c.samples;
        total_annotations += c.annotations;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("{} files, {total_samples} samples, {total_annotations} annotations agree with pyedflib", files.len());
}

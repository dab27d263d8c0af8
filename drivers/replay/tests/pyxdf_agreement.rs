//! The Rust XDF reader agrees with pyxdf on the shared XDF files (`<data>/xdf`): the same streams
//! (name, type, channel count, rate, format, sample count), every numeric value exactly, every
//! string, and every time stamp after clock synchronisation within 0.1 µs (pyxdf's defaults for
//! clock offsets and resets; no dejittering on either side). `tools/reference/xdf_reference.py`
//! runs pyxdf from the project's venv.

use std::path::Path;
use std::process::Command;

use bci2token_driver_replay::xdf::XdfFile;
use bci2token_tests::{data_dir, read_f64, reference_python, workspace_root, TempDir};
use serde_json::Value;

fn compare(py: &str, file: &Path) -> (usize, usize) {
    let tmp = TempDir::new("pyxdf");
    let o = Command::new(py)
        .arg(workspace_root().join("tools/reference/xdf_reference.py"))
        .arg(file)
        .arg(tmp.path())
        .output()
        .expect("run python");
    assert!(o.status.success(), "xdf_reference.py {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    let reference: Vec<Value> =
        serde_json::from_slice(&std::fs::read(tmp.path().join("streams.json")).unwrap()).unwrap();
    let ours = XdfFile::read(file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ours.streams.len(), reference.len(), "{}", file.display());
    let (mut stamps, mut values) = (0, 0);
    for r in &reference {
        let id = r["id"].as_u64().unwrap() as u32;
        let s = ours.streams.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("stream {id} missing"));
        let what = format!("{} stream {id} ({})", file.display(), s.name);
        assert_eq!(s.name, r["name"], "{what}");
        assert_eq!(s.type_, r["type"], "{what}");
        assert_eq!(s.channel_count as u64, r["channel_count"].as_u64().unwrap(), "{what}");
        assert_eq!(s.nominal_rate, r["nominal_srate"].as_f64().unwrap(), "{what}");
        assert_eq!(s.format, r["format"], "{what}");
        assert_eq!(s.stamps.len() as u64, r["samples"].as_u64().unwrap(), "{what}: sample count");
        let want = read_f64(&tmp.path().join(format!("{id}.stamps.f64")));
        for (i, (a, b)) in s.stamps.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-7, "{what}: time stamp {i}: {a} vs pyxdf {b}");
        }
        stamps += want.len();
        if s.format == "string" {
            let strings: Vec<Vec<String>> = serde_json::from_value(r["strings"].clone()).unwrap();
            assert_eq!(s.strings, strings, "{what}");
            values += strings.len();
        } else {
            let want = read_f64(&tmp.path().join(format!("{id}.values.f64")));
            assert_eq!(s.values, want, "{what}: values");
            values += want.len();
        }
    }
    (stamps, values)
}

#[test]
fn the_xdf_reader_agrees_with_pyxdf() {
    let py = reference_python(&["pyxdf", "numpy"]);
    let mut total = (0, 0);
    for name in ["minimal.xdf", "clock_resets.xdf"] {
        let (s, v) = compare(&py, &data_dir().join("xdf").join(name));
        total = (total.0 + s, total.1 + v);
    }
    eprintln!("pyxdf agreement: {} time stamps, {} values", total.0, total.1);
    assert!(total.0 > 27_000, "the files were read: {total:?}");
}

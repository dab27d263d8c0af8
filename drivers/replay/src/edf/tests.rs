//! Unit tests of the EDF/BDF reader: TAL parsing, synthetic EDF+D/BDF files, and one test per
//! malformed case made by damaging a copy of a real file.

use super::*;
use crate::recording::open_recording;
use std::sync::atomic::{AtomicUsize, Ordering};

// ---------------------------------------------------------------------------------------------
// helpers

fn data_dir() -> PathBuf {
    std::env::var_os("BCI2TOKEN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}
fn s001r04() -> PathBuf {
    data_dir().join("eegmmidb/S001R04.edf")
}
fn newtest_bdf() -> PathBuf {
    data_dir().join("bdf/Newtest17-256.bdf")
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "bci2token-replay-edf-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `src` into a temp dir after `f` changed its bytes, then opens it with `EdfReader`.
fn open_mutated(name: &str, src: &Path, f: impl FnOnce(&mut Vec<u8>)) -> Result<EdfReader, FormatError> {
    let mut bytes = std::fs::read(src).unwrap();
    f(&mut bytes);
    let dir = TempDir::new(name);
    let ext = src.extension().unwrap().to_str().unwrap();
    let p = dir.file(&format!("{name}.{ext}"), &bytes);
    let r = EdfReader::open(&p);
    // Reading through must not panic either.
    if let Ok(mut rr) = EdfReader::open(&p) {
        while let Ok(true) = rr.read_record() {}
    }
    r
}

fn put(bytes: &mut [u8], offset: u64, field: &str, width: usize) {
    let mut v = field.as_bytes().to_vec();
    v.resize(width, b' ');
    bytes[offset as usize..offset as usize + width].copy_from_slice(&v);
}

/// A signal of a synthetic file.
#[derive(Clone)]
struct Sig {
    label: &'static str,
    unit: &'static [u8],
    pmin: f64,
    pmax: f64,
    dmin: i32,
    dmax: i32,
    spr: usize,
}

fn ann_sig(spr: usize, bdf: bool) -> Sig {
    Sig {
        label: if bdf { "BDF Annotations" } else { "EDF Annotations" },
        unit: b"",
        pmin: -1.0,
        pmax: 1.0,
        dmin: if bdf { -8388608 } else { -32768 },
        dmax: if bdf { 8388607 } else { 32767 },
        spr,
    }
}

/// Content of one signal in one record.
enum Data {
    Samples(Vec<i32>),
    Tal(Vec<u8>),
}

fn build(bdf: bool, reserved: &str, nrec: i64, dur: &str, sigs: &[Sig], records: &[Vec<Data>]) -> Vec<u8> {
    let ns = sigs.len();
    let mut h = Vec::new();
    let mut field = |s: &[u8], w: usize| {
        let mut v = s.to_vec();
        v.resize(w, b' ');
        h.extend_from_slice(&v[..w]);
    };
    if bdf {
        field(b"\xFFBIOSEMI", 8);
    } else {
        field(b"0", 8);
    }
    field(b"X X X X", 80);
    field(b"Startdate 01-JAN-2020 X X X", 80);
    field(b"01.01.20", 8);
    field(b"10.00.00", 8);
    field((256 * (ns + 1)).to_string().as_bytes(), 8);
    field(reserved.as_bytes(), 44);
    field(nrec.to_string().as_bytes(), 8);
    field(dur.as_bytes(), 8);
    field(ns.to_string().as_bytes(), 4);
    for s in sigs {
        field(s.label.as_bytes(), 16);
    }
    for _ in sigs {
        field(b"", 80);
    }
    for s in sigs {
        field(s.unit, 8);
    }
    for s in sigs {
        field(fmt_num(s.pmin).as_bytes(), 8);
    }
    for s in sigs {
        field(fmt_num(s.pmax).as_bytes(), 8);
    }
    for s in sigs {
        field(s.dmin.to_string().as_bytes(), 8);
    }
    for s in sigs {
        field(s.dmax.to_string().as_bytes(), 8);
    }
    for _ in sigs {
        field(b"", 80);
    }
    for s in sigs {
        field(s.spr.to_string().as_bytes(), 8);
    }
    for _ in sigs {
        field(b"", 32);
    }
    let bps = if bdf { 3 } else { 2 };
    for rec in records {
        for (s, d) in sigs.iter().zip(rec) {
            match d {
                Data::Samples(v) => {
                    assert_eq!(v.len(), s.spr);
                    for &x in v {
                        h.extend_from_slice(&x.to_le_bytes()[..bps]);
                    }
                }
                Data::Tal(t) => {
                    let mut t = t.clone();
                    t.resize(s.spr * bps, 0);
                    h.extend_from_slice(&t);
                }
            }
        }
    }
    h
}

fn eeg(label: &'static str, unit: &'static [u8], spr: usize) -> Sig {
    Sig { label, unit, pmin: -3276.8, pmax: 3276.7, dmin: -32768, dmax: 32767, spr }
}

fn chunks(r: &mut dyn Recording) -> Vec<(Chunk, Vec<f32>)> {
    let n = r.channels().len() * r.max_chunk_frames();
    let mut out = vec![0f32; n];
    let mut v = Vec::new();
    while let Some(c) = r.next_chunk(&mut out).unwrap() {
        let k = c.frames * r.channels().len();
        v.push((c, out[..k].to_vec()));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// TALs

#[test]
fn tal_without_duration() {
    let t = parse_tals(b"+0\x14\x14\x00").unwrap();
    assert_eq!(t, vec![Tal { onset: 0.0, duration: None, texts: vec![String::new()] }]);
    let t = parse_tals(b"+12.9844\x14experiment_start\x14\x00\x00\x00\x00").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].onset, 12.9844);
    assert_eq!(t[0].duration, None);
    assert_eq!(t[0].texts, vec!["experiment_start"]);
}

#[test]
fn tal_with_duration_and_several_tals() {
    let t = parse_tals(b"+0\x14\x14\x00+0\x1560.2\x14T0\x14\x00+4.2\x154.1\x14T2\x14\x00\x00\x00").unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].texts, vec![""]);
    assert_eq!((t[1].onset, t[1].duration), (0.0, Some(60.2)));
    assert_eq!(t[1].texts, vec!["T0"]);
    assert_eq!((t[2].onset, t[2].duration), (4.2, Some(4.1)));
    assert_eq!(t[2].texts, vec!["T2"]);
}

#[test]
fn tal_negative_onset_and_multiple_texts() {
    let t = parse_tals("-0.5\x150.25\x14lights off\x14Ünïcode\x14\x00".as_bytes()).unwrap();
    assert_eq!(t[0].onset, -0.5);
    assert_eq!(t[0].duration, Some(0.25));
    assert_eq!(t[0].texts, vec!["lights off", "Ünïcode"]);
    let t = parse_tals(b"-3\x14a\x14b\x14c\x14\x00").unwrap();
    assert_eq!(t[0].onset, -3.0);
    assert_eq!(t[0].texts, vec!["a", "b", "c"]);
}

#[test]
fn tal_errors_point_at_the_byte() {
    let e = parse_tals(b"+0\x14\x14\x00" as &[u8]).map(|_| ()).err();
    assert!(e.is_none());
    let e = parse_tals(b"+0\x14\x14\x000\x14x\x14\x00").unwrap_err();
    assert_eq!(e.offset, 5);
    assert!(e.problem.contains("'+' or '-'"), "{}", e.problem);
    let e = parse_tals(b"+1.2.3\x14x\x14\x00").unwrap_err();
    assert_eq!(e.offset, 0);
    assert!(e.problem.contains("onset"), "{}", e.problem);
    let e = parse_tals(b"+1\x15\x14x\x14\x00").unwrap_err();
    assert_eq!(e.offset, 3);
    assert!(e.problem.contains("duration"), "{}", e.problem);
    let e = parse_tals(b"+1\x15-2\x14x\x14\x00").unwrap_err();
    assert_eq!(e.offset, 3);
    let e = parse_tals(b"+1\x14abc").unwrap_err();
    assert!(e.problem.contains("not terminated"), "{}", e.problem);
    assert!(parse_tals(b"+1").is_err());
    assert!(parse_tals(b"+").is_err());
    assert!(parse_tals(b"+\x14\x14\x00").is_err());
    assert_eq!(parse_tals(b"\x00\x00").unwrap(), vec![]);
    // Arbitrary bytes never panic.
    let mut seed = 7u64;
    for len in 0..200 {
        let b: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                [b'+', b'-', b'1', b'.', 0x14, 0x15, 0, b'a'][(seed >> 61) as usize]
            })
            .collect();
        let _ = parse_tals(&b);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding and units

#[test]
fn decode_16_and_24_bit() {
    let vals = [-32768i32, -1, 0, 1, 32767, 12345, -12345, 7, 8, 9, -9];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| (*v as i16).to_le_bytes()).collect();
    let mut out = vec![0f32; vals.len()];
    assert_eq!(decode_i16_f32(&bytes, 0.5, 1.0, &mut out), vals.len());
    for (o, v) in out.iter().zip(vals) {
        assert_eq!(*o, (v as f64 * 0.5 + 1.0) as f32);
    }
    let vals = [-8388608i32, -1, 0, 1, 8388607, 1234567, -1234567, 3, 4, 5];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()[..3].to_vec()).collect();
    let mut out = vec![0f32; vals.len()];
    assert_eq!(decode_i24_f32(&bytes, 1.0, 0.0, &mut out), vals.len());
    for (o, v) in out.iter().zip(vals) {
        assert_eq!(*o, v as f32);
    }
    let mut d = vec![0i32; vals.len()];
    assert_eq!(decode_digital(&bytes, 3, &mut d), vals.len());
    assert_eq!(d, vals);
    // Short output or input: decodes what fits.
    assert_eq!(decode_i24_f32(&bytes[..7], 1.0, 0.0, &mut out), 2);
    assert_eq!(decode_i16_f32(&bytes, 1.0, 0.0, &mut out[..3]), 3);
}

#[test]
fn units_are_converted_to_microvolts() {
    let sigs = [
        Sig { label: "A", unit: b"mV", pmin: -1.0, pmax: 1.0, dmin: -1000, dmax: 1000, spr: 2 },
        Sig { label: "B", unit: b"\xB5V", pmin: -1.0, pmax: 1.0, dmin: -1000, dmax: 1000, spr: 2 },
        Sig { label: "C", unit: b"V", pmin: -1.0, pmax: 1.0, dmin: -1000, dmax: 1000, spr: 2 },
        Sig { label: "D", unit: b"nV", pmin: -1.0, pmax: 1.0, dmin: -1000, dmax: 1000, spr: 2 },
        Sig { label: "E", unit: b"degC", pmin: -1.0, pmax: 1.0, dmin: -1000, dmax: 1000, spr: 2 },
        Sig { label: "F", unit: "µV".as_bytes(), pmin: -1.0, pmax: 1.0, dmin: -1000, dmax: 1000, spr: 2 },
    ];
    let rec = vec![(0..6).map(|_| Data::Samples(vec![500, -1000])).collect::<Vec<_>>()];
    let dir = TempDir::new("units");
    let p = dir.file("u.edf", &build(false, "", 1, "1", &sigs, &rec));
    let mut r = open_recording(&p, None).unwrap();
    let units: Vec<&str> = r.channels().iter().map(|c| c.unit.as_str()).collect();
    assert_eq!(units, ["uV", "uV", "uV", "uV", "degC", "uV"]);
    let c = chunks(r.as_mut());
    let v = &c[0].1;
    assert_eq!(&v[0..2], &[500.0, -1000.0]); // 0.5 mV
    assert_eq!(&v[2..4], &[0.5, -1.0]); // µV
    assert_eq!(&v[4..6], &[500_000.0, -1_000_000.0]); // V
    assert_eq!(&v[6..8], &[0.0005, -0.001]); // nV
    assert_eq!(&v[8..10], &[0.5, -1.0]); // degC unchanged
    assert_eq!(&v[10..12], &[0.5, -1.0]);
    let rd = EdfReader::open(&p).unwrap();
    let s = &rd.header().signals[0];
    assert_eq!(s.digital_step, 2.0 / 2000.0);
    assert_eq!(s.uv_scale, Some(1000.0));
    assert_eq!(rd.header().signals[4].uv_scale, None);
}

// ---------------------------------------------------------------------------------------------
// Synthetic EDF+D / BDF+ files

#[test]
fn edf_plus_d_gaps_annotations_and_chunk_times() {
    let sigs = [eeg("Cz", b"uV", 4), eeg("Pz", b"uV", 4), ann_sig(30, false)];
    let rec = |start: &str, tal: &[u8], base: i32| {
        let mut t = format!("{start}\x14\x14\x00").into_bytes();
        t.extend_from_slice(tal);
        vec![
            Data::Samples(vec![base, base + 1, base + 2, base + 3]),
            Data::Samples(vec![-base, -base - 1, -base - 2, -base - 3]),
            Data::Tal(t),
        ]
    };
    let records = vec![
        rec("+10", b"+12.5\x14late\x14\x00+10.25\x150.5\x14A\x14B\x14\x00", 0),
        rec("+11", b"", 10),
        rec("+15", b"+14.5\x14back\x14\x00", 20), // gap of 3 s (11+1 .. 15)
        rec("+16", b"+99\x14end\x14\x00", 30),
    ];
    let dir = TempDir::new("edfd");
    let p = dir.file("d.edf", &build(false, "EDF+D", 4, "1", &sigs, &records));
    let mut rd = EdfReader::open(&p).unwrap();
    assert_eq!(rd.header().variant, EdfVariant::EdfPlusD);
    assert_eq!(rd.file_start_offset(), 10.0);
    assert_eq!(rd.duration_seconds(), Some(7.0));
    let events = rd.read_all_events().unwrap();
    assert_eq!(
        events,
        vec![
            RecordingEvent::Annotation { onset: 2.5, duration: None, text: "late".into() },
            RecordingEvent::Annotation { onset: 0.25, duration: Some(0.5), text: "A".into() },
            RecordingEvent::Annotation { onset: 0.25, duration: Some(0.5), text: "B".into() },
            RecordingEvent::Gap { at: 2.0, seconds: 3.0 },
            RecordingEvent::Annotation { onset: 4.5, duration: None, text: "back".into() },
            RecordingEvent::Annotation { onset: 89.0, duration: None, text: "end".into() },
        ]
    );

    let mut r = open_recording(&p, None).unwrap();
    assert_eq!(r.channels().len(), 2);
    assert_eq!(r.sample_rate(), 4.0);
    assert_eq!(r.max_chunk_frames(), 4);
    let c = chunks(r.as_mut());
    let ts: Vec<f64> = c.iter().map(|(c, _)| c.t).collect();
    assert_eq!(ts, [0.0, 1.0, 5.0, 6.0]);
    // Channel-major values, scaled by 0.1 µV per step.
    assert_eq!(c[1].1, vec![1.0, 1.1, 1.2, 1.3, -1.0, -1.1, -1.2, -1.3]);
    let texts = |i: usize| -> Vec<String> {
        c[i].0
            .events
            .iter()
            .map(|e| match e {
                RecordingEvent::Annotation { text, .. } => text.clone(),
                RecordingEvent::Gap { at, seconds } => format!("gap {at} {seconds}"),
            })
            .collect()
    };
    assert_eq!(texts(0), ["A", "B"]); // "late" (2.5 s) waits for the chunk that contains it
    assert_eq!(texts(1), Vec::<String>::new());
    assert_eq!(texts(2), ["gap 2 3", "late", "back"]);
    assert_eq!(texts(3), ["end"]); // beyond the end: delivered with the last chunk
    r.rewind().unwrap();
    let again = chunks(r.as_mut());
    assert_eq!(again.len(), 4);
    assert_eq!(again[0].0, c[0].0);
}

#[test]
fn edf_plus_d_without_timekeeping_is_an_error() {
    let sigs = [eeg("Cz", b"uV", 2), ann_sig(8, false)];
    let records = vec![
        vec![Data::Samples(vec![0, 0]), Data::Tal(b"+0\x14\x14\x00".to_vec())],
        vec![Data::Samples(vec![0, 0]), Data::Tal(Vec::new())],
        vec![Data::Samples(vec![0, 0]), Data::Tal(b"+5\x14\x14\x00".to_vec())],
    ];
    let dir = TempDir::new("edfd-tk");
    let p = dir.file("d.edf", &build(false, "EDF+D", 3, "1", &sigs, &records));
    let mut rd = EdfReader::open(&p).unwrap();
    assert!(rd.read_record().unwrap());
    let e = rd.read_record().unwrap_err();
    assert_eq!(e.field, "EDF Annotations");
    let rec_bytes = 2 * 2 + 8 * 2;
    assert_eq!(e.offset, 256 * 3 + rec_bytes + 4);
    assert!(e.problem.contains("time-keeping"), "{e}");
}

#[test]
fn bdf_plus_c_24_bit_values_and_annotations() {
    let sigs = [
        Sig { label: "EXG1", unit: b"uV", pmin: -262144.0, pmax: 262143.0, dmin: -8388608, dmax: 8388607, spr: 3 },
        Sig {
            label: "Status",
            unit: b"Boolean",
            pmin: -8388608.0,
            pmax: 8388607.0,
            dmin: -8388608,
            dmax: 8388607,
            spr: 3,
        },
        ann_sig(10, true),
    ];
    let records = vec![
        vec![
            Data::Samples(vec![-8388608, 0, 8388607]),
            Data::Samples(vec![-1, 65535, 1]),
            Data::Tal(b"+0\x14\x14\x00+0.5\x14stim\x14\x00".to_vec()),
        ],
        vec![Data::Samples(vec![1, -1, 2]), Data::Samples(vec![0, 0, 0]), Data::Tal(b"+1\x14\x14\x00".to_vec())],
    ];
    let dir = TempDir::new("bdfc");
    let p = dir.file("b.bdf", &build(true, "BDF+C", 2, "1", &sigs, &records));
    let mut rd = EdfReader::open(&p).unwrap();
    assert_eq!(rd.header().variant, EdfVariant::BdfPlusC);
    assert!(rd.read_record().unwrap());
    let mut phys = [0f64; 3];
    rd.decode_physical(0, &mut phys);
    assert_eq!(phys[0], -262144.0);
    assert!((phys[2] - 262143.0).abs() < 1e-9);
    assert_eq!(phys[1], rd.header().signals[0].to_physical(0));
    let mut dig = [0i32; 3];
    rd.decode_digital(1, &mut dig);
    assert_eq!(dig, [-1, 65535, 1]);
    assert_eq!(rd.annotations(), &[Annotation { onset: 0.5, duration: None, text: "stim".into() }]);

    let mut r = open_recording(&p, None).unwrap();
    assert_eq!(
        r.channels(),
        &[
            Channel { label: "EXG1".into(), unit: "uV".into() },
            Channel { label: "Status".into(), unit: "Boolean".into() }
        ]
    );
    let c = chunks(r.as_mut());
    assert_eq!(c[0].1[3..6], [-1.0, 65535.0, 1.0]);
    assert_eq!(c[0].0.events.len(), 1);
    assert_eq!(c[1].0.t, 1.0);
}

#[test]
fn mixed_sample_rates() {
    let sigs = [eeg("Fp1", b"uV", 4), eeg("Resp", b"uV", 2), eeg("Fp2", b"uV", 4)];
    let records =
        vec![vec![Data::Samples(vec![1, 2, 3, 4]), Data::Samples(vec![5, 6]), Data::Samples(vec![7, 8, 9, 10])]];
    let dir = TempDir::new("rates");
    let p = dir.file("m.edf", &build(false, "", 1, "0.5", &sigs, &records));
    let mut r = open_recording(&p, None).unwrap();
    assert_eq!(r.channels().iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["Fp1", "Fp2"]);
    assert_eq!(r.sample_rate(), 8.0);
    assert_eq!(r.warnings().len(), 1);
    assert!(r.warnings()[0].contains("\"Resp\" (4 Hz)"), "{:?}", r.warnings());
    assert_eq!(chunks(r.as_mut())[0].1, vec![0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9, 1.0]);
    let r = open_recording(&p, Some(&["resp".to_string()])).unwrap();
    assert_eq!(r.sample_rate(), 4.0);
    assert_eq!(r.max_chunk_frames(), 2);
    let e = open_recording(&p, Some(&["Fp1".to_string(), "Resp".to_string()])).err().unwrap();
    assert_eq!(e.field, "channels");
    assert!(e.problem.contains("\"Fp1\" (8 Hz), \"Resp\" (4 Hz)"), "{e}");
    let e = open_recording(&p, Some(&["Cz".to_string()])).err().unwrap();
    assert!(e.problem.contains("available: \"Fp1\", \"Resp\", \"Fp2\""), "{e}");
}

#[test]
fn unknown_record_count_drops_a_partial_record_with_a_warning() {
    let path = s001r04();
    let full = EdfReader::open(&path).unwrap();
    let rb = full.header().record_bytes as usize;
    let r = open_mutated("minus1", &path, |b| {
        put(b, 236, "-1", 8);
        let n = b.len() - rb / 2;
        b.truncate(n);
    })
    .unwrap();
    assert_eq!(r.header().records_in_header, -1);
    assert_eq!(r.header().num_records, 124);
    assert_eq!(r.warnings().len(), 1);
    assert!(r.warnings()[0].contains("partial record"), "{:?}", r.warnings());
    // Without the partial record: no warning, all records.
    let r = open_mutated("minus1-exact", &path, |b| put(b, 236, "-1", 8)).unwrap();
    assert_eq!(r.header().num_records, 125);
    assert!(r.warnings().is_empty());
}

#[test]
fn random_damage_never_panics() {
    let sigs = [eeg("Cz", b"uV", 4), ann_sig(12, false)];
    let records: Vec<Vec<Data>> = (0..3)
        .map(|k| {
            vec![
                Data::Samples(vec![k, -k, 2 * k, 3]),
                Data::Tal(format!("+{k}\x14\x14\x00+{k}.5\x151\x14x\x14\x00").into_bytes()),
            ]
        })
        .collect();
    let base = build(false, "EDF+D", 3, "1", &sigs, &records);
    let dir = TempDir::new("fuzz");
    let p = dir.0.join("f.edf");
    let mut seed = 42u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 24
    };
    for i in 0..600 {
        let mut b = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = next() as usize % b.len();
            b[at] = match next() % 4 {
                0 => next() as u8,
                1 => b' ',
                2 => b"0123456789+-."[next() as usize % 13],
                _ => 0,
            };
        }
        if i % 3 == 0 {
            let n = next() as usize % (b.len() + 1);
            b.truncate(n);
        }
        std::fs::write(&p, &b).unwrap();
        if let Ok(mut r) = open_recording(&p, None) {
            let mut out = vec![0f32; r.channels().len() * r.max_chunk_frames()];
            while let Ok(Some(_)) = r.next_chunk(&mut out) {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real files, undamaged

#[test]
fn s001r04_header_and_first_records() {
    let mut r = EdfReader::open(&s001r04()).unwrap();
    let h = r.header();
    assert_eq!(h.variant, EdfVariant::EdfPlusC);
    assert_eq!(h.signals.len(), 65);
    assert_eq!(h.num_records, 125);
    assert_eq!(h.header_bytes, 16896);
    assert_eq!(h.signals[0].label, "Fc5.");
    assert_eq!(h.signals[0].sample_rate, 160.0);
    assert_eq!(h.signals[0].digital_step, 1.0);
    assert!(h.signals[64].is_annotation);
    assert!(r.warnings().is_empty());
    let anns = r.read_all_annotations().unwrap();
    assert_eq!(anns.len(), 30);
    assert_eq!(anns[0], Annotation { onset: 0.0, duration: Some(4.2), text: "T0".into() });
    assert_eq!(anns[1].text, "T2");
    assert!((anns[1].onset - 4.2).abs() < 1e-12);

    let mut rec = open_recording(&s001r04(), None).unwrap();
    assert_eq!(rec.channels().len(), 64);
    assert_eq!(rec.max_chunk_frames(), 160);
    assert_eq!(rec.duration_seconds(), Some(125.0));
    let c = chunks(rec.as_mut());
    assert_eq!(c.len(), 125);
    let total: usize = c.iter().map(|(c, _)| c.events.len()).sum();
    assert_eq!(total, 30);
    assert_eq!(c[7].0.t, 7.0);
}

// ---------------------------------------------------------------------------------------------
// Damaged copies of real files: each error names the field and its byte offset.

#[test]
fn truncated_data_is_an_error_at_the_incomplete_record() {
    let path = s001r04();
    let rb = EdfReader::open(&path).unwrap().header().record_bytes;
    let e = open_mutated("trunc", &path, |b| {
        let n = b.len() - 1000;
        b.truncate(n);
    })
    .err()
    .unwrap();
    assert_eq!(e.field, "data record");
    assert_eq!(e.offset, 16896 + 124 * rb);
    assert!(e.problem.starts_with("truncated"), "{e}");
    assert!(e.to_string().contains("S001R04") || e.to_string().contains("trunc.edf"), "{e}");
}

#[test]
fn truncated_header_names_the_field_where_the_file_ends() {
    let e = open_mutated("trunc-hdr", &s001r04(), |b| b.truncate(240)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of data records", 240));
    assert!(e.problem.contains("truncated header"), "{e}");
    // Inside the signal headers: 256 + 65 * 16 (labels) + 65 * 80 (transducer) + 3 units.
    let at = 256 + 65 * 96 + 3 * 8 + 2;
    let e = open_mutated("trunc-hdr2", &s001r04(), |b| b.truncate(at)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("physical dimension", at as u64));
    assert!(e.problem.contains("of signal 4"), "{e}");
}

#[test]
fn wrong_header_bytes_field() {
    let e = open_mutated("hdrbytes", &s001r04(), |b| put(b, 184, "16640", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of bytes in header", 184));
    assert!(e.problem.contains("256 × (65 + 1) = 16896"), "{e}");
}

#[test]
fn non_numeric_fields() {
    let e = open_mutated("nan-records", &s001r04(), |b| put(b, 236, "abc", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of data records", 236));
    assert!(e
        .to_string()
        .ends_with("header field \"number of data records\" at byte offset 236: \"abc\" is not a number"));
    let e = open_mutated("nan-dur", &s001r04(), |b| put(b, 244, "1,5", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("duration of a data record", 244));
    assert!(e.problem.contains("decimal separator"), "{e}");
    let e = open_mutated("nan-ns", &s001r04(), |b| put(b, 252, "6x", 4)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of signals", 252));
    // Per-signal fields: physical minimum of signal index 3, samples per record of signal 10.
    let off = header_field_offset(65, "physical minimum", 3).unwrap();
    assert_eq!(off, 256 + 104 * 65 + 8 * 3);
    let e = open_mutated("nan-pmin", &s001r04(), |b| put(b, off, "-8O92", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("physical minimum", off));
    assert!(e.problem.contains("signal 4 (\"Fcz.\")") && e.problem.contains("\"-8O92\""), "{e}");
    let off = header_field_offset(65, "number of samples per data record", 10).unwrap();
    let e = open_mutated("nan-spr", &s001r04(), |b| put(b, off, "160.5", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of samples per data record", off));
    assert!(e.problem.contains("not a whole number"), "{e}");
    let e = open_mutated("empty-dmax", &s001r04(), |b| {
        put(b, header_field_offset(65, "digital maximum", 0).unwrap(), "", 8)
    })
    .err()
    .unwrap();
    assert_eq!(e.field, "digital maximum");
    assert!(e.problem.contains("empty"), "{e}");
}

#[test]
fn record_size_inconsistent_with_file_size() {
    // One sample fewer per record for signal 0: the records are 2 bytes shorter, so the file is
    // 250 bytes longer than the header says.
    let off = header_field_offset(65, "number of samples per data record", 0).unwrap();
    let e = open_mutated("recsize", &s001r04(), |b| put(b, off, "159", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of data records", 236));
    assert!(e.problem.contains("250 bytes too many"), "{e}");
    // Extra bytes at the end.
    let e = open_mutated("extra", &s001r04(), |b| b.extend_from_slice(&[0; 7])).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of data records", 236));
    assert!(e.problem.contains("7 bytes too many"), "{e}");
    // One sample more per record: the file is too short for 125 records.
    let e = open_mutated("recsize2", &s001r04(), |b| put(b, off, "161", 8)).err().unwrap();
    // Records are 64 * 160 * 2 + 80 * 2 (annotations) = 20640 bytes, 20642 with the extra sample;
    // 125 of them do not fit in the 2580000 data bytes: the 124 complete ones end here.
    assert_eq!(e.field, "data record");
    assert!(e.problem.starts_with("truncated"), "{e}");
    assert_eq!(e.offset, 16896 + 124 * 20642);
}

#[test]
fn digital_max_not_above_digital_min() {
    let off = header_field_offset(65, "digital maximum", 2).unwrap();
    assert_eq!(off, 256 + 128 * 65 + 16);
    let e = open_mutated("dmax", &s001r04(), |b| put(b, off, "-8092", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("digital maximum", off));
    assert!(e.problem.contains("not greater than digital minimum -8092"), "{e}");
    let e = open_mutated("dmax2", &s001r04(), |b| put(b, off, "-9000", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("digital maximum", off));
    // Out of the 16-bit range.
    let e = open_mutated("dmax3", &s001r04(), |b| put(b, off, "40000", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("digital maximum", off));
    assert!(e.problem.contains("16-bit"), "{e}");
}

#[test]
fn physical_max_equal_to_min() {
    let off = header_field_offset(65, "physical maximum", 5).unwrap();
    let e = open_mutated("pmax", &s001r04(), |b| put(b, off, "-8092", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("physical maximum", off));
}

#[test]
fn zero_samples_per_record() {
    let off = header_field_offset(65, "number of samples per data record", 7).unwrap();
    let e = open_mutated("spr0", &s001r04(), |b| put(b, off, "0", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("number of samples per data record", off));
}

#[test]
fn bad_version_and_bdf_magic() {
    let e = open_mutated("badbdf", &newtest_bdf(), |b| b[1..8].copy_from_slice(b"BIOSEMX")).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("version", 0));
    assert!(e.problem.contains("\"BIOSEMX\""), "{e}");
    // Through open_recording (detected as BDF by the 0xFF byte).
    let mut bytes = std::fs::read(newtest_bdf()).unwrap();
    bytes[1..8].copy_from_slice(b"BIOSEMX");
    let dir = TempDir::new("badbdf2");
    let p = dir.file("x.dat", &bytes);
    let e = open_recording(&p, None).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("version", 0));
    // EDF with a broken version.
    let e = open_mutated("badedf", &s001r04(), |b| b[0] = b'1').err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("version", 0));
    // 24BIT in an EDF.
    let e = open_mutated("24bit-edf", &s001r04(), |b| put(b, 192, "24BIT", 44)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("reserved", 192));
}

#[test]
fn bdf_digital_range_and_truncation() {
    let mut r = EdfReader::open(&newtest_bdf()).unwrap();
    assert_eq!(r.header().variant, EdfVariant::Bdf);
    assert_eq!(r.header().signals.len(), 17);
    assert_eq!(r.header().signals[16].label, "Status");
    assert!(r.read_record().unwrap());
    let off = header_field_offset(17, "digital minimum", 0).unwrap();
    let e = open_mutated("bdf-dmin", &newtest_bdf(), |b| put(b, off, "-9388608", 8)).err().unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("digital minimum", off));
    assert!(e.problem.contains("24-bit"), "{e}");
    let rb = r.header().record_bytes;
    let e = open_mutated("bdf-trunc", &newtest_bdf(), |b| {
        let n = b.len() - rb as usize - 1;
        b.truncate(n);
    })
    .err()
    .unwrap();
    assert_eq!((e.field.as_str(), e.offset), ("data record", 256 * 18 + 58 * rb));
}

#[test]
fn malformed_annotation_names_the_signal_and_byte() {
    let path = s001r04();
    let r = EdfReader::open(&path).unwrap();
    let h = r.header();
    let ann = &h.signals[64];
    // Record 3's annotation bytes begin with "+3\x14\x14\x00"; damage the '+'.
    let at = h.record_offset(3) + ann.record_offset as u64;
    let mut rd = open_mutated("badtal", &path, |b| b[at as usize] = b'x').unwrap();
    let mut n = 0;
    let e = loop {
        match rd.read_record() {
            Ok(true) => n += 1,
            Ok(false) => panic!("no error"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, 3);
    assert_eq!((e.field.as_str(), e.offset), ("EDF Annotations", at));
    assert!(e.problem.contains("data record 3"), "{e}");
}

#[test]
fn output_buffer_too_small_is_an_error_not_a_panic() {
    let mut r = open_recording(&s001r04(), None).unwrap();
    let mut out = vec![0f32; 10];
    let e = r.next_chunk(&mut out).unwrap_err();
    assert_eq!(e.field, "output buffer");
}

#[test]
fn a_record_size_beyond_the_bound_is_refused_before_any_buffer() {
    // The first signal's "number of samples per data record" field.
    let e = open_mutated("huge-record", &s001r04(), |b| {
        let signals: u64 = std::str::from_utf8(&b[252..256]).unwrap().trim().parse().unwrap();
        put(b, 256 + signals * (16 + 80 + 8 * 5 + 80), "99999999", 8)
    })
    .err()
    .unwrap();
    assert!(e.problem.contains("larger than the 64 MiB"), "{e}");
    assert_eq!(e.offset, 256 + 65 * (16 + 80 + 8 * 5 + 80), "the first signal's field: {e}");
}

#[test]
fn annotation_texts_per_record_are_bounded() {
    let mut tal = b"+0\x14".to_vec();
    for _ in 0..=MAX_TEXTS_PER_RECORD {
        tal.extend_from_slice(b"a\x14");
    }
    tal.push(0);
    let e = parse_tals(&tal).unwrap_err();
    assert!(e.problem.contains("more than 10000 annotation texts"), "{}", e.problem);
    let few = b"+0\x14a\x14b\x14\x00";
    assert_eq!(parse_tals(few).unwrap()[0].texts, ["a", "b"]);
}

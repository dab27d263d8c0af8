//! The common interface of the recording readers, which the plugin glue calls, and the helpers
//! shared by the formats (unit conversion, text decoding, channel selection, format detection).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::edf::EdfRecording;
use crate::format_error::FormatError;
use crate::openbci_txt::OpenBciRecording;
use crate::xdf::{StreamChoice, XdfRecording};

/// A recording's bytes and its name. The name is what the caller called the file (for messages
/// and the extension); the bytes come from a file opened by name here, or from a descriptor the
/// caller opened with its own rights and the daemon passed on.
#[derive(Debug)]
pub struct Input {
    pub name: PathBuf,
    file: File,
}

impl Input {
    /// Opens `path` by name.
    pub fn open_path(path: &Path) -> Result<Input, FormatError> {
        let file = File::open(path).map_err(|e| FormatError::io(path, 0, "cannot open", &e))?;
        Ok(Input { name: path.to_path_buf(), file })
    }

    /// An open file called `name`.
    pub fn from_file(name: PathBuf, file: File) -> Input {
        Input { name, file }
    }

    /// A handle on the bytes, positioned at the start. Handles share one file position (a passed
    /// descriptor cannot be opened anew): readers use one at a time.
    pub fn reopen(&self) -> Result<File, FormatError> {
        let mut f = self.file.try_clone().map_err(|e| FormatError::io(&self.name, 0, "cannot open", &e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| FormatError::io(&self.name, 0, "cannot seek to the start", &e))?;
        Ok(f)
    }
}

/// One output channel: its label and the unit of the values delivered (after conversion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub label: String,
    /// `"uV"` for any voltage (uV, µV in UTF-8 or Latin-1 0xB5, mV ×1000, V ×1e6, nV ×1e-3),
    /// otherwise the file's own unit text unchanged.
    pub unit: String,
}

/// Something that happens in the recording besides samples.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordingEvent {
    /// An annotation; `onset` in seconds from file start (the first sample).
    Annotation { onset: f64, duration: Option<f64>, text: String },
    /// EDF+D discontinuity: no samples were recorded from `at` for `seconds`.
    Gap { at: f64, seconds: f64 },
}

/// What [`Recording::next_chunk`] delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Number of frames written per channel (≤ `max_chunk_frames()`).
    pub frames: usize,
    /// Seconds from file start of the chunk's first frame.
    pub t: f64,
    /// Events to deliver before this chunk's samples: annotations whose onset falls before the
    /// chunk's end (in file order), and for EDF+D the gap before this chunk.
    pub events: Vec<RecordingEvent>,
}

/// A recording file opened for streaming replay.
pub trait Recording: Send {
    fn path(&self) -> &Path;
    /// The selected data channels, in output order.
    fn channels(&self) -> &[Channel];
    fn sample_rate(&self) -> f64;
    /// Upper bound of [`Chunk::frames`].
    fn max_chunk_frames(&self) -> usize;
    fn duration_seconds(&self) -> Option<f64>;
    /// Fills `out` channel-major: `out[ch * frames + i]` for ch in 0..channels, i in 0..frames,
    /// values in µV (or the channel's own unit when not a voltage).
    /// `out.len()` >= channels * max_chunk_frames. Ok(None) at end of file.
    fn next_chunk(&mut self, out: &mut [f32]) -> Result<Option<Chunk>, FormatError>;
    /// Back to the start (for looping).
    fn rewind(&mut self) -> Result<(), FormatError>;
    fn warnings(&self) -> &[String];
}

/// The file formats [`open_recording`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// EDF or EDF+ (16-bit).
    Edf,
    /// BDF or BDF+ (24-bit).
    Bdf,
    /// OpenBCI GUI text (CSV with `%` header lines).
    OpenBciTxt,
    /// XDF (Lab Streaming Layer recordings).
    Xdf,
}

/// Decides the format by content (BDF magic 0xFF"BIOSEMI", EDF "0       ", OpenBCI `%OpenBCI`),
/// falling back to the extension (.edf, .bdf, .txt, .csv) so that a damaged file gets the
/// precise error of its own parser.
pub fn detect_format(input: &Input) -> Result<FileFormat, FormatError> {
    let path = input.name.as_path();
    let mut file = input.reopen()?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FormatError::io(path, n as u64, "reading the first bytes", &e)),
        }
    }
    let head = &head[..n];
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if head.first() == Some(&0xFF) {
        return Ok(FileFormat::Bdf);
    }
    if head.starts_with(b"0       ") {
        return Ok(FileFormat::Edf);
    }
    if text.starts_with(b"%OpenBCI") {
        return Ok(FileFormat::OpenBciTxt);
    }
    if head.starts_with(b"XDF:") {
        return Ok(FileFormat::Xdf);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    match ext.as_str() {
        "edf" | "rec" => Ok(FileFormat::Edf),
        "bdf" => Ok(FileFormat::Bdf),
        "txt" | "csv" => Ok(FileFormat::OpenBciTxt),
        "xdf" => Ok(FileFormat::Xdf),
        _ => Err(FormatError::new(
            path,
            "file",
            0,
            format!(
                "not a recording this driver can read: the file starts with {} but EDF starts with \
                 \"0       \", BDF with 0xFF \"BIOSEMI\", OpenBCI GUI text with \"%OpenBCI\" and XDF with \"XDF:\"",
                describe_bytes(head)
            ),
        )),
    }
}

/// Opens by content (BDF magic 0xFF"BIOSEMI", EDF "0       ", OpenBCI `%OpenBCI`) not only by
/// extension. `channels`: optional selection by label (exact, then case-insensitive, trimmed); an
/// unknown label is an error listing the available labels. Without a selection (or with an empty
/// one): every ordinary (non-annotation) signal; if signals have different sample rates, keep those
/// at the rate of the first ordinary signal and add a warning naming the skipped ones; a selection
/// mixing rates is an error naming them.
pub fn open_recording(path: &Path, channels: Option<&[String]>) -> Result<Box<dyn Recording>, FormatError> {
    open_recording_stream(path, channels, &StreamChoice::default())
}

/// [`open_recording`] with the XDF stream to replay (by name and/or type); a choice given for a
/// file that is not XDF is an error.
pub fn open_recording_stream(
    path: &Path,
    channels: Option<&[String]>,
    stream: &StreamChoice,
) -> Result<Box<dyn Recording>, FormatError> {
    open_input(Input::open_path(path)?, channels, stream)
}

/// [`open_recording_stream`] on an [`Input`].
pub fn open_input(
    input: Input,
    channels: Option<&[String]>,
    stream: &StreamChoice,
) -> Result<Box<dyn Recording>, FormatError> {
    let path = input.name.clone();
    let path = path.as_path();
    let format = detect_format(&input)?;
    if format != FileFormat::Xdf && (stream.name.is_some() || stream.type_.is_some()) {
        return Err(FormatError::new(
            path,
            if stream.name.is_some() { "stream" } else { "stream_type" },
            0,
            "this file is not XDF: `stream` and `stream_type` choose a stream of an XDF file",
        ));
    }
    match format {
        FileFormat::Edf | FileFormat::Bdf => Ok(Box::new(EdfRecording::open_input(&input, channels)?)),
        FileFormat::OpenBciTxt => Ok(Box::new(OpenBciRecording::open_input(&input, channels)?)),
        FileFormat::Xdf => Ok(Box::new(XdfRecording::open_input(&input, stream, channels)?)),
    }
}

/// Factor that converts a value in the unit `raw` (as stored in a file, trailing spaces allowed)
/// to µV, or `None` when the unit is not a voltage.
///
/// Recognised: `uV`, `µV` (UTF-8 C2 B5 or Latin-1 B5), `μV` (Greek mu), `mV` (×1000),
/// `V` (×1e6), `nV` (×1e-3).
pub fn unit_scale_to_uv(raw: &[u8]) -> Option<f64> {
    match trim_bytes(raw) {
        b"uV" | b"\xB5V" | b"\xC2\xB5V" | b"\xCE\xBCV" => Some(1.0),
        b"mV" => Some(1e3),
        b"V" => Some(1e6),
        b"nV" => Some(1e-3),
        _ => None,
    }
}

/// The unit of delivered values: `"uV"` for a voltage, else the file's own (trimmed) unit text.
pub fn output_unit(raw: &[u8]) -> String {
    if unit_scale_to_uv(raw).is_some() {
        "uV".to_string()
    } else {
        decode_text(raw)
    }
}

/// Decodes header text: UTF-8 when valid, otherwise Latin-1 (every byte is a character), trimmed
/// of spaces and NULs on both sides.
pub fn decode_text(raw: &[u8]) -> String {
    let raw = trim_bytes(raw);
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    }
}

pub(crate) fn trim_bytes(mut raw: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = raw {
        if *first == b' ' || *first == 0 || *first == b'\t' {
            raw = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = raw {
        if *last == b' ' || *last == 0 || *last == b'\t' {
            raw = rest;
        } else {
            break;
        }
    }
    raw
}

/// Shows bytes for an error message: as a quoted string when printable, else in hex.
pub(crate) fn describe_bytes(raw: &[u8]) -> String {
    if raw.iter().all(|&b| (0x20..0x7F).contains(&b)) {
        format!("\"{}\"", String::from_utf8_lossy(raw))
    } else {
        let hex: Vec<String> = raw.iter().map(|b| format!("{b:02X}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// A channel that may be selected: its label and sample rate.
pub(crate) struct Candidate<'a> {
    pub label: &'a str,
    pub rate: f64,
}

/// Chooses channels (indices into `candidates`) as [`open_recording`] documents.
/// `labels_offset` is the byte offset reported in selection errors (where the labels are);
/// `not_data` are labels in the file that are not data channels (named in the error).
pub(crate) fn select_channels(
    path: &Path,
    candidates: &[Candidate<'_>],
    selection: Option<&[String]>,
    labels_offset: u64,
    not_data: &[&str],
    warnings: &mut Vec<String>,
) -> Result<Vec<usize>, FormatError> {
    let list = |idx: &mut dyn Iterator<Item = usize>| -> String {
        idx.map(|i| format!("\"{}\" ({} Hz)", candidates[i].label, fmt_num(candidates[i].rate)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(first) = candidates.first() else {
        return Err(FormatError::new(
            path,
            "channels",
            labels_offset,
            "the file has no data channels (only annotations), nothing to replay",
        ));
    };
    match selection {
        None | Some([]) => {
            let rate = first.rate;
            let keep: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].rate == rate).collect();
            if keep.len() < candidates.len() {
                let skipped = list(&mut (0..candidates.len()).filter(|&i| candidates[i].rate != rate));
                let w = format!(
                    "signals have different sample rates; replaying the {} at {} Hz (the rate of \
                     the first signal \"{}\") and skipping {}; select channels of one rate \
                     explicitly to replay others",
                    keep.len(),
                    fmt_num(rate),
                    first.label,
                    skipped
                );
                push_warning(warnings, w);
            }
            Ok(keep)
        }
        Some(names) => {
            let mut chosen = Vec::with_capacity(names.len());
            for name in names {
                let trimmed = name.trim();
                let found = candidates
                    .iter()
                    .position(|c| c.label == name.as_str())
                    .or_else(|| candidates.iter().position(|c| c.label.trim() == trimmed))
                    .or_else(|| {
                        let lower = trimmed.to_lowercase();
                        candidates.iter().position(|c| c.label.trim().to_lowercase() == lower)
                    });
                match found {
                    Some(i) => chosen.push(i),
                    None => {
                        let available =
                            candidates.iter().map(|c| format!("\"{}\"", c.label)).collect::<Vec<_>>().join(", ");
                        let mut problem =
                            format!("no data channel labelled \"{name}\" in this file; available: {available}");
                        if let Some(nd) = not_data.iter().find(|l| l.trim().eq_ignore_ascii_case(trimmed)) {
                            problem.push_str(&format!(
                                " (\"{nd}\" holds annotations or other non-signal data and \
                                 cannot be replayed as a channel)"
                            ));
                        }
                        return Err(FormatError::new(path, "channels", labels_offset, problem));
                    }
                }
            }
            let rate = candidates[chosen[0]].rate;
            if chosen.iter().any(|&i| candidates[i].rate != rate) {
                let mut seen = Vec::new();
                for &i in &chosen {
                    if !seen.contains(&i) {
                        seen.push(i);
                    }
                }
                return Err(FormatError::new(
                    path,
                    "channels",
                    labels_offset,
                    format!(
                        "the selected channels have different sample rates: {}; select channels \
                         of one sample rate",
                        list(&mut seen.into_iter())
                    ),
                ));
            }
            Ok(chosen)
        }
    }
}

pub(crate) fn push_warning(warnings: &mut Vec<String>, w: String) {
    if !warnings.contains(&w) {
        warnings.push(w);
    }
}

/// Formats a number without a useless ".0" (160 rather than 160.0).
pub(crate) fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_conversion() {
        assert_eq!(unit_scale_to_uv(b"uV      "), Some(1.0));
        assert_eq!(unit_scale_to_uv("µV".as_bytes()), Some(1.0)); // UTF-8 C2 B5
        assert_eq!(unit_scale_to_uv(b"\xB5V      "), Some(1.0)); // Latin-1
        assert_eq!(unit_scale_to_uv("μV".as_bytes()), Some(1.0)); // Greek mu
        assert_eq!(unit_scale_to_uv(b"mV"), Some(1000.0));
        assert_eq!(unit_scale_to_uv(b"V       "), Some(1e6));
        assert_eq!(unit_scale_to_uv(b"nV"), Some(1e-3));
        assert_eq!(unit_scale_to_uv(b"Boolean "), None);
        assert_eq!(unit_scale_to_uv(b"degC"), None);
        assert_eq!(unit_scale_to_uv(b""), None);
        assert_eq!(output_unit(b"\xB5V  "), "uV");
        assert_eq!(output_unit(b"mV"), "uV");
        assert_eq!(output_unit(b"Boolean "), "Boolean");
        assert_eq!(output_unit(b"g"), "g");
        // Latin-1 text that is not UTF-8 is decoded byte by byte.
        assert_eq!(output_unit(b"\xB0C     "), "\u{B0}C");
    }

    #[test]
    fn selection_rules() {
        let p = Path::new("/x.edf");
        let c = [
            Candidate { label: "Fp1", rate: 256.0 },
            Candidate { label: "Fp2", rate: 256.0 },
            Candidate { label: "Resp", rate: 32.0 },
        ];
        let mut w = Vec::new();
        assert_eq!(select_channels(p, &c, None, 256, &[], &mut w).unwrap(), vec![0, 1]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("\"Resp\" (32 Hz)"), "{}", w[0]);
        let sel = vec![" fp2 ".to_string(), "Fp1".to_string()];
        assert_eq!(select_channels(p, &c, Some(&sel), 256, &[], &mut w).unwrap(), vec![1, 0]);
        let e = select_channels(p, &c, Some(&["Cz".to_string()]), 256, &["EDF Annotations"], &mut w).unwrap_err();
        assert_eq!(e.field, "channels");
        assert!(e.problem.contains("\"Fp1\", \"Fp2\", \"Resp\""), "{e}");
        let e = select_channels(p, &c, Some(&["Fp1".into(), "Resp".into()]), 256, &[], &mut w).unwrap_err();
        assert!(e.problem.contains("\"Fp1\" (256 Hz), \"Resp\" (32 Hz)"), "{e}");
        let e =
            select_channels(p, &c, Some(&["edf annotations".into()]), 256, &["EDF Annotations"], &mut w).unwrap_err();
        assert!(e.problem.contains("cannot be replayed"), "{e}");
        assert!(select_channels(p, &[], None, 256, &[], &mut w).is_err());
    }

    #[test]
    fn detect_unknown_format_is_an_error() {
        let dir = std::env::temp_dir().join(format!("bci2token-replay-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.dat");
        std::fs::write(&f, b"hello world").unwrap();
        let e = detect_format(&Input::open_path(&f).unwrap()).unwrap_err();
        assert_eq!(e.field, "file");
        assert!(e.problem.contains("\"hello world\""), "{e}");
        // A passed descriptor is read from its start, whatever its position, under its own name.
        let mut file = File::open(&f).unwrap();
        file.read_exact(&mut [0u8; 5]).unwrap();
        let e = detect_format(&Input::from_file("given.dat".into(), file)).unwrap_err();
        assert!(e.problem.contains("\"hello world\"") && e.to_string().contains("given.dat"), "{e}");
        let e = Input::open_path(&dir.join("missing.edf")).unwrap_err();
        assert_eq!(e.field, "file");
        assert!(e.to_string().contains("cannot open"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

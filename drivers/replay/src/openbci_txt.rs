//! OpenBCI GUI text recordings ("OpenBCI-RAW-*.txt"): `%` header lines (number of channels,
//! sample rate, board), a CSV column header line (`Sample Index, EXG Channel 0, ...`), then one
//! row per sample. Streamed line by line.
//!
//! Data channels: by default the `EXG Channel N` columns (µV, as the GUI writes them);
//! `Accel Channel N` columns (unit "g") can be selected by label. Files without a column header
//! line (GUI v4/v5) are read with the layout those versions wrote: sample index, the EXG
//! channels, then three accelerometer columns.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::format_error::FormatError;
use crate::recording::{describe_bytes, fmt_num, push_warning, select_channels, Candidate, Channel, Chunk, Recording};

/// [`Recording`] over an OpenBCI GUI text file.
pub struct OpenBciRecording {
    path: PathBuf,
    input: BufReader<File>,
    board: Option<String>,
    declared_channels: Option<usize>,
    columns: Vec<String>,
    selected_cols: Vec<usize>,
    channels: Vec<Channel>,
    rate: f64,
    chunk_frames: usize,
    data_offset: u64,
    data_line: u64,
    offset: u64,
    line_no: u64,
    frames_done: u64,
    total_rows: u64,
    line: Vec<u8>,
    fields: Vec<(usize, usize)>,
    warnings: Vec<String>,
}

fn is_exg(label: &str) -> bool {
    label.strip_prefix("EXG Channel ").is_some_and(|n| n.parse::<u32>().is_ok())
}
fn is_accel(label: &str) -> bool {
    label.strip_prefix("Accel Channel ").is_some_and(|n| n.parse::<u32>().is_ok())
}

/// The highest sample rate and the most channels a header may declare (boards of the OpenBCI
/// family: 250–16 000 Hz, up to 16 channels; the bounds leave room).
const MAX_RATE_HZ: f64 = 100_000.0;
const MAX_CHANNELS: usize = 1024;
/// The largest file replayed (an hour of 16 channels at 1 kHz is well under 1 GiB).
const MAX_FILE_BYTES: u64 = 8 << 30;

/// The longest line read (a row of 16 channels, accelerometer and time is a few hundred bytes).
const MAX_LINE_BYTES: u64 = 1 << 20;

/// Reads one line (with its terminator) into `line`; returns the bytes consumed (0 at EOF). A line
/// longer than [`MAX_LINE_BYTES`] is an error: the file may be sparse, with no end of line at all.
fn read_line(path: &Path, input: &mut BufReader<File>, line: &mut Vec<u8>, offset: u64) -> Result<usize, FormatError> {
    line.clear();
    let n = input
        .by_ref()
        .take(MAX_LINE_BYTES)
        .read_until(b'\n', line)
        .map_err(|e| FormatError::io(path, offset, "reading a line", &e))?;
    if n as u64 == MAX_LINE_BYTES && line.last() != Some(&b'\n') {
        return Err(FormatError::new(
            path,
            "line",
            offset,
            format!("a line longer than {} MiB: not an OpenBCI GUI text file", MAX_LINE_BYTES >> 20),
        ));
    }
    Ok(n)
}

fn strip_eol(mut l: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

fn trim(l: &[u8]) -> &[u8] {
    l.trim_ascii()
}

impl OpenBciRecording {
    /// Opens `path`, parses the header and counts the data rows.
    pub fn open(path: &Path, selection: Option<&[String]>) -> Result<OpenBciRecording, FormatError> {
        Self::open_input(&crate::recording::Input::open_path(path)?, selection)
    }

    /// [`Self::open`] on an [`Input`](crate::recording::Input).
    pub fn open_input(
        source: &crate::recording::Input,
        selection: Option<&[String]>,
    ) -> Result<OpenBciRecording, FormatError> {
        let path = source.name.as_path();
        let file = source.reopen()?;
        // The rows are counted at open: a (sparse) file of any size must not hold the open.
        let size = file.metadata().map_err(|e| FormatError::io(path, 0, "cannot read the file size", &e))?.len();
        if size > MAX_FILE_BYTES {
            return Err(FormatError::new(
                path,
                "file",
                0,
                format!(
                    "larger than {} GiB, the most an OpenBCI GUI text file may be for replay",
                    MAX_FILE_BYTES >> 30
                ),
            ));
        }
        let mut input = BufReader::with_capacity(1 << 16, file);
        let mut warnings = Vec::new();
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut line_no = 0u64;
        let mut rate: Option<f64> = None;
        let mut declared_channels = None;
        let mut board = None;

        // `%` header lines.
        let (first_data_offset, first_data_line) = loop {
            let n = read_line(path, &mut input, &mut line, offset)?;
            if n == 0 {
                return Err(FormatError::new(
                    path,
                    "Sample Index",
                    offset,
                    format!(
                        "line {}: the file ends after the % header, without a column header line \
                         or any data rows",
                        line_no + 1
                    ),
                ));
            }
            line_no += 1;
            let mut l = strip_eol(&line);
            if line_no == 1 {
                l = l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l);
                if !l.starts_with(b"%OpenBCI") {
                    return Err(FormatError::new(
                        path,
                        "%OpenBCI",
                        0,
                        format!(
                            "line 1: an OpenBCI GUI text file starts with \"%OpenBCI Raw EXG Data\", \
                             this one with {}",
                            describe_bytes(&l[..l.len().min(40)])
                        ),
                    ));
                }
            }
            if !l.starts_with(b"%") {
                break (offset, line_no);
            }
            let text = String::from_utf8_lossy(&l[1..]).into_owned();
            if let Some((key, value)) = text.split_once('=') {
                let key = key.trim();
                let value = value.trim();
                let field = format!("%{key}");
                match key {
                    "Sample Rate" => {
                        let num = value.trim_end_matches("Hz").trim();
                        match num.parse::<f64>() {
                            // Sizes follow from the rate: bounded like any amplifier's.
                            Ok(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE_HZ => rate = Some(r),
                            _ => {
                                return Err(FormatError::new(
                                    path,
                                    field,
                                    offset,
                                    format!(
                                        "line {line_no}: \"{value}\" is not a sample rate up to {MAX_RATE_HZ} Hz \
                                         (expected e.g. \"%Sample Rate = 250 Hz\")"
                                    ),
                                ))
                            }
                        }
                    }
                    "Number of channels" => match value.parse::<usize>() {
                        Ok(c) if c <= MAX_CHANNELS => declared_channels = Some(c),
                        _ => {
                            return Err(FormatError::new(
                                path,
                                field,
                                offset,
                                format!(
                                    "line {line_no}: \"{value}\" is not a number of channels up to \
                                     {MAX_CHANNELS} (expected e.g. \"%Number of channels = 8\")"
                                ),
                            ))
                        }
                    },
                    "Board" => board = Some(value.to_string()),
                    _ => {}
                }
            }
            offset += n as u64;
        };

        let Some(rate) = rate else {
            return Err(FormatError::new(
                path,
                "%Sample Rate",
                first_data_offset,
                format!(
                    "line {first_data_line}: the % header ended without a \"%Sample Rate = ... Hz\" \
                     line; the sample rate cannot be known"
                ),
            ));
        };

        // Column header line, or (GUI v4/v5) none.
        let l = strip_eol(&line);
        let first_cell = trim(l.split(|&b| b == b',').next().unwrap_or(&[]));
        let looks_numeric = std::str::from_utf8(first_cell).ok().is_some_and(|s| s.parse::<f64>().is_ok());
        let (columns, data_offset, data_line) = if looks_numeric {
            let Some(n) = declared_channels else {
                return Err(FormatError::new(
                    path,
                    "%Number of channels",
                    first_data_offset,
                    format!(
                        "line {first_data_line}: there is no column header line and no \"%Number of \
                         channels\" line, so the columns cannot be known"
                    ),
                ));
            };
            push_warning(
                &mut warnings,
                format!(
                    "no column header line; assuming the OpenBCI GUI v4/v5 layout (sample index, \
                     {n} EXG channels, 3 accelerometer channels)"
                ),
            );
            let mut cols = vec!["Sample Index".to_string()];
            cols.extend((0..n).map(|i| format!("EXG Channel {i}")));
            cols.extend((0..3).map(|i| format!("Accel Channel {i}")));
            (cols, first_data_offset, first_data_line)
        } else {
            let cols: Vec<String> =
                l.split(|&b| b == b',').map(|c| String::from_utf8_lossy(trim(c)).into_owned()).collect();
            (cols, first_data_offset + line.len() as u64, first_data_line + 1)
        };

        let exg: Vec<usize> = (0..columns.len()).filter(|&i| is_exg(&columns[i])).collect();
        let accel: Vec<usize> = (0..columns.len()).filter(|&i| is_accel(&columns[i])).collect();
        if exg.is_empty() {
            return Err(FormatError::new(
                path,
                "EXG Channel 0",
                first_data_offset,
                format!(
                    "line {first_data_line}: the column header line has no \"EXG Channel N\" columns \
                     (found {})",
                    columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if let Some(d) = declared_channels {
            if d != exg.len() {
                push_warning(
                    &mut warnings,
                    format!(
                        "the header says {d} channels but there are {} \"EXG Channel\" columns; \
                         using the columns",
                        exg.len()
                    ),
                );
            }
        }
        let eligible: Vec<usize> = exg.iter().chain(&accel).copied().collect();
        let candidates: Vec<Candidate<'_>> = eligible.iter().map(|&i| Candidate { label: &columns[i], rate }).collect();
        let not_data: Vec<&str> = columns.iter().filter(|c| !is_exg(c) && !is_accel(c)).map(String::as_str).collect();
        let selected_cols: Vec<usize> = match selection {
            None | Some([]) => exg.clone(),
            Some(_) => select_channels(path, &candidates, selection, first_data_offset, &not_data, &mut warnings)?
                .into_iter()
                .map(|i| eligible[i])
                .collect(),
        };
        drop(candidates);
        let channels = selected_cols
            .iter()
            .map(|&c| Channel {
                label: columns[c].clone(),
                unit: if is_accel(&columns[c]) { "g".to_string() } else { "uV".to_string() },
            })
            .collect();

        // Count the data rows (for duration_seconds), then go back to the first one.
        input.seek(SeekFrom::Start(data_offset)).map_err(|e| FormatError::io(path, data_offset, "seeking", &e))?;
        let total_rows = count_rows(path, &mut input, data_offset)?;
        input.seek(SeekFrom::Start(data_offset)).map_err(|e| FormatError::io(path, data_offset, "seeking", &e))?;

        let chunk_frames = ((rate / 10.0).round() as usize).max(1);
        Ok(OpenBciRecording {
            path: path.to_path_buf(),
            input,
            board,
            declared_channels,
            columns,
            selected_cols,
            channels,
            rate,
            chunk_frames,
            data_offset,
            data_line,
            offset: data_offset,
            line_no: data_line - 1,
            frames_done: 0,
            total_rows,
            line,
            fields: Vec::new(),
            warnings,
        })
    }

    /// The `%Board` header value.
    pub fn board(&self) -> Option<&str> {
        self.board.as_deref()
    }
    /// The `%Number of channels` header value.
    pub fn declared_channels(&self) -> Option<usize> {
        self.declared_channels
    }
    /// All column labels of the file.
    pub fn column_labels(&self) -> &[String] {
        &self.columns
    }
    /// Number of data rows (non-blank lines after the column header).
    pub fn total_rows(&self) -> u64 {
        self.total_rows
    }
}

/// Counts the non-blank lines from the current position to the end of the file.
fn count_rows(path: &Path, input: &mut BufReader<File>, start: u64) -> Result<u64, FormatError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut rows = 0u64;
    let mut content = false;
    let mut pos = start;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FormatError::io(path, pos, "counting rows", &e)),
        };
        pos += n as u64;
        for &b in &buf[..n] {
            match b {
                b'\n' => {
                    rows += u64::from(content);
                    content = false;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => content = true,
            }
        }
    }
    Ok(rows + u64::from(content))
}

impl Recording for OpenBciRecording {
    fn path(&self) -> &Path {
        &self.path
    }
    fn channels(&self) -> &[Channel] {
        &self.channels
    }
    fn sample_rate(&self) -> f64 {
        self.rate
    }
    fn max_chunk_frames(&self) -> usize {
        self.chunk_frames
    }
    fn duration_seconds(&self) -> Option<f64> {
        Some(self.total_rows as f64 / self.rate)
    }

    fn next_chunk(&mut self, out: &mut [f32]) -> Result<Option<Chunk>, FormatError> {
        let stride = self.chunk_frames;
        let nch = self.channels.len();
        if out.len() < nch * stride {
            return Err(FormatError::new(
                &self.path,
                "output buffer",
                self.offset,
                format!(
                    "the buffer holds {} values but a chunk needs {nch} channels × {stride} frames \
                     = {} (a caller bug)",
                    out.len(),
                    nch * stride
                ),
            ));
        }
        let mut frames = 0;
        while frames < stride {
            let line_off = self.offset;
            let n = read_line(&self.path, &mut self.input, &mut self.line, line_off)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            self.line_no += 1;
            let complete = self.line.last() == Some(&b'\n');
            let l = strip_eol(&self.line);
            if trim(l).is_empty() {
                continue;
            }
            self.fields.clear();
            let mut start = 0;
            for (i, &b) in l.iter().enumerate() {
                if b == b',' {
                    self.fields.push((start, i));
                    start = i + 1;
                }
            }
            self.fields.push((start, l.len()));
            if !complete && self.fields.len() < self.columns.len() {
                // The last line, cut short while the GUI was writing it: its last value may be
                // cut too.
                push_warning(
                    &mut self.warnings,
                    format!(
                        "dropped the incomplete last line {} at byte offset {line_off} (it has {} of \
                         {} columns and no line end)",
                        self.line_no,
                        self.fields.len(),
                        self.columns.len()
                    ),
                );
                break;
            }
            let mut bad: Option<FormatError> = None;
            for (ch, &col) in self.selected_cols.iter().enumerate() {
                let Some(&(a, b)) = self.fields.get(col) else {
                    bad = Some(FormatError::new(
                        &self.path,
                        self.columns[col].clone(),
                        line_off,
                        format!(
                            "line {}: the row has {} columns but the column header has {}, so \
                             \"{}\" is missing; the row is incomplete",
                            self.line_no,
                            self.fields.len(),
                            self.columns.len(),
                            self.columns[col]
                        ),
                    ));
                    break;
                };
                let cell = trim(&l[a..b]);
                match std::str::from_utf8(cell).ok().and_then(|s| s.parse::<f32>().ok()) {
                    Some(v) if v.is_finite() => out[ch * stride + frames] = v,
                    _ => {
                        let what = if cell.is_empty() {
                            "the cell is empty, expected a number".to_string()
                        } else {
                            format!("{} is not a number", describe_bytes(cell))
                        };
                        bad = Some(FormatError::new(
                            &self.path,
                            self.columns[col].clone(),
                            line_off,
                            format!("line {}: {what}", self.line_no),
                        ));
                        break;
                    }
                }
            }
            if let Some(e) = bad {
                if !complete {
                    // The last line, cut short while the GUI was writing it.
                    push_warning(
                        &mut self.warnings,
                        format!(
                            "dropped the incomplete last line {} at byte offset {line_off} ({})",
                            self.line_no, e.problem
                        ),
                    );
                    break;
                }
                return Err(e);
            }
            frames += 1;
        }
        if frames == 0 {
            return Ok(None);
        }
        if frames < stride {
            for ch in 1..nch {
                out.copy_within(ch * stride..ch * stride + frames, ch * frames);
            }
        }
        let t = self.frames_done as f64 / self.rate;
        self.frames_done += frames as u64;
        Ok(Some(Chunk { frames, t, events: Vec::new() }))
    }

    fn rewind(&mut self) -> Result<(), FormatError> {
        self.input
            .seek(SeekFrom::Start(self.data_offset))
            .map_err(|e| FormatError::io(&self.path, self.data_offset, "seeking", &e))?;
        self.offset = self.data_offset;
        self.line_no = self.data_line - 1;
        self.frames_done = 0;
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl std::fmt::Debug for OpenBciRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBciRecording")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .field("rate", &fmt_num(self.rate))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::open_recording;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!("bci2token-replay-obci-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn header_sizes_are_bounded() {
        let dir = TempDir::new("bounds");
        for (header, says) in
            [("%Number of channels = 10000000000\n", "up to 1024"), ("%Sample Rate = 1e12 Hz\n", "up to 100000 Hz")]
        {
            let p = dir.0.join("h.txt");
            std::fs::write(&p, format!("%OpenBCI Raw EEG Data\n{header}0, 1.0\n")).unwrap();
            let e = OpenBciRecording::open(&p, None).err().unwrap();
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_bound() {
        let dir = TempDir::new("endless");
        let p = dir.0.join("endless.txt");
        let f = File::create(&p).unwrap();
        std::io::Write::write_all(&mut &f, b"%OpenBCI Raw EEG Data\n%").unwrap();
        f.set_len(MAX_LINE_BYTES * 2).unwrap(); // sparse: no end of line, no disk
        let e = OpenBciRecording::open(&p, None).err().unwrap();
        assert!(e.to_string().contains("a line longer than 1 MiB"), "{e}");
    }

    fn real_file() -> PathBuf {
        let data = std::env::var_os("BCI2TOKEN_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
        data.join("openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt")
    }

    const SMALL: &str = "%OpenBCI Raw EXG Data\n%Number of channels = 2\n%Sample Rate = 10 Hz\n\
%Board = OpenBCI_GUI$BoardCytonSerial\n\
Sample Index, EXG Channel 0, EXG Channel 1, Accel Channel 0, Accel Channel 1, Accel Channel 2, Timestamp\n\
0, 1.5, -2.25, 0.1, 0.2, 0.3, 1557936053329\n\
1, 2.5, -3.25, 0.1, 0.2, 0.3, 1557936053336\n\
2, 3.5, -4.25, 0.1, 0.2, 0.3, 1557936053343\n";

    #[test]
    fn reads_real_file() {
        let path = real_file();
        let mut r = OpenBciRecording::open(&path, None).unwrap();
        assert_eq!(r.sample_rate(), 250.0);
        assert_eq!(r.board(), Some("OpenBCI_GUI$BoardCytonSerial"));
        let labels: Vec<&str> = r.channels().iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, (0..8).map(|i| format!("EXG Channel {i}")).collect::<Vec<_>>());
        assert!(r.channels().iter().all(|c| c.unit == "uV"));
        assert!(r.warnings().is_empty(), "{:?}", r.warnings());
        let mut out = vec![0f32; 8 * r.max_chunk_frames()];
        let first = r.next_chunk(&mut out).unwrap().unwrap();
        assert_eq!(first.t, 0.0);
        let f = first.frames;
        // First row: 0, 61379.36, 49492.89, -16597.06, ... ; second row 60973.46, ...
        assert_eq!(out[0], 61379.36f32);
        assert_eq!(out[1], 60973.46f32);
        assert_eq!(out[f], 49492.89f32);
        assert_eq!(out[2 * f], -16597.06f32);
        let mut total = first.frames as u64;
        while let Some(c) = r.next_chunk(&mut out).unwrap() {
            assert!((c.t - total as f64 / 250.0).abs() < 1e-9);
            total += c.frames as u64;
        }
        assert_eq!(total, r.total_rows());
        assert!((r.duration_seconds().unwrap() - total as f64 / 250.0).abs() < 1e-9);
        r.rewind().unwrap();
        let again = r.next_chunk(&mut out).unwrap().unwrap();
        assert_eq!(again.t, 0.0);
        assert_eq!(out[0], 61379.36f32);

        // Accelerometer by selection, via open_recording (content detection).
        let sel = vec!["accel channel 1".to_string(), "EXG Channel 7".to_string()];
        let mut r = open_recording(&path, Some(&sel)).unwrap();
        assert_eq!(r.channels()[0], Channel { label: "Accel Channel 1".into(), unit: "g".into() });
        assert_eq!(r.channels()[1].unit, "uV");
        let c = r.next_chunk(&mut out).unwrap().unwrap();
        assert_eq!(out[0], 0.420f32);
        assert_eq!(out[c.frames], 1740.11f32);
    }

    #[test]
    fn small_file_layout_and_partial_chunk() {
        let dir = TempDir::new("small");
        let p = dir.0.join("a.txt");
        std::fs::write(&p, SMALL).unwrap();
        let mut r = OpenBciRecording::open(&p, None).unwrap();
        assert_eq!(r.max_chunk_frames(), 1);
        let sel = vec!["EXG Channel 1".to_string(), "EXG Channel 0".to_string()];
        let mut r2 = OpenBciRecording::open(&p, Some(&sel)).unwrap();
        let mut out = vec![0f32; 2];
        let c = r2.next_chunk(&mut out).unwrap().unwrap();
        assert_eq!((c.frames, out[0], out[1]), (1, -2.25, 1.5));
        let mut n = 0;
        while r.next_chunk(&mut out).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        // A 5 Hz rate file with chunk 1... use 30 Hz: chunk of 3 frames; the 3 rows fill one.
        std::fs::write(&p, SMALL.replace("10 Hz", "40 Hz")).unwrap();
        let mut r = OpenBciRecording::open(&p, None).unwrap();
        assert_eq!(r.max_chunk_frames(), 4);
        let mut out = vec![f32::NAN; 8];
        let c = r.next_chunk(&mut out).unwrap().unwrap();
        assert_eq!(c.frames, 3);
        assert_eq!(&out[..6], &[1.5, 2.5, 3.5, -2.25, -3.25, -4.25]);
        assert!(r.next_chunk(&mut out).unwrap().is_none());
        // The output buffer must be large enough.
        let e = r.next_chunk(&mut [0f32; 3]).unwrap_err();
        assert_eq!(e.field, "output buffer");
    }

    #[test]
    fn malformed_row_names_column_line_and_offset() {
        let path = real_file();
        let text = std::fs::read(&path).unwrap();
        // Damage EXG Channel 3 in data row 1000 (the 6th line of the file is data row 1).
        let mut lines: Vec<Vec<u8>> = text.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        let idx = 5 + 999; // 0-based line index
        let line_offset: usize = lines[..idx].iter().map(Vec::len).sum();
        let cols: Vec<String> = String::from_utf8(lines[idx].clone()).unwrap().split(',').map(str::to_string).collect();
        let mut cols2 = cols.clone();
        cols2[4] = " 12x.5".to_string();
        lines[idx] = cols2.join(",").into_bytes();
        let dir = TempDir::new("badrow");
        let p = dir.0.join("bad.txt");
        std::fs::write(&p, lines.concat()).unwrap();
        let mut r = OpenBciRecording::open(&p, None).unwrap();
        let mut out = vec![0f32; 8 * r.max_chunk_frames()];
        let e = loop {
            match r.next_chunk(&mut out) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.field, "EXG Channel 3");
        assert_eq!(e.offset, line_offset as u64);
        assert!(e.problem.starts_with(&format!("line {}: \"12x.5\" is not a number", idx + 1)), "{e}");

        // A row with too few columns.
        let mut lines2 = lines.clone();
        lines2[idx] = b"999, 1.0, 2.0\n".to_vec();
        std::fs::write(&p, lines2.concat()).unwrap();
        let mut r = OpenBciRecording::open(&p, None).unwrap();
        let e = loop {
            match r.next_chunk(&mut out) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.field, "EXG Channel 2");
        assert_eq!(e.offset, line_offset as u64);
        assert!(e.problem.contains("incomplete"), "{e}");
    }

    #[test]
    fn truncated_last_line_is_dropped_with_warning() {
        let dir = TempDir::new("trunc");
        let p = dir.0.join("t.txt");
        std::fs::write(&p, format!("{SMALL}3, 4.5, -5.2")).unwrap();
        let mut r = OpenBciRecording::open(&p, None).unwrap();
        let mut out = vec![0f32; 2];
        let mut n = 0;
        while r.next_chunk(&mut out).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(r.warnings().len(), 1);
        assert!(r.warnings()[0].contains("incomplete last line 9"), "{:?}", r.warnings());
    }

    #[test]
    fn header_errors() {
        let dir = TempDir::new("hdr");
        let p = dir.0.join("h.txt");
        std::fs::write(&p, SMALL.replace("10 Hz", "ten Hz")).unwrap();
        let e = OpenBciRecording::open(&p, None).unwrap_err();
        assert_eq!(e.field, "%Sample Rate");
        assert_eq!(e.offset, SMALL.find("%Sample Rate").unwrap() as u64);
        assert!(e.problem.starts_with("line 3:"), "{e}");

        std::fs::write(&p, SMALL.replace("%Sample Rate = 10 Hz\n", "")).unwrap();
        let e = OpenBciRecording::open(&p, None).unwrap_err();
        assert_eq!(e.field, "%Sample Rate");

        std::fs::write(&p, SMALL.replace("EXG Channel", "Chan")).unwrap();
        let e = OpenBciRecording::open(&p, None).unwrap_err();
        assert_eq!(e.field, "EXG Channel 0");

        std::fs::write(&p, "%OpenBCI Raw EXG Data\n").unwrap();
        assert!(OpenBciRecording::open(&p, None).is_err());
        std::fs::write(&p, "hello\n").unwrap();
        let e = OpenBciRecording::open(&p, None).unwrap_err();
        assert_eq!((e.field.as_str(), e.offset), ("%OpenBCI", 0));

        std::fs::write(&p, SMALL).unwrap();
        let e = OpenBciRecording::open(&p, Some(&["Timestamp".to_string()])).unwrap_err();
        assert_eq!(e.field, "channels");
        assert!(e.problem.contains("\"EXG Channel 0\", \"EXG Channel 1\", \"Accel Channel 0\""), "{e}");
        assert!(e.problem.contains("cannot be replayed"), "{e}");
    }

    #[test]
    fn v5_layout_without_column_header() {
        let dir = TempDir::new("v5");
        let p = dir.0.join("v5.txt");
        std::fs::write(
            &p,
            "%OpenBCI Raw EEG Data\n%Number of channels = 2\n%Sample Rate = 250.0 Hz\n\
             0, 1.0, 2.0, 0.0, 0.0, 1.0, 12:00:00.000\n1, 3.0, 4.0, 0.0, 0.0, 1.0, 12:00:00.004\n",
        )
        .unwrap();
        let mut r = OpenBciRecording::open(&p, None).unwrap();
        assert_eq!(r.channels().len(), 2);
        assert_eq!(r.warnings().len(), 1);
        let mut out = vec![0f32; 2 * r.max_chunk_frames()];
        let c = r.next_chunk(&mut out).unwrap().unwrap();
        assert_eq!(c.frames, 2);
        assert_eq!(&out[..4], &[1.0, 3.0, 2.0, 4.0]);
    }

    #[test]
    fn garbage_never_panics() {
        let dir = TempDir::new("garbage");
        let p = dir.0.join("g.txt");
        let mut seed = 0x1234_5678_u64;
        let base = SMALL.as_bytes().to_vec();
        for _ in 0..300 {
            let mut b = base.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % b.len();
                b[i] = (seed >> 20) as u8;
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            b.truncate((seed >> 33) as usize % (b.len() + 1));
            std::fs::write(&p, &b).unwrap();
            if let Ok(mut r) = OpenBciRecording::open(&p, None) {
                let mut out = vec![0f32; r.channels().len() * r.max_chunk_frames()];
                while let Ok(Some(_)) = r.next_chunk(&mut out) {}
            }
        }
    }
}

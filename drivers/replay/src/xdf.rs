//! XDF (Lab Streaming Layer recordings, as LabRecorder writes them) for replay.
//!
//! The file is read whole ([`XdfFile::read`]): chunks (`FileHeader`, `StreamHeader`, `Samples`,
//! `ClockOffset`, `Boundary`, `StreamFooter`), each stream's samples with their time stamps
//! (stamps the writer left out are the previous one plus 1 / nominal rate), its clock offsets and
//! footer. Time stamps are then synchronised as pyxdf does ([`clock`]). [`XdfRecording`] replays
//! one numeric stream, chosen by name or type, and turns the samples of every string stream into
//! annotations.
//!
//! Replay time: `t = 0` at the chosen stream's first (synchronised) time stamp. A block holds
//! consecutive samples whose stamps stay within [`MAX_TIME_ERROR`] of the block's start plus
//! `i / rate`, so the replay's sample times are the file's within that bound; a larger jump
//! starts a new block, and a jump of more than one and a half periods is a gap.

pub mod clock;
pub mod xml;

use std::path::{Path, PathBuf};

use crate::format_error::FormatError;
use bci2token_driver_abi::units::to_microvolts;

use crate::recording::{fmt_num, Channel, Chunk, Recording, RecordingEvent};

/// How far a delivered sample time may be from the file's stamp (s).
pub const MAX_TIME_ERROR: f64 = 0.0005;
/// Samples per block at most.
const MAX_CHUNK_FRAMES: usize = 256;
const MAGIC: &[u8] = b"XDF:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Double64,
    Text,
}

impl Format {
    fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "int8" => Format::Int8,
            "int16" => Format::Int16,
            "int32" => Format::Int32,
            "int64" => Format::Int64,
            "float32" => Format::Float32,
            "double64" => Format::Double64,
            "string" => Format::Text,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Format::Int8 => 1,
            Format::Int16 => 2,
            Format::Int32 | Format::Float32 => 4,
            Format::Int64 | Format::Double64 => 8,
            Format::Text => 0,
        }
    }
}

/// One stream of an XDF file, its stamps synchronised.
#[derive(Debug, Clone)]
pub struct XdfStream {
    pub id: u32,
    pub name: String,
    pub type_: String,
    pub channel_count: usize,
    pub nominal_rate: f64,
    pub format: String,
    /// (label, unit) per channel from `<desc><channels>`; empty when not described.
    pub channels: Vec<(String, String)>,
    pub stamps: Vec<f64>,
    /// Numeric samples, row-major (`stamps.len() × channel_count`), as f64.
    pub values: Vec<f64>,
    /// String samples, one Vec per sample.
    pub strings: Vec<Vec<String>>,
    pub clock_times: Vec<f64>,
    pub clock_values: Vec<f64>,
    footer_count: Option<usize>,
    fmt: Format,
}

/// A whole XDF file.
#[derive(Debug, Clone)]
pub struct XdfFile {
    pub path: PathBuf,
    pub streams: Vec<XdfStream>,
    pub warnings: Vec<String>,
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    /// Start of the chunk being read, for messages.
    chunk_at: usize,
    tag: &'static str,
}

impl<'a> Cursor<'a> {
    fn err(&self, problem: impl Into<String>) -> FormatError {
        FormatError::new(self.path, self.tag, self.chunk_at as u64, problem)
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            self.err(format!("{what} at byte {} runs past the end of the chunk (the file is damaged)", self.pos))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn varlen(&mut self, what: &str) -> Result<u64, FormatError> {
        match self.u8(what)? {
            1 => Ok(u64::from(self.u8(what)?)),
            4 => Ok(u64::from(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))),
            8 => Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes"))),
            n => Err(self.err(format!("{what}: a variable-length integer has {n} length bytes (1, 4 or 8 allowed)"))),
        }
    }
    fn f64(&mut self, what: &str) -> Result<f64, FormatError> {
        Ok(f64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
}

fn tag_name(tag: u16) -> &'static str {
    match tag {
        1 => "FileHeader chunk",
        2 => "StreamHeader chunk",
        3 => "Samples chunk",
        4 => "ClockOffset chunk",
        5 => "Boundary chunk",
        6 => "StreamFooter chunk",
        _ => "chunk",
    }
}

fn stream_header(c: &Cursor<'_>, id: u32, text: &str) -> Result<XdfStream, FormatError> {
    let doc = xml::parse(text).map_err(|e| c.err(format!("stream {id}: the header XML is malformed: {e}")))?;
    let field = |name: &str| doc.text_at(&[name]).unwrap_or("").to_string();
    let channel_count: usize = field("channel_count")
        .parse()
        .map_err(|_| c.err(format!("stream {id}: <channel_count> {:?} is not a number", field("channel_count"))))?;
    // Sizes come from the file: bounded before anything is allocated from them.
    if channel_count == 0 || channel_count > MAX_XDF_CHANNELS {
        return Err(c.err(format!("stream {id}: <channel_count> {channel_count} is not 1 to {MAX_XDF_CHANNELS}")));
    }
    let nominal_rate: f64 = field("nominal_srate")
        .parse()
        .map_err(|_| c.err(format!("stream {id}: <nominal_srate> {:?} is not a number", field("nominal_srate"))))?;
    let format = field("channel_format");
    let fmt = Format::parse(&format)
        .ok_or_else(|| c.err(format!("stream {id}: <channel_format> {format:?} is not an XDF channel format")))?;
    let channels = doc
        .child("desc")
        .and_then(|d| d.child("channels"))
        .map(|chs| {
            chs.children_named("channel")
                .map(|ch| {
                    (ch.text_at(&["label"]).unwrap_or("").to_string(), ch.text_at(&["unit"]).unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(XdfStream {
        id,
        name: field("name"),
        type_: field("type"),
        channel_count,
        nominal_rate,
        format,
        channels,
        stamps: Vec::new(),
        values: Vec::new(),
        strings: Vec::new(),
        clock_times: Vec::new(),
        clock_values: Vec::new(),
        footer_count: None,
        fmt,
    })
}

fn samples(c: &mut Cursor<'_>, s: &mut XdfStream) -> Result<(), FormatError> {
    let n = c.varlen("number of samples")?;
    let period = if s.nominal_rate > 0.0 { 1.0 / s.nominal_rate } else { 0.0 };
    for _ in 0..n {
        let stamp = match c.u8("time stamp length")? {
            0 => s.stamps.last().map_or(0.0, |l| l + period),
            8 => c.f64("time stamp")?,
            other => return Err(c.err(format!("stream {}: a time stamp has {other} bytes (0 or 8 allowed)", s.id))),
        };
        s.stamps.push(stamp);
        if s.fmt == Format::Text {
            // Markers are sparse; each costs far more in memory than in the file.
            if s.strings.len() >= MAX_XDF_MARKERS {
                return Err(c.err(format!("stream {}: more than {MAX_XDF_MARKERS} string samples", s.id)));
            }
            let mut row = Vec::with_capacity(s.channel_count.min(16));
            for _ in 0..s.channel_count {
                let len = c.varlen("string length")?;
                let raw = c.take(usize::try_from(len).unwrap_or(usize::MAX), "string")?;
                row.push(String::from_utf8_lossy(raw).into_owned());
            }
            s.strings.push(row);
        } else {
            let raw = c.take(s.channel_count * s.fmt.size(), "sample values")?;
            for v in raw.chunks_exact(s.fmt.size()) {
                s.values.push(match s.fmt {
                    Format::Int8 => f64::from(v[0] as i8),
                    Format::Int16 => f64::from(i16::from_le_bytes([v[0], v[1]])),
                    Format::Int32 => f64::from(i32::from_le_bytes(v.try_into().expect("4 bytes"))),
                    Format::Int64 => i64::from_le_bytes(v.try_into().expect("8 bytes")) as f64,
                    Format::Float32 => f64::from(f32::from_le_bytes(v.try_into().expect("4 bytes"))),
                    Format::Double64 => f64::from_le_bytes(v.try_into().expect("8 bytes")),
                    Format::Text => unreachable!("strings are read above"),
                });
            }
        }
    }
    Ok(())
}

/// The largest XDF file replayed: XDF files are read whole into memory, and decoded samples take
/// up to 8 times their bytes (an int8 value becomes an f64).
pub const MAX_XDF_BYTES: u64 = 256 << 20;
/// The most channels a stream may declare.
pub const MAX_XDF_CHANNELS: usize = 65_536;
/// The most string samples (markers) a stream may hold.
pub const MAX_XDF_MARKERS: usize = 1_000_000;

/// The whole file, if it holds at most `max` bytes: a (sparse) file of any size must not take the
/// daemon's memory.
fn read_bounded(source: &crate::recording::Input, max: u64) -> Result<Vec<u8>, FormatError> {
    let path = source.name.as_path();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(source.reopen()?, max + 1), &mut bytes)
        .map_err(|e| FormatError::io(path, 0, "cannot read", &e))?;
    if bytes.len() as u64 > max {
        return Err(FormatError::new(
            path,
            "file",
            0,
            format!(
                "larger than {} MiB, the most an XDF file may be for replay (it is read whole); split the \
                 recording or convert the stream to replay to EDF/BDF",
                max >> 20
            ),
        ));
    }
    Ok(bytes)
}

impl XdfFile {
    /// Reads and synchronises a whole file. A file cut short inside its last chunk is read up to
    /// that chunk, with a warning; any other damage is an error naming the chunk and its offset.
    pub fn read(path: &Path) -> Result<XdfFile, FormatError> {
        Self::read_input(&crate::recording::Input::open_path(path)?)
    }

    /// [`Self::read`] on an [`Input`](crate::recording::Input).
    pub fn read_input(source: &crate::recording::Input) -> Result<XdfFile, FormatError> {
        let bytes = read_bounded(source, MAX_XDF_BYTES)?;
        Self::parse(source.name.as_path(), bytes)
    }

    fn parse(path: &Path, bytes: Vec<u8>) -> Result<XdfFile, FormatError> {
        if !bytes.starts_with(MAGIC) {
            return Err(FormatError::new(path, "file", 0, "not an XDF file: it does not start with \"XDF:\""));
        }
        let mut streams: Vec<XdfStream> = Vec::new();
        let mut warnings = Vec::new();
        let mut pos = MAGIC.len();
        while pos < bytes.len() {
            let mut head = Cursor { path, bytes: &bytes, pos, chunk_at: pos, tag: "chunk" };
            let header = head.varlen("chunk length").map(|len| (len, head.pos));
            let (len, body) = match header {
                Ok(h) => h,
                Err(_) => {
                    warnings.push(format!("the file ends inside a chunk header at byte {pos}; the rest is ignored"));
                    break;
                }
            };
            let end = usize::try_from(len).ok().and_then(|l| body.checked_add(l));
            let Some(end) = end.filter(|&e| e <= bytes.len()) else {
                warnings.push(format!(
                    "the chunk at byte {pos} says it has {len} bytes but the file ends first (it was cut short); \
                     the rest is ignored"
                ));
                break;
            };
            if len < 2 {
                return Err(FormatError::new(path, "chunk", pos as u64, format!("a chunk of {len} bytes has no tag")));
            }
            let tag = u16::from_le_bytes([bytes[body], bytes[body + 1]]);
            let mut c = Cursor { path, bytes: &bytes[..end], pos: body + 2, chunk_at: pos, tag: tag_name(tag) };
            match tag {
                1 | 5 => {}
                2 => {
                    let id = c.u32("stream id")?;
                    let text = String::from_utf8_lossy(&bytes[c.pos..end]).into_owned();
                    if streams.iter().any(|s| s.id == id) {
                        return Err(c.err(format!("stream {id} has a second StreamHeader")));
                    }
                    streams.push(stream_header(&c, id, &text)?);
                }
                3 | 4 | 6 => {
                    let id = c.u32("stream id")?;
                    let Some(s) = streams.iter_mut().find(|s| s.id == id) else {
                        return Err(c.err(format!("stream {id} has no StreamHeader before this chunk")));
                    };
                    match tag {
                        3 => samples(&mut c, s)?,
                        4 => {
                            s.clock_times.push(c.f64("collection time")?);
                            s.clock_values.push(c.f64("offset value")?);
                        }
                        _ => {
                            let text = String::from_utf8_lossy(&bytes[c.pos..end]).into_owned();
                            if let Ok(doc) = xml::parse(&text) {
                                s.footer_count = doc.text_at(&["sample_count"]).and_then(|v| v.parse().ok());
                            } else {
                                warnings.push(format!("stream {id}: the footer XML is malformed and was ignored"));
                            }
                        }
                    }
                    if tag == 3 && c.pos != end {
                        return Err(c.err(format!(
                            "stream {id}: {} bytes are left after the samples (the chunk length or the stream's \
                             channel_count/channel_format is wrong)",
                            end - c.pos
                        )));
                    }
                }
                other => warnings.push(format!("an unknown chunk tag {other} at byte {pos} was skipped")),
            }
            pos = end;
        }
        for s in &mut streams {
            if let Some(count) = s.footer_count.filter(|&c| s.stamps.len() > c) {
                if clock::last_offset_corrupted(&s.clock_times, &s.clock_values) {
                    s.clock_times.pop();
                    s.clock_values.pop();
                    s.stamps.truncate(count);
                    s.values.truncate(count * s.channel_count);
                    s.strings.truncate(count);
                }
            }
            clock::synchronize(&mut s.stamps, &s.clock_times, &s.clock_values);
        }
        Ok(XdfFile { path: path.to_path_buf(), streams, warnings })
    }
}

/// Which stream to replay.
#[derive(Debug, Clone, Default)]
pub struct StreamChoice {
    pub name: Option<String>,
    pub type_: Option<String>,
}

/// [`Recording`] over one numeric stream of an XDF file.
pub struct XdfRecording {
    file: XdfFile,
    index: usize,
    channels: Vec<Channel>,
    selected: Vec<usize>,
    scales: Vec<f64>,
    /// Annotations (onset from the stream's t = 0), sorted.
    annotations: Vec<(f64, String)>,
    origin: f64,
    next: usize,
    next_annotation: usize,
    warnings: Vec<String>,
}

fn describe_streams(file: &XdfFile) -> String {
    file.streams
        .iter()
        .map(|s| {
            format!(
                "\"{}\" (type \"{}\", {} × {}, {} Hz)",
                s.name,
                s.type_,
                s.channel_count,
                s.format,
                fmt_num(s.nominal_rate)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl XdfRecording {
    pub fn open(path: &Path, choice: &StreamChoice, selection: Option<&[String]>) -> Result<XdfRecording, FormatError> {
        Self::open_input(&crate::recording::Input::open_path(path)?, choice, selection)
    }

    /// [`Self::open`] on an [`Input`](crate::recording::Input).
    pub fn open_input(
        source: &crate::recording::Input,
        choice: &StreamChoice,
        selection: Option<&[String]>,
    ) -> Result<XdfRecording, FormatError> {
        let path = source.name.as_path();
        let file = XdfFile::read_input(source)?;
        let usable = |s: &XdfStream| s.fmt != Format::Text && s.nominal_rate > 0.0 && s.channel_count > 0;
        let matches = |s: &XdfStream| {
            choice.name.as_ref().is_none_or(|n| &s.name == n) && choice.type_.as_ref().is_none_or(|t| &s.type_ == t)
        };
        let field = if choice.name.is_some() { "stream" } else { "stream_type" };
        let index = if choice.name.is_some() || choice.type_.is_some() {
            let i = file.streams.iter().position(matches).ok_or_else(|| {
                FormatError::new(path, field, 0, format!("no stream matches; the file has {}", describe_streams(&file)))
            })?;
            if !usable(&file.streams[i]) {
                return Err(FormatError::new(
                    path,
                    field,
                    0,
                    format!(
                        "stream \"{}\" is a {} stream at {} Hz; replay needs a numeric stream with a nominal rate \
                         (its markers become annotations when another stream is replayed)",
                        file.streams[i].name,
                        file.streams[i].format,
                        fmt_num(file.streams[i].nominal_rate)
                    ),
                ));
            }
            i
        } else {
            file.streams
                .iter()
                .position(|s| usable(s) && s.type_.eq_ignore_ascii_case("EEG"))
                .or_else(|| file.streams.iter().position(usable))
                .ok_or_else(|| {
                    FormatError::new(
                        path,
                        "stream",
                        0,
                        format!(
                            "no numeric stream with a nominal rate to replay; the file has {}",
                            describe_streams(&file)
                        ),
                    )
                })?
        };
        let s = &file.streams[index];
        if s.stamps.is_empty() {
            return Err(FormatError::new(path, "stream", 0, format!("stream \"{}\" has no samples", s.name)));
        }
        let labels: Vec<String> = (0..s.channel_count)
            .map(|c| {
                s.channels
                    .get(c)
                    .map(|(l, _)| l.clone())
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| format!("Ch{}", c + 1))
            })
            .collect();
        let selected: Vec<usize> = match selection {
            None | Some([]) => (0..s.channel_count).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    labels
                        .iter()
                        .position(|l| l == n.trim())
                        .or_else(|| labels.iter().position(|l| l.eq_ignore_ascii_case(n.trim())))
                        .ok_or_else(|| {
                            FormatError::new(
                                path,
                                "channels",
                                0,
                                format!(
                                    "no channel labelled \"{n}\" in stream \"{}\"; available: {}",
                                    s.name,
                                    labels.join(", ")
                                ),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut channels = Vec::new();
        let mut scales = Vec::new();
        for &c in &selected {
            let unit = s.channels.get(c).map(|(_, u)| u.as_str()).unwrap_or("");
            let (scale, out) = to_microvolts(unit);
            channels.push(Channel { label: labels[c].clone(), unit: out });
            scales.push(scale);
        }
        let origin = s.stamps[0];
        let mut annotations: Vec<(f64, String)> = file
            .streams
            .iter()
            .filter(|m| m.fmt == Format::Text)
            .flat_map(|m| m.stamps.iter().zip(&m.strings).map(|(t, row)| (t - origin, row.join(" "))))
            .collect();
        annotations.sort_by(|a, b| a.0.total_cmp(&b.0));
        let warnings = file.warnings.clone();
        Ok(XdfRecording {
            file,
            index,
            channels,
            selected,
            scales,
            annotations,
            origin,
            next: 0,
            next_annotation: 0,
            warnings,
        })
    }

    /// The replayed stream.
    pub fn stream(&self) -> &XdfStream {
        &self.file.streams[self.index]
    }

    /// LSL time of replay time 0.
    pub fn origin(&self) -> f64 {
        self.origin
    }
}

impl Recording for XdfRecording {
    fn path(&self) -> &Path {
        &self.file.path
    }
    fn channels(&self) -> &[Channel] {
        &self.channels
    }
    fn sample_rate(&self) -> f64 {
        self.stream().nominal_rate
    }
    fn max_chunk_frames(&self) -> usize {
        MAX_CHUNK_FRAMES
    }
    fn duration_seconds(&self) -> Option<f64> {
        let s = self.stream();
        Some(s.stamps[s.stamps.len() - 1] - self.origin + 1.0 / s.nominal_rate)
    }

    fn next_chunk(&mut self, out: &mut [f32]) -> Result<Option<Chunk>, FormatError> {
        let s = &self.file.streams[self.index];
        let n = s.stamps.len();
        if self.next >= n {
            return Ok(None);
        }
        let period = 1.0 / s.nominal_rate;
        let start = self.next;
        let t0 = s.stamps[start];
        let mut frames = 1;
        while frames < MAX_CHUNK_FRAMES
            && start + frames < n
            && (s.stamps[start + frames] - (t0 + frames as f64 * period)).abs() <= MAX_TIME_ERROR
        {
            frames += 1;
        }
        let mut events = Vec::new();
        if start > 0 {
            let hole = t0 - s.stamps[start - 1] - period;
            if hole > 0.5 * period {
                events.push(RecordingEvent::Gap { at: s.stamps[start - 1] + period - self.origin, seconds: hole });
            }
        }
        let end_t = t0 + frames as f64 * period - self.origin;
        // Markers after the last sample still belong to the recording: they come with the last block.
        let last = start + frames >= n;
        while self.next_annotation < self.annotations.len()
            && (last || self.annotations[self.next_annotation].0 < end_t)
        {
            let (onset, text) = self.annotations[self.next_annotation].clone();
            events.push(RecordingEvent::Annotation { onset, duration: None, text });
            self.next_annotation += 1;
        }
        for (o, (&c, &scale)) in self.selected.iter().zip(&self.scales).enumerate() {
            for i in 0..frames {
                out[o * frames + i] = (s.values[(start + i) * s.channel_count + c] * scale) as f32;
            }
        }
        self.next += frames;
        Ok(Some(Chunk { frames, t: t0 - self.origin, events }))
    }

    fn rewind(&mut self) -> Result<(), FormatError> {
        self.next = 0;
        self.next_annotation = 0;
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_beyond_the_bound_is_refused_without_reading_it_all() {
        let path = std::env::temp_dir().join(format!("bci2token-xdf-bound-{}.xdf", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 8 MiB of nothing after the magic, costing no disk.
        std::io::Write::write_all(&mut &file, MAGIC).unwrap();
        file.set_len(8 << 20).unwrap();
        let input = crate::recording::Input::open_path(&path).unwrap();
        let e = read_bounded(&input, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        assert_eq!(read_bounded(&input, 8 << 20).unwrap().len(), 8 << 20, "at the bound it is read");
        std::fs::remove_file(&path).unwrap();
    }
}

//! A stored session, decrypted, written as EDF+ (16-bit), BDF+ (24-bit) or CSV.
//!
//! EDF+/BDF+ (EDF+C): one data record per second (the sample rate must be a whole number), one
//! signal per channel in µV with its physical range taken from the data (so the digital step is as
//! fine as the format allows), and an `EDF Annotations`/`BDF Annotations` signal holding the
//! session's annotations, token events (`token " yes" (13Hz, p=0.93)`), gaps and decoder errors as
//! TALs. Samples are placed by their block's stream time; samples lost in gaps are written as 0 and
//! marked by a gap annotation. The last record is padded with zeros.
//!
//! CSV: a `time_s` column (seconds from the first sample) and one column per channel (µV), every
//! value as the shortest decimal that reads back to the stored f32.
//!
//! Streaming, in two passes over the stored blocks, so that memory never depends on the session's
//! time stamps (a stream whose clock jumps by a day is a day of zeros in the file, not in memory):
//!
//! 1. [`Scan`]: every block once, in sequence order: an index entry per block (its time, sequence
//!    number and frames: 32 bytes), each channel's minimum and maximum, and the annotation notes
//!    of the events. [`Scan::finish`] places the blocks on the time line ([`Layout`]): the earliest
//!    block's time is frame 0, a block starts at frame round((t − t0) · rate).
//! 2. The writers walk the time line one record (EDF), 1024 rows (CSV) or one window (the private
//!    release) at a time through [`Frames`], which reads the blocks that reach into that stretch
//!    by their index order ([`Blocks`]), and zeros where no block lies. Where blocks overlap (a
//!    stream time that stepped back) the later block (by sequence number) wins, frame by frame, as
//!    the whole-session time line of earlier versions did; the physical ranges then come from a
//!    walk over the time line itself, before anything is written.
//!
//! Memory: the index (32 bytes a block), the notes (their text), one record's samples and the
//! decoded blocks that reach into it. The time line may span at most [`MAX_SECONDS`].

use std::fmt::Write as _;
use std::io::Write;

use bci2token_api::{Event, SessionInfo};

/// The longest time line an export writes (s): EDF's 8-character record count. A session whose
/// time stamps span more (a clock jumping to the Unix epoch) is refused rather than written as
/// years of zeros.
pub const MAX_SECONDS: f64 = 99_999_999.0;
/// The highest sample rate an EDF/BDF export takes (a second of every channel is one record).
pub const MAX_EDF_RATE: f64 = 100_000.0;

/// Rows of CSV per walk step.
const CSV_ROWS: usize = 1024;

/// One decoded block.
#[derive(Debug, Clone)]
pub struct Block {
    pub t: f64,
    /// The driver's flags (`GAP`, `RECONNECTED`, ...).
    pub flags: u32,
    pub channels: usize,
    pub frames: usize,
    /// Channel-major µV.
    pub data: Vec<f32>,
}

/// Decodes a stored block (t f64, flags u32, channels u32, frames u64, channel-major f32).
pub fn decode_block(bytes: &[u8]) -> Result<Block, String> {
    if bytes.len() < 24 {
        return Err(format!("a stored block of {} bytes is too short", bytes.len()));
    }
    let t = f64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let flags = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let channels = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let frames = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    let values = &bytes[24..];
    if Some(values.len()) != channels.checked_mul(frames).and_then(|n| n.checked_mul(4)) {
        return Err(format!("a stored block says {channels} × {frames} values but holds {} bytes", values.len()));
    }
    let data = values.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    Ok(Block { t, flags, channels, frames, data })
}

/// What goes into the annotation signal.
#[derive(Debug, Clone)]
struct Note {
    onset: f64,
    duration: Option<f64>,
    text: String,
}

/// The note an event makes, its onset in stream time.
fn note_of(event: &Event) -> Option<Note> {
    match event {
        Event::Annotation { onset, duration, text, .. } => {
            Some(Note { onset: *onset, duration: *duration, text: text.clone() })
        }
        Event::Token { t, text, label, confidence, .. } => {
            Some(Note { onset: *t, duration: None, text: format!("token {text:?} ({label}, p={confidence:.2})") })
        }
        Event::Gap { t, seconds, lost_samples, .. } => Some(Note {
            onset: *t,
            duration: Some(*seconds),
            text: match lost_samples {
                Some(n) => format!("gap: {n} samples lost"),
                None => "gap: samples lost".into(),
            },
        }),
        Event::DecoderError { t, message, .. } => {
            Some(Note { onset: *t, duration: None, text: format!("decoder error: {message}") })
        }
        Event::Breaker { t, state, .. } => {
            Some(Note { onset: *t, duration: None, text: format!("decoder breaker {}", state.as_str()) })
        }
        _ => None,
    }
}

/// Where the second pass gets a block: by its sequence number.
pub trait Blocks {
    fn block(&mut self, seq: u64) -> Result<Block, String>;
}

impl<B: Blocks + ?Sized> Blocks for &mut B {
    fn block(&mut self, seq: u64) -> Result<Block, String> {
        (**self).block(seq)
    }
}

/// A block as the first pass saw it.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    t: f64,
    seq: u64,
    frames: u64,
    /// It has the session's channels (a block that does not still places the time line but is
    /// not written, as before).
    fits: bool,
}

/// The first pass over a session ([`Scan::block`] for every block, [`Scan::event`] for every
/// event, then [`Scan::finish`]).
#[derive(Debug)]
pub struct Scan {
    rate: f64,
    channels: usize,
    stamps: Vec<Stamp>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    keep_notes: bool,
    notes: Vec<Note>,
}

impl Scan {
    /// `notes`: keep the events' notes (only EDF/BDF write them).
    pub fn new(info: &SessionInfo, notes: bool) -> Scan {
        let n = info.channels.len();
        Scan {
            rate: info.sample_rate,
            channels: n,
            stamps: Vec::new(),
            lo: vec![f64::INFINITY; n],
            hi: vec![f64::NEG_INFINITY; n],
            keep_notes: notes,
            notes: Vec::new(),
        }
    }

    /// The block stored as `seq`.
    pub fn block(&mut self, seq: u64, b: &Block) {
        let fits = b.channels == self.channels;
        self.stamps.push(Stamp { t: b.t, seq, frames: b.frames as u64, fits });
        if fits && b.frames > 0 {
            for (c, values) in b.data.chunks_exact(b.frames).enumerate() {
                let (lo, hi) = (&mut self.lo[c], &mut self.hi[c]);
                for &v in values {
                    *lo = lo.min(f64::from(v));
                    *hi = hi.max(f64::from(v));
                }
            }
        }
    }

    pub fn event(&mut self, e: &Event) {
        if self.keep_notes {
            self.notes.extend(note_of(e));
        }
    }

    /// Places the blocks on the time line.
    pub fn finish(self) -> Result<Layout, String> {
        let Scan { rate, channels, stamps, lo, hi, notes, .. } = self;
        // The earliest block starts the time line (stream time may step back after a reconnection).
        let t0 = stamps.iter().map(|s| s.t).fold(f64::INFINITY, f64::min);
        let t0 = if t0.is_finite() { t0 } else { 0.0 };
        let mut frames = 0u64;
        let mut placed = Vec::with_capacity(stamps.iter().filter(|s| s.fits && s.frames > 0).count());
        for s in &stamps {
            let start = ((s.t - t0) * rate).round() as u64;
            let end = start.checked_add(s.frames).ok_or_else(|| too_long(f64::INFINITY))?;
            frames = frames.max(end);
            if s.fits && s.frames > 0 {
                placed.push(Placed { seq: s.seq, start, frames: s.frames });
            }
        }
        drop(stamps);
        if channels == 0 {
            frames = 0;
            placed.clear();
        }
        if rate > 0.0 && frames as f64 / rate > MAX_SECONDS {
            return Err(too_long(frames as f64 / rate));
        }
        placed.sort_unstable_by_key(|p| (p.start, p.seq));
        let (mut covered, mut reach, mut overlaps) = (0u64, 0u64, false);
        for p in &placed {
            overlaps |= p.start < reach;
            let end = p.start + p.frames;
            covered += end.saturating_sub(p.start.max(reach));
            reach = reach.max(end);
        }
        // Frames no block covers are zeros, and count in the range as before.
        let zeros = covered < frames;
        let ranges =
            lo.into_iter().zip(hi).map(|(lo, hi)| if zeros { (lo.min(0.0), hi.max(0.0)) } else { (lo, hi) }).collect();
        let mut notes: Vec<Note> = notes.into_iter().map(|n| Note { onset: n.onset - t0, ..n }).collect();
        notes.sort_by(|a, b| a.onset.total_cmp(&b.onset));
        Ok(Layout { frames, channels, placed, ranges, overlaps, notes })
    }
}

fn too_long(seconds: f64) -> String {
    format!(
        "the session's time stamps span {seconds:.0} s (a stream clock that jumped?): an export holds at most {MAX_SECONDS} s"
    )
}

/// Where a block lies on the time line.
#[derive(Debug, Clone, Copy)]
struct Placed {
    seq: u64,
    start: u64,
    frames: u64,
}

/// A session's blocks placed on one time line ([`Scan::finish`]).
#[derive(Debug)]
pub struct Layout {
    /// Frames on the time line (up to the end of the last block).
    pub frames: u64,
    channels: usize,
    /// Blocks with the session's channels and at least one frame, by start, then sequence number.
    placed: Vec<Placed>,
    /// Each channel's minimum and maximum from the first pass (with 0 where frames are not
    /// covered); exact unless blocks overlap.
    ranges: Vec<(f64, f64)>,
    overlaps: bool,
    /// Onsets from t0, in order.
    notes: Vec<Note>,
}

impl Layout {
    /// The session's channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Each channel's minimum and maximum over the time line (its zeros included): from the first
    /// pass, or, where blocks overlap and a later one hides samples of an earlier one, from a walk
    /// over the time line.
    fn ranges(&self, blocks: &mut impl Blocks) -> Result<Vec<(f64, f64)>, String> {
        if !self.overlaps {
            return Ok(self.ranges.clone());
        }
        let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); self.channels];
        let mut frames = Frames::new(self, blocks);
        let mut buf = vec![Vec::new(); self.channels];
        let mut from = 0;
        while from < self.frames {
            let len = (self.frames - from).min(CSV_ROWS as u64) as usize;
            frames.fill(from, len, &mut buf)?;
            for ((lo, hi), col) in ranges.iter_mut().zip(&buf) {
                for &v in col {
                    *lo = lo.min(f64::from(v));
                    *hi = hi.max(f64::from(v));
                }
            }
            from += len as u64;
        }
        Ok(ranges)
    }
}

/// The time line, stretch by stretch, in order ([`Frames::fill`]).
pub struct Frames<'a, B> {
    layout: &'a Layout,
    blocks: B,
    /// The next block of `layout.placed` to read.
    next: usize,
    /// Blocks read that reach into the current stretch, by sequence number.
    active: Vec<(Placed, Block)>,
}

impl<'a, B: Blocks> Frames<'a, B> {
    pub fn new(layout: &'a Layout, blocks: B) -> Frames<'a, B> {
        Frames { layout, blocks, next: 0, active: Vec::new() }
    }

    /// Frames `from .. from + len` of every channel into `out[channel]` (resized to `len`): zeros
    /// where no block lies, the later block (by sequence number) where blocks overlap. Calls must
    /// go forward (`from` never below an earlier call's).
    pub fn fill(&mut self, from: u64, len: usize, out: &mut [Vec<f32>]) -> Result<(), String> {
        let end = from + len as u64;
        self.active.retain(|(p, _)| p.start + p.frames > from);
        while let Some(&p) = self.layout.placed.get(self.next) {
            if p.start >= end {
                break;
            }
            self.next += 1;
            if p.start + p.frames <= from {
                continue;
            }
            let b = self.blocks.block(p.seq)?;
            if b.channels != self.layout.channels || b.frames as u64 != p.frames {
                return Err(format!("block {} read back differently in the export's second pass", p.seq));
            }
            let at = self.active.partition_point(|(q, _)| q.seq < p.seq);
            self.active.insert(at, (p, b));
        }
        for col in out.iter_mut() {
            col.clear();
            col.resize(len, 0.0);
        }
        for (p, b) in &self.active {
            let (lo, hi) = (p.start.max(from), (p.start + p.frames).min(end));
            if lo >= hi {
                continue;
            }
            let (src, n, dst) = ((lo - p.start) as usize, (hi - lo) as usize, (lo - from) as usize);
            for (c, col) in out.iter_mut().enumerate() {
                let values = &b.data[c * b.frames..(c + 1) * b.frames];
                col[dst..dst + n].copy_from_slice(&values[src..src + n]);
            }
        }
        Ok(())
    }
}

/// A number in at most 8 characters, rounded outward (`down` for a minimum).
fn field_number(x: f64, down: bool) -> String {
    for decimals in (0..=6).rev() {
        let scale = 10f64.powi(decimals);
        let r = if down { (x * scale).floor() / scale } else { (x * scale).ceil() / scale };
        let s = format!("{r:.*}", decimals as usize);
        if s.len() <= 8 {
            return s;
        }
    }
    format!("{}", if down { x.floor() } else { x.ceil() } as i64)
}

fn field(out: &mut Vec<u8>, text: &str, width: usize) {
    let mut bytes: Vec<u8> = text.bytes().filter(|b| (0x20..0x7F).contains(b)).take(width).collect();
    bytes.resize(width, b' ');
    out.extend_from_slice(&bytes);
}

fn tal_time(x: f64) -> String {
    let s = format!("{x:+.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Writes EDF+ (`bdf` false) or BDF+ (`bdf` true): the header, then one record at a time.
pub fn write_edf(
    out: &mut impl Write,
    info: &SessionInfo,
    layout: &Layout,
    mut blocks: impl Blocks,
    bdf: bool,
) -> Result<(), String> {
    let rate = info.sample_rate;
    if rate.fract() != 0.0 || rate < 1.0 {
        return Err(format!("EDF export needs a whole number of samples per second; this session has {rate} Hz"));
    }
    // One record (a second) is held in memory: the rate a stream declares (an LSL peer's
    // nominal rate) must not make that gigabytes.
    if rate > MAX_EDF_RATE {
        return Err(format!(
            "EDF export holds one second of every channel in memory and takes at most {MAX_EDF_RATE} Hz; this \
             session declares {rate} Hz: export it as CSV"
        ));
    }
    let per_record = rate as usize;
    let channels = layout.channels;
    let records = usize::try_from(layout.frames.div_ceil(per_record as u64)).unwrap_or(usize::MAX).max(1);
    if records as f64 > MAX_SECONDS {
        return Err(too_long(records as f64));
    }
    let (dmin, dmax, width): (i64, i64, usize) = if bdf { (-8_388_608, 8_388_607, 3) } else { (-32_768, 32_767, 2) };

    // TALs per record: the time-keeping TAL, then the notes whose onset falls in the record (kept
    // only for the records that have notes).
    let keeping = |r: usize| format!("+{r}\x14\x14\0");
    let mut tals: Vec<(usize, Vec<u8>)> = layout
        .notes
        .iter()
        .map(|note| {
            let r = (note.onset.max(0.0).floor() as usize).min(records - 1);
            let text: String = note.text.chars().filter(|c| !matches!(c, '\x14' | '\x15' | '\0')).collect();
            let mut tal = tal_time(note.onset);
            if let Some(d) = note.duration {
                tal.push('\x15');
                tal.push_str(tal_time(d).trim_start_matches('+'));
            }
            tal.push('\x14');
            tal.push_str(&text);
            tal.push_str("\x14\0");
            (r, tal.into_bytes())
        })
        .collect();
    tals.sort_by_key(|(r, _)| *r);
    // The longest record's TALs: the last record's time-keeping TAL (the most digits), or a record
    // with notes.
    let mut longest = keeping(records - 1).len();
    for group in tals.chunk_by(|a, b| a.0 == b.0) {
        longest = longest.max(keeping(group[0].0).len() + group.iter().map(|(_, t)| t.len()).sum::<usize>());
    }
    let annotation_samples = longest.div_ceil(width).max(1);

    // Physical ranges from the data, written in 8 characters; the conversion uses exactly the
    // numbers those characters say.
    let range_fields: Vec<(String, String)> = layout
        .ranges(&mut blocks)?
        .into_iter()
        .map(|(lo, hi)| {
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (-1.0, 1.0) };
            let (lo, hi) = if hi - lo < 1e-6 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
            (field_number(lo, true), field_number(hi, false))
        })
        .collect();
    if let Some((l, h)) = range_fields.iter().find(|(l, h)| l.len() > 8 || h.len() > 8) {
        return Err(format!("a channel's range ({l} to {h} µV) does not fit EDF's 8-character fields"));
    }
    let ranges: Vec<(f64, f64)> = range_fields
        .iter()
        .map(|(l, h)| (l.parse().expect("formatted number"), h.parse().expect("formatted number")))
        .collect();

    let ns = channels + 1;
    let mut header = Vec::with_capacity(256 * (ns + 1));
    if bdf {
        header.push(0xFF);
        field(&mut header, "BIOSEMI", 7);
    } else {
        field(&mut header, "0", 8);
    }
    let (date, time) = start_date_time(info.created);
    field(&mut header, "X X X X", 80);
    field(&mut header, &format!("Startdate {} X bci2token session_{}", date.1, info.id), 80);
    field(&mut header, &date.0, 8);
    field(&mut header, &time, 8);
    field(&mut header, &(256 * (ns + 1)).to_string(), 8);
    field(&mut header, if bdf { "BDF+C" } else { "EDF+C" }, 44);
    field(&mut header, &records.to_string(), 8);
    field(&mut header, "1", 8);
    field(&mut header, &ns.to_string(), 4);
    let annotation_label = if bdf { "BDF Annotations" } else { "EDF Annotations" };
    let labels: Vec<&str> = info.channels.iter().map(|c| c.label.as_str()).chain([annotation_label]).collect();
    for l in &labels {
        field(&mut header, l, 16);
    }
    for _ in 0..ns {
        field(&mut header, "", 80);
    }
    for (i, _) in labels.iter().enumerate() {
        let unit = if i < channels { info.channels[i].unit.as_str() } else { "" };
        field(&mut header, unit, 8);
    }
    for (lo, _) in &range_fields {
        field(&mut header, lo, 8);
    }
    field(&mut header, "-1", 8);
    for (_, hi) in &range_fields {
        field(&mut header, hi, 8);
    }
    field(&mut header, "1", 8);
    for _ in 0..ns {
        field(&mut header, &dmin.to_string(), 8);
    }
    for _ in 0..ns {
        field(&mut header, &dmax.to_string(), 8);
    }
    for _ in 0..ns {
        field(&mut header, "", 80);
    }
    for _ in 0..channels {
        field(&mut header, &per_record.to_string(), 8);
    }
    field(&mut header, &annotation_samples.to_string(), 8);
    for _ in 0..ns {
        field(&mut header, "", 32);
    }
    out.write_all(&header).map_err(|e| e.to_string())?;

    let mut frames = Frames::new(layout, blocks);
    let mut samples = vec![Vec::with_capacity(per_record); channels];
    let mut record = Vec::with_capacity((per_record * channels + annotation_samples) * width);
    let mut notes = tals.into_iter().peekable();
    for r in 0..records {
        frames.fill((r * per_record) as u64, per_record, &mut samples)?;
        record.clear();
        for (col, (lo, hi)) in samples.iter().zip(&ranges) {
            let scale = (dmax - dmin) as f64 / (hi - lo);
            for &v in col {
                let d = (((f64::from(v) - lo) * scale) + dmin as f64).round().clamp(dmin as f64, dmax as f64) as i64;
                record.extend_from_slice(&d.to_le_bytes()[..width]);
            }
        }
        let tal_start = record.len();
        record.extend_from_slice(keeping(r).as_bytes());
        while let Some((_, tal)) = notes.next_if(|(at, _)| *at == r) {
            record.extend_from_slice(&tal);
        }
        record.resize(tal_start + annotation_samples * width, 0);
        out.write_all(&record).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// `(("dd.mm.yy", "DD-MMM-YYYY"), "hh.mm.ss")` of a Unix time, UTC.
fn start_date_time(unix: f64) -> ((String, String), String) {
    const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
    let c = bci2token_api::time::civil(unix.max(0.0).floor() as i64);
    (
        (
            format!("{:02}.{:02}.{:02}", c.day, c.month, c.year % 100),
            format!("{:02}-{}-{:04}", c.day, MONTHS[(c.month - 1) as usize], c.year),
        ),
        format!("{:02}.{:02}.{:02}", c.hour, c.minute, c.second),
    )
}

/// Writes the samples as CSV, a stretch of rows at a time.
pub fn write_csv(out: &mut impl Write, info: &SessionInfo, layout: &Layout, blocks: impl Blocks) -> Result<(), String> {
    let mut line = String::from("time_s");
    for c in &info.channels {
        line.push(',');
        line.push_str(&c.label.replace([',', '"', '\n'], "_"));
    }
    line.push('\n');
    out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut frames = Frames::new(layout, blocks);
    let mut columns = vec![Vec::with_capacity(CSV_ROWS); layout.channels];
    let mut from = 0u64;
    while from < layout.frames {
        let len = (layout.frames - from).min(CSV_ROWS as u64) as usize;
        frames.fill(from, len, &mut columns)?;
        for i in 0..len {
            line.clear();
            let _ = write!(line, "{}", (from + i as u64) as f64 / info.sample_rate);
            for col in &columns {
                let _ = write!(line, ",{}", col[i]);
            }
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        }
        from += len as u64;
    }
    out.flush().map_err(|e| e.to_string())
}

/// `export --format events`: a first line `{"type":"session","session":ID,"info":SessionInfo}` (the
/// session's stored metadata), then each stored event as one line of JSON, in the order stored (the
/// follow stream's events less sample blocks, statistics and lost-event notices). `events` gives
/// the stored events' JSON to `write`, one at a time; an `Err` from it stops the export.
pub fn write_events(
    out: &mut impl Write,
    info: &SessionInfo,
    events: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), String>) -> Result<(), String>,
) -> Result<(), String> {
    let header = serde_json::json!({"type": "session", "session": info.id, "info": info});
    serde_json::to_writer(&mut *out, &header).map_err(|e| e.to_string())?;
    out.write_all(b"\n").map_err(|e| e.to_string())?;
    events(&mut |json: &[u8]| {
        // Stored as serde_json wrote it: one line, no newline in it; checked all the same.
        if json.contains(&b'\n') {
            return Err("a stored event holds a line break".into());
        }
        out.write_all(json).and_then(|()| out.write_all(b"\n")).map_err(|e| e.to_string())
    })?;
    out.flush().map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The whole-session writers of earlier versions (`[channel][frame]` sized from the time
    /// stamps): the reference the streaming writers must match byte for byte.
    pub(crate) mod reference {
        use super::super::{field, field_number, start_date_time, tal_time, Block};
        use bci2token_api::{Event, SessionInfo};
        use std::io::Write;

        struct Note {
            onset: f64,
            duration: Option<f64>,
            text: String,
        }

        fn notes(events: &[Event], t0: f64) -> Vec<Note> {
            let mut out: Vec<Note> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Annotation { onset, duration, text, .. } => {
                        Some(Note { onset: onset - t0, duration: *duration, text: text.clone() })
                    }
                    Event::Token { t, text, label, confidence, .. } => Some(Note {
                        onset: t - t0,
                        duration: None,
                        text: format!("token {text:?} ({label}, p={confidence:.2})"),
                    }),
                    Event::Gap { t, seconds, lost_samples, .. } => Some(Note {
                        onset: t - t0,
                        duration: Some(*seconds),
                        text: match lost_samples {
                            Some(n) => format!("gap: {n} samples lost"),
                            None => "gap: samples lost".into(),
                        },
                    }),
                    Event::DecoderError { t, message, .. } => {
                        Some(Note { onset: t - t0, duration: None, text: format!("decoder error: {message}") })
                    }
                    _ => None,
                })
                .collect();
            out.sort_by(|a, b| a.onset.total_cmp(&b.onset));
            out
        }

        /// The session's samples laid out on one time line: `[channel][frame]`, and the time of frame 0.
        pub fn timeline(info: &SessionInfo, blocks: &[Block]) -> (Vec<Vec<f32>>, f64) {
            let rate = info.sample_rate;
            let n = info.channels.len();
            // The earliest block starts the time line (stream time may step back after a reconnection).
            let t0 = blocks.iter().map(|b| b.t).fold(f64::INFINITY, f64::min);
            let t0 = if t0.is_finite() { t0 } else { 0.0 };
            let total = blocks.iter().map(|b| ((b.t - t0) * rate).round() as usize + b.frames).max().unwrap_or(0);
            let mut out = vec![vec![0f32; total]; n];
            for b in blocks.iter().filter(|b| b.channels == n) {
                let start = ((b.t - t0) * rate).round() as usize;
                for (c, column) in out.iter_mut().enumerate() {
                    column[start..start + b.frames].copy_from_slice(&b.data[c * b.frames..(c + 1) * b.frames]);
                }
            }
            (out, t0)
        }

        /// Writes EDF+ (`bdf` false) or BDF+ (`bdf` true).
        pub fn write_edf(
            out: &mut impl Write,
            info: &SessionInfo,
            blocks: &[Block],
            events: &[Event],
            bdf: bool,
        ) -> Result<(), String> {
            let rate = info.sample_rate;
            if rate.fract() != 0.0 || rate < 1.0 {
                return Err(format!(
                    "EDF export needs a whole number of samples per second; this session has {rate} Hz"
                ));
            }
            let per_record = rate as usize;
            let (columns, t0) = timeline(info, blocks);
            let frames = columns.first().map_or(0, Vec::len);
            let records = frames.div_ceil(per_record).max(1);
            let (dmin, dmax, width): (i64, i64, usize) =
                if bdf { (-8_388_608, 8_388_607, 3) } else { (-32_768, 32_767, 2) };

            // TALs per record: the time-keeping TAL, then the notes whose onset falls in the record.
            let mut tals: Vec<Vec<u8>> = (0..records).map(|r| format!("+{r}\x14\x14\0").into_bytes()).collect();
            for note in notes(events, t0) {
                let r = (note.onset.max(0.0).floor() as usize).min(records - 1);
                let text: String = note.text.chars().filter(|c| !matches!(c, '\x14' | '\x15' | '\0')).collect();
                let mut tal = tal_time(note.onset);
                if let Some(d) = note.duration {
                    tal.push('\x15');
                    tal.push_str(tal_time(d).trim_start_matches('+'));
                }
                tal.push('\x14');
                tal.push_str(&text);
                tal.push_str("\x14\0");
                tals[r].extend_from_slice(tal.as_bytes());
            }
            let annotation_samples = tals.iter().map(Vec::len).max().unwrap_or(0).div_ceil(width).max(1);

            // Physical ranges from the data, written in 8 characters; the conversion uses exactly the
            // numbers those characters say.
            let range_fields: Vec<(String, String)> = columns
                .iter()
                .map(|col| {
                    let (lo, hi) = col.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(f64::from(v)), hi.max(f64::from(v)))
                    });
                    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (-1.0, 1.0) };
                    let (lo, hi) = if hi - lo < 1e-6 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
                    (field_number(lo, true), field_number(hi, false))
                })
                .collect();
            if let Some((l, h)) = range_fields.iter().find(|(l, h)| l.len() > 8 || h.len() > 8) {
                return Err(format!("a channel's range ({l} to {h} µV) does not fit EDF's 8-character fields"));
            }
            let ranges: Vec<(f64, f64)> = range_fields
                .iter()
                .map(|(l, h)| (l.parse().expect("formatted number"), h.parse().expect("formatted number")))
                .collect();

            let ns = columns.len() + 1;
            let mut header = Vec::with_capacity(256 * (ns + 1));
            if bdf {
                header.push(0xFF);
                field(&mut header, "BIOSEMI", 7);
            } else {
                field(&mut header, "0", 8);
            }
            let (date, time) = start_date_time(info.created);
            field(&mut header, "X X X X", 80);
            field(&mut header, &format!("Startdate {} X bci2token session_{}", date.1, info.id), 80);
            field(&mut header, &date.0, 8);
            field(&mut header, &time, 8);
            field(&mut header, &(256 * (ns + 1)).to_string(), 8);
            field(&mut header, if bdf { "BDF+C" } else { "EDF+C" }, 44);
            field(&mut header, &records.to_string(), 8);
            field(&mut header, "1", 8);
            field(&mut header, &ns.to_string(), 4);
            let annotation_label = if bdf { "BDF Annotations" } else { "EDF Annotations" };
            let labels: Vec<&str> = info.channels.iter().map(|c| c.label.as_str()).chain([annotation_label]).collect();
            for l in &labels {
                field(&mut header, l, 16);
            }
            for _ in 0..ns {
                field(&mut header, "", 80);
            }
            for (i, _) in labels.iter().enumerate() {
                let unit = if i < columns.len() { info.channels[i].unit.as_str() } else { "" };
                field(&mut header, unit, 8);
            }
            for (lo, _) in &range_fields {
                field(&mut header, lo, 8);
            }
            field(&mut header, "-1", 8);
            for (_, hi) in &range_fields {
                field(&mut header, hi, 8);
            }
            field(&mut header, "1", 8);
            for _ in 0..ns {
                field(&mut header, &dmin.to_string(), 8);
            }
            for _ in 0..ns {
                field(&mut header, &dmax.to_string(), 8);
            }
            for _ in 0..ns {
                field(&mut header, "", 80);
            }
            for _ in &columns {
                field(&mut header, &per_record.to_string(), 8);
            }
            field(&mut header, &annotation_samples.to_string(), 8);
            for _ in 0..ns {
                field(&mut header, "", 32);
            }
            out.write_all(&header).map_err(|e| e.to_string())?;

            let mut record = Vec::with_capacity((per_record * columns.len() + annotation_samples) * width);
            for (r, tal) in tals.iter_mut().enumerate() {
                record.clear();
                for (col, (lo, hi)) in columns.iter().zip(&ranges) {
                    let scale = (dmax - dmin) as f64 / (hi - lo);
                    for i in r * per_record..(r + 1) * per_record {
                        let p = col.get(i).copied().map_or(0.0, f64::from);
                        let d = (((p - lo) * scale) + dmin as f64).round().clamp(dmin as f64, dmax as f64) as i64;
                        record.extend_from_slice(&d.to_le_bytes()[..width]);
                    }
                }
                let mut tal = std::mem::take(tal);
                tal.resize(annotation_samples * width, 0);
                record.extend_from_slice(&tal);
                out.write_all(&record).map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())
        }

        /// Writes the samples as CSV.
        pub fn write_csv(out: &mut impl Write, info: &SessionInfo, blocks: &[Block]) -> Result<(), String> {
            let (columns, _) = timeline(info, blocks);
            let mut line = String::from("time_s");
            for c in &info.channels {
                line.push(',');
                line.push_str(&c.label.replace([',', '"', '\n'], "_"));
            }
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
            for i in 0..columns.first().map_or(0, Vec::len) {
                line.clear();
                line.push_str(&format!("{}", i as f64 / info.sample_rate));
                for col in &columns {
                    line.push(',');
                    line.push_str(&format!("{}", col[i]));
                }
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())
        }
    }

    /// Blocks in memory, stored as sequence numbers 0, 1, …; counts the reads.
    pub(crate) struct Memory<'a> {
        pub blocks: &'a [Block],
        pub reads: usize,
    }

    impl Blocks for Memory<'_> {
        fn block(&mut self, seq: u64) -> Result<Block, String> {
            self.reads += 1;
            self.blocks.get(seq as usize).cloned().ok_or_else(|| format!("no block {seq}"))
        }
    }

    pub(crate) fn info(rate: f64, channels: usize) -> SessionInfo {
        let channels: Vec<serde_json::Value> =
            (0..channels).map(|c| serde_json::json!({"label": format!("Ch{}", c + 1), "unit": "uV"})).collect();
        serde_json::from_value(serde_json::json!({
            "id": "0123456789ab", "driver": "synthetic", "config": {}, "model": null, "state": "finished",
            "message": null, "description": "", "channels": channels, "sample_rate": rate,
            "created": 1_796_037_396.25, "started_by": {"uid": 1000, "gid": 1000, "pid": null, "groups": []},
            "blocks": 0, "frames": 0, "gaps": 0, "annotations": 0, "events_dropped": 0, "subscribers": 0,
        }))
        .unwrap()
    }

    /// The first pass as the service runs it: blocks, then events, in sequence order.
    pub(crate) fn scan(info: &SessionInfo, blocks: &[Block], events: &[Event], notes: bool) -> Result<Layout, String> {
        let mut scan = Scan::new(info, notes);
        for (seq, b) in blocks.iter().enumerate() {
            scan.block(seq as u64, b);
        }
        for e in events {
            scan.event(e);
        }
        scan.finish()
    }

    /// Reproducible values in ±300 µV with fractions.
    fn values(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 600.0
            })
            .collect()
    }

    /// Blocks of `channels` at `t` with `frames` each.
    pub(crate) fn blocks(channels: usize, placed: &[(f64, usize)]) -> Vec<Block> {
        let mut seed = 42;
        placed
            .iter()
            .map(|&(t, frames)| Block { t, flags: 0, channels, frames, data: values(&mut seed, channels * frames) })
            .collect()
    }

    fn annotation(onset: f64, duration: Option<f64>, text: &str) -> Event {
        Event::Annotation { session: "s".into(), onset, duration, text: text.into() }
    }

    fn events(t0: f64) -> Vec<Event> {
        vec![
            annotation(t0 + 0.35, Some(1.5), "T1"),
            annotation(t0 - 2.0, None, "before the first sample"),
            Event::Gap { session: "s".into(), t: t0 + 2.1, seconds: 2.0, lost_samples: Some(20) },
            Event::Warning { session: "s".into(), message: "not written".into() },
            annotation(t0 + 2.1, None, "same onset as the gap, after it"),
            Event::DecoderError { session: "s".into(), t: t0 + 3.0, message: "no\x14tal separators\0".into() },
            annotation(t0 + 1e4, None, "after the end: in the last record"),
            annotation(t0 + 4.2, Some(0.25), "a longer text that makes this record's annotations the longest of all"),
            annotation(t0 + 4.3, None, "and another one in the same record"),
        ]
    }

    /// Sessions the streaming writers must write as the whole-session writers did.
    fn sessions() -> Vec<(&'static str, SessionInfo, Vec<Block>, Vec<Event>)> {
        let t = 5000.123;
        vec![
            (
                "contiguous",
                info(10.0, 3),
                blocks(3, &(0..9).map(|k| (t + k as f64 * 0.7, 7)).collect::<Vec<_>>()),
                events(t),
            ),
            (
                // Odd block sizes, gaps of 0.35 s and 2 s, a start half a frame off the grid, a
                // block across several records.
                "gaps",
                info(10.0, 3),
                blocks(
                    3,
                    &[(t, 3), (t + 0.3, 7), (t + 1.35, 1), (t + 1.45, 13), (t + 4.75, 5), (t + 5.25, 2), (t + 7.0, 31)],
                ),
                events(t),
            ),
            (
                // Stream time steps back: a block overlapping two earlier ones, one repeating an
                // earlier one exactly, one before the first (it becomes frame 0).
                "step back",
                info(10.0, 2),
                blocks(
                    2,
                    &[(t, 10), (t + 1.0, 10), (t + 2.0, 10), (t + 1.5, 7), (t + 1.0, 10), (t - 0.75, 4), (t + 2.9, 3)],
                ),
                events(t),
            ),
            (
                // A block with other channels places the time line (it ends last) but is not written.
                "foreign block",
                info(10.0, 3),
                {
                    let mut b = blocks(3, &[(t, 5), (t + 0.5, 5)]);
                    b.extend(blocks(2, &[(t + 3.0, 4)]));
                    b
                },
                events(t),
            ),
            (
                // The largest sample is hidden by a later block: it is not in the range.
                "hidden extreme",
                info(10.0, 1),
                vec![
                    Block { t, flags: 0, channels: 1, frames: 5, data: vec![1.0, 2.0, 1000.0, 3.0, 4.0] },
                    Block { t: t + 0.1, flags: 0, channels: 1, frames: 3, data: vec![5.0, 6.0, 7.0] },
                ],
                Vec::new(),
            ),
            ("no blocks", info(10.0, 2), Vec::new(), events(t)),
            ("only foreign blocks", info(10.0, 2), blocks(1, &[(t, 5)]), Vec::new()),
            ("no channels", info(10.0, 0), blocks(0, &[(t, 5)]), events(t)),
            (
                "250 Hz",
                info(250.0, 4),
                blocks(
                    4,
                    &(0..40).map(|k| (t + k as f64 * 0.148 + if k > 20 { 1.5 } else { 0.0 }, 37)).collect::<Vec<_>>(),
                ),
                events(t),
            ),
            (
                // A constant channel (its range is widened) and one beyond what 8 characters say
                // with 6 decimals.
                "ranges",
                info(10.0, 2),
                vec![Block {
                    t,
                    flags: 0,
                    channels: 2,
                    frames: 4,
                    data: vec![7.5, 7.5, 7.5, 7.5, -12345.678, 0.001, 99999.5, -0.25],
                }],
                Vec::new(),
            ),
        ]
    }

    fn streamed(info: &SessionInfo, blocks: &[Block], events: &[Event], format: &str) -> (Vec<u8>, usize) {
        let layout = scan(info, blocks, events, format != "csv").unwrap();
        let mut source = Memory { blocks, reads: 0 };
        let mut out = Vec::new();
        match format {
            "csv" => write_csv(&mut out, info, &layout, &mut source),
            f => write_edf(&mut out, info, &layout, &mut source, f == "bdf"),
        }
        .unwrap();
        (out, source.reads)
    }

    #[test]
    fn streaming_writes_exactly_what_the_whole_session_writers_wrote() {
        for (name, info, blocks, events) in sessions() {
            for format in ["edf", "bdf", "csv"] {
                let mut want = Vec::new();
                match format {
                    "csv" => reference::write_csv(&mut want, &info, &blocks),
                    f => reference::write_edf(&mut want, &info, &blocks, &events, f == "bdf"),
                }
                .unwrap();
                let (got, reads) = streamed(&info, &blocks, &events, format);
                let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
                assert!(
                    got == want,
                    "{name} as {format}: {} bytes written, {} by the reference, first difference at {first_difference:?}",
                    got.len(),
                    want.len()
                );
                let written = blocks.iter().filter(|b| b.channels == info.channels.len() && b.frames > 0).count();
                // Rounding to the frame grid may make neighbours overlap by a frame ("gaps").
                let overlaps = scan(&info, &blocks, &events, true).unwrap().overlaps;
                assert!(overlaps || name != "step back");
                let passes = if overlaps && format != "csv" { 2 } else { 1 };
                assert_eq!(
                    reads,
                    passes * if info.channels.is_empty() { 0 } else { written },
                    "{name} {format}: each block read once a pass"
                );
            }
        }
    }

    #[test]
    fn later_blocks_win_where_blocks_overlap() {
        let info = info(10.0, 1);
        let blocks = vec![
            Block { t: 0.0, flags: 0, channels: 1, frames: 6, data: vec![1.0; 6] },
            Block { t: 0.2, flags: 0, channels: 1, frames: 2, data: vec![2.0; 2] },
            Block { t: 0.1, flags: 0, channels: 1, frames: 2, data: vec![3.0; 2] },
            Block { t: 0.9, flags: 0, channels: 1, frames: 1, data: vec![4.0] },
        ];
        let layout = scan(&info, &blocks, &[], false).unwrap();
        let mut frames = Frames::new(&layout, Memory { blocks: &blocks, reads: 0 });
        let mut out = vec![Vec::new()];
        frames.fill(0, 10, &mut out).unwrap();
        assert_eq!(out[0], [1.0, 3.0, 3.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 4.0]);
    }

    /// A clock that jumps by a day: the time line is a day long, memory is not. The writers hold
    /// one record and the blocks that reach into it; the file is the reference's.
    #[test]
    fn a_day_long_jump_is_streamed_with_a_few_blocks_in_memory() {
        let info = info(10.0, 2);
        let mut placed: Vec<(f64, usize)> = (0..30).map(|k| (100.0 + k as f64 * 0.3, 3)).collect();
        placed.extend((0..30).map(|k| (86_409.0 + k as f64 * 0.3, 3)));
        let blocks = blocks(2, &placed);
        let layout = scan(&info, &blocks, &[], true).unwrap();
        assert_eq!(layout.frames, 863_180, "a day and 17.7 s of frames");
        assert_eq!(layout.placed.len(), 60, "the index: one entry per block");
        let mut frames = Frames::new(&layout, Memory { blocks: &blocks, reads: 0 });
        let mut out = vec![Vec::new(); 2];
        let mut most = 0;
        for r in 0..layout.frames.div_ceil(10) {
            frames.fill(r * 10, 10, &mut out).unwrap();
            most = most.max(frames.active.len());
        }
        assert!(most <= 5, "at most the blocks reaching into one record are held: {most}");
        let mut want = Vec::new();
        reference::write_edf(&mut want, &info, &blocks, &[], false).unwrap();
        assert!(streamed(&info, &blocks, &[], "edf").0 == want);
    }

    #[test]
    fn time_stamps_spanning_years_are_refused() {
        let info = info(10.0, 1);
        let err = scan(&info, &blocks(1, &[(5.0, 3), (1.8e9, 3)]), &[], false).unwrap_err();
        assert!(err.contains("span 1799999995 s") && err.contains("99999999"), "{err}");
        let err = scan(&info, &blocks(1, &[(-1e300, 3), (1e300, 3)]), &[], false).unwrap_err();
        assert!(err.contains("time stamps span"), "{err}");
    }

    #[test]
    fn numbers_fit_eight_characters_and_round_outward() {
        assert_eq!(field_number(-123.4567891, true), "-123.457");
        assert_eq!(field_number(61379.361, false), "61379.37");
        assert_eq!(field_number(-8_388_607.5, true), "-8388608");
        assert!(field_number(1234567.891, false).parse::<f64>().unwrap() >= 1234567.891);
    }

    #[test]
    fn events_are_json_lines_after_the_session_line() {
        let info = info(250.0, 2);
        let events = events(0.0);
        let mut out = Vec::new();
        write_events(&mut out, &info, |write| events.iter().try_for_each(|e| write(&serde_json::to_vec(e).unwrap())))
            .unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), events.len() + 1);
        assert_eq!((lines[0]["type"].as_str(), lines[0]["session"].as_str()), (Some("session"), Some("0123456789ab")));
        assert_eq!(serde_json::from_value::<SessionInfo>(lines[0]["info"].clone()).unwrap(), info);
        for (line, e) in lines[1..].iter().zip(&events) {
            assert_eq!(serde_json::from_value::<Event>(line.clone()).unwrap(), *e);
        }
        let failed = write_events(&mut Vec::new(), &info, |write| {
            write(b"{\"a\":1}")?;
            Err("chunk 3 fails authentication".into())
        });
        assert_eq!(failed.unwrap_err(), "chunk 3 fails authentication");
        assert!(write_events(&mut Vec::new(), &info, |write| write(b"{\n}")).is_err());
    }

    #[test]
    fn dates_are_edf_style() {
        assert_eq!(start_date_time(1_796_037_396.0), (("30.11.26".into(), "30-NOV-2026".into()), "11.16.36".into()));
    }
}

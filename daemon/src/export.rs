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

use std::io::Write;

use bci2token_api::{Event, SessionInfo};

/// One decoded block.
#[derive(Debug, Clone)]
pub struct Block {
    pub t: f64,
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
    let channels = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let frames = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    let values = &bytes[24..];
    if values.len() != channels * frames * 4 {
        return Err(format!("a stored block says {channels} × {frames} values but holds {} bytes", values.len()));
    }
    let data = values.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    Ok(Block { t, channels, frames, data })
}

/// What goes into the annotation signal.
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
        return Err(format!("EDF export needs a whole number of samples per second; this session has {rate} Hz"));
    }
    let per_record = rate as usize;
    let (columns, t0) = timeline(info, blocks);
    let frames = columns.first().map_or(0, Vec::len);
    let records = frames.div_ceil(per_record).max(1);
    let (dmin, dmax, width): (i64, i64, usize) = if bdf { (-8_388_608, 8_388_607, 3) } else { (-32_768, 32_767, 2) };

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
            let (lo, hi) = col
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(f64::from(v)), hi.max(f64::from(v))));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_eight_characters_and_round_outward() {
        assert_eq!(field_number(-123.4567891, true), "-123.457");
        assert_eq!(field_number(61379.361, false), "61379.37");
        assert_eq!(field_number(-8_388_607.5, true), "-8388608");
        assert!(field_number(1234567.891, false).parse::<f64>().unwrap() >= 1234567.891);
    }

    #[test]
    fn dates_are_edf_style() {
        assert_eq!(start_date_time(1_796_037_396.0), (("30.11.26".into(), "30-NOV-2026".into()), "11.16.36".into()));
    }
}

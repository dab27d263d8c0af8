//! The pure part of `plot`: what the figure shows, gathered from a session's events and samples
//! (a live `follow` stream, or a stored session's `events` and `csv` exports), without any I/O.

use std::io::BufRead;

use bci2token_api::observe::{Quality, QualityFlag};
use bci2token_api::{ChannelMajor, Event, SessionInfo};
use bci2token_dsp::spectrum::Welch;

/// Welch segments of this many seconds (0.5 Hz between bins), half overlapping.
pub const SEGMENT_SECONDS: f64 = 2.0;
/// Segments computed at once: the most a channel's buffer holds is about this many segments.
const SEGMENTS_PER_CHUNK: usize = 32;
/// A signal shorter than this (frames) has no spectrum worth drawing.
const MIN_FRAMES: usize = 16;

/// Parses `--size WxH` (e.g. 1600x1200): 64 to 16384 pixels each way.
pub fn parse_size(arg: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{arg}' is not WIDTHxHEIGHT in pixels (e.g. 1600x1200)");
    let (w, h) = arg.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    for (what, v) in [("width", w), ("height", h)] {
        if !(64..=16384).contains(&v) {
            return Err(format!("'{arg}': a {what} of {v} pixels is out of range (64 to 16384)"));
        }
    }
    // An RGB image of this many pixels is held in memory while it is drawn: 64 megapixels
    // (192 MB) at most.
    if u64::from(w) * u64::from(h) > 64_000_000 {
        return Err(format!("'{arg}': {w} × {h} pixels is more than 64 megapixels; draw it smaller"));
    }
    Ok((w, h))
}

/// What the title says, and the channels in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub id: String,
    pub driver: String,
    pub model: Option<String>,
    pub sample_rate: f64,
    pub channels: Vec<String>,
}

impl Meta {
    pub fn of(info: &SessionInfo) -> Meta {
        Meta {
            id: info.id.clone(),
            driver: info.driver.clone(),
            model: info.model.clone(),
            sample_rate: info.sample_rate,
            channels: info.channels.iter().map(|c| c.label.clone()).collect(),
        }
    }
}

/// One `quality` event: the score, and each channel's flags (in the session's channel order).
#[derive(Debug, Clone, PartialEq)]
pub struct QualityPoint {
    pub t: f64,
    pub window: f64,
    pub score: f64,
    pub flags: Vec<Vec<QualityFlag>>,
}

/// One decoded token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMark {
    pub t: f64,
    pub label: String,
    pub confidence: f64,
}

/// Each channel's power spectral density (µV²/Hz) at `freqs` (Hz).
#[derive(Debug, Clone, PartialEq)]
pub struct Psd {
    pub freqs: Vec<f64>,
    pub power: Vec<Vec<f64>>,
    /// Welch segments averaged, and their length in frames.
    pub segments: usize,
    pub nperseg: usize,
}

/// Where the data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A running session, followed for a while.
    Live,
    /// An ended session, from the daemon's store.
    Stored,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Stored => "stored",
        }
    }
}

/// Everything the figure draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub meta: Meta,
    pub source: Source,
    /// `None` when there were too few samples.
    pub psd: Option<Psd>,
    pub quality: Vec<QualityPoint>,
    pub tokens: Vec<TokenMark>,
    /// The stream time the time panels span (s).
    pub span: (f64, f64),
    /// Frames of samples seen, and their seconds.
    pub frames: u64,
    pub seconds: f64,
    /// Events a live follow lost (it read too slowly).
    pub lost: u64,
}

/// Welch's PSD of every channel of a stream that arrives in pieces, equal to
/// [`Welch::psd`] of each whole channel: whole runs of segments are computed as soon as they
/// are buffered, so only about [`SEGMENTS_PER_CHUNK`] segments of samples are held per channel.
pub struct PsdAccumulator {
    welch: Welch,
    /// Frames a run of segments needs, and the frames it moves on by.
    chunk: usize,
    advance: usize,
    buffers: Vec<Vec<f32>>,
    sums: Vec<Vec<f64>>,
    segments: usize,
    out: Vec<f64>,
}

impl std::fmt::Debug for PsdAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsdAccumulator").field("welch", &self.welch).field("segments", &self.segments).finish()
    }
}

impl PsdAccumulator {
    /// Segments of [`SEGMENT_SECONDS`] at `rate`.
    pub fn new(rate: f64, channels: usize) -> Result<PsdAccumulator, String> {
        let nperseg = if rate.is_finite() { ((SEGMENT_SECONDS * rate).round() as usize).max(MIN_FRAMES) } else { 0 };
        PsdAccumulator::with_segment(rate, channels, nperseg)
    }

    pub fn with_segment(rate: f64, channels: usize, nperseg: usize) -> Result<PsdAccumulator, String> {
        let welch = Welch::new(rate, nperseg).map_err(|e| e.to_string())?;
        let step = nperseg - welch.noverlap();
        let advance = step * SEGMENTS_PER_CHUNK;
        let bins = welch.bins();
        Ok(PsdAccumulator {
            chunk: advance + welch.noverlap(),
            advance,
            buffers: vec![Vec::new(); channels],
            sums: vec![vec![0.0; bins]; channels],
            segments: 0,
            out: vec![0.0; bins],
            welch,
        })
    }

    pub fn channels(&self) -> usize {
        self.buffers.len()
    }

    /// A block, channel-major (`frames` values per channel). Values that are not finite count as 0.
    pub fn block(&mut self, data: &[f32], frames: usize) {
        if frames == 0 {
            return;
        }
        for (buffer, values) in self.buffers.iter_mut().zip(data.chunks_exact(frames)) {
            buffer.extend(values.iter().map(|v| if v.is_finite() { *v } else { 0.0 }));
        }
        self.settle();
    }

    /// One frame: a value per channel.
    pub fn frame(&mut self, values: &[f32]) {
        for (buffer, v) in self.buffers.iter_mut().zip(values) {
            buffer.push(if v.is_finite() { *v } else { 0.0 });
        }
        if self.buffers.first().is_some_and(|b| b.len() >= self.chunk) {
            self.settle();
        }
    }

    /// Computes every whole run of segments buffered.
    fn settle(&mut self) {
        while self.buffers.first().is_some_and(|b| b.len() >= self.chunk) {
            for (buffer, sum) in self.buffers.iter_mut().zip(&mut self.sums) {
                let n = self.welch.psd(&buffer[..self.chunk], &mut self.out).expect("a whole run of segments");
                for (s, o) in sum.iter_mut().zip(&self.out) {
                    *s += o * n as f64;
                }
                buffer.drain(..self.advance);
            }
            self.segments += SEGMENTS_PER_CHUNK;
        }
    }

    /// The spectra; `None` when fewer than 16 frames came. A signal shorter than one segment is
    /// one segment of its own (even) length.
    pub fn finish(mut self) -> Option<Psd> {
        let left = self.buffers.first().map_or(0, Vec::len);
        if self.welch.segments(left) > 0 {
            let mut n = 0;
            for (buffer, sum) in self.buffers.iter().zip(&mut self.sums) {
                n = self.welch.psd(buffer, &mut self.out).ok()?;
                for (s, o) in sum.iter_mut().zip(&self.out) {
                    *s += o * n as f64;
                }
            }
            self.segments += n;
        }
        if self.segments == 0 {
            let nperseg = left & !1;
            if nperseg < MIN_FRAMES || self.buffers.is_empty() {
                return None;
            }
            let mut short = PsdAccumulator::with_segment(self.welch.fs(), self.buffers.len(), nperseg).ok()?;
            for (b, s) in self.buffers.iter_mut().zip(&mut short.buffers) {
                *s = std::mem::take(b);
            }
            return short.finish();
        }
        let segments = self.segments;
        let power = self.sums.into_iter().map(|s| s.into_iter().map(|v| v / segments as f64).collect()).collect();
        Some(Psd { freqs: self.welch.frequencies().to_vec(), power, segments, nperseg: self.welch.nperseg() })
    }
}

/// Gathers a figure's data, event by event (and frame by frame from a CSV export).
#[derive(Debug)]
pub struct Collector {
    meta: Meta,
    psd: PsdAccumulator,
    quality: Vec<QualityPoint>,
    tokens: Vec<TokenMark>,
    /// Stream time of the first sample block, and of the end of the last.
    first: Option<f64>,
    end: f64,
    frames: u64,
    lost: u64,
}

impl Collector {
    pub fn new(meta: Meta) -> Result<Collector, String> {
        let psd = PsdAccumulator::new(meta.sample_rate, meta.channels.len())
            .map_err(|e| format!("session {} at {} Hz: {e}", meta.id, meta.sample_rate))?;
        Ok(Collector { meta, psd, quality: Vec::new(), tokens: Vec::new(), first: None, end: 0.0, frames: 0, lost: 0 })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Seconds of stream the sample blocks have covered so far.
    pub fn covered(&self) -> f64 {
        self.first.map_or(0.0, |f| self.end - f)
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// One event of the session; those the figure does not show are ignored.
    pub fn event(&mut self, event: &Event) {
        match event {
            Event::Samples { t, frames, data, .. } => self.samples(*t, *frames, data),
            Event::Quality { quality, .. } => self.quality(quality),
            Event::Token { t, label, confidence, .. } => {
                // A model's label is its package's text: no control characters into the SVG (XML
                // has no way to write most of them) or the PNG.
                let label = label.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
                self.tokens.push(TokenMark { t: *t, label, confidence: f64::from(*confidence) })
            }
            Event::Lost { count, .. } => self.lost += count,
            _ => {}
        }
    }

    fn samples(&mut self, t: f64, frames: usize, data: &ChannelMajor) {
        if data.channels != self.psd.channels() || frames == 0 {
            return;
        }
        self.first.get_or_insert(t);
        self.end = self.end.max(t + frames as f64 / self.meta.sample_rate);
        self.frames += frames as u64;
        self.psd.block(&data.values, data.frames);
    }

    fn quality(&mut self, q: &Quality) {
        let n = self.meta.channels.len();
        let mut flags = vec![Vec::new(); n];
        for (i, c) in q.channels.iter().enumerate() {
            // By label; by position when the labels differ (they should not).
            let at = self.meta.channels.iter().position(|l| *l == c.label).or((q.channels.len() == n).then_some(i));
            if let Some(at) = at {
                flags[at] = c.flags.clone();
            }
        }
        self.quality.push(QualityPoint { t: q.t, window: q.window, score: q.score, flags });
    }

    /// One frame of a CSV export (a value per channel).
    pub fn frame(&mut self, values: &[f32]) {
        self.frames += 1;
        self.psd.frame(values);
    }

    pub fn finish(self, source: Source) -> Figure {
        let Collector { meta, psd, mut quality, mut tokens, first, end, frames, lost } = self;
        quality.sort_by(|a, b| a.t.total_cmp(&b.t));
        tokens.sort_by(|a, b| a.t.total_cmp(&b.t));
        let seconds = frames as f64 / meta.sample_rate;
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        if let Some(first) = first {
            (lo, hi) = (first, end);
        }
        for q in &quality {
            lo = lo.min(q.t - q.window);
            hi = hi.max(q.t);
        }
        for t in &tokens {
            lo = lo.min(t.t);
            hi = hi.max(t.t);
        }
        let span = match (lo.is_finite(), hi.is_finite()) {
            (true, true) if hi > lo => (lo, hi),
            (true, true) => (lo - 0.5, lo + 0.5),
            _ => (0.0, seconds.max(1.0)),
        };
        Figure { psd: psd.finish(), meta, source, quality, tokens, span, frames, seconds, lost }
    }
}

/// What a line of an `events` export is.
#[derive(Debug)]
pub enum EventsLine {
    /// The first line: the session's stored metadata.
    Session(Box<SessionInfo>),
    Event(Box<Event>),
    /// An event of a type this ctl does not know.
    Other,
}

#[derive(serde::Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    info: Option<SessionInfo>,
}

/// Reads one line of an `events` export.
pub fn events_line(line: &str) -> Result<EventsLine, String> {
    if let Ok(event) = serde_json::from_str::<Event>(line) {
        return Ok(EventsLine::Event(Box::new(event)));
    }
    let header: Header = serde_json::from_str(line).map_err(|e| format!("not an event: {e}"))?;
    match (header.kind.as_str(), header.info) {
        ("session", Some(info)) => Ok(EventsLine::Session(Box::new(info))),
        ("session", None) => Err("a session line without \"info\"".into()),
        _ => Ok(EventsLine::Other),
    }
}

/// Reads a `csv` export (`time_s` and a column per channel) into `c`; returns the frames read.
pub fn read_csv(input: impl BufRead, c: &mut Collector) -> Result<u64, String> {
    let n = c.meta().channels.len();
    let mut lines = input.lines();
    let header = match lines.next() {
        Some(line) => line.map_err(|e| e.to_string())?,
        None => return Err("the CSV export is empty".into()),
    };
    let columns = header.split(',').count();
    if !header.starts_with("time_s") || columns != n + 1 {
        return Err(format!("the CSV export has {columns} columns; expected time_s and {n} channels"));
    }
    let mut row = Vec::with_capacity(n);
    let mut read = 0u64;
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        row.clear();
        for field in line.split(',').skip(1) {
            row.push(field.trim().parse::<f32>().map_err(|_| format!("line {}: `{field}` is not a number", i + 2))?);
        }
        if row.len() != n {
            return Err(format!("line {}: {} values; expected {n}", i + 2, row.len()));
        }
        c.frame(&row);
        read += 1;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(len: usize, seed: u64, rate: f64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let noise = ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
                let t = i as f64 / rate;
                (10.0 * (2.0 * std::f64::consts::PI * 10.0 * t).sin() + 5.0 * noise) as f32
            })
            .collect()
    }

    fn whole(x: &[f32], rate: f64, nperseg: usize) -> Vec<f64> {
        let mut w = Welch::new(rate, nperseg).unwrap();
        let mut out = vec![0.0; w.bins()];
        w.psd(x, &mut out).unwrap();
        out
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1e-12), "{x} vs {y}");
        }
    }

    #[test]
    fn streamed_psd_equals_welch_of_the_whole_signal() {
        let rate = 250.0;
        // 40 s plus a ragged tail: several whole runs of segments, then the rest at the end.
        let len = 40 * 250 + 137;
        let x = [signal(len, 1, rate), signal(len, 2, rate)];
        for block in [1usize, 7, 25, 160, 4000] {
            let mut acc = PsdAccumulator::new(rate, 2).unwrap();
            let mut at = 0;
            while at < len {
                let n = block.min(len - at);
                let mut data = x[0][at..at + n].to_vec();
                data.extend_from_slice(&x[1][at..at + n]);
                if block == 1 {
                    acc.frame(&[x[0][at], x[1][at]]);
                } else {
                    acc.block(&data, n);
                }
                at += n;
            }
            let psd = acc.finish().unwrap();
            assert_eq!(psd.nperseg, 500);
            assert_eq!(psd.segments, (len - 250) / 250, "block {block}");
            close(&psd.power[0], &whole(&x[0], rate, 500));
            close(&psd.power[1], &whole(&x[1], rate, 500));
            // 0.5 Hz apart up to Nyquist, and the 10 Hz sine is the peak.
            assert_eq!(psd.freqs.len(), 251);
            assert_eq!(*psd.freqs.last().unwrap(), 125.0);
            let peak = (0..psd.freqs.len()).max_by(|&a, &b| psd.power[0][a].total_cmp(&psd.power[0][b])).unwrap();
            assert_eq!(psd.freqs[peak], 10.0);
        }
    }

    #[test]
    fn a_short_signal_is_one_segment_and_a_tiny_one_none() {
        let x = signal(301, 3, 250.0);
        let mut acc = PsdAccumulator::new(250.0, 1).unwrap();
        acc.block(&x, x.len());
        let psd = acc.finish().unwrap();
        assert_eq!((psd.nperseg, psd.segments), (300, 1));
        close(&psd.power[0], &whole(&x[..300], 250.0, 300));
        let mut acc = PsdAccumulator::new(250.0, 1).unwrap();
        acc.block(&x[..15], 15);
        assert!(acc.finish().is_none());
        assert!(PsdAccumulator::new(0.0, 1).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1600x1200"), Ok((1600, 1200)));
        assert_eq!(parse_size(" 900X700 "), Ok((900, 700)));
        assert_eq!(parse_size("640×480"), Ok((640, 480)));
        for bad in ["1600", "x", "1600x", "axb", "-5x100", "1600x1200x3", ""] {
            assert!(parse_size(bad).unwrap_err().contains("WIDTHxHEIGHT"), "{bad}");
        }
        assert!(parse_size("10x100").unwrap_err().contains("width of 10"));
        assert!(parse_size("100x20000").unwrap_err().contains("height of 20000"));
    }

    fn meta() -> Meta {
        Meta {
            id: "s-1".into(),
            driver: "synthetic".into(),
            model: Some("speller-40".into()),
            sample_rate: 100.0,
            channels: vec!["O1".into(), "O2".into()],
        }
    }

    #[test]
    fn events_of_a_follow_stream_and_of_an_events_export() {
        let mut c = Collector::new(meta()).unwrap();
        let lines = [
            r#"{"type":"session","session":"s-1","info":{"id":"s-1","driver":"synthetic","config":{},"model":null,"state":"stopped","message":null,"description":"d","channels":[{"label":"O1","unit":"uV"},{"label":"O2","unit":"uV"}],"sample_rate":100.0,"created":1.5,"started_by":{"uid":1,"gid":1,"pid":null},"blocks":0,"frames":0,"gaps":0,"annotations":0,"events_dropped":0,"subscribers":0}}"#,
            r#"{"type":"quality","session":"s-1","t":2.0,"window":1.0,"score":0.5,"channels":[{"label":"O2","flags":["flat"],"std_uv":0.0,"ptp_uv":0.0,"railed_fraction":0.0,"line_ratio":0.0},{"label":"O1","flags":[],"std_uv":9.0,"ptp_uv":40.0,"railed_fraction":0.0,"line_ratio":0.0}]}"#,
            r#"{"type":"token","session":"s-1","seq":0,"t":3.5,"label":"h","text":" h","tokenizer":"gpt2","token_ids":[289],"confidence":0.75,"probabilities":{},"logit_bias":{},"latency_us":5,"entered_ns":6}"#,
            r#"{"type":"brand_new","session":"s-1"}"#,
            r#"{"type":"state","session":"s-1","state":"stopped","message":null}"#,
        ];
        let mut header = None;
        for line in lines {
            match events_line(line).unwrap() {
                EventsLine::Session(info) => header = Some(Meta::of(&info)),
                EventsLine::Event(e) => c.event(&e),
                EventsLine::Other => {}
            }
        }
        assert_eq!(header.unwrap().channels, vec!["O1", "O2"]);
        assert!(events_line("[1]").is_err());
        let csv = "time_s,O1,O2\n0,1,2\n0.01,NaN,4\n";
        assert_eq!(read_csv(csv.as_bytes(), &mut c).unwrap(), 2);
        assert!(read_csv("time_s,O1\n".as_bytes(), &mut Collector::new(meta()).unwrap())
            .unwrap_err()
            .contains("2 columns"));
        assert!(read_csv("time_s,O1,O2\n0,1,x\n".as_bytes(), &mut Collector::new(meta()).unwrap())
            .unwrap_err()
            .contains("line 2"));
        let fig = c.finish(Source::Stored);
        assert_eq!(fig.quality.len(), 1);
        assert_eq!(fig.quality[0].flags, vec![vec![], vec![QualityFlag::Flat]], "placed by label");
        assert_eq!(fig.tokens, vec![TokenMark { t: 3.5, label: "h".into(), confidence: 0.75 }]);
        assert_eq!(fig.span, (1.0, 3.5));
        assert_eq!(fig.frames, 2);
        assert!(fig.psd.is_none(), "2 frames make no spectrum");
    }

    #[test]
    fn live_samples_set_the_span() {
        let mut c = Collector::new(meta()).unwrap();
        for b in 0..30u32 {
            let values: Vec<f32> = (0..20).map(|i| ((b * 10 + i) as f32).sin()).collect();
            let ev = Event::Samples {
                session: "s-1".into(),
                seq: u64::from(b),
                t: 5.0 + f64::from(b) * 0.1,
                frames: 10,
                flags: 0,
                data: ChannelMajor { channels: 2, frames: 10, values: values.into() },
            };
            c.event(&ev);
        }
        assert!((c.covered() - 3.0).abs() < 1e-9);
        c.event(&Event::Lost { session: "s-1".into(), count: 4 });
        let fig = c.finish(Source::Live);
        assert_eq!((fig.frames, fig.lost), (300, 4));
        assert!((fig.span.0 - 5.0).abs() < 1e-9 && (fig.span.1 - 8.0).abs() < 1e-9, "{:?}", fig.span);
        let psd = fig.psd.unwrap();
        assert_eq!((psd.nperseg, psd.segments), (200, 2));
    }
}

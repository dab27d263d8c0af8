//! What the monitor knows about the session it follows, updated event by event (by the thread
//! that reads the events, behind a mutex the UI thread draws from). Bounded: the last
//! [`MAX_SECONDS`] of samples per channel (at most [`MAX_RING`] values each), the last
//! [`MAX_TOKENS`] tokens and the last [`MAX_TEXT`] bytes of decoded text.

use std::collections::VecDeque;

use bci2token_api::observe::{BreakerState, Quality};
use bci2token_api::{Event, SessionInfo, SessionState};

use super::ring::Ring;

/// Seconds of samples kept per channel (the longest time span the traces show).
pub const MAX_SECONDS: f64 = 10.0;
/// At most this many values per channel, whatever the rate: above `MAX_RING / MAX_SECONDS` Hz
/// (20 kHz) the rings hold means of consecutive samples, so that they still span [`MAX_SECONDS`].
pub const MAX_RING: usize = 200_000;
/// Tokens kept for display.
pub const MAX_TOKENS: usize = 16;
/// Bytes of decoded text kept.
pub const MAX_TEXT: usize = 4096;

#[derive(Debug, Clone)]
pub struct ChannelView {
    pub label: String,
    /// As the daemon names it (`uV` for voltages).
    pub unit: String,
    pub ring: Ring,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenView {
    pub label: String,
    pub text: String,
    pub confidence: f32,
    /// Label → probability, most probable first.
    pub probabilities: Vec<(String, f32)>,
    pub t: f64,
    pub latency_us: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerView {
    pub state: BreakerState,
    pub failures: u32,
    pub retry_in: Option<f64>,
}

/// Where the event stream of the followed session stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Stream {
    /// The follow request is under way.
    Connecting,
    /// Events are coming.
    Live,
    /// The session reached a final state (see [`SessionView::state`]).
    Ended,
    /// The stream broke (the daemon went away, an error reply); the message says how.
    Closed(String),
}

#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub driver: String,
    pub description: String,
    pub model: Option<String>,
    pub sample_rate: f64,
    /// Samples of the session per value the rings hold (1 up to 20 kHz; see [`MAX_RING`]).
    pub every: usize,
    pub channels: Vec<ChannelView>,
    /// Stream time of the newest sample, s.
    pub latest_t: Option<f64>,
    pub blocks: u64,
    pub quality: Option<Quality>,
    pub tokens: VecDeque<TokenView>,
    pub token_count: u64,
    /// The `text` of the tokens so far, concatenated (its last [`MAX_TEXT`] bytes).
    pub text: String,
    /// The session's outages: its count when following began, plus `gap` events since.
    pub gaps: u64,
    /// Seconds missing in the `gap` events seen.
    pub gap_seconds: f64,
    /// Events this monitor lost (`lost` events: it read too slowly).
    pub lost: u64,
    pub state: Option<SessionState>,
    pub state_message: Option<String>,
    /// `None` for a session without a model.
    pub breaker: Option<BreakerView>,
    pub decoder_errors: u64,
    /// The last warning, decoder error or recording failure.
    pub problem: Option<String>,
    /// The last annotation: onset and text.
    pub annotation: Option<(f64, String)>,
    pub stream: Stream,
    /// Changes with every update (so that the UI draws only when something changed).
    pub revision: u64,
}

impl SessionView {
    /// A session whose follow request has not been answered yet.
    pub fn connecting(id: &str) -> SessionView {
        SessionView {
            id: id.to_string(),
            driver: String::new(),
            description: String::new(),
            model: None,
            sample_rate: 0.0,
            every: 1,
            channels: Vec::new(),
            latest_t: None,
            blocks: 0,
            quality: None,
            tokens: VecDeque::new(),
            token_count: 0,
            text: String::new(),
            gaps: 0,
            gap_seconds: 0.0,
            lost: 0,
            state: None,
            state_message: None,
            breaker: None,
            decoder_errors: 0,
            problem: None,
            annotation: None,
            stream: Stream::Connecting,
            revision: 0,
        }
    }

    /// The rings for a rate of `fs` Hz: values held per channel, and samples per value, such
    /// that [`MAX_SECONDS`] fit in at most [`MAX_RING`] values.
    fn ring_shape(fs: f64) -> (usize, usize) {
        if !(fs.is_finite() && fs > 0.0) {
            return (1, 1);
        }
        let samples = (fs * MAX_SECONDS).ceil();
        let every = (samples / MAX_RING as f64).ceil().max(1.0);
        (((samples / every).ceil() as usize).clamp(1, MAX_RING), every as usize)
    }

    fn new_ring(&self) -> Ring {
        let (capacity, every) = Self::ring_shape(self.sample_rate);
        Ring::decimating(capacity, every)
    }

    /// The rate of the values the rings hold, Hz (the sample rate, or less; see [`MAX_RING`]).
    pub fn held_rate(&self) -> f64 {
        self.sample_rate / self.every as f64
    }

    /// The reply to `follow`: the session as it is now.
    pub fn on_reply(&mut self, info: &SessionInfo) {
        self.id = info.id.clone();
        self.driver = info.driver.clone();
        self.description = info.description.clone();
        self.model = info.model.clone();
        self.sample_rate = info.sample_rate;
        self.every = Self::ring_shape(info.sample_rate).1;
        self.channels = info
            .channels
            .iter()
            .map(|c| ChannelView { label: c.label.clone(), unit: c.unit.clone(), ring: self.new_ring() })
            .collect();
        self.state = Some(info.state);
        self.state_message = info.message.clone();
        self.quality = info.quality.clone();
        self.gaps = info.gaps;
        self.breaker = match (&info.model, &info.decoder) {
            (None, _) => None,
            (Some(_), Some(d)) => {
                Some(BreakerView { state: d.breaker, failures: d.consecutive_failures, retry_in: None })
            }
            (Some(_), None) => Some(BreakerView { state: BreakerState::Closed, failures: 0, retry_in: None }),
        };
        self.stream = if info.state.is_final() { Stream::Ended } else { Stream::Live };
        self.revision += 1;
    }

    /// The stream ended: `None` after the final `state` event, else why it broke.
    pub fn close(&mut self, error: Option<String>) {
        if let Some(why) = error {
            if !self.ended() {
                self.stream = Stream::Closed(why);
            }
        }
        self.revision += 1;
    }

    pub fn apply(&mut self, ev: &Event) {
        self.revision += 1;
        match ev {
            Event::Samples { t, frames, data, .. } => {
                if data.channels > self.channels.len() {
                    // More rows than the reply announced: show them under their numbers.
                    for n in self.channels.len()..data.channels {
                        let ring = self.new_ring();
                        self.channels.push(ChannelView { label: format!("ch{}", n + 1), unit: String::new(), ring });
                    }
                }
                for (ch, view) in self.channels.iter_mut().enumerate().take(data.channels) {
                    view.ring.extend(data.channel(ch));
                }
                if *frames > 0 && self.sample_rate > 0.0 {
                    self.latest_t = Some(t + (*frames - 1) as f64 / self.sample_rate);
                }
                self.blocks += 1;
            }
            Event::Gap { seconds, lost_samples, .. } => {
                self.gaps += 1;
                if seconds.is_finite() && *seconds > 0.0 {
                    self.gap_seconds += seconds;
                }
                // The traces show the hole (and the band powers skip it).
                let lost = lost_samples.map(|n| n as f64).unwrap_or(seconds * self.sample_rate);
                if lost.is_finite() && lost >= 1.0 {
                    for c in &mut self.channels {
                        c.ring.fill(f32::NAN, lost as usize);
                    }
                }
            }
            Event::Quality { quality, .. } => self.quality = Some(quality.clone()),
            Event::Token { t, label, text, confidence, probabilities, latency_us, .. } => {
                let mut probs: Vec<(String, f32)> = probabilities.iter().map(|(k, v)| (k.clone(), *v)).collect();
                probs.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                if self.tokens.len() == MAX_TOKENS {
                    self.tokens.pop_front();
                }
                self.tokens.push_back(TokenView {
                    label: label.clone(),
                    text: text.clone(),
                    confidence: *confidence,
                    probabilities: probs,
                    t: *t,
                    latency_us: *latency_us,
                });
                self.token_count += 1;
                self.text.push_str(text);
                if self.text.len() > MAX_TEXT {
                    let mut cut = self.text.len() - MAX_TEXT;
                    while !self.text.is_char_boundary(cut) {
                        cut += 1;
                    }
                    self.text.drain(..cut);
                }
            }
            Event::Breaker { state, failures, retry_in, .. } => {
                self.breaker = Some(BreakerView { state: *state, failures: *failures, retry_in: *retry_in });
            }
            Event::State { state, message, .. } => {
                self.state = Some(*state);
                self.state_message = message.clone();
                if state.is_final() {
                    self.stream = Stream::Ended;
                }
            }
            Event::Lost { count, .. } => self.lost += count,
            Event::DecoderError { message, .. } => {
                self.decoder_errors += 1;
                self.problem = Some(format!("decoder error: {message}"));
            }
            Event::Warning { message, .. } => self.problem = Some(format!("warning: {message}")),
            Event::RecordingStopped { message, .. } => self.problem = Some(message.clone()),
            Event::Annotation { onset, text, .. } => self.annotation = Some((*onset, text.clone())),
            Event::Stats { .. } | Event::DecoderRestart { .. } => {}
        }
    }

    /// True when the session will not produce anything more.
    pub fn ended(&self) -> bool {
        matches!(self.stream, Stream::Ended | Stream::Closed(_))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bci2token_api::event::ChannelMajor;

    pub(crate) fn info(id: &str, labels: &[&str], fs: f64) -> SessionInfo {
        let channels: Vec<serde_json::Value> =
            labels.iter().map(|l| serde_json::json!({"label": l, "unit": "uV"})).collect();
        serde_json::from_value(serde_json::json!({
            "id": id, "driver": "synthetic", "config": {}, "model": "speller-40", "state": "running",
            "message": null, "description": "d", "channels": channels, "sample_rate": fs, "created": 1.0,
            "started_by": {"uid": 0, "gid": 0, "pid": null}, "blocks": 0, "frames": 0, "gaps": 2,
            "annotations": 0, "events_dropped": 0, "subscribers": 1
        }))
        .unwrap()
    }

    fn samples(t: f64, rows: &[&[f32]]) -> Event {
        let frames = rows[0].len();
        let values: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Event::Samples {
            session: "s".into(),
            seq: 0,
            t,
            frames,
            flags: 0,
            data: ChannelMajor { channels: rows.len(), frames, values: values.into() },
        }
    }

    fn event(json: serde_json::Value) -> Event {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn samples_fill_bounded_rings() {
        let mut v = SessionView::connecting("s");
        assert_eq!(v.stream, Stream::Connecting);
        v.on_reply(&info("s", &["O1", "O2"], 10.0));
        assert_eq!((v.stream.clone(), v.gaps, v.channels.len()), (Stream::Live, 2, 2));
        assert_eq!(v.channels[0].ring.capacity(), 100, "10 s at 10 Hz");
        for b in 0..30 {
            let a: Vec<f32> = (0..5).map(|i| (b * 5 + i) as f32).collect();
            let z = vec![0.0; 5];
            v.apply(&samples(b as f64 * 0.5, &[&a, &z]));
        }
        assert_eq!(v.blocks, 30);
        assert_eq!(v.latest_t, Some(14.5 + 0.4));
        let held: Vec<f32> = v.channels[0].ring.last(usize::MAX).collect();
        assert_eq!(held.len(), 100);
        assert_eq!((held[0], held[99]), (50.0, 149.0));
        // A block with a channel more than announced.
        v.apply(&samples(15.0, &[&[1.0], &[2.0], &[3.0]]));
        assert_eq!(v.channels[2].label, "ch3");
        assert_eq!(v.channels[2].ring.len(), 1);
    }

    #[test]
    fn ten_seconds_fit_at_any_rate() {
        for (fs, capacity, every) in [
            (10.0, 100, 1),
            (250.0, 2500, 1),
            (20_000.0, MAX_RING, 1),
            (30_000.0, 150_000, 2),
            (30_001.0, 150_005, 2),
            (100_000.0, 200_000, 5),
            (1e7, 200_000, 500),
            (0.0, 1, 1),
        ] {
            let mut v = SessionView::connecting("s");
            v.on_reply(&info("s", &["O1"], fs));
            assert_eq!((v.channels[0].ring.capacity(), v.every), (capacity, every), "{fs} Hz");
            if fs > 0.0 {
                assert!(capacity as f64 * every as f64 >= fs * MAX_SECONDS, "{fs} Hz: 10 s fit");
                assert_eq!(v.held_rate(), fs / every as f64);
            }
        }
        for fs in [f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(SessionView::ring_shape(fs), (1, 1), "{fs}");
        }
        // 64 channels at 30 kHz: 10 s of 1 s blocks hold 10 s (as means of 2 samples).
        let labels: Vec<String> = (1..=64).map(|i| format!("E{i}")).collect();
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let mut v = SessionView::connecting("s");
        v.on_reply(&info("s", &refs, 30_000.0));
        let row: Vec<f32> = (0..30_000).map(|i| (i % 2) as f32).collect();
        let rows: Vec<&[f32]> = (0..64).map(|_| row.as_slice()).collect();
        let revision = v.revision;
        for s in 0..12 {
            v.apply(&samples(f64::from(s), &rows));
        }
        assert!(v.revision > revision);
        assert!(v.channels.iter().all(|c| c.ring.len() == 150_000));
        assert!(v.channels[63].ring.last(usize::MAX).all(|x| x == 0.5));
        // A gap of 0.1 s at 30 kHz: 1500 held values.
        v.apply(&event(serde_json::json!({"type":"gap","session":"s","t":3.0,"seconds":0.1,"lost_samples":null})));
        assert_eq!(v.channels[0].ring.last(1600).filter(|x| x.is_nan()).count(), 1500);
    }

    #[test]
    fn tokens_text_gaps_lost_quality_breaker_and_the_end() {
        let mut v = SessionView::connecting("s");
        v.on_reply(&info("s", &["O1"], 250.0));
        assert_eq!(v.breaker, Some(BreakerView { state: BreakerState::Closed, failures: 0, retry_in: None }));
        for (i, text) in ["h", "e", "l", "l", "o"].iter().enumerate() {
            v.apply(&event(serde_json::json!({"type":"token","session":"s","seq":i,"t":i as f64,"label":text,
                "text":text,"tokenizer":"gpt2","token_ids":[1],"confidence":0.9,
                "probabilities":{"a":0.05,(*text):0.9,"z":0.05},"logit_bias":{},"latency_us":5,"entered_ns":1})));
        }
        assert_eq!((v.text.as_str(), v.token_count, v.tokens.len()), ("hello", 5, 5));
        let last = v.tokens.back().unwrap();
        assert_eq!(last.probabilities[0], ("o".to_string(), 0.9));
        assert_eq!(last.probabilities[1], ("a".to_string(), 0.05), "ties by label");

        v.apply(&event(serde_json::json!({"type":"gap","session":"s","t":3.0,"seconds":0.5,"lost_samples":null})));
        assert_eq!((v.gaps, v.gap_seconds), (3, 0.5));
        let held: Vec<f32> = v.channels[0].ring.last(usize::MAX).collect();
        assert_eq!(held.len(), 125, "0.5 s at 250 Hz marked lost");
        assert!(held.iter().all(|x| x.is_nan()));

        v.apply(&event(serde_json::json!({"type":"lost","session":"s","count":17})));
        v.apply(&event(serde_json::json!({"type":"lost","session":"s","count":3})));
        assert_eq!(v.lost, 20);

        v.apply(&event(serde_json::json!({"type":"quality","session":"s","t":1.0,"window":1.0,"score":0.0,
            "channels":[{"label":"O1","flags":["flat"],"std_uv":0.0,"ptp_uv":0.0,"railed_fraction":0.0,"line_ratio":0.0}]})));
        assert_eq!(v.quality.as_ref().unwrap().channels[0].flags[0].as_str(), "flat");

        v.apply(&event(serde_json::json!({"type":"breaker","session":"s","t":0.7,"state":"open","failures":5,
            "retry_in":5.0,"message":"m"})));
        assert_eq!(v.breaker, Some(BreakerView { state: BreakerState::Open, failures: 5, retry_in: Some(5.0) }));

        assert!(!v.ended());
        v.apply(&event(serde_json::json!({"type":"state","session":"s","state":"finished","message":null})));
        assert!(v.ended());
        assert_eq!(v.state, Some(SessionState::Finished));
    }

    #[test]
    fn text_and_tokens_stay_bounded() {
        let mut v = SessionView::connecting("s");
        v.on_reply(&info("s", &["O1"], 250.0));
        for i in 0..3000 {
            v.apply(&event(serde_json::json!({"type":"token","session":"s","seq":i,"t":0.0,"label":"x",
                "text":"é.","tokenizer":"gpt2","token_ids":[1],"confidence":0.9,
                "probabilities":{},"logit_bias":{},"latency_us":5,"entered_ns":1})));
        }
        assert!(v.text.len() <= MAX_TEXT + 1 && v.text.ends_with("é."), "{}", v.text.len());
        assert_eq!(v.tokens.len(), MAX_TOKENS);
        assert_eq!(v.token_count, 3000);
    }
}

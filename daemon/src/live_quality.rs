//! A session's signal quality, live: the last second (the quality meter's Welch segment) of every
//! channel, as the device delivered it, assessed every quarter second by `bci2token-dsp`'s
//! quality meter. Runs on the acquisition thread; a block costs a copy into the ring, an
//! assessment (every quarter second) one Welch estimate per channel and the event's few small
//! allocations.

use std::sync::{Arc, Mutex};

use bci2token_api::observe::{ChannelQuality, Quality, QualityFlag};
use bci2token_dsp::quality::{self, QualityConfig, QualityMeter};

/// How often the window is assessed, seconds.
const HOP_SECONDS: f64 = 0.25;

pub struct LiveQuality {
    meter: QualityMeter,
    labels: Vec<String>,
    rate: f64,
    /// Frames in the window.
    frames: usize,
    hop: usize,
    /// The last `frames` frames, channel-major, as a ring: `ring[ch * frames + i]`.
    ring: Vec<f32>,
    /// Where the next frame goes.
    pos: usize,
    /// Frames in the ring since the start or the last outage (at most `frames`).
    filled: usize,
    since_assessed: usize,
    /// The window in time order, for the meter.
    window: Vec<f32>,
    /// The flags of the last quality sent, and when (stream time).
    sent: Option<(Vec<Vec<QualityFlag>>, f64)>,
    interval: f64,
    /// The latest assessment, for `session show`, `health` and the metrics.
    latest: Arc<Mutex<Option<Quality>>>,
}

impl LiveQuality {
    /// `None` (and the reason) when the meter cannot work at this rate (the mains frequency does
    /// not fit below Nyquist, a rate too low for 1 Hz bins).
    pub fn new(
        labels: Vec<String>,
        rate: f64,
        line_hz: f64,
        cfg: QualityConfig,
        interval: f64,
    ) -> Result<LiveQuality, String> {
        let cfg = QualityConfig { line_hz, ..cfg };
        let frames = (cfg.welch_seconds.max(1.0) * rate).round() as usize;
        let channels = labels.len();
        // Two copies of the window are kept: 4 M samples (32 MiB) at most, e.g. 256 channels at
        // 16 kHz; more would cost the acquisition thread too much time too.
        if channels == 0 || frames == 0 || channels.saturating_mul(frames) > 1 << 22 {
            return Err(format!("{channels} channels × {frames} frames is not a window it can assess"));
        }
        let meter = QualityMeter::new(channels, frames, rate, cfg).map_err(|e| e.to_string())?;
        Ok(LiveQuality {
            meter,
            labels,
            rate,
            frames,
            hop: ((HOP_SECONDS * rate).round() as usize).max(1),
            ring: vec![0.0; channels * frames],
            pos: 0,
            filled: 0,
            since_assessed: 0,
            window: vec![0.0; channels * frames],
            sent: None,
            interval,
            latest: Arc::new(Mutex::new(None)),
        })
    }

    /// Where the latest assessment can be read.
    pub fn latest(&self) -> Arc<Mutex<Option<Quality>>> {
        Arc::clone(&self.latest)
    }

    /// After an outage: the window starts again (it would span the gap).
    pub fn restart(&mut self) {
        self.filled = 0;
        self.since_assessed = 0;
    }

    /// Feeds a channel-major block whose first frame is at stream time `t`. Calls `send` with
    /// each assessment that is to be published: when a channel's flags changed, or `interval`
    /// seconds after the last one sent.
    pub fn push(&mut self, data: &[f32], frames: usize, t: f64, send: &mut dyn FnMut(Quality)) {
        let channels = self.labels.len();
        debug_assert_eq!(data.len(), channels * frames);
        for i in 0..frames {
            for ch in 0..channels {
                self.ring[ch * self.frames + self.pos] = data[ch * frames + i];
            }
            self.pos = (self.pos + 1) % self.frames;
            self.filled = (self.filled + 1).min(self.frames);
            self.since_assessed += 1;
            if self.filled == self.frames && self.since_assessed >= self.hop {
                self.since_assessed = 0;
                let at = t + i as f64 / self.rate;
                if let Some(q) = self.assess(at) {
                    send(q);
                }
            }
        }
    }

    /// Assesses the window ending at `t`; returns it when it is to be sent.
    fn assess(&mut self, t: f64) -> Option<Quality> {
        // The ring from its oldest frame (at `pos`) on.
        let n = self.frames;
        for ch in 0..self.labels.len() {
            let row = &self.ring[ch * n..(ch + 1) * n];
            let out = &mut self.window[ch * n..(ch + 1) * n];
            out[..n - self.pos].copy_from_slice(&row[self.pos..]);
            out[n - self.pos..].copy_from_slice(&row[..self.pos]);
        }
        let assessed = self.meter.assess_block(&self.window);
        let channels: Vec<ChannelQuality> = assessed.iter().zip(&self.labels).map(|(q, l)| channel(l, q)).collect();
        let good = channels.iter().filter(|c| c.flags.is_empty()).count();
        let quality = Quality { t, window: n as f64 / self.rate, score: good as f64 / channels.len() as f64, channels };
        *self.latest.lock().unwrap() = Some(quality.clone());
        let flags: Vec<Vec<QualityFlag>> = quality.channels.iter().map(|c| c.flags.clone()).collect();
        let due = match &self.sent {
            None => true,
            Some((last, at)) => *last != flags || t - at >= self.interval,
        };
        if due {
            self.sent = Some((flags, t));
            return Some(quality);
        }
        None
    }
}

/// One channel's measures and flags. A channel with samples that are not numbers is out of range
/// and nothing else (its other measures mean nothing), and reads 0 where a measure is not a number:
/// JSON has no NaN.
fn channel(label: &str, q: &quality::ChannelQuality) -> ChannelQuality {
    let finite = [q.std_uv, q.ptp_uv, q.railed_fraction, q.line_ratio].iter().all(|v| v.is_finite());
    let num = |v: f32| if v.is_finite() { v } else { 0.0 };
    let mut flags = Vec::new();
    if !finite {
        flags.push(QualityFlag::OutOfRange);
    } else {
        for (on, flag) in [
            (q.flat, QualityFlag::Flat),
            (q.railed, QualityFlag::Railed),
            (q.line_noise, QualityFlag::LineNoise),
            (q.out_of_range, QualityFlag::OutOfRange),
        ] {
            if on {
                flags.push(flag);
            }
        }
    }
    ChannelQuality {
        label: label.to_string(),
        flags,
        std_uv: num(q.std_uv),
        ptp_uv: num(q.ptp_uv),
        railed_fraction: num(q.railed_fraction),
        line_ratio: num(q.line_ratio),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(interval: f64) -> LiveQuality {
        LiveQuality::new(vec!["a".into(), "b".into()], 250.0, 50.0, QualityConfig::default(), interval).unwrap()
    }

    /// Two channels, `seconds` long, in blocks of 25 frames: `a` a 10 Hz sine of 20 µV, `b`
    /// zero from `b_flat_from` seconds on.
    fn feed(q: &mut LiveQuality, from: f64, seconds: f64, b_flat_from: f64) -> Vec<Quality> {
        let mut sent = Vec::new();
        let blocks = (seconds * 10.0) as usize;
        for k in 0..blocks {
            let t0 = from + k as f64 * 0.1;
            let mut data = vec![0f32; 50];
            for i in 0..25 {
                let t = t0 + i as f64 / 250.0;
                let s = (20.0 * (2.0 * std::f64::consts::PI * 10.0 * t).sin()) as f32;
                data[i] = s;
                data[25 + i] = if t >= b_flat_from { 0.0 } else { s * 0.5 };
            }
            q.push(&data, 25, t0, &mut |x| sent.push(x));
        }
        sent
    }

    #[test]
    fn a_channel_gone_flat_is_sent_at_once_and_only_then_or_at_the_interval() {
        let mut q = meter(5.0);
        let sent = feed(&mut q, 0.0, 3.0, 100.0);
        // The first full window is sent; nothing changes after it within the interval.
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].t >= 0.99 && sent[0].t < 1.01, "first window ends at 1 s: {}", sent[0].t);
        assert_eq!(sent[0].score, 1.0);
        // `b` goes flat at 3.5 s: flagged once a whole window of it is flat (4.5 s), at once.
        let sent = feed(&mut q, 3.0, 2.0, 3.5);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].channels[1].flags, vec![QualityFlag::Flat]);
        assert!(sent[0].channels[0].flags.is_empty());
        assert_eq!(sent[0].score, 0.5);
        assert!(sent[0].t > 4.4 && sent[0].t < 4.6, "{}", sent[0].t);
        // Unchanged: sent again after the interval only.
        let sent = feed(&mut q, 5.0, 6.0, 0.0);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].t >= 9.4, "{}", sent[0].t);
        assert_eq!(q.latest().lock().unwrap().as_ref().unwrap().channels[1].flags, vec![QualityFlag::Flat]);
    }

    #[test]
    fn an_outage_empties_the_window() {
        let mut q = meter(5.0);
        assert_eq!(feed(&mut q, 0.0, 1.5, 100.0).len(), 1);
        q.restart();
        // Half a second after the outage: no window yet, so nothing new is assessed.
        let before = q.latest().lock().unwrap().as_ref().unwrap().t;
        feed(&mut q, 10.0, 0.5, 100.0);
        assert_eq!(q.latest().lock().unwrap().as_ref().unwrap().t, before);
        feed(&mut q, 10.5, 0.6, 100.0);
        assert!(q.latest().lock().unwrap().as_ref().unwrap().t > 10.9);
    }

    #[test]
    fn non_finite_samples_make_a_bad_channel_with_numbers_json_can_hold() {
        let mut q = meter(5.0);
        let mut sent = Vec::new();
        let data: Vec<f32> = (0..500).map(|i| if i < 250 { (i as f32 * 0.3).sin() * 10.0 } else { f32::NAN }).collect();
        q.push(&data, 250, 0.0, &mut |x| sent.push(x));
        let last = sent.last().unwrap();
        assert_eq!(last.channels[1].flags, vec![QualityFlag::OutOfRange]);
        assert!(serde_json::to_string(last).unwrap().find("null").is_none());
    }

    #[test]
    fn a_rate_the_meter_cannot_use_is_said() {
        let err = LiveQuality::new(vec!["a".into()], 100.0, 50.0, QualityConfig::default(), 5.0).err().unwrap();
        assert!(err.contains("50"), "{err}");
    }
}

//! Events of a session as `follow` streams them: one JSON object per frame with a `type` field.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Starting,
    Running,
    /// The device was lost and its driver is reconnecting; `message` says why it was lost.
    Reconnecting,
    /// Stopped on request.
    Stopped,
    /// The source ended (end of file, end of script).
    Finished,
    /// The device or pipeline failed; `message` says why.
    Failed,
}

impl SessionState {
    /// True once the session will produce nothing more.
    pub fn is_final(self) -> bool {
        matches!(self, SessionState::Stopped | SessionState::Finished | SessionState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Reconnecting => "reconnecting",
            SessionState::Stopped => "stopped",
            SessionState::Finished => "finished",
            SessionState::Failed => "failed",
        }
    }
}

/// Bits of a sample block's `flags` (the same values as the driver ABI's, which the daemon checks).
pub mod block_flags {
    /// Samples were lost immediately before this block.
    pub const GAP: u32 = 1;
    /// At least one value in the block is at the amplifier's rail.
    pub const SATURATED: u32 = 2;
    /// The device was reconnected immediately before this block.
    pub const RECONNECTED: u32 = 4;
}

/// Samples of a block, channel-major: `values[ch * frames + i]`. On the wire an array of
/// `channels` arrays of `frames` numbers (µV). Shared (`Arc`) so fan-out does not copy.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMajor {
    pub channels: usize,
    pub frames: usize,
    pub values: Arc<[f32]>,
}

impl ChannelMajor {
    pub fn channel(&self, ch: usize) -> &[f32] {
        &self.values[ch * self.frames..(ch + 1) * self.frames]
    }
}

impl Serialize for ChannelMajor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.channels))?;
        for ch in 0..self.channels {
            seq.serialize_element(self.channel(ch))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ChannelMajor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // JSON has no NaN: serde_json writes a non-finite sample as null; read it back as NaN.
        let rows: Vec<Vec<Option<f32>>> = Vec::deserialize(d)?;
        let frames = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != frames) {
            return Err(D::Error::custom("sample rows of different lengths"));
        }
        let values: Vec<f32> = rows.iter().flatten().map(|v| v.unwrap_or(f32::NAN)).collect();
        Ok(ChannelMajor { channels: rows.len(), frames, values: values.into() })
    }
}

/// Per-channel statistics over one stats window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub label: String,
    /// µV
    pub mean: f64,
    /// µV, about the mean
    pub rms: f64,
    /// Power of the mains component (µV², a sine of amplitude A gives A²/2).
    pub line_noise: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A block of samples; `t` is the stream time of its first frame in seconds.
    Samples { session: String, seq: u64, t: f64, frames: usize, flags: u32, data: ChannelMajor },
    /// A marker from the source (EDF+ annotation, trigger, simulated intent).
    Annotation { session: String, onset: f64, duration: Option<f64>, text: String },
    /// Samples missing from the stream.
    Gap { session: String, t: f64, seconds: f64, lost_samples: Option<u64> },
    /// The session changed state; a final state is the last event of a follow stream.
    State { session: String, state: SessionState, message: Option<String> },
    /// Per-channel statistics of the `window` seconds ending at `t`.
    Stats { session: String, t: f64, window: f64, channels: Vec<ChannelStats> },
    /// A decoded token. `t` is the stream time of the last sample of the window it was decoded
    /// from; `latency_us` the time from that sample entering the daemon to this event.
    Token {
        session: String,
        seq: u64,
        t: f64,
        label: String,
        text: String,
        tokenizer: String,
        token_ids: Vec<u32>,
        confidence: f32,
        /// Label → probability.
        probabilities: BTreeMap<String, f32>,
        /// Token id (as a string, JSON keys are strings) → bias to add to an LLM's next-token logits.
        logit_bias: BTreeMap<String, f32>,
        latency_us: u64,
        /// CLOCK_MONOTONIC (ns) when that last sample entered the daemon: a subscriber on the same
        /// machine measures the whole path by comparing it with its own monotonic clock.
        entered_ns: u64,
    },
    /// The decoder failed on the window ending at `t`; no token is invented and the session keeps
    /// recording.
    DecoderError { session: String, t: f64, message: String },
    /// Decoding started again at stream time `t` after an outage (`reason`: `gap` or
    /// `reconnected`): the filters were primed on the first block after it and the next window is
    /// made only of frames from `t` on, so the next token comes a whole window later.
    DecoderRestart { session: String, t: f64, reason: String },
    /// The session's recording stopped (a full file system, an I/O error) while the session
    /// goes on: nothing from here on is stored. Sent once, at the session's next write after the
    /// failure.
    RecordingStopped { session: String, message: String },
    /// A warning about the session that does not stop it.
    Warning { session: String, message: String },
    /// The session's signal quality: sent when a channel's flags change, and every
    /// `quality_interval` seconds while nothing changes.
    Quality {
        session: String,
        #[serde(flatten)]
        quality: crate::observe::Quality,
    },
    /// The circuit breaker around the session's model changed state: `open` after `failures`
    /// failures in a row (windows stop going to the model, recording goes on) until `retry_in`
    /// seconds have passed; `half_open` when one window tries again; `closed` when it answered.
    Breaker {
        session: String,
        t: f64,
        state: crate::observe::BreakerState,
        failures: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in: Option<f64>,
        message: String,
    },
    /// This subscriber fell behind and missed `count` events here.
    Lost { session: String, count: u64 },
}

impl Event {
    /// True for the event that ends a follow stream.
    pub fn is_final(&self) -> bool {
        matches!(self, Event::State { state, .. } if state.is_final())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_channel_major_on_the_wire() {
        let ev = Event::Samples {
            session: "s1".into(),
            seq: 3,
            t: 1.5,
            frames: 2,
            flags: 0,
            data: ChannelMajor { channels: 2, frames: 2, values: vec![1.0, 2.0, -3.5, 4.25].into() },
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["type"], "samples");
        assert_eq!(json["data"], serde_json::json!([[1.0, 2.0], [-3.5, 4.25]]));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn non_finite_samples_travel_as_null_and_come_back_as_nan() {
        let data = ChannelMajor { channels: 1, frames: 2, values: vec![f32::NAN, 1.5].into() };
        let json = serde_json::to_string(&data).unwrap();
        assert_eq!(json, "[[null,1.5]]");
        let back: ChannelMajor = serde_json::from_str(&json).unwrap();
        assert!(back.values[0].is_nan() && back.values[1] == 1.5);
    }

    #[test]
    fn ragged_sample_rows_are_rejected() {
        let bad = serde_json::json!({"type":"samples","session":"s","seq":0,"t":0.0,"frames":2,"flags":0,"data":[[1.0,2.0],[3.0]]});
        assert!(serde_json::from_value::<Event>(bad).is_err());
    }
}

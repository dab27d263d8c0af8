//! What the daemon tells about how it is doing: live signal quality, the decoder's circuit
//! breaker, and the `health` report.

use serde::{Deserialize, Serialize};

/// A problem the quality meter sees on one electrode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityFlag {
    /// No signal: the standard deviation is below `flat_std_uv` (a loose or bridged electrode, a
    /// channel the amplifier zeroes).
    Flat,
    /// Sitting on the amplifier's rail (saturated) for more than `railed_fraction` of the window.
    Railed,
    /// Mains interference above `line_ratio_max` of the signal band's power (high impedance).
    LineNoise,
    /// Peak-to-peak above `max_ptp_uv` (movement, a popping electrode).
    OutOfRange,
}

impl QualityFlag {
    pub const ALL: [QualityFlag; 4] =
        [QualityFlag::Flat, QualityFlag::Railed, QualityFlag::LineNoise, QualityFlag::OutOfRange];

    pub fn as_str(self) -> &'static str {
        match self {
            QualityFlag::Flat => "flat",
            QualityFlag::Railed => "railed",
            QualityFlag::LineNoise => "line_noise",
            QualityFlag::OutOfRange => "out_of_range",
        }
    }
}

/// One channel's quality over the last quality window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelQuality {
    pub label: String,
    /// Empty for a good channel.
    pub flags: Vec<QualityFlag>,
    /// Standard deviation, µV.
    pub std_uv: f32,
    /// Peak-to-peak, µV.
    pub ptp_uv: f32,
    /// Fraction of the window's samples on a rail.
    pub railed_fraction: f32,
    /// Mains power over the 1–45 Hz power.
    pub line_ratio: f32,
}

/// The quality of every channel of a session over the `window` seconds ending at stream time `t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub t: f64,
    pub window: f64,
    /// The fraction of channels with no flag (1 = all good).
    pub score: f64,
    pub channels: Vec<ChannelQuality>,
}

impl Quality {
    /// `label: flag, flag` of each flagged channel.
    pub fn bad_channels(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| !c.flags.is_empty())
            .map(|c| {
                let flags: Vec<&str> = c.flags.iter().map(|f| f.as_str()).collect();
                format!("{}: {}", c.label, flags.join(", "))
            })
            .collect()
    }
}

/// The state of a session's circuit breaker around its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Windows go to the model.
    Closed,
    /// The model failed `breaker_failures` times in a row: no window goes to it until the back-off
    /// has passed (the session goes on recording).
    Open,
    /// After the back-off: one window goes to the model; its answer closes or opens the breaker.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A session's decoding, as `session show` and `health` tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderHealth {
    pub breaker: BreakerState,
    /// Failures in a row (0 once the model answers again).
    pub consecutive_failures: u32,
    pub windows_decoded: u64,
    pub failures: u64,
    pub windows_dropped: u64,
    /// Windows in flight and the most the session may have.
    pub queue: usize,
    pub queue_capacity: usize,
    /// Decode latency (a window's last sample entering the daemon to the model's answer) over
    /// the last minute, milliseconds; absent without windows in that minute.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// How bad a finding is: `critical` makes `health` fail, `warning` makes it degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// The overall verdict of `health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Degraded,
    Failing,
}

/// One thing `health` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: `session 0a1b…`, `store`, `daemon`.
    pub subject: String,
    pub message: String,
}

/// One live session in `health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionHealth {
    pub id: String,
    pub driver: String,
    pub model: Option<String>,
    pub state: crate::SessionState,
    /// The device delivers (false while its driver reconnects it).
    pub connected: bool,
    pub sample_rate: f64,
    /// Frames per second over the last 10 s (absent in the session's first second).
    pub measured_rate: Option<f64>,
    /// Outages in the last minute.
    pub gaps_last_minute: u64,
    pub quality: Option<Quality>,
    pub decoder: Option<DecoderHealth>,
}

/// The store in `health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// Writes waiting for the writer thread, over all sessions.
    pub queue: usize,
    pub free_bytes: u64,
    pub size_bytes: u64,
    /// The write-ahead log's size: one that keeps growing means checkpoints are held up.
    #[serde(default)]
    pub wal_bytes: u64,
    /// Unix time of the daemon's last truncating checkpoint (its start, deletions, restores).
    #[serde(default)]
    pub last_checkpoint: Option<f64>,
    /// Unix time of the last completed backup (from the audit log), if any.
    pub last_backup: Option<f64>,
    /// The audit log's head: its last entry's number and the start of its MAC (hex).
    pub audit_head_seq: Option<u64>,
    pub audit_head_mac: Option<String>,
}

/// Reply to `health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub verdict: Verdict,
    /// What made the verdict, worst first.
    pub findings: Vec<Finding>,
    /// The caller's live sessions (an admin's: all).
    pub sessions: Vec<SessionHealth>,
    /// Live sessions of other users, counted only.
    pub other_sessions: usize,
    pub store: StoreHealth,
    pub uptime_seconds: f64,
}

//! The signal generator of the synthetic amplifier.
//!
//! Every channel is the sum of
//!
//! * **pink noise** (1/f power spectrum) of RMS `noise_uv`: seeded Gaussian
//!   white noise through Paul Kellet's "refined" pink filter, scaled by the
//!   filter's exact (analytic) output variance, independent per channel;
//! * an **alpha rhythm**: a sine at `alpha_hz` with a random per-channel
//!   phase and amplitude `alpha_uv`, doubled during rest intents (and when the
//!   script is empty, which means rest forever);
//! * **mains interference**: a sine at `line_hz` of amplitude `line_uv`, one
//!   common phase plus a small (±0.1 rad) per-channel offset (none when
//!   `line_hz` or `line_uv` is 0);
//! * during an intent with a target frequency `f`, the **SSVEP**: a sine at
//!   `f` of amplitude `ssvep_uv` plus its second harmonic at `2f` with half
//!   that amplitude (left out when `2f` is not below Nyquist), phase-locked
//!   to the intent's onset, delayed per channel by a few milliseconds and
//!   weighted per channel (occipital channels most, all in [0.5, 1]; see
//!   [`ssvep_weight`] and [`ssvep_delay_s`]).
//!
//! The SSVEP and the rest-time alpha boost fade in and out with raised-cosine
//! ramps of [`RAMP_S`] seconds (at most a quarter of the intent) so that no
//! step appears in the signal.
//!
//! # Determinism
//!
//! The output is a pure function of the configuration (seed included): the
//! deterministic parts are computed from the absolute frame index `n` (time
//! `n / sample_rate`, no accumulated drift), and each channel's noise comes
//! from its own generator that draws exactly one Gaussian per frame. So two
//! generators with the same config give bit-identical samples however the
//! frames are split into blocks, and a channel's signal does not depend on
//! how many channels there are.
//!
//! # Script timing
//!
//! Intent boundaries are placed on frames by rounding the *cumulative* script
//! time (`round(sum of seconds so far * sample_rate)`), so rounding never
//! accumulates. A looping script repeats with a period of
//! `round(total seconds * sample_rate)` frames.

use std::f64::consts::{PI, TAU};

use serde_json::Value;

use crate::rng::{derive_seed, Xoshiro256StarStar};
use crate::script::{json_number, parse_number, parse_script_value, Intent, ScriptError};

/// Most channels a synthetic board can have.
pub const MAX_CHANNELS: usize = 256;
/// Lowest and highest accepted sample rates (Hz).
pub const SAMPLE_RATE_RANGE: (f64, f64) = (1.0, 100_000.0);
/// Largest accepted `block_frames`.
pub const MAX_BLOCK_FRAMES: usize = 65_536;
/// Largest accepted amplitude (µV) for noise_uv, alpha_uv, line_uv, ssvep_uv.
pub const MAX_AMPLITUDE_UV: f64 = 100_000.0;
/// Largest accepted `speed`.
pub const MAX_SPEED: f64 = 1000.0;
/// Length of the fade-in / fade-out of the SSVEP and of the alpha boost (s).
pub const RAMP_S: f64 = 0.1;
/// The keys `SyntheticConfig::from_json` accepts.
pub const CONFIG_KEYS: &[&str] = &[
    "channels",
    "sample_rate",
    "seed",
    "block_frames",
    "noise_uv",
    "alpha_uv",
    "alpha_hz",
    "line_hz",
    "line_uv",
    "ssvep_uv",
    "script",
    "loop",
    "speed",
];

/// Labels of the first channels, a parieto-occipital montage as used for
/// SSVEP; channels beyond these are called `Ch9`, `Ch10`, ...
pub const STANDARD_LABELS: [&str; 8] = ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"];
const STANDARD_SSVEP_WEIGHTS: [f64; 8] = [0.95, 1.0, 0.95, 0.8, 0.85, 0.8, 0.7, 0.7];
const STANDARD_SSVEP_DELAYS_MS: [f64; 8] = [2.0, 0.0, 2.0, 5.0, 4.0, 5.0, 6.0, 6.0];
const OTHER_SSVEP_WEIGHT: f64 = 0.5;
const OTHER_SSVEP_DELAY_MS: f64 = 8.0;

/// Samples of noise run through each channel's pink filter before the first
/// output frame, so the slowest filter pole (0.99886) has settled (its
/// transient is below 1e-4 of its start).
const PINK_WARMUP: usize = 8192;

/// The label of channel `index` (0-based): `O1, Oz, O2, PO3, POz, PO4, PO7,
/// PO8`, then `Ch9`, `Ch10`, ... (1-based numbers).
pub fn channel_label(index: usize) -> String {
    STANDARD_LABELS.get(index).map(|s| s.to_string()).unwrap_or_else(|| format!("Ch{}", index + 1))
}

/// The SSVEP amplitude weight of channel `index`: 1.0 at Oz, 0.95 at O1/O2,
/// 0.8–0.85 at PO3/POz/PO4, 0.7 at PO7/PO8, 0.5 for `Ch9` and beyond.
pub fn ssvep_weight(index: usize) -> f64 {
    STANDARD_SSVEP_WEIGHTS.get(index).copied().unwrap_or(OTHER_SSVEP_WEIGHT)
}

/// The SSVEP delay of channel `index` in seconds (0 at Oz, 2 ms at O1/O2,
/// 4–6 ms at the PO channels, 8 ms beyond): at frequency `f` the phase lag is
/// `2π f delay` (and `2π 2f delay` for the harmonic).
pub fn ssvep_delay_s(index: usize) -> f64 {
    STANDARD_SSVEP_DELAYS_MS.get(index).copied().unwrap_or(OTHER_SSVEP_DELAY_MS) / 1000.0
}

/// Settings of the synthetic board. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Number of channels, 1..=256 (default 8).
    pub channels: usize,
    /// Sample rate in Hz (default 250).
    pub sample_rate: f64,
    /// Seed of every random part (default 1).
    pub seed: u64,
    /// Frames per block the driver reads (default `sample_rate / 25`
    /// rounded, 10 at 250 Hz), >= 1.
    pub block_frames: usize,
    /// Pink noise RMS in µV (default 10).
    pub noise_uv: f64,
    /// Alpha rhythm amplitude in µV (default 8); twice that during rest.
    pub alpha_uv: f64,
    /// Alpha rhythm frequency in Hz (default 10).
    pub alpha_hz: f64,
    /// Mains frequency in Hz (default 50; 0 = none).
    pub line_hz: f64,
    /// Mains amplitude in µV (default 5).
    pub line_uv: f64,
    /// SSVEP fundamental amplitude in µV (default 4); the 2nd harmonic has
    /// half of it.
    pub ssvep_uv: f64,
    /// What the simulated user does; empty = rest forever (default).
    pub script: Vec<Intent>,
    /// Repeat the script forever (default true); when false the stream ends
    /// after it.
    pub loop_script: bool,
    /// Pacing for the caller: 1.0 = real time (default), 0 = as fast as
    /// possible. The generator itself only stores it.
    pub speed: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            channels: 8,
            sample_rate: 250.0,
            seed: 1,
            block_frames: default_block_frames(250.0),
            noise_uv: 10.0,
            alpha_uv: 8.0,
            alpha_hz: 10.0,
            line_hz: 50.0,
            line_uv: 5.0,
            ssvep_uv: 4.0,
            script: Vec::new(),
            loop_script: true,
            speed: 1.0,
        }
    }
}

/// The default block size for a sample rate: 1/25 s of frames, at least 1.
pub fn default_block_frames(sample_rate: f64) -> usize {
    let f = (sample_rate / 25.0).round();
    if f.is_finite() && f >= 1.0 {
        (f as usize).min(MAX_BLOCK_FRAMES)
    } else {
        1
    }
}

/// A configuration that cannot be used. Messages name the setting, the
/// value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The config is not a JSON object.
    #[error("synthetic driver config must be a JSON object like {{\"channels\": 8, \"script\": \"13Hz:3,rest:2\"}}, got {got}")]
    NotAnObject {
        /// The value received.
        got: String,
    },
    /// A key that the synthetic driver does not know.
    #[error("unknown synthetic driver setting {key:?}; valid settings are: {valid}")]
    UnknownKey {
        /// The key as given.
        key: String,
        /// The valid keys, comma-separated.
        valid: String,
    },
    /// A value of the wrong type or out of range.
    #[error("synthetic driver setting {key:?}: {value} is not allowed; use {expected}")]
    BadValue {
        /// The setting.
        key: String,
        /// The value as given (JSON text).
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// The script cannot be read or does not fit the sample rate.
    #[error("synthetic driver setting \"script\": {0}")]
    Script(#[from] ScriptError),
}

fn bad(key: &str, value: impl ToString, expected: impl Into<String>) -> ConfigError {
    ConfigError::BadValue { key: key.to_string(), value: value.to_string(), expected: expected.into() }
}

fn amplitude_range() -> String {
    format!("a number of µV from 0 to {MAX_AMPLITUDE_UV}")
}

fn json_f64(key: &str, v: &Value, expected: &str) -> Result<f64, ConfigError> {
    json_number(v).filter(|x| x.is_finite()).ok_or_else(|| bad(key, v, expected))
}

fn json_u64(key: &str, v: &Value, expected: &str) -> Result<u64, ConfigError> {
    let err = || bad(key, v, expected);
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return Ok(u);
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => Ok(f as u64),
                _ => Err(err()),
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if let Ok(u) = t.parse::<u64>() {
                return Ok(u);
            }
            match parse_number(t) {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => Ok(f as u64),
                _ => Err(err()),
            }
        }
        _ => Err(err()),
    }
}

fn json_bool(key: &str, v: &Value) -> Result<bool, ConfigError> {
    let expected = "true or false";
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(bad(key, v, expected)),
        },
        _ => Err(bad(key, v, expected)),
    }
}

impl SyntheticConfig {
    /// Reads a config from the JSON object given to the driver's `open`.
    ///
    /// Keys: `channels`, `sample_rate`, `seed`, `block_frames`, `noise_uv`,
    /// `alpha_uv`, `alpha_hz`, `line_hz`, `line_uv`, `ssvep_uv`, `script`
    /// (compact string or JSON array, see [`crate::script`]), `loop`,
    /// `speed`. Every key is optional; `null` (or no config) means all
    /// defaults. Numbers may be JSON strings (`"250"`), booleans may be
    /// `"true"`/`"false"`/`"1"`/`"0"`/`"yes"`/`"no"`/`"on"`/`"off"`.
    /// `block_frames` defaults to `sample_rate / 25` of the given rate.
    /// The result is validated ([`SyntheticConfig::validate`]).
    pub fn from_json(v: &Value) -> Result<Self, ConfigError> {
        let map = match v {
            Value::Null => return Ok(Self::default()),
            Value::Object(map) => map,
            other => return Err(ConfigError::NotAnObject { got: other.to_string() }),
        };
        let unknown = |k: &&String| !bci2token_driver_abi::plugin::is_host_key(k) && !CONFIG_KEYS.contains(&k.as_str());
        if let Some(key) = map.keys().find(unknown) {
            return Err(ConfigError::UnknownKey { key: key.clone(), valid: CONFIG_KEYS.join(", ") });
        }
        let mut cfg = Self::default();
        let mut block_frames_given = false;
        for (key, value) in map {
            let k = key.as_str();
            match k {
                "channels" => {
                    let expected = format!("an integer from 1 to {MAX_CHANNELS}");
                    let n = json_u64(k, value, &expected)?;
                    if n == 0 || n > MAX_CHANNELS as u64 {
                        return Err(bad(k, value, expected));
                    }
                    cfg.channels = n as usize;
                }
                "sample_rate" => {
                    let expected = format!("a number of Hz from {} to {}", SAMPLE_RATE_RANGE.0, SAMPLE_RATE_RANGE.1);
                    cfg.sample_rate = json_f64(k, value, &expected)?;
                }
                "seed" => {
                    cfg.seed = json_u64(k, value, "an integer from 0 to 18446744073709551615")?;
                }
                "block_frames" => {
                    let expected = format!("an integer from 1 to {MAX_BLOCK_FRAMES}");
                    let n = json_u64(k, value, &expected)?;
                    if n == 0 || n > MAX_BLOCK_FRAMES as u64 {
                        return Err(bad(k, value, expected));
                    }
                    cfg.block_frames = n as usize;
                    block_frames_given = true;
                }
                "noise_uv" => cfg.noise_uv = json_f64(k, value, &amplitude_range())?,
                "alpha_uv" => cfg.alpha_uv = json_f64(k, value, &amplitude_range())?,
                "line_uv" => cfg.line_uv = json_f64(k, value, &amplitude_range())?,
                "ssvep_uv" => cfg.ssvep_uv = json_f64(k, value, &amplitude_range())?,
                "alpha_hz" => cfg.alpha_hz = json_f64(k, value, "a frequency in Hz above 0 and below Nyquist")?,
                "line_hz" => {
                    cfg.line_hz = json_f64(k, value, "0 (no mains) or a frequency in Hz below Nyquist, like 50 or 60")?
                }
                "speed" => {
                    cfg.speed = json_f64(
                        k,
                        value,
                        &format!("a number from 0 (as fast as possible) to {MAX_SPEED} (1 = real time)"),
                    )?
                }
                "loop" => cfg.loop_script = json_bool(k, value)?,
                "script" => cfg.script = parse_script_value(value)?,
                // The host's keys: nothing here for this driver (it opens no file, loads nothing).
                _ if bci2token_driver_abi::plugin::is_host_key(k) => {}
                _ => unreachable!("keys were checked above"),
            }
        }
        if !block_frames_given {
            cfg.block_frames = default_block_frames(cfg.sample_rate);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Half the sample rate.
    pub fn nyquist(&self) -> f64 {
        self.sample_rate / 2.0
    }

    /// Checks every range, including those that depend on the sample rate:
    /// `alpha_hz`, `line_hz` and every script frequency below Nyquist, and
    /// every script item at least one sample long.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return Err(bad("channels", self.channels, format!("an integer from 1 to {MAX_CHANNELS}")));
        }
        let (lo, hi) = SAMPLE_RATE_RANGE;
        if !(self.sample_rate.is_finite() && self.sample_rate >= lo && self.sample_rate <= hi) {
            return Err(bad("sample_rate", self.sample_rate, format!("a number of Hz from {lo} to {hi}")));
        }
        if self.block_frames == 0 || self.block_frames > MAX_BLOCK_FRAMES {
            return Err(bad("block_frames", self.block_frames, format!("an integer from 1 to {MAX_BLOCK_FRAMES}")));
        }
        for (key, v) in [
            ("noise_uv", self.noise_uv),
            ("alpha_uv", self.alpha_uv),
            ("line_uv", self.line_uv),
            ("ssvep_uv", self.ssvep_uv),
        ] {
            if !(v.is_finite() && (0.0..=MAX_AMPLITUDE_UV).contains(&v)) {
                return Err(bad(key, v, amplitude_range()));
            }
        }
        let nyq = self.nyquist();
        let fs = self.sample_rate;
        if !(self.alpha_hz.is_finite() && self.alpha_hz > 0.0 && self.alpha_hz < nyq) {
            return Err(bad(
                "alpha_hz",
                self.alpha_hz,
                format!("a frequency above 0 and below the Nyquist frequency {nyq} Hz (half of sample_rate {fs})"),
            ));
        }
        if !(self.line_hz.is_finite() && self.line_hz >= 0.0 && self.line_hz < nyq) {
            return Err(bad(
                "line_hz",
                self.line_hz,
                format!("0 (no mains) or a frequency below the Nyquist frequency {nyq} Hz (half of sample_rate {fs})"),
            ));
        }
        if !(self.speed.is_finite() && (0.0..=MAX_SPEED).contains(&self.speed)) {
            return Err(bad(
                "speed",
                self.speed,
                format!("a number from 0 (as fast as possible) to {MAX_SPEED} (1 = real time)"),
            ));
        }
        let mut elapsed = 0.0;
        let mut prev_boundary = 0u64;
        for (i, intent) in self.script.iter().enumerate() {
            let item = |problem: String| {
                ConfigError::Script(ScriptError::Item { index: i + 1, text: intent.to_string(), problem })
            };
            if !(intent.seconds.is_finite() && intent.seconds > 0.0) {
                return Err(item(format!("seconds {} must be a finite number greater than 0", intent.seconds)));
            }
            if let Some(f) = intent.frequency {
                if !(f.is_finite() && f > 0.0) {
                    return Err(item(format!("frequency {f} Hz must be a finite number greater than 0")));
                }
                if f >= nyq {
                    return Err(item(format!(
                        "frequency {f} Hz is not below the Nyquist frequency {nyq} Hz (half of sample_rate {fs}); use a frequency below {nyq} Hz or raise sample_rate"
                    )));
                }
            }
            elapsed += intent.seconds;
            let boundary = frame_of(elapsed, fs);
            if boundary <= prev_boundary {
                return Err(item(format!(
                    "{} s is shorter than one sample at sample_rate {fs} ({} s); make it longer",
                    intent.seconds,
                    1.0 / fs
                )));
            }
            prev_boundary = boundary;
        }
        Ok(())
    }
}

/// The frame on which time `seconds` falls: `round(seconds * sample_rate)`.
fn frame_of(seconds: f64, sample_rate: f64) -> u64 {
    (seconds * sample_rate).round() as u64
}

/// The start of one intent, reported by [`Generator::next_block`] so the
/// caller can publish it as an annotation before the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentEvent {
    /// Index of the first frame of the intent since the stream started.
    pub frame: u64,
    /// Onset in seconds since the stream started (`frame / sample_rate`).
    pub onset: f64,
    /// How long the intent lasts in seconds (whole frames / sample_rate).
    pub duration: f64,
    /// The intent's label (`rest`, `13Hz`, `B`, ...).
    pub label: String,
    /// The target frequency in Hz; `None` for rest.
    pub frequency: Option<f64>,
}

/// One script item placed on frames within one pass of the script.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    end: u64,
    intent: usize,
}

/// Paul Kellet's refined pink noise filter ("pk3"): six one-pole filters
/// plus a direct and a one-sample delayed path; within 0.05 dB of 1/f over
/// about nine octaves (0.06 Hz to 110 Hz at 250 Hz sampling).
const PINK_POLES: [f64; 6] = [0.99886, 0.99332, 0.96900, 0.86650, 0.55000, -0.7616];
const PINK_GAINS: [f64; 6] = [0.0555179, 0.0750759, 0.1538520, 0.3104856, 0.5329522, -0.0168980];
const PINK_DIRECT: f64 = 0.5362;
const PINK_DELAYED: f64 = 0.115926;

#[derive(Debug, Clone, Default)]
struct PinkFilter {
    b: [f64; 6],
    prev_white: f64,
}

impl PinkFilter {
    fn step(&mut self, white: f64) -> f64 {
        let mut y = PINK_DIRECT * white + PINK_DELAYED * self.prev_white;
        for k in 0..6 {
            self.b[k] = PINK_POLES[k] * self.b[k] + PINK_GAINS[k] * white;
            y += self.b[k];
        }
        self.prev_white = white;
        y
    }

    /// The output variance for unit-variance white input: the sum of the
    /// squared impulse response h[n] = Σ g_k a_k^n + D δ[n] + E δ[n-1].
    fn unit_variance() -> f64 {
        let mut v = PINK_DIRECT * PINK_DIRECT + PINK_DELAYED * PINK_DELAYED;
        for j in 0..6 {
            v += 2.0 * PINK_DIRECT * PINK_GAINS[j];
            v += 2.0 * PINK_DELAYED * PINK_GAINS[j] * PINK_POLES[j];
            for k in 0..6 {
                v += PINK_GAINS[j] * PINK_GAINS[k] / (1.0 - PINK_POLES[j] * PINK_POLES[k]);
            }
        }
        v
    }
}

#[derive(Debug, Clone)]
struct ChannelState {
    noise: Xoshiro256StarStar,
    pink: PinkFilter,
    /// cos and sin of the channel's alpha phase.
    alpha_cs: (f64, f64),
    /// cos and sin of the channel's mains phase.
    line_cs: (f64, f64),
    ssvep_weight: f64,
    ssvep_delay: f64,
}

const STREAM_NOISE: u64 = 1;
const STREAM_PARAMS: u64 = 2;
const STREAM_COMMON: u64 = 3;

/// What the script asks for at one frame.
#[derive(Debug, Clone, Copy)]
struct FrameIntent {
    /// 0..=1: how much the alpha boost of rest applies.
    rest_boost: f64,
    /// (frequency, seconds since the intent's onset, envelope 0..=1).
    ssvep: Option<(f64, f64, f64)>,
}

/// The synthetic amplifier's signal source. See the module docs.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: SyntheticConfig,
    segments: Vec<Segment>,
    /// Frames in one pass of the script (0 when the script is empty).
    cycle_frames: u64,
    /// Next frame to generate.
    frame: u64,
    pink_gain: f64,
    channels: Vec<ChannelState>,
}

/// sin(2π frac(cycles)): the fractional part keeps the argument small.
fn sin_cycles(cycles: f64) -> f64 {
    (TAU * (cycles - cycles.floor())).sin()
}

/// (sin, cos) of 2π f n / fs, computed from the frame index.
fn sin_cos_at(freq: f64, n: u64, fs: f64) -> (f64, f64) {
    let cycles = freq * n as f64 / fs;
    (TAU * (cycles - cycles.floor())).sin_cos()
}

/// Raised-cosine ramp: 0 at x = 0, 1 from x = 1 on.
fn ramp(x: f64) -> f64 {
    if x >= 1.0 {
        1.0
    } else {
        0.5 - 0.5 * (PI * x.max(0.0)).cos()
    }
}

impl Generator {
    /// A generator for `cfg`.
    ///
    /// # Panics
    /// When `cfg` is invalid ([`SyntheticConfig::validate`]); use
    /// [`Generator::try_new`] for configs not made by
    /// [`SyntheticConfig::from_json`].
    pub fn new(cfg: SyntheticConfig) -> Self {
        match Self::try_new(cfg) {
            Ok(g) => g,
            Err(e) => panic!("invalid synthetic config: {e}"),
        }
    }

    /// A generator for `cfg`, or why `cfg` is invalid.
    pub fn try_new(cfg: SyntheticConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let fs = cfg.sample_rate;
        let mut segments = Vec::with_capacity(cfg.script.len());
        let mut elapsed = 0.0;
        let mut start = 0u64;
        for (i, intent) in cfg.script.iter().enumerate() {
            elapsed += intent.seconds;
            let end = frame_of(elapsed, fs);
            segments.push(Segment { start, end, intent: i });
            start = end;
        }
        let cycle_frames = start;

        let mut common = Xoshiro256StarStar::seed_from_u64(derive_seed(cfg.seed, &[STREAM_COMMON]));
        let line_phase = TAU * common.next_f64();
        let channels = (0..cfg.channels)
            .map(|c| {
                let mut params = Xoshiro256StarStar::seed_from_u64(derive_seed(cfg.seed, &[STREAM_PARAMS, c as u64]));
                let alpha_phase = TAU * params.next_f64();
                let line_offset = 0.2 * (params.next_f64() - 0.5);
                let (sa, ca) = alpha_phase.sin_cos();
                let (sl, cl) = (line_phase + line_offset).sin_cos();
                let mut ch = ChannelState {
                    noise: Xoshiro256StarStar::seed_from_u64(derive_seed(cfg.seed, &[STREAM_NOISE, c as u64])),
                    pink: PinkFilter::default(),
                    alpha_cs: (ca, sa),
                    line_cs: (cl, sl),
                    ssvep_weight: ssvep_weight(c),
                    ssvep_delay: ssvep_delay_s(c),
                };
                for _ in 0..PINK_WARMUP {
                    let w = ch.noise.gaussian();
                    ch.pink.step(w);
                }
                ch
            })
            .collect();
        let pink_gain = cfg.noise_uv / PinkFilter::unit_variance().sqrt();
        Ok(Self { cfg, segments, cycle_frames, frame: 0, pink_gain, channels })
    }

    /// The configuration this generator runs.
    pub fn config(&self) -> &SyntheticConfig {
        &self.cfg
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.cfg.channels
    }

    /// Sample rate in Hz.
    pub fn sample_rate(&self) -> f64 {
        self.cfg.sample_rate
    }

    /// Channel labels: `O1, Oz, O2, PO3, POz, PO4, PO7, PO8` for the first
    /// eight channels (an SSVEP montage; with fewer channels, the first ones
    /// of this list), then `Ch9`, `Ch10`, ... (1-based channel numbers).
    pub fn channel_labels(&self) -> Vec<String> {
        (0..self.cfg.channels).map(channel_label).collect()
    }

    /// Seconds generated so far (`frames / sample_rate`).
    pub fn time(&self) -> f64 {
        self.frame as f64 / self.cfg.sample_rate
    }

    /// Frames generated so far; the index of the next frame.
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Frames in one pass of the script (`None` for an empty script).
    pub fn script_frames(&self) -> Option<u64> {
        (!self.segments.is_empty()).then_some(self.cycle_frames)
    }

    /// Frames left before a non-looping script ends; `None` when the stream
    /// never ends (looping or empty script). A caller that wants the last
    /// block to stop exactly at the end asks for at most this many frames.
    pub fn frames_remaining(&self) -> Option<u64> {
        if self.cfg.loop_script || self.segments.is_empty() {
            None
        } else {
            Some(self.cycle_frames.saturating_sub(self.frame))
        }
    }

    /// True when a non-looping script has ended.
    pub fn is_finished(&self) -> bool {
        self.frames_remaining() == Some(0)
    }

    /// Fills `out[ch * frames + i]` (channel-major) with the next `frames`
    /// frames in µV, for any `frames` (not limited to `block_frames`).
    ///
    /// Returns the script events whose first frame lies within these frames
    /// (in order), so the caller can publish them as annotations before the
    /// samples; an empty `Vec` (no allocation) when none starts. Returns
    /// `None`, filling nothing, once a non-looping script has ended. When
    /// the end falls inside the requested frames the block is still filled
    /// completely: the frames after the end are rest without the alpha boost
    /// (clamp `frames` with [`Generator::frames_remaining`] to avoid them).
    ///
    /// # Panics
    /// When `out` is shorter than `channels * frames`.
    pub fn next_block(&mut self, out: &mut [f32], frames: usize) -> Option<Vec<IntentEvent>> {
        if self.is_finished() {
            return None;
        }
        let nch = self.cfg.channels;
        assert!(
            out.len() >= nch * frames,
            "synthetic next_block: buffer of {} samples is too small for {nch} channels x {frames} frames",
            out.len()
        );
        let first = self.frame;
        let events = self.events_in(first, first + frames as u64);
        let fs = self.cfg.sample_rate;
        let line_on = self.cfg.line_hz > 0.0 && self.cfg.line_uv > 0.0;
        let ssvep_uv = self.cfg.ssvep_uv;
        for i in 0..frames {
            let n = first + i as u64;
            let intent = self.intent_at(n);
            let alpha_amp = self.cfg.alpha_uv * (1.0 + intent.rest_boost);
            let (sa, ca) = sin_cos_at(self.cfg.alpha_hz, n, fs);
            let (sl, cl) = if line_on { sin_cos_at(self.cfg.line_hz, n, fs) } else { (0.0, 0.0) };
            let ssvep = intent.ssvep.filter(|&(_, _, env)| env > 0.0 && ssvep_uv > 0.0);
            for (c, ch) in self.channels.iter_mut().enumerate() {
                let white = ch.noise.gaussian();
                let mut v = self.pink_gain * ch.pink.step(white);
                // sin(θ + φ) = sin θ cos φ + cos θ sin φ
                v += alpha_amp * (sa * ch.alpha_cs.0 + ca * ch.alpha_cs.1);
                if line_on {
                    v += self.cfg.line_uv * (sl * ch.line_cs.0 + cl * ch.line_cs.1);
                }
                if let Some((f, since, env)) = ssvep {
                    let tau = since - ch.ssvep_delay;
                    let amp = ssvep_uv * ch.ssvep_weight * env;
                    v += amp * sin_cycles(f * tau);
                    if 2.0 * f < 0.5 * fs {
                        v += 0.5 * amp * sin_cycles(2.0 * f * tau);
                    }
                }
                out[c * frames + i] = v as f32;
            }
        }
        self.frame = first + frames as u64;
        Some(events)
    }

    /// What the script asks for at absolute frame `n`.
    fn intent_at(&self, n: u64) -> FrameIntent {
        if self.segments.is_empty() {
            return FrameIntent { rest_boost: 1.0, ssvep: None };
        }
        let after_end = FrameIntent { rest_boost: 0.0, ssvep: None };
        if !self.cfg.loop_script && n >= self.cycle_frames {
            return after_end;
        }
        let pos = n % self.cycle_frames;
        let idx = self.segments.partition_point(|s| s.end <= pos);
        let Some(seg) = self.segments.get(idx) else {
            return after_end;
        };
        let fs = self.cfg.sample_rate;
        let since_frames = pos - seg.start;
        let since = since_frames as f64 / fs;
        let until = (seg.end - pos) as f64 / fs;
        let r = RAMP_S.min((seg.end - seg.start) as f64 / fs / 4.0);
        let env = if r > 0.0 { ramp(since.min(until) / r) } else { 1.0 };
        match self.cfg.script[seg.intent].frequency {
            None => FrameIntent { rest_boost: env, ssvep: None },
            Some(f) => FrameIntent { rest_boost: 0.0, ssvep: Some((f, since, env)) },
        }
    }

    /// Events of intents starting in frames `[n0, n1)`.
    fn events_in(&self, n0: u64, n1: u64) -> Vec<IntentEvent> {
        let mut events = Vec::new();
        if self.segments.is_empty() || n1 <= n0 {
            return events;
        }
        let cycle = self.cycle_frames;
        let fs = self.cfg.sample_rate;
        let last_pass = if self.cfg.loop_script { u64::MAX } else { 0 };
        let mut pass = n0 / cycle;
        while pass <= last_pass && pass.saturating_mul(cycle) < n1 {
            let base = pass * cycle;
            for seg in &self.segments {
                let frame = base + seg.start;
                if frame >= n1 {
                    break;
                }
                if frame >= n0 {
                    let intent = &self.cfg.script[seg.intent];
                    events.push(IntentEvent {
                        frame,
                        onset: frame as f64 / fs,
                        duration: (seg.end - seg.start) as f64 / fs,
                        label: intent.label.clone(),
                        frequency: intent.frequency,
                    });
                }
            }
            pass += 1;
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse_script;
    use serde_json::json;

    /// Config with a script, everything else default.
    fn cfg_with(script: &str) -> SyntheticConfig {
        SyntheticConfig { script: parse_script(script).unwrap(), ..SyntheticConfig::default() }
    }

    /// Runs `g` with the given block sizes; returns per-channel series and
    /// the events, checking that each event starts inside its block.
    fn run_splits(g: &mut Generator, splits: &[usize]) -> (Vec<Vec<f32>>, Vec<IntentEvent>) {
        let nch = g.channel_count();
        let mut series = vec![Vec::new(); nch];
        let mut events = Vec::new();
        let mut buf = Vec::new();
        for &frames in splits {
            buf.clear();
            buf.resize(nch * frames, f32::NAN);
            let start = g.frame();
            let ev = g.next_block(&mut buf, frames).expect("stream ended early");
            assert_eq!(g.frame(), start + frames as u64);
            for e in &ev {
                assert!(
                    e.frame >= start && e.frame < start + frames as u64,
                    "event at frame {} returned with block [{start}, {})",
                    e.frame,
                    start + frames as u64
                );
            }
            events.extend(ev);
            for (c, s) in series.iter_mut().enumerate() {
                s.extend_from_slice(&buf[c * frames..(c + 1) * frames]);
            }
        }
        (series, events)
    }

    fn record(cfg: SyntheticConfig, seconds: f64) -> (Vec<Vec<f64>>, Vec<IntentEvent>) {
        let frames = (seconds * cfg.sample_rate).round() as usize;
        let block = cfg.block_frames;
        let mut g = Generator::new(cfg);
        let mut splits = vec![block; frames / block];
        if frames % block != 0 {
            splits.push(frames % block);
        }
        let (series, events) = run_splits(&mut g, &splits);
        let series = series.into_iter().map(|s| s.into_iter().map(f64::from).collect()).collect();
        (series, events)
    }

    fn bits(series: &[Vec<f32>]) -> Vec<Vec<u32>> {
        series.iter().map(|s| s.iter().map(|x| x.to_bits()).collect()).collect()
    }

    /// Power at `f` of a Hann-windowed, mean-removed segment (single-bin DFT).
    fn power_at(x: &[f64], fs: f64, f: f64) -> f64 {
        let n = x.len();
        let mean = x.iter().sum::<f64>() / n as f64;
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let w = 0.5 - 0.5 * (TAU * i as f64 / n as f64).cos();
            let ph = TAU * f * i as f64 / fs;
            re += w * (v - mean) * ph.cos();
            im -= w * (v - mean) * ph.sin();
        }
        (re * re + im * im) / n as f64
    }

    /// Power at `f` in `[start_s, start_s + len_s)`, averaged over channels.
    fn mean_power(series: &[Vec<f64>], fs: f64, start_s: f64, len_s: f64, f: f64) -> f64 {
        let a = (start_s * fs).round() as usize;
        let b = a + (len_s * fs).round() as usize;
        series.iter().map(|s| power_at(&s[a..b], fs, f)).sum::<f64>() / series.len() as f64
    }

    // ---------- determinism ----------

    #[test]
    fn same_seed_identical_different_seed_different() {
        let cfg = cfg_with("13Hz:1,rest:1");
        let (a, ea) = run_splits(&mut Generator::new(cfg.clone()), &[10; 60]);
        let (b, eb) = run_splits(&mut Generator::new(cfg.clone()), &[10; 60]);
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(ea, eb);
        let other = SyntheticConfig { seed: 2, ..cfg };
        let (c, ec) = run_splits(&mut Generator::new(other), &[10; 60]);
        assert_eq!(ea, ec, "events depend on the script only");
        for ch in 0..a.len() {
            let differing = a[ch].iter().zip(&c[ch]).filter(|(x, y)| x != y).count();
            assert!(differing > 590, "channel {ch}: only {differing} of 600 samples differ");
        }
    }

    #[test]
    fn block_split_invariance() {
        let cfg = cfg_with("13Hz:0.3,rest:0.2,17Hz:0.25");
        let (one, e1) = run_splits(&mut Generator::new(cfg.clone()), &[20]);
        let (two, e2) = run_splits(&mut Generator::new(cfg.clone()), &[10, 10]);
        assert_eq!(bits(&one), bits(&two));
        assert_eq!(e1, e2);

        let irregular = [1, 7, 13, 0, 250, 3, 99, 1, 1, 2, 500, 124];
        let total: usize = irregular.iter().sum();
        let (a, ea) = run_splits(&mut Generator::new(cfg.clone()), &irregular);
        let (b, eb) = run_splits(&mut Generator::new(cfg.clone()), &[total]);
        let (c, ec) = run_splits(&mut Generator::new(cfg), &vec![1; total]);
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(bits(&a), bits(&c));
        assert_eq!(ea, eb);
        assert_eq!(ea, ec);
        assert!(ea.len() >= 5, "{ea:?}");
    }

    #[test]
    fn channels_do_not_depend_on_channel_count_and_are_independent() {
        let cfg = SyntheticConfig { alpha_uv: 0.0, line_uv: 0.0, ..SyntheticConfig::default() };
        let (eight, _) = run_splits(&mut Generator::new(cfg.clone()), &[500]);
        let two_cfg = SyntheticConfig { channels: 2, ..cfg };
        let (two, _) = run_splits(&mut Generator::new(two_cfg), &[500]);
        assert_eq!(bits(&eight[..2]), bits(&two));
        // Noise of different channels is uncorrelated.
        let (x, y) = (&eight[0], &eight[1]);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (*p as f64) * (*q as f64)).sum::<f64>();
        let r = dot(x, y) / (dot(x, x) * dot(y, y)).sqrt();
        assert!(r.abs() < 0.3, "correlation {r}");
        assert_ne!(bits(&eight[..1]), bits(&eight[1..2]));
    }

    #[test]
    fn time_is_frames_over_rate() {
        let mut g = Generator::new(SyntheticConfig::default());
        let mut buf = vec![0.0; 8 * 7];
        for _ in 0..1000 {
            g.next_block(&mut buf, 7).unwrap();
        }
        assert_eq!(g.frame(), 7000);
        assert_eq!(g.time(), 7000.0 / 250.0);
        assert!(buf.iter().all(|v| v.is_finite()));
    }

    // ---------- the deterministic model, exactly ----------

    #[test]
    fn ssvep_model_weights_delays_and_harmonic() {
        let cfg = SyntheticConfig {
            noise_uv: 0.0,
            alpha_uv: 0.0,
            line_uv: 0.0,
            script: parse_script("rest:1,13Hz:3").unwrap(),
            ..SyntheticConfig::default()
        };
        let fs = cfg.sample_rate;
        let (s, _) = record(cfg, 4.0);
        // Rest without alpha/noise/line is silent.
        assert!(s.iter().all(|ch| ch[..250].iter().all(|&v| v == 0.0)));
        // In the steady part: w * 4 * (sin(2π13τ) + 0.5 sin(2π26τ)), τ = t - onset - delay.
        for (c, ch) in s.iter().enumerate() {
            let (w, d) = (ssvep_weight(c), ssvep_delay_s(c));
            for (n, &got) in ch.iter().enumerate().take(950).skip(300) {
                let tau = (n - 250) as f64 / fs - d;
                let want = w * 4.0 * ((TAU * 13.0 * tau).sin() + 0.5 * (TAU * 26.0 * tau).sin());
                assert!((got - want).abs() < 1e-3, "channel {c} frame {n}: {got} vs {want}");
            }
        }
        // Weights in [0.5, 1], Oz strongest.
        for c in 0..20 {
            assert!((0.5..=1.0).contains(&ssvep_weight(c)));
            assert!(ssvep_weight(c) <= ssvep_weight(1));
        }
        // Ramps: starts from 0, no jump at the onset or at the end.
        for ch in &s {
            assert!(ch[250].abs() < 1e-6 && ch[251].abs() < 0.5);
            assert!(ch[999].abs() < 0.5);
        }
    }

    #[test]
    fn alpha_and_line_model() {
        let cfg = SyntheticConfig {
            noise_uv: 0.0,
            ssvep_uv: 0.0,
            channels: 2,
            script: parse_script("13Hz:2,rest:2").unwrap(),
            ..SyntheticConfig::default()
        };
        let (s, _) = record(cfg.clone(), 4.0);
        // Peak amplitude of alpha + line: during the target <= 8 + 5, during rest up to 16 + 5.
        let peak = |x: &[f64]| x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let target_peak = peak(&s[0][50..450]);
        let rest_peak = peak(&s[0][550..950]);
        assert!(target_peak <= 13.0 + 1e-3 && target_peak > 10.0, "{target_peak}");
        assert!(rest_peak > 18.0 && rest_peak <= 21.0 + 1e-3, "{rest_peak}");
        // Without line noise and alpha only: amplitude exactly alpha_uv.
        let only_alpha = SyntheticConfig { line_uv: 0.0, ..cfg };
        let (a, _) = record(only_alpha, 4.0);
        let p = peak(&a[1][50..450]);
        assert!((p - 8.0).abs() < 0.05, "{p}");
        let p = peak(&a[1][550..950]);
        assert!((p - 16.0).abs() < 0.1, "{p}");
    }

    // ---------- spectra ----------

    /// The average of all channels (a crude spatial filter, as decoders
    /// combine channels): the SSVEP adds up, independent noise averages out.
    fn channel_mean(series: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let n = series[0].len();
        let m = (0..n).map(|i| series.iter().map(|s| s[i]).sum::<f64>() / series.len() as f64).collect();
        vec![m]
    }

    #[test]
    fn spectrum_ssvep_harmonic_alpha() {
        // The script loops ten times; each power is the average over the ten
        // 2 s windows taken from the middle of an intent (and over channels).
        const CYCLES: usize = 10;
        for seed in [1, 2, 3, 99, 2024] {
            let cfg = SyntheticConfig { seed, ..cfg_with("rest:4,13Hz:4,17Hz:4") };
            let fs = cfg.sample_rate;
            let (s, _) = record(cfg, 12.0 * CYCLES as f64);
            let (rest, t13, t17) = (1.0, 5.0, 9.0);
            let avg = |x: &[Vec<f64>], start: f64, f: f64| {
                (0..CYCLES).map(|k| mean_power(x, fs, 12.0 * k as f64 + start, 2.0, f)).sum::<f64>() / CYCLES as f64
            };
            // Per channel (power averaged over the 8 channels).
            let p = |start: f64, f: f64| avg(&s, start, f);
            // On the mean of the channels.
            let m = channel_mean(&s);
            let pm = |start: f64, f: f64| avg(&m, start, f);
            let ratios = [
                ("13 Hz vs 17 Hz during 13 Hz intent, per channel", p(t13, 13.0) / p(t13, 17.0), 5.0),
                ("13 Hz during 13 Hz intent vs rest, per channel", p(t13, 13.0) / p(rest, 13.0), 5.0),
                ("17 Hz vs 13 Hz during 17 Hz intent, per channel", p(t17, 17.0) / p(t17, 13.0), 5.0),
                ("13 Hz vs 17 Hz during 13 Hz intent, channel mean", pm(t13, 13.0) / pm(t13, 17.0), 20.0),
                ("13 Hz during 13 Hz intent vs rest, channel mean", pm(t13, 13.0) / pm(rest, 13.0), 20.0),
                ("17 Hz vs 13 Hz during 17 Hz intent, channel mean", pm(t17, 17.0) / pm(t17, 13.0), 20.0),
                ("26 Hz harmonic during 13 Hz intent vs rest, channel mean", pm(t13, 26.0) / pm(rest, 26.0), 5.0),
                ("26 Hz harmonic vs 23 Hz during 13 Hz intent, channel mean", pm(t13, 26.0) / pm(t13, 23.0), 5.0),
                (
                    "34 Hz harmonic during 17 Hz intent vs 13 Hz intent, channel mean",
                    pm(t17, 34.0) / pm(t13, 34.0),
                    5.0,
                ),
                ("26 Hz harmonic during 13 Hz intent vs rest, per channel", p(t13, 26.0) / p(rest, 26.0), 2.0),
                ("10 Hz alpha during rest vs 13 Hz intent, per channel", p(rest, 10.0) / p(t13, 10.0), 2.5),
                ("10 Hz alpha during rest vs 17 Hz intent, per channel", p(rest, 10.0) / p(t17, 10.0), 2.5),
            ];
            for (what, r, min) in ratios {
                eprintln!("seed {seed}: {what}: {r:.1} (min {min})");
                assert!(r > min, "seed {seed}: {what}: ratio {r} not above {min}");
            }
        }
    }

    #[test]
    fn spectrum_line_noise_present_only_when_enabled() {
        let on = SyntheticConfig::default();
        let off = SyntheticConfig { line_uv: 0.0, ..SyntheticConfig::default() };
        let fs = on.sample_rate;
        let (son, _) = record(on, 4.0);
        let (soff, _) = record(off, 4.0);
        let pon = mean_power(&son, fs, 1.0, 2.0, 50.0);
        let poff = mean_power(&soff, fs, 1.0, 2.0, 50.0);
        assert!(pon > 20.0 * poff, "50 Hz with line {pon} vs without {poff}");
        let neighbours = (mean_power(&soff, fs, 1.0, 2.0, 46.0) + mean_power(&soff, fs, 1.0, 2.0, 54.0)) / 2.0;
        assert!(poff < 3.0 * neighbours, "50 Hz without line {poff} vs neighbours {neighbours}");
        assert!(pon > 20.0 * neighbours);
        // 60 Hz mains works too.
        let sixty = SyntheticConfig { line_hz: 60.0, ..SyntheticConfig::default() };
        let (s60, _) = record(sixty, 4.0);
        assert!(mean_power(&s60, fs, 1.0, 2.0, 60.0) > 20.0 * mean_power(&s60, fs, 1.0, 2.0, 50.0));
    }

    #[test]
    fn harmonic_left_out_above_nyquist() {
        // 30 Hz at 100 Hz: the harmonic (60 Hz) would alias to 40 Hz.
        let cfg = SyntheticConfig {
            sample_rate: 100.0,
            noise_uv: 0.0,
            alpha_uv: 0.0,
            line_hz: 0.0,
            script: parse_script("30Hz:4").unwrap(),
            ..SyntheticConfig::default()
        };
        let (s, _) = record(cfg, 4.0);
        let p30 = mean_power(&s, 100.0, 1.0, 2.0, 30.0);
        let p40 = mean_power(&s, 100.0, 1.0, 2.0, 40.0);
        assert!(p30 > 1.0 && p40 < 1e-6 * p30, "30 Hz {p30}, 40 Hz {p40}");
    }

    fn noise_only(noise_uv: f64) -> SyntheticConfig {
        SyntheticConfig {
            noise_uv,
            alpha_uv: 0.0,
            line_uv: 0.0,
            ssvep_uv: 0.0,
            script: parse_script("13Hz:2,rest:2").unwrap(),
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn pink_noise_spectrum_falls_with_frequency() {
        let fs = 250.0;
        let (s, _) = record(noise_only(10.0), 60.0);
        let band = |lo: f64, hi: f64| {
            let mut sum = 0.0;
            let mut count = 0;
            for start in 0..30 {
                let mut f = lo;
                while f <= hi {
                    sum += mean_power(&s, fs, start as f64 * 2.0, 2.0, f);
                    count += 1;
                    f += 0.5;
                }
            }
            sum / count as f64
        };
        let low = band(2.0, 6.0);
        let high = band(30.0, 40.0);
        eprintln!("PSD 2-6 Hz / 30-40 Hz = {:.2}", low / high);
        assert!(low / high > 3.0, "PSD 2-6 Hz / 30-40 Hz = {}", low / high);
        // 1/f: about 35/4 ≈ 8.75; white noise would give 1.
        assert!(low / high < 20.0, "PSD 2-6 Hz / 30-40 Hz = {}", low / high);
        let mid = band(10.0, 14.0);
        assert!(low > mid && mid > high, "{low} {mid} {high}");
    }

    #[test]
    fn noise_rms_matches_noise_uv() {
        for (noise_uv, seed) in [(10.0, 1), (25.0, 7), (3.0, 12345)] {
            let cfg = SyntheticConfig { seed, ..noise_only(noise_uv) };
            let (s, _) = record(cfg, 60.0);
            let n: usize = s.iter().map(Vec::len).sum();
            let rms = (s.iter().flatten().map(|v| v * v).sum::<f64>() / n as f64).sqrt();
            eprintln!("noise_uv {noise_uv} seed {seed}: RMS {rms:.3}");
            assert!((rms / noise_uv - 1.0).abs() < 0.2, "noise_uv {noise_uv} seed {seed}: RMS {rms}");
        }
        let (silent, _) = record(noise_only(0.0), 1.0);
        assert!(silent.iter().flatten().all(|&v| v == 0.0));
    }

    // ---------- intent events ----------

    #[test]
    fn events_with_looping() {
        let cfg = cfg_with("13Hz:1,rest:0.5");
        let mut g = Generator::new(cfg);
        assert_eq!(g.script_frames(), Some(375));
        assert_eq!(g.frames_remaining(), None);
        let (_, events) = run_splits(&mut g, &[7; 179]);
        let frames: Vec<u64> = events.iter().map(|e| e.frame).collect();
        assert_eq!(frames, [0, 250, 375, 625, 750, 1000, 1125]);
        let onsets: Vec<f64> = events.iter().map(|e| e.onset).collect();
        assert_eq!(onsets, [0.0, 1.0, 1.5, 2.5, 3.0, 4.0, 4.5]);
        for (i, e) in events.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!((e.label.as_str(), e.frequency, e.duration), ("13Hz", Some(13.0), 1.0));
            } else {
                assert_eq!((e.label.as_str(), e.frequency, e.duration), ("rest", None, 0.5));
            }
        }
        // The 1376th frame starts the next rest: one block that spans two events.
        let mut buf = vec![0.0; 8 * 300];
        let ev = g.next_block(&mut buf, 300).unwrap(); // frames 1253..1553
        let f: Vec<u64> = ev.iter().map(|e| e.frame).collect();
        assert_eq!(f, [1375, 1500]);
    }

    #[test]
    fn events_use_cumulative_rounding() {
        // Thirds of a second at 250 Hz: boundaries at 83, 167, 250, no drift.
        let cfg = cfg_with("rest:0.3333333333333333,13Hz:0.3333333333333333,rest:0.3333333333333333");
        let (_, events) = record(cfg, 4.0);
        let frames: Vec<u64> = events.iter().map(|e| e.frame).take(7).collect();
        assert_eq!(frames, [0, 83, 167, 250, 333, 417, 500]);
        let last = events.last().unwrap();
        assert_eq!(last.frame, 750 + 167);
        assert_eq!(last.onset, 917.0 / 250.0);
    }

    #[test]
    fn non_looping_script_ends() {
        let cfg = SyntheticConfig { loop_script: false, ..cfg_with("13Hz:1,rest:0.5") };
        let mut g = Generator::new(cfg.clone());
        assert_eq!(g.frames_remaining(), Some(375));
        let mut buf = vec![0.0; 8 * 100];
        let mut events = Vec::new();
        for _ in 0..4 {
            events.extend(g.next_block(&mut buf, 100).unwrap());
        }
        assert!(g.is_finished());
        assert_eq!(g.frames_remaining(), Some(0));
        let mut untouched = vec![123.0f32; 8 * 100];
        assert_eq!(g.next_block(&mut untouched, 100), None);
        assert!(untouched.iter().all(|&v| v == 123.0));
        assert_eq!(g.frame(), 400);
        let frames: Vec<u64> = events.iter().map(|e| e.frame).collect();
        assert_eq!(frames, [0, 250]);

        // Clamping to frames_remaining stops exactly at the end.
        let mut g = Generator::new(cfg);
        let mut total = 0;
        loop {
            let want = 100u64.min(g.frames_remaining().unwrap()) as usize;
            match g.next_block(&mut buf, want) {
                Some(_) => total += want,
                None => break,
            }
        }
        assert_eq!(total, 375);
        assert_eq!(g.time(), 1.5);
    }

    #[test]
    fn empty_script_rests_forever_without_events() {
        let mut g = Generator::new(SyntheticConfig::default());
        assert_eq!(g.frames_remaining(), None);
        assert_eq!(g.script_frames(), None);
        let (_, events) = run_splits(&mut g, &[1000; 5]);
        assert!(events.is_empty());
        // Even with loop=false an empty script never ends.
        let mut g = Generator::new(SyntheticConfig { loop_script: false, ..SyntheticConfig::default() });
        let (_, events) = run_splits(&mut g, &[1000; 5]);
        assert!(events.is_empty());
    }

    // ---------- labels ----------

    #[test]
    fn channel_labels() {
        let g = Generator::new(SyntheticConfig { channels: 10, ..SyntheticConfig::default() });
        assert_eq!(g.channel_labels(), ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8", "Ch9", "Ch10"]);
        let g = Generator::new(SyntheticConfig { channels: 3, ..SyntheticConfig::default() });
        assert_eq!(g.channel_labels(), ["O1", "Oz", "O2"]);
    }

    // ---------- config ----------

    #[test]
    fn config_defaults() {
        let d = SyntheticConfig::default();
        assert_eq!(d.channels, 8);
        assert_eq!(d.sample_rate, 250.0);
        assert_eq!(d.seed, 1);
        assert_eq!(d.block_frames, 10);
        assert_eq!((d.noise_uv, d.alpha_uv, d.alpha_hz), (10.0, 8.0, 10.0));
        assert_eq!((d.line_hz, d.line_uv, d.ssvep_uv), (50.0, 5.0, 4.0));
        assert!(d.script.is_empty() && d.loop_script && d.speed == 1.0);
        assert_eq!(SyntheticConfig::from_json(&json!({})).unwrap(), d);
        assert_eq!(SyntheticConfig::from_json(&Value::Null).unwrap(), d);
        assert_eq!(default_block_frames(1000.0), 40);
        assert_eq!(default_block_frames(10.0), 1);
    }

    #[test]
    fn config_from_json_numbers_and_strings() {
        let c = SyntheticConfig::from_json(&json!({
            "channels": "16", "sample_rate": "500", "seed": "42", "loop": "false",
            "speed": "0", "noise_uv": 2.5, "alpha_uv": "0", "alpha_hz": 9, "line_hz": "60",
            "line_uv": 1, "ssvep_uv": "6.5", "script": "13Hz:3,rest:2"
        }))
        .unwrap();
        assert_eq!(c.channels, 16);
        assert_eq!(c.sample_rate, 500.0);
        assert_eq!(c.seed, 42);
        assert_eq!(c.block_frames, 20, "default follows the sample rate");
        assert!(!c.loop_script);
        assert_eq!(c.speed, 0.0);
        assert_eq!((c.noise_uv, c.alpha_uv, c.alpha_hz), (2.5, 0.0, 9.0));
        assert_eq!((c.line_hz, c.line_uv, c.ssvep_uv), (60.0, 1.0, 6.5));
        assert_eq!(c.script, vec![Intent::target(13.0, 3.0), Intent::rest(2.0)]);

        let c = SyntheticConfig::from_json(&json!({
            "block_frames": 32, "seed": 18446744073709551615u64, "loop": true,
            "script": [{"label":"13Hz","seconds":3}, {"label":"rest","seconds":2},
                       {"frequency":17.0,"seconds":3,"label":"B"}]
        }))
        .unwrap();
        assert_eq!(c.block_frames, 32);
        assert_eq!(c.seed, u64::MAX);
        assert_eq!(c.script.len(), 3);
        assert_eq!(c.script[2].label, "B");
        // The JSON form inside a string (as typed after --set script=...).
        let c = SyntheticConfig::from_json(&json!({
            "script": r#"[{"frequency":17,"seconds":1}]"#
        }))
        .unwrap();
        assert_eq!(c.script, vec![Intent::target(17.0, 1.0)]);
    }

    #[test]
    fn config_unknown_key() {
        let e = SyntheticConfig::from_json(&json!({"channels": 8, "chanels": 8})).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(&e, ConfigError::UnknownKey { key, .. } if key == "chanels"), "{msg}");
        assert!(msg.contains("\"chanels\""), "{msg}");
        for k in CONFIG_KEYS {
            assert!(msg.contains(k), "{msg} lacks {k}");
        }
    }

    #[test]
    fn config_bad_values_name_key_value_and_range() {
        let err = |v: Value| SyntheticConfig::from_json(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"channels": 0})),
            "synthetic driver setting \"channels\": 0 is not allowed; use an integer from 1 to 256"
        );
        let e = err(json!({"channels": 300}));
        assert!(e.contains("300") && e.contains("1 to 256"), "{e}");
        let e = err(json!({"channels": "eight"}));
        assert!(e.contains("\"channels\"") && e.contains("\"eight\"") && e.contains("1 to 256"), "{e}");
        let e = err(json!({"channels": 2.5}));
        assert!(e.contains("2.5"), "{e}");
        let e = err(json!({"sample_rate": -5}));
        assert!(e.contains("\"sample_rate\"") && e.contains("-5") && e.contains("from 1 to 100000"), "{e}");
        let e = err(json!({"sample_rate": "fast"}));
        assert!(e.contains("\"fast\""), "{e}");
        let e = err(json!({"noise_uv": -1}));
        assert!(e.contains("\"noise_uv\"") && e.contains("-1") && e.contains("from 0 to"), "{e}");
        let e = err(json!({"block_frames": 0}));
        assert!(e.contains("\"block_frames\"") && e.contains("1 to 65536"), "{e}");
        let e = err(json!({"seed": -1}));
        assert!(e.contains("\"seed\"") && e.contains("-1"), "{e}");
        let e = err(json!({"loop": "maybe"}));
        assert!(e.contains("\"loop\"") && e.contains("\"maybe\"") && e.contains("true or false"), "{e}");
        let e = err(json!({"speed": -1}));
        assert!(e.contains("\"speed\"") && e.contains("-1"), "{e}");
        let e = err(json!({"script": "13Hz:abc"}));
        assert_eq!(
            e,
            "synthetic driver setting \"script\": script item 1 (\"13Hz:abc\"): seconds \"abc\" is not a number; write LABEL:SECONDS like 13Hz:3 or rest:2"
        );
        let e = err(json!([1, 2]));
        assert!(e.contains("must be a JSON object"), "{e}");
    }

    #[test]
    fn config_frequencies_below_nyquist() {
        let err = |v: Value| SyntheticConfig::from_json(&v).unwrap_err().to_string();
        let e = err(json!({"sample_rate": 100, "line_hz": 0, "script": "rest:1,60Hz:1"}));
        assert!(e.contains("script item 2 (\"60Hz:1\")") && e.contains("Nyquist frequency 50 Hz"), "{e}");
        let e = err(json!({"sample_rate": 100, "line_hz": "0", "script": "50Hz:1"}));
        assert!(e.contains("item 1") && e.contains("not below"), "{e}");
        assert!(SyntheticConfig::from_json(
            &json!({"sample_rate": 100, "script": "49Hz:1", "alpha_hz": 10, "line_hz": 0})
        )
        .is_ok());
        // The default mains (50 Hz) does not fit 100 Hz sampling.
        let e = err(json!({"sample_rate": 100}));
        assert!(e.contains("\"line_hz\"") && e.contains("50") && e.contains("Nyquist"), "{e}");
        let e = err(json!({"sample_rate": 16, "line_hz": 0}));
        assert!(e.contains("\"alpha_hz\"") && e.contains("Nyquist frequency 8 Hz"), "{e}");
        let e = err(json!({"alpha_hz": 0}));
        assert!(e.contains("\"alpha_hz\""), "{e}");
        // An item shorter than one sample.
        let e = err(json!({"script": "13Hz:1,rest:0.001"}));
        assert!(e.contains("item 2") && e.contains("shorter than one sample"), "{e}");
        // Configs built in code are checked too.
        let bad = SyntheticConfig { script: vec![Intent::target(200.0, 1.0)], ..SyntheticConfig::default() };
        let e = Generator::try_new(bad).unwrap_err().to_string();
        assert!(e.contains("200 Hz") && e.contains("Nyquist frequency 125 Hz"), "{e}");
    }
}

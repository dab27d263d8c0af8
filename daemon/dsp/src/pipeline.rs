//! The preprocessing a model asks for (its manifest's `[preprocessing]` table) and the streaming
//! processors that apply it: notch → Butterworth band → common average reference, then windows.

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::design::{butter, check_butter, iirnotch, Band, DesignError, Sos};
use crate::filter::SosFilter;
use crate::sample::{check_block, Sample};
use crate::window::{SlidingWindow, WindowError, WindowInfo};

/// A model manifest's `[preprocessing]` table. Unknown keys are refused.
///
/// ```toml
/// [preprocessing]
/// notch_hz = 50          # 0 = off (default), else 50 or 60
/// notch_harmonics = 2    # notches at 50 and 100 Hz (default 1: the fundamental only)
/// notch_q = 30           # default 30
/// bandpass_hz = [1, 40]  # or highpass_hz and/or lowpass_hz
/// filter_order = 4       # Butterworth order, 1-8 (default 4)
/// car = true             # common average reference (default false)
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    pub notch_hz: f64,
    pub notch_harmonics: u32,
    pub notch_q: f64,
    pub highpass_hz: Option<f64>,
    pub lowpass_hz: Option<f64>,
    pub bandpass_hz: Option<[f64; 2]>,
    pub filter_order: usize,
    pub car: bool,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            notch_hz: 0.0,
            notch_harmonics: 1,
            notch_q: 30.0,
            highpass_hz: None,
            lowpass_hz: None,
            bandpass_hz: None,
            filter_order: 4,
            car: false,
        }
    }
}

/// What is wrong with a `[preprocessing]` table; every message names the key.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("preprocessing: notch_hz = {hz} is not supported: use 0 (off), 50 or 60")]
    NotchFrequency { hz: f64 },
    #[error("preprocessing: notch_harmonics = 0 is invalid: use 1 (the fundamental only) or more")]
    NoHarmonics,
    #[error(
        "preprocessing: notch_harmonics = {harmonics} puts a notch at {hz} Hz, which is not below the \
         Nyquist frequency ({} Hz at {fs} Hz sampling): use at most {max}",
        fs / 2.0
    )]
    HarmonicAboveNyquist { harmonics: u32, hz: f64, fs: f64, max: u32 },
    #[error(
        "preprocessing: bandpass_hz cannot be combined with highpass_hz or lowpass_hz: give either \
         bandpass_hz = [low, high], or highpass_hz and/or lowpass_hz"
    )]
    BandConflict,
    #[error(
        "preprocessing: highpass_hz = {highpass} is not below lowpass_hz = {lowpass}, which would \
         remove everything"
    )]
    EmptyBand { highpass: f64, lowpass: f64 },
    #[error("preprocessing: {key}: {source}")]
    Design { key: &'static str, source: DesignError },
    #[error("preprocessing: {0}")]
    Window(#[from] WindowError),
}

impl PreprocessConfig {
    /// Checks the table for a stream sampled at `fs` Hz.
    pub fn validate(&self, fs: f64) -> Result<(), ConfigError> {
        self.sections(fs, false).map(|_| ())
    }

    /// Nothing to do: no notch, no band, no CAR.
    pub fn is_identity(&self) -> bool {
        self.notch_hz == 0.0
            && self.highpass_hz.is_none()
            && self.lowpass_hz.is_none()
            && self.bandpass_hz.is_none()
            && !self.car
    }

    /// The cascade: the notches (fundamental first), then the band filters. With `design` false,
    /// only checks and returns nothing.
    fn sections(&self, fs: f64, design: bool) -> Result<Vec<Sos>, ConfigError> {
        let design_err = |key| move |source| ConfigError::Design { key, source };
        if !(fs.is_finite() && fs > 0.0) {
            return Err(ConfigError::Design { key: "sample rate", source: DesignError::SampleRate { fs } });
        }
        let mut sos = Vec::new();
        if self.notch_hz != 0.0 {
            if self.notch_hz != 50.0 && self.notch_hz != 60.0 {
                return Err(ConfigError::NotchFrequency { hz: self.notch_hz });
            }
            if self.notch_harmonics == 0 {
                return Err(ConfigError::NoHarmonics);
            }
            for k in 1..=self.notch_harmonics {
                let hz = self.notch_hz * f64::from(k);
                if hz >= fs / 2.0 {
                    return Err(ConfigError::HarmonicAboveNyquist {
                        harmonics: self.notch_harmonics,
                        hz,
                        fs,
                        max: ((fs / 2.0 / self.notch_hz).ceil() as u32).saturating_sub(1),
                    });
                }
                let s = iirnotch(hz, self.notch_q, fs).map_err(design_err("notch_q"))?;
                if design {
                    sos.push(s);
                }
            }
        }
        let order = self.filter_order;
        let mut band = |key: &'static str, b: Band| -> Result<(), ConfigError> {
            check_butter(order, b, fs).map_err(|source| match source {
                DesignError::Order { .. } => ConfigError::Design { key: "filter_order", source },
                _ => ConfigError::Design { key, source },
            })?;
            if design {
                sos.extend(butter(order, b, fs).map_err(design_err(key))?);
            }
            Ok(())
        };
        match (self.bandpass_hz, self.highpass_hz, self.lowpass_hz) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(ConfigError::BandConflict),
            (Some([lo, hi]), None, None) => band("bandpass_hz", Band::Bandpass(lo, hi))?,
            (None, hp, lp) => {
                if let (Some(h), Some(l)) = (hp, lp) {
                    if h >= l {
                        return Err(ConfigError::EmptyBand { highpass: h, lowpass: l });
                    }
                }
                if let Some(h) = hp {
                    band("highpass_hz", Band::Highpass(h))?;
                }
                if let Some(l) = lp {
                    band("lowpass_hz", Band::Lowpass(l))?;
                }
            }
        }
        Ok(sos)
    }

    /// The second-order sections this table asks for at `fs` Hz, in the order they run.
    pub fn design(&self, fs: f64) -> Result<Vec<Sos>, ConfigError> {
        self.sections(fs, true)
    }
}

/// Applies a [`PreprocessConfig`] to a stream of channel-major blocks, in place, keeping the
/// filter state across blocks. Allocation-free after construction.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    filter: SosFilter,
    car: bool,
    channels: usize,
}

impl Preprocessor {
    pub fn new(cfg: &PreprocessConfig, fs: f64, channels: usize) -> Result<Preprocessor, ConfigError> {
        let sos = cfg.design(fs)?;
        Ok(Preprocessor { filter: SosFilter::new(&sos, channels), car: cfg.car, channels })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The filter cascade (notches, then band).
    pub fn filter(&self) -> &SosFilter {
        &self.filter
    }

    /// Filters (notch → band) and re-references (CAR) a block in place.
    pub fn process<T: Sample>(&mut self, data: &mut [T], frames: usize) {
        check_block(data.len(), self.channels, frames);
        self.filter.process(data, frames);
        if self.car {
            crate::reference::common_average_reference(data, self.channels, frames);
        }
    }

    /// Starts the filters in their steady state for this block's first frame (see
    /// [`SosFilter::prime`]); call before the first `process` of a stream with large offsets.
    pub fn prime<T: Sample>(&mut self, data: &[T], frames: usize) {
        self.filter.prime(data, frames);
    }

    pub fn reset(&mut self) {
        self.filter.reset();
    }
}

/// Preprocessing followed by sliding windows: what a decoder is fed.
///
/// The filters start in their steady state for the first frame of the stream (see
/// [`Preprocessor::prime`]): an amplifier's DC offset of tens of millivolts would otherwise ring
/// through a high-pass for seconds. After an outage, [`Windower::restart`] forgets the filters
/// and the window and primes again on the first block after it, so that nothing on either side
/// of the outage is mixed into one window and the step between them does not ring.
#[derive(Debug, Clone)]
pub struct Windower {
    pre: Preprocessor,
    window: SlidingWindow,
    /// Prime the filters on the next block (the stream's first, or the first after an outage).
    prime_next: bool,
}

impl Windower {
    /// Windows of `window_frames` every `hop_frames` of the preprocessed stream.
    pub fn new(
        cfg: &PreprocessConfig,
        fs: f64,
        channels: usize,
        window_frames: usize,
        hop_frames: usize,
    ) -> Result<Windower, ConfigError> {
        let pre = Preprocessor::new(cfg, fs, channels)?;
        let window = SlidingWindow::new(channels, window_frames, hop_frames, fs)?;
        Ok(Windower { pre, window, prime_next: true })
    }

    pub fn preprocessor(&mut self) -> &mut Preprocessor {
        &mut self.pre
    }

    pub fn window(&self) -> &SlidingWindow {
        &self.window
    }

    /// Preprocesses `data` in place (keep a copy first if the raw block is needed) and calls
    /// `on_window` for every window completed by it.
    pub fn push<T: Sample>(&mut self, data: &mut [T], frames: usize, on_window: impl FnMut(WindowInfo, &Array2<f32>)) {
        if self.prime_next && frames > 0 {
            self.pre.prime(data, frames);
            self.prime_next = false;
        }
        self.pre.process(data, frames);
        self.window.push(data, frames, on_window);
    }

    /// Starts again as at the stream's start: the next block primes the filters and the next
    /// window is made of frames from that block on (call after an outage).
    pub fn restart(&mut self) {
        self.pre.reset();
        self.window.reset();
        self.prime_next = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PreprocessConfig, toml::de::Error> {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Manifest {
            preprocessing: PreprocessConfig,
        }
        toml::from_str::<Manifest>(text).map(|m| m.preprocessing)
    }

    #[test]
    fn manifest_table_parses_with_defaults() {
        let cfg = parse("[preprocessing]\nnotch_hz = 50\nbandpass_hz = [1, 40]\ncar = true\n").unwrap();
        assert_eq!(
            cfg,
            PreprocessConfig {
                notch_hz: 50.0,
                bandpass_hz: Some([1.0, 40.0]),
                car: true,
                ..PreprocessConfig::default()
            }
        );
        assert_eq!((cfg.notch_harmonics, cfg.notch_q, cfg.filter_order), (1, 30.0, 4));
        cfg.validate(250.0).unwrap();
        assert_eq!(cfg.design(250.0).unwrap().len(), 1 + 4);
        let empty = parse("[preprocessing]\n").unwrap();
        assert!(empty.is_identity());
        let err = parse("[preprocessing]\nnotch = 50\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `notch`"), "{err}");
        assert!(parse("[preprocessing]\nbandpass_hz = [1]\n").is_err());
    }

    #[test]
    fn validation_errors_name_the_key_and_value() {
        let fs = 250.0;
        let check = |cfg: PreprocessConfig, want: &[&str]| {
            let msg = cfg.validate(fs).unwrap_err().to_string();
            for w in want {
                assert!(msg.contains(w), "{msg:?} should contain {w:?}");
            }
        };
        let base = PreprocessConfig::default;
        check(PreprocessConfig { notch_hz: 55.0, ..base() }, &["notch_hz = 55", "50 or 60"]);
        check(PreprocessConfig { notch_hz: 50.0, notch_harmonics: 0, ..base() }, &["notch_harmonics = 0"]);
        check(
            PreprocessConfig { notch_hz: 60.0, notch_harmonics: 3, ..base() },
            &["notch_harmonics = 3", "180 Hz", "125 Hz", "at most 2"],
        );
        check(PreprocessConfig { notch_hz: 50.0, notch_q: 0.0, ..base() }, &["notch_q", "Q = 0"]);
        check(PreprocessConfig { bandpass_hz: Some([1.0, 40.0]), highpass_hz: Some(1.0), ..base() }, &["bandpass_hz"]);
        check(PreprocessConfig { bandpass_hz: Some([40.0, 1.0]), ..base() }, &["bandpass_hz", "[40, 1]"]);
        check(PreprocessConfig { bandpass_hz: Some([1.0, 130.0]), ..base() }, &["bandpass_hz", "130 Hz", "125 Hz"]);
        check(PreprocessConfig { highpass_hz: Some(0.0), ..base() }, &["highpass_hz", "0 Hz"]);
        check(PreprocessConfig { lowpass_hz: Some(200.0), ..base() }, &["lowpass_hz", "200 Hz"]);
        check(
            PreprocessConfig { highpass_hz: Some(30.0), lowpass_hz: Some(10.0), ..base() },
            &["highpass_hz = 30", "lowpass_hz = 10"],
        );
        check(PreprocessConfig { highpass_hz: Some(1.0), filter_order: 0, ..base() }, &["filter_order", "order 0"]);
        check(PreprocessConfig { lowpass_hz: Some(30.0), filter_order: 9, ..base() }, &["filter_order", "order 9"]);
        // The same notch harmonics are fine at a higher rate.
        PreprocessConfig { notch_hz: 60.0, notch_harmonics: 3, ..base() }.validate(1000.0).unwrap();
        PreprocessConfig { highpass_hz: Some(0.5), lowpass_hz: Some(45.0), ..base() }.validate(fs).unwrap();
    }

    #[test]
    fn preprocessor_and_windower_run_the_cascade() {
        let cfg = PreprocessConfig {
            notch_hz: 50.0,
            notch_harmonics: 2,
            highpass_hz: Some(1.0),
            lowpass_hz: Some(40.0),
            car: true,
            ..PreprocessConfig::default()
        };
        let fs = 250.0;
        let pre = Preprocessor::new(&cfg, fs, 3).unwrap();
        assert_eq!(pre.filter().sections(), 2 + 2 + 2);
        let mut w = Windower::new(&cfg, fs, 3, 500, 125).unwrap();
        let mut windows = Vec::new();
        for b in 0..100 {
            let mut block: Vec<f32> = (0..3)
                .flat_map(|c| {
                    (0..25).map(move |i| {
                        let t = (b * 25 + i) as f64 / fs;
                        (100.0 * (2.0 * std::f64::consts::PI * 50.0 * t).sin() + 10.0 * c as f64 * (t * 60.0).sin())
                            as f32
                    })
                })
                .collect();
            w.push(&mut block, 25, |info, a| windows.push((info, a.clone())));
        }
        // 2500 frames: windows end at frames 499, 624, ..., 2499.
        assert_eq!(windows.len(), 17);
        let (info, last) = windows.last().unwrap();
        assert_eq!(info.last_frame, 2499);
        for i in 0..500 {
            let s: f32 = (0..3).map(|c| last[[c, i]]).sum();
            assert!(s.abs() < 1e-3, "CAR: frame {i} sums to {s}");
        }
        // The 50 Hz common to all channels is gone (notch and CAR); the per-channel 9.5 Hz is not.
        let ch2_ptp = last.row(2).fold(f32::MIN, |m, &v| m.max(v)) - last.row(2).fold(f32::MAX, |m, &v| m.min(v));
        assert!(ch2_ptp > 10.0 && ch2_ptp < 30.0, "ptp {ch2_ptp}");
    }

    /// A recording of 8 channels with a +40 mV electrode offset (or a flat line at 0), 1 µV of
    /// noise, and outages after which the offset steps (an electrode reseated): what comes out of
    /// a 1–40 Hz band after each outage must look like the steady state, not a ringing step.
    #[test]
    fn no_ringing_after_an_outage_on_flat_and_offset_recordings() {
        let fs = 250.0;
        let cfg = PreprocessConfig { notch_hz: 50.0, bandpass_hz: Some([1.0, 40.0]), ..PreprocessConfig::default() };
        let (channels, win, hop, block) = (8, 500, 125, 25);
        // Deterministic noise (xorshift), about ±1 µV.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        // (offset µV before the outage, offset after): flat-lined, constant DC, DC step.
        for (before, after) in [(0.0, 0.0), (40_000.0, 40_000.0), (40_000.0, 25_000.0), (0.0, 40_000.0)] {
            let run = |restart: bool, noise: &mut dyn FnMut() -> f64| {
                let mut w = Windower::new(&cfg, fs, channels, win, hop).unwrap();
                let mut peaks: Vec<(bool, f32)> = Vec::new(); // (after the outage, peak |x| in the window)
                for b in 0..240 {
                    // The outage: 2 s of nothing between block 119 and block 120.
                    let after_outage = b >= 120;
                    if restart && b == 120 {
                        w.restart();
                    }
                    let offset = if after_outage { after } else { before };
                    let mut data: Vec<f32> = (0..channels * block).map(|_| (offset + noise()) as f32).collect();
                    w.push(&mut data, block, |_, a| {
                        peaks.push((after_outage, a.iter().fold(0f32, |m, v| m.max(v.abs()))));
                    });
                }
                peaks
            };
            let peaks = run(true, &mut noise);
            let steady = peaks.iter().filter(|(after, _)| !after).map(|(_, p)| *p).fold(0f32, f32::max);
            let first_after = peaks.iter().find(|(after, _)| *after).expect("windows after the outage").1;
            // The bound: within 3 µV of the steady state's peak (noise of ±1 µV band-passed).
            assert!(steady < 3.0, "{before}->{after}: the steady state itself rings: {steady} µV");
            assert!(
                first_after < steady + 3.0,
                "{before}->{after}: the first window after the outage peaks at {first_after} µV, the steady state at {steady}"
            );
            if before != after {
                // Without the restart the step rings through the window: the bound above means something.
                let unrestarted = run(false, &mut noise);
                let ringing = unrestarted.iter().find(|(after, _)| *after).unwrap().1;
                assert!(ringing > 100.0 * (steady + 3.0), "{before}->{after}: {ringing} µV without a restart");
            }
        }
    }

    #[test]
    fn a_stream_starting_on_a_large_offset_does_not_ring() {
        let cfg = PreprocessConfig { highpass_hz: Some(1.0), ..PreprocessConfig::default() };
        let mut w = Windower::new(&cfg, 250.0, 1, 250, 250).unwrap();
        let mut first = None;
        let mut data = vec![40_000f32; 250];
        w.push(&mut data, 250, |_, a| first = Some(a.iter().fold(0f32, |m, v| m.max(v.abs()))));
        assert!(first.unwrap() < 1e-2, "primed on the first frame: {first:?}");
        let mut cold = Preprocessor::new(&cfg, 250.0, 1).unwrap();
        let mut data = vec![40_000f32; 250];
        cold.process(&mut data, 250);
        assert!(data[0].abs() > 10_000.0, "unprimed, the offset comes through as a step");
    }
}

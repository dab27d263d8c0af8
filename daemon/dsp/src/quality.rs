//! Per-channel signal quality over a window: flat, railed (saturated), line noise, amplitude out of
//! range. Feed it the signal before the notch filter (line noise is what the notch removes) — raw,
//! or only high-passed.

use ndarray::ArrayView2;
use serde::Deserialize;
use thiserror::Error;

use crate::spectrum::{SpectrumError, Welch};

/// Thresholds (µV unless said otherwise). Deserialisable (unknown keys are refused), every field
/// optional with the defaults below.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Flat: standard deviation below this (default 0.5 µV).
    pub flat_std_uv: f64,
    /// The amplifier's rail (full-scale magnitude), if known, e.g. 187 500 µV for an OpenBCI
    /// Cyton at gain 24. Samples at or beyond `±(rail - rail_tolerance)` count as railed.
    pub rail_uv: Option<f64>,
    /// How close to a rail, or to the window's own extreme, a sample counts as sitting on it
    /// (default 0.01 µV).
    pub rail_tolerance_uv: f64,
    /// Railed: at least this fraction of the window's samples on a rail (default 0.05). Without a
    /// configured rail, the samples counted are those that repeat the window's own maximum or
    /// minimum (within the tolerance, in runs of two or more consecutive samples): a clipped
    /// signal sits on its extreme, an unclipped one only touches it.
    pub railed_fraction: f64,
    /// Mains frequency for the line-noise ratio, Hz (default 50).
    pub line_hz: f64,
    /// Line noise: power in `line_hz ± 1 Hz` over power in 1–45 Hz above this (default 1.0).
    pub line_ratio_max: f64,
    /// Out of range: peak-to-peak above this (default 500 µV).
    pub max_ptp_uv: f64,
    /// Welch segment length for the line-noise ratio, seconds (default 1 s, i.e. 1 Hz bins; cut to
    /// the window length if longer).
    pub welch_seconds: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            flat_std_uv: 0.5,
            rail_uv: None,
            rail_tolerance_uv: 0.01,
            railed_fraction: 0.05,
            line_hz: 50.0,
            line_ratio_max: 1.0,
            max_ptp_uv: 500.0,
            welch_seconds: 1.0,
        }
    }
}

/// The band the line-noise ratio compares the mains power with, Hz.
pub const SIGNAL_BAND_HZ: (f64, f64) = (1.0, 45.0);

#[derive(Debug, Clone, PartialEq, Error)]
pub enum QualityError {
    #[error("quality threshold {key} = {value} is invalid: {what}")]
    Threshold { key: &'static str, value: f64, what: &'static str },
    #[error(
        "quality window of {frames} frames at {fs} Hz is too short: the line-noise ratio needs at \
         least {min} frames"
    )]
    Window { frames: usize, fs: f64, min: usize },
    #[error("line frequency {hz} Hz (± 1 Hz) does not fit below the Nyquist frequency of {fs} Hz sampling")]
    LineFrequency { hz: f64, fs: f64 },
    #[error(transparent)]
    Spectrum(#[from] SpectrumError),
}

/// The quality of one channel over one window: what was measured and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChannelQuality {
    /// Standard deviation, µV.
    pub std_uv: f32,
    /// Peak-to-peak, µV.
    pub ptp_uv: f32,
    /// Fraction of samples on a rail (see [`QualityConfig::railed_fraction`]).
    pub railed_fraction: f32,
    /// Power at the mains frequency ± 1 Hz over power in 1–45 Hz (0 when both are 0).
    pub line_ratio: f32,
    pub flat: bool,
    pub railed: bool,
    pub line_noise: bool,
    pub out_of_range: bool,
}

impl ChannelQuality {
    /// No flag raised.
    pub fn is_good(&self) -> bool {
        !(self.flat || self.railed || self.line_noise || self.out_of_range)
    }
}

/// Measures every channel of windows of a fixed size. Allocation-free after construction.
#[derive(Debug)]
pub struct QualityMeter {
    cfg: QualityConfig,
    channels: usize,
    frames: usize,
    welch: Welch,
    psd: Vec<f64>,
    row: Vec<f32>,
    out: Vec<ChannelQuality>,
}

impl QualityMeter {
    pub fn new(channels: usize, frames: usize, fs: f64, cfg: QualityConfig) -> Result<QualityMeter, QualityError> {
        let positive = |key: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(QualityError::Threshold { key, value, what: "it must be a positive number" })
            }
        };
        positive("flat_std_uv", cfg.flat_std_uv)?;
        positive("max_ptp_uv", cfg.max_ptp_uv)?;
        positive("line_ratio_max", cfg.line_ratio_max)?;
        positive("welch_seconds", cfg.welch_seconds)?;
        positive("line_hz", cfg.line_hz)?;
        if let Some(rail) = cfg.rail_uv {
            positive("rail_uv", rail)?;
        }
        if !(cfg.rail_tolerance_uv.is_finite() && cfg.rail_tolerance_uv >= 0.0) {
            return Err(QualityError::Threshold {
                key: "rail_tolerance_uv",
                value: cfg.rail_tolerance_uv,
                what: "it must be zero or a positive number",
            });
        }
        if !(cfg.railed_fraction > 0.0 && cfg.railed_fraction <= 1.0) {
            return Err(QualityError::Threshold {
                key: "railed_fraction",
                value: cfg.railed_fraction,
                what: "it must be above 0 and at most 1",
            });
        }
        if !(fs.is_finite() && fs > 0.0) {
            return Err(SpectrumError::SampleRate { fs }.into());
        }
        if cfg.line_hz + 1.0 >= fs / 2.0 {
            return Err(QualityError::LineFrequency { hz: cfg.line_hz, fs });
        }
        // Bins must be at most 1 Hz apart for the ±1 Hz band to hold two of them.
        let min = fs.ceil() as usize;
        let nperseg = ((cfg.welch_seconds * fs).round() as usize).min(frames);
        if nperseg < min {
            return Err(QualityError::Window { frames, fs, min });
        }
        let welch = Welch::new(fs, nperseg)?;
        Ok(QualityMeter {
            cfg,
            channels,
            frames,
            psd: vec![0.0; welch.bins()],
            welch,
            row: vec![0.0; frames],
            out: vec![ChannelQuality::default(); channels],
        })
    }

    pub fn config(&self) -> &QualityConfig {
        &self.cfg
    }

    /// Assesses a `channels × frames` window (such as a [`crate::window::SlidingWindow`] array).
    /// Panics if the shape differs from the one given at construction.
    pub fn assess(&mut self, window: ArrayView2<'_, f32>) -> &[ChannelQuality] {
        assert_eq!(
            window.dim(),
            (self.channels, self.frames),
            "quality window shape differs from the {} × {} given at construction",
            self.channels,
            self.frames
        );
        for (row, out) in window.rows().into_iter().zip(self.out.iter_mut()) {
            let x: &[f32] = match row.as_slice() {
                Some(s) => s,
                None => {
                    for (d, s) in self.row.iter_mut().zip(row.iter()) {
                        *d = *s;
                    }
                    &self.row
                }
            };
            *out = assess_channel(&self.cfg, &mut self.welch, &mut self.psd, x);
        }
        &self.out
    }

    /// Assesses a channel-major block (`data[ch * frames + i]`) of the construction's shape.
    pub fn assess_block(&mut self, data: &[f32]) -> &[ChannelQuality] {
        let view = ArrayView2::from_shape((self.channels, self.frames), data)
            .expect("quality block must be channels × frames, channel-major");
        self.assess(view)
    }
}

fn assess_channel(cfg: &QualityConfig, welch: &mut Welch, psd: &mut [f64], x: &[f32]) -> ChannelQuality {
    let n = x.len() as f64;
    let shift = f64::from(x[0]);
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in x {
        let d = f64::from(v) - shift;
        sum += d;
        sum_sq += d * d;
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let mean_d = sum / n;
    let std = (sum_sq / n - mean_d * mean_d).max(0.0).sqrt();
    let ptp = f64::from(hi) - f64::from(lo);
    let flat = std < cfg.flat_std_uv;

    let tol = cfg.rail_tolerance_uv;
    let mut railed_count = 0usize;
    if let Some(rail) = cfg.rail_uv {
        railed_count = x.iter().filter(|&&v| f64::from(v).abs() >= rail - tol).count();
    }
    if !flat {
        // Samples repeating the window's own extreme, in runs of at least two.
        let at = |v: f32, e: f32| (f64::from(v) - f64::from(e)).abs() <= tol;
        let mut own = 0usize;
        for extreme in [hi, lo] {
            let mut run = 0usize;
            for &v in x {
                if at(v, extreme) {
                    run += 1;
                } else {
                    if run >= 2 {
                        own += run;
                    }
                    run = 0;
                }
            }
            if run >= 2 {
                own += run;
            }
        }
        railed_count = railed_count.max(own);
    }
    let railed_fraction = railed_count as f64 / n;

    let line_ratio = match welch.psd(x, psd) {
        Ok(_) => {
            let line = welch.band_power(psd, cfg.line_hz - 1.0, cfg.line_hz + 1.0);
            let signal = welch.band_power(psd, SIGNAL_BAND_HZ.0, SIGNAL_BAND_HZ.1);
            if line == 0.0 {
                0.0
            } else if signal == 0.0 {
                f64::INFINITY
            } else {
                line / signal
            }
        }
        Err(_) => 0.0, // cannot happen: the window length was checked at construction
    };
    ChannelQuality {
        std_uv: std as f32,
        ptp_uv: ptp as f32,
        railed_fraction: railed_fraction as f32,
        line_ratio: line_ratio as f32,
        flat,
        railed: railed_fraction >= cfg.railed_fraction,
        line_noise: line_ratio > cfg.line_ratio_max,
        out_of_range: ptp > cfg.max_ptp_uv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    const FS: f64 = 250.0;
    const N: usize = 500;

    /// A plausible EEG-like channel: 10 Hz alpha plus broadband "noise" (deterministic).
    fn eeg(i: usize, seed: usize) -> f64 {
        let t = i as f64 / FS;
        let mut noise = 0.0;
        for k in 1..12 {
            let f = 1.0 + 3.7 * k as f64;
            noise += 2.0 * (2.0 * PI * f * t + (k * 7 + seed) as f64).sin();
        }
        20.0 * (2.0 * PI * 10.0 * t).sin() + noise
    }

    fn meter(channels: usize, cfg: QualityConfig) -> QualityMeter {
        QualityMeter::new(channels, N, FS, cfg).unwrap()
    }

    #[test]
    fn constructed_signals_raise_the_right_flags() {
        let channels = 6;
        let mut data = vec![0f32; channels * N];
        for i in 0..N {
            let good = eeg(i, 0);
            data[i] = good as f32; // 0: good
            data[N + i] = (1e4 + 0.1 * (i as f64 * 0.9).sin()) as f32; // 1: flat (std ≈ 0.07 µV) on an offset
            data[2 * N + i] = (3.0 * good).clamp(-40.0, 40.0) as f32; // 2: clipped at its own extremes
            data[3 * N + i] = (eeg(i, 3) + 30.0 * (2.0 * PI * 50.0 * i as f64 / FS).sin()) as f32; // 3: mains
            data[4 * N + i] = (eeg(i, 4) + 400.0 * (2.0 * PI * 0.5 * i as f64 / FS).sin()) as f32; // 4: drift
            data[5 * N + i] = if i % 50 < 10 { 187_500.0 } else { eeg(i, 5) as f32 };
            // 5: hits the rail
        }
        let mut m = meter(channels, QualityConfig { rail_uv: Some(187_500.0), ..QualityConfig::default() });
        let q = m.assess_block(&data).to_vec();
        let flags = |c: &ChannelQuality| (c.flat, c.railed, c.line_noise, c.out_of_range);
        assert_eq!(flags(&q[0]), (false, false, false, false), "good: {:?}", q[0]);
        assert!(q[0].is_good());
        assert_eq!(flags(&q[1]), (true, false, false, false), "flat: {:?}", q[1]);
        assert_eq!(flags(&q[2]), (false, true, false, false), "clipped: {:?}", q[2]);
        assert!(q[2].railed_fraction > 0.1);
        assert_eq!(flags(&q[3]), (false, false, true, false), "mains: {:?}", q[3]);
        assert!(q[3].line_ratio > 1.0 && q[0].line_ratio < 0.01, "{} {}", q[3].line_ratio, q[0].line_ratio);
        assert_eq!(flags(&q[4]), (false, false, false, true), "drift: {:?}", q[4]);
        assert!(q[4].ptp_uv > 800.0);
        assert!(flags(&q[5]).1 && flags(&q[5]).3, "rail: {:?}", q[5]);
        assert!((q[5].railed_fraction - 0.2).abs() < 1e-6);
        // 20 µV alpha and eleven 2 µV components: sqrt(20²/2 + 11 · 2²/2).
        let std = (200.0f32 + 22.0).sqrt();
        assert!((q[0].std_uv - std).abs() < 0.02 * std, "std {}", q[0].std_uv);
    }

    #[test]
    fn a_pure_sine_is_not_railed_but_a_stuck_channel_at_the_rail_is() {
        let mut data = vec![0f32; 2 * N];
        for i in 0..N {
            data[i] = (50.0 * (2.0 * PI * 10.0 * i as f64 / FS).sin()) as f32;
            data[N + i] = -187_500.0;
        }
        let q = meter(2, QualityConfig { rail_uv: Some(187_500.0), ..QualityConfig::default() })
            .assess_block(&data)
            .to_vec();
        assert!(!q[0].railed, "{:?}", q[0]);
        assert!(q[1].railed && q[1].flat && !q[1].out_of_range, "{:?}", q[1]);
        // Without a known rail a constant channel is flat, not railed.
        let q = meter(2, QualityConfig::default()).assess_block(&data).to_vec();
        assert!(q[1].flat && !q[1].railed, "{:?}", q[1]);
    }

    #[test]
    fn sixty_hz_mains_and_thresholds() {
        let mut data = vec![0f32; N];
        for (i, d) in data.iter_mut().enumerate() {
            *d = (eeg(i, 1) + 10.0 * (2.0 * PI * 60.0 * i as f64 / FS).sin()) as f32;
        }
        let q50 = meter(1, QualityConfig::default()).assess_block(&data)[0];
        let q60 = meter(1, QualityConfig { line_hz: 60.0, ..QualityConfig::default() }).assess_block(&data)[0];
        assert!(q50.line_ratio < 0.01 && q60.line_ratio > 0.1, "{} {}", q50.line_ratio, q60.line_ratio);
        let strict =
            QualityConfig { line_hz: 60.0, line_ratio_max: 0.05, max_ptp_uv: 20.0, ..QualityConfig::default() };
        let q = meter(1, strict).assess_block(&data)[0];
        assert!(q.line_noise && q.out_of_range);
    }

    #[test]
    fn bad_configuration_is_refused_with_the_key() {
        let e = QualityMeter::new(1, N, FS, QualityConfig { flat_std_uv: -1.0, ..QualityConfig::default() });
        assert!(e.unwrap_err().to_string().contains("flat_std_uv = -1"));
        let e = QualityMeter::new(1, N, FS, QualityConfig { railed_fraction: 0.0, ..QualityConfig::default() });
        assert!(e.unwrap_err().to_string().contains("railed_fraction"));
        let e = QualityMeter::new(1, 100, FS, QualityConfig::default()).unwrap_err();
        assert_eq!(e, QualityError::Window { frames: 100, fs: FS, min: 250 });
        let e = QualityMeter::new(1, N, 100.0, QualityConfig { line_hz: 50.0, ..QualityConfig::default() });
        assert!(matches!(e, Err(QualityError::LineFrequency { .. })));
        let cfg: QualityConfig = toml::from_str("flat_std_uv = 1.0\nrail_uv = 187500").unwrap();
        assert_eq!(cfg.rail_uv, Some(187_500.0));
        assert_eq!(cfg.max_ptp_uv, 500.0);
        assert!(toml::from_str::<QualityConfig>("flat_std = 1.0").is_err());
    }
}

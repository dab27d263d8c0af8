//! Differentially private release of per-window band-power features (the Gaussian mechanism).
//!
//! Features: for every non-overlapping 2 s window, each channel's power (µV², Welch with 1 s
//! segments) in the bands delta 1–4, theta 4–8, alpha 8–13, beta 13–30 and gamma 30–45 Hz (bands
//! reaching the Nyquist frequency are left out). Each feature is clipped to [0, C]; one window's
//! k features then change by at most Δ₂ = C·√k in L2 norm, whatever the window held. Each released
//! value gets independent Gaussian noise of standard deviation
//!
//!   σ = Δ₂ · √(2 ln(1.25/δ)) / ε      (Dwork & Roth, Theorem A.1; needs 0 < ε < 1)
//!
//! so the release is (ε, δ)-differentially private with respect to any one window. Releases of one
//! subject add up (basic composition), and the store refuses a release that would take the
//! subject's total beyond the daemon's budget.
//!
//! What this protects: the contents of any single 2 s window (its band powers within the clipping
//! bound). What it does not: the subject's participation or identity across all windows, the
//! number and timing of windows, channel names, and the session's metadata; features beyond the
//! clipping bound are biased by the clipping.

use ring::rand::{SecureRandom, SystemRandom};

use bci2token_api::SessionInfo;
use bci2token_dsp::spectrum::Welch;

use crate::export::{Blocks, Frames, Layout};

pub const BANDS: [(&str, f64, f64); 5] =
    [("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 45.0)];
/// Seconds per window.
pub const WINDOW_SECONDS: f64 = 2.0;

/// The noise standard deviation of the Gaussian mechanism for `k` features per window, each
/// clipped to [0, `clip`].
pub fn gaussian_sigma(clip: f64, k: usize, epsilon: f64, delta: f64) -> f64 {
    clip * (k as f64).sqrt() * (2.0 * (1.25 / delta).ln()).sqrt() / epsilon
}

/// Checks the parameters; the message says what is allowed.
pub fn check(epsilon: f64, delta: f64, clip: f64) -> Result<(), String> {
    if !(epsilon > 0.0 && epsilon < 1.0) {
        return Err(format!("--dp-epsilon {epsilon}: the Gaussian mechanism's guarantee holds for 0 < ε < 1"));
    }
    if !(delta > 0.0 && delta < 1e-3) {
        return Err(format!("--dp-delta {delta}: δ must be above 0 and small (below 1e-3; typically 1e-5 or less)"));
    }
    if !(clip.is_finite() && clip > 0.0) {
        return Err(format!("--dp-clip {clip}: the clipping bound must be a positive number of µV²"));
    }
    Ok(())
}

/// The band powers of a session's windows, computed one window at a time over the export's time
/// line ([`crate::export::Frames`]): memory is one window of samples, whatever the session's time
/// stamps span.
pub struct Windows {
    /// Column names: `LABEL_BAND` for every channel and band.
    pub columns: Vec<String>,
    /// Whole windows on the time line (a last partial window is left out).
    pub count: u64,
    window: usize,
    bands: Vec<(f64, f64)>,
    welch: Welch,
    clip: f64,
}

/// The windows of `layout`, each feature to be clipped to [0, `clip`].
pub fn windows(info: &SessionInfo, layout: &Layout, clip: f64) -> Result<Windows, String> {
    let rate = info.sample_rate;
    let window = (WINDOW_SECONDS * rate).round() as usize;
    let bands: Vec<_> = BANDS.iter().filter(|(_, _, hi)| *hi < rate / 2.0).collect();
    let welch = Welch::new(rate, (rate.round() as usize).min(window)).map_err(|e| e.to_string())?;
    let columns: Vec<String> =
        info.channels.iter().flat_map(|c| bands.iter().map(move |(b, _, _)| format!("{}_{b}", c.label))).collect();
    let count = if window == 0 { 0 } else { layout.frames / window as u64 };
    Ok(Windows { columns, count, window, bands: bands.iter().map(|(_, lo, hi)| (*lo, *hi)).collect(), welch, clip })
}

impl Windows {
    /// Calls `f` with each window's start (s) and its clipped features, in order.
    pub fn for_each(
        &mut self,
        layout: &Layout,
        blocks: impl Blocks,
        mut f: impl FnMut(f64, &[f64]) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut frames = Frames::new(layout, blocks);
        let mut samples = vec![Vec::with_capacity(self.window); layout.channels()];
        let mut psd = vec![0.0; self.welch.bins()];
        let mut row = Vec::with_capacity(self.columns.len());
        for w in 0..self.count {
            frames.fill(w * self.window as u64, self.window, &mut samples)?;
            row.clear();
            for col in &samples {
                self.welch.psd(col, &mut psd).map_err(|e| e.to_string())?;
                for (lo, hi) in &self.bands {
                    row.push(self.welch.band_power(&psd, *lo, *hi).clamp(0.0, self.clip));
                }
            }
            f(w as f64 * WINDOW_SECONDS, &row)?;
        }
        Ok(())
    }
}

/// Standard normal samples from the system's cryptographic random generator (Box–Muller).
pub struct Gaussian {
    rng: SystemRandom,
    spare: Option<f64>,
}

impl Gaussian {
    pub fn new() -> Gaussian {
        Gaussian { rng: SystemRandom::new(), spare: None }
    }

    fn uniform(&self) -> f64 {
        let mut b = [0u8; 8];
        self.rng.fill(&mut b).expect("the system random generator");
        // 53 random bits in (0, 1].
        ((u64::from_le_bytes(b) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn next(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::{blocks, info, reference, scan, Memory};
    use crate::export::Block;

    type Rows = Vec<(f64, Vec<f64>)>;

    /// The whole-session features of earlier versions: the reference.
    fn reference_features(info: &SessionInfo, blocks: &[Block], clip: f64) -> Result<(Vec<String>, Rows), String> {
        let rate = info.sample_rate;
        let window = (WINDOW_SECONDS * rate).round() as usize;
        let bands: Vec<_> = BANDS.iter().filter(|(_, _, hi)| *hi < rate / 2.0).collect();
        let mut welch = Welch::new(rate, (rate.round() as usize).min(window)).map_err(|e| e.to_string())?;
        let mut psd = vec![0.0; welch.bins()];
        let columns: Vec<String> =
            info.channels.iter().flat_map(|c| bands.iter().map(move |(b, _, _)| format!("{}_{b}", c.label))).collect();
        let (data, _) = reference::timeline(info, blocks);
        let total = data.first().map_or(0, Vec::len);
        let mut rows = Vec::new();
        for w in 0..total / window {
            let mut row = Vec::with_capacity(columns.len());
            for col in &data {
                welch.psd(&col[w * window..(w + 1) * window], &mut psd).map_err(|e| e.to_string())?;
                for (_, lo, hi) in &bands {
                    row.push(welch.band_power(&psd, *lo, *hi).clamp(0.0, clip));
                }
            }
            rows.push((w as f64 * WINDOW_SECONDS, row));
        }
        Ok((columns, rows))
    }

    #[test]
    fn windows_are_computed_one_at_a_time_as_the_whole_session_computed_them() {
        let t = 77.7;
        // Rate, channels, and where blocks of how many frames lie.
        type Session = (f64, usize, Vec<(f64, usize)>);
        let sessions: Vec<Session> = vec![
            // Contiguous, 32-frame blocks across window boundaries.
            (128.0, 3, (0..40).map(|k| (t + k as f64 * 0.25, 32)).collect()),
            // Gaps (one of several windows), odd sizes, a step back in time.
            (128.0, 2, vec![(t, 100), (t + 0.9, 77), (t + 7.3, 300), (t + 5.0, 129), (t + 20.0, 256), (t + 21.0, 13)]),
            (10.0, 2, vec![(t, 3), (t + 0.3, 7), (t + 1.35, 1), (t + 1.45, 13), (t + 4.75, 5), (t + 9.0, 31)]),
            // Shorter than one window: nothing.
            (128.0, 2, vec![(t, 200)]),
        ];
        for (rate, channels, placed) in sessions {
            let info = info(rate, channels);
            let blocks = blocks(channels, &placed);
            for clip in [100.0, 1e9] {
                let (columns, rows) = reference_features(&info, &blocks, clip).unwrap();
                let layout = scan(&info, &blocks, &[], false).unwrap();
                let mut w = windows(&info, &layout, clip).unwrap();
                assert_eq!(w.columns, columns);
                assert_eq!(w.count, rows.len() as u64, "{rate} Hz {placed:?}");
                let mut got = Vec::new();
                w.for_each(&layout, Memory { blocks: &blocks, reads: 0 }, |start, row| {
                    got.push((start, row.to_vec()));
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, rows, "{rate} Hz, clip {clip}");
            }
        }
    }

    #[test]
    fn sigma_is_the_gaussian_mechanism() {
        // Δ₂ = 100·√40, ε = 0.5, δ = 1e-5: σ = Δ₂ · √(2 ln 125000) / 0.5.
        let want = 100.0 * 40f64.sqrt() * (2.0 * 125_000f64.ln()).sqrt() / 0.5;
        assert!((gaussian_sigma(100.0, 40, 0.5, 1e-5) - want).abs() < 1e-9);
        assert!(check(1.0, 1e-5, 1.0).is_err() && check(0.5, 0.1, 1.0).is_err() && check(0.5, 1e-5, 0.0).is_err());
    }

    #[test]
    fn the_noise_is_standard_normal() {
        let mut g = Gaussian::new();
        let v: Vec<f64> = (0..200_000).map(|_| g.next()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean}, variance {var}");
    }
}

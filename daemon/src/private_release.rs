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

use crate::export::Block;

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

/// Per window: its start (s) and its clipped features.
pub type Rows = Vec<(f64, Vec<f64>)>;

/// Column names and, per window, its start (s) and clipped features.
pub fn features(info: &SessionInfo, blocks: &[Block], clip: f64) -> Result<(Vec<String>, Rows), String> {
    let rate = info.sample_rate;
    let window = (WINDOW_SECONDS * rate).round() as usize;
    let bands: Vec<_> = BANDS.iter().filter(|(_, _, hi)| *hi < rate / 2.0).collect();
    let mut welch = Welch::new(rate, (rate.round() as usize).min(window)).map_err(|e| e.to_string())?;
    let mut psd = vec![0.0; welch.bins()];
    let columns: Vec<String> =
        info.channels.iter().flat_map(|c| bands.iter().map(move |(b, _, _)| format!("{}_{b}", c.label))).collect();
    let (data, _) = crate::export::timeline(info, blocks);
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

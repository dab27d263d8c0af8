//! SSVEP: the filter bank and canonical correlations of FBCCA (Chen et al. 2015, as the shipped
//! `ssvep-fbcca-3` computes them), and the per-person method built on them, filter-bank
//! task-related component analysis in the frequency domain (`fbtrca`).
//!
//! Classic TRCA (Nakanishi et al. 2018) averages stimulus-locked trials into templates; an
//! asynchronous decoder sees windows at any phase of the flicker, and on the shared recordings
//! the response is only partly phase-locked across trials, so its templates score at chance
//! there. `fbtrca` keeps TRCA's idea, a spatial filter that makes the task-related part of the
//! signal as large as possible against the whole, but takes the task-related part in the
//! frequency domain, where phase does not matter: per sub-band n and class k, the filter v solves
//! `S_{n,k} v = λ B_n v` for the largest λ, where `S_{n,k}` sums, over the class's training
//! windows X, the covariance of X Q_k (the window projected onto the class's sine/cosine
//! references at f_k and its harmonics) and `B_n` sums X Xᵀ over all training windows. A window
//! is then scored as FBCCA scores it, but on the K filtered signals `Vₙᵀ Xₙ` instead of the raw
//! channels, minus a per-class bias: the mean score of class k on the other classes' training
//! windows (the class's score when it is not being looked at).

use nalgebra::{DMatrix, DVector};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::{linalg, FitError};

/// The sub-bands' lower edges and their common upper edge (Hz), with raised-cosine transitions,
/// and the harmonics of the references: those of `ssvep-fbcca-3`.
pub const SUBBAND_LOWS: [f64; 5] = [8.0, 16.0, 24.0, 32.0, 40.0];
pub const SUBBAND_HIGH: f64 = 88.0;
pub const TRANSITION_HZ: f64 = 2.0;
pub const HARMONICS: usize = 5;
/// Sub-band weights n^-A + B, normalised.
const WEIGHT_A: f64 = 1.25;
const WEIGHT_B: f64 = 0.25;
/// Ridge of the whitening in the correlations (of FBCCA), and of the broadband covariance.
pub const CCA_RIDGE: f64 = 1e-9;
const FILTER_RIDGE: f64 = 1e-6;

/// What a window of `samples` at `rate` Hz is analysed with: the sub-band masks, the references
/// of each class's frequency, the sub-band weights.
#[derive(Debug, Clone)]
pub struct Bank {
    pub rate: f64,
    pub samples: usize,
    /// FFT length: the least power of two ≥ 2 × samples (zero padding at both ends).
    pub nfft: usize,
    /// One row a sub-band, `nfft / 2 + 1` columns: the real, zero-phase mask of each bin.
    pub masks: DMatrix<f64>,
    /// One `samples × 2H` orthonormal basis a class (sin, cos of each harmonic, centred).
    pub refs: Vec<DMatrix<f64>>,
    pub weights: DVector<f64>,
}

/// 0 below `start`, 1 above `start + width`, a raised cosine between.
fn raised_cosine_edge(f: f64, start: f64, width: f64) -> f64 {
    let x = ((f - start) / width).clamp(0.0, 1.0);
    0.5 - 0.5 * (std::f64::consts::PI * x).cos()
}

impl Bank {
    /// The bank for windows of `samples` at `rate` Hz and classes flickering at `freqs` Hz. The
    /// upper edge is 88 Hz or 4 Hz below Nyquist, whichever is lower; sub-bands whose lower edge
    /// is not 8 Hz below it are left out.
    pub fn new(rate: f64, samples: usize, freqs: &[f64]) -> Result<Bank, FitError> {
        let high = SUBBAND_HIGH.min(rate / 2.0 - 4.0);
        let lows: Vec<f64> = SUBBAND_LOWS.iter().copied().filter(|&lo| lo + 8.0 <= high).collect();
        if lows.is_empty() || samples < 2 {
            return Err(FitError::Shape(format!("an SSVEP filter bank at {rate} Hz over {samples} samples")));
        }
        if let Some(f) = freqs.iter().find(|&&f| !(f.is_finite() && f > 0.0 && f < rate / 2.0)) {
            return Err(FitError::Shape(format!("a stimulus frequency of {f} Hz at {rate} Hz")));
        }
        let nfft = (2 * samples).next_power_of_two();
        let bins = nfft / 2 + 1;
        let masks = DMatrix::from_fn(lows.len(), bins, |n, k| {
            let f = k as f64 * rate / nfft as f64;
            raised_cosine_edge(f, lows[n] - TRANSITION_HZ, TRANSITION_HZ)
                * (1.0 - raised_cosine_edge(f, high, TRANSITION_HZ))
        });
        if samples < 4 * 2 * HARMONICS {
            return Err(FitError::Shape(format!(
                "a window of {samples} samples is too short for {} sine/cosine references: give a longer window",
                2 * HARMONICS
            )));
        }
        let refs = freqs.iter().map(|&f| reference_basis(f, samples, rate)).collect();
        let raw = DVector::from_fn(lows.len(), |n, _| ((n + 1) as f64).powf(-WEIGHT_A) + WEIGHT_B);
        let weights = &raw / raw.sum();
        Ok(Bank { rate, samples, nfft, masks, refs, weights })
    }

    pub fn bands(&self) -> usize {
        self.masks.nrows()
    }

    /// The first sub-band (8–88 Hz) alone, weighted 1: no filter bank.
    pub fn first_band_only(self) -> Bank {
        let masks = self.masks.rows(0, 1).into_owned();
        Bank { masks, weights: DVector::from_element(1, 1.0), ..self }
    }

    /// The sub-bands of `x` (`channels × samples`): the channels' means removed, each filtered by
    /// its mask in the frequency domain (zero-padded FFT, cropped back), means removed again.
    pub fn filter(&self, x: &DMatrix<f64>) -> Vec<DMatrix<f64>> {
        let (c, t) = x.shape();
        let fft = FftPlanner::new().plan_fft_forward(self.nfft);
        let ifft = FftPlanner::new().plan_fft_inverse(self.nfft);
        let mut spectra = Vec::with_capacity(c);
        for row in x.row_iter() {
            let mean = row.mean();
            let mut buf: Vec<Complex<f64>> =
                (0..self.nfft).map(|i| Complex::new(if i < t { row[i] - mean } else { 0.0 }, 0.0)).collect();
            fft.process(&mut buf);
            spectra.push(buf);
        }
        let half = self.nfft / 2;
        (0..self.bands())
            .map(|n| {
                let mut out = DMatrix::zeros(c, t);
                for (ch, spectrum) in spectra.iter().enumerate() {
                    // A real mask on both halves of the spectrum: the inverse is real.
                    let mut buf: Vec<Complex<f64>> = spectrum
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v * self.masks[(n, if k <= half { k } else { self.nfft - k })])
                        .collect();
                    ifft.process(&mut buf);
                    let scale = 1.0 / self.nfft as f64;
                    let mean = buf[..t].iter().map(|v| v.re).sum::<f64>() * scale / t as f64;
                    for i in 0..t {
                        out[(ch, i)] = buf[i].re * scale - mean;
                    }
                }
                out
            })
            .collect()
    }

    /// ρ² of `y` (signals × samples, centred) with each class's references: the largest squared
    /// canonical correlation, through the whitening FBCCA uses.
    pub fn correlations(&self, y: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
        let c = y.nrows();
        let mut cov = y * y.transpose();
        let ridge = cov.trace() / c as f64 * CCA_RIDGE + 1e-30;
        for i in 0..c {
            cov[(i, i)] += ridge;
        }
        let l = cov.cholesky().ok_or(FitError::NotPositiveDefinite("a window's covariance"))?.l();
        let mut rho2 = DVector::zeros(self.refs.len());
        for (k, q) in self.refs.iter().enumerate() {
            let a = l.solve_lower_triangular(&(y * q)).ok_or(FitError::NotPositiveDefinite("a Cholesky factor"))?;
            let gram = if q.ncols() <= c { a.transpose() * &a } else { &a * a.transpose() };
            let (values, _) = linalg::eigh(&gram);
            rho2[k] = values[values.len() - 1].clamp(0.0, 1.0);
        }
        Ok(rho2)
    }
}

/// The orthonormal basis (QR, signs fixed so that R's diagonal is positive) of the centred
/// sin/cos of `f` and its harmonics over `samples` at `rate`. Harmonics within 0.5 Hz of Nyquist
/// or above it (which would alias onto other frequencies) are left out: their columns are zero,
/// so that every class has `2 × HARMONICS` columns.
pub fn reference_basis(f: f64, samples: usize, rate: f64) -> DMatrix<f64> {
    let usable = (1..=HARMONICS).take_while(|&h| h as f64 * f < rate / 2.0 - 0.5).count();
    let mut y = DMatrix::from_fn(samples, 2 * usable, |i, j| {
        let phase = 2.0 * std::f64::consts::PI * (j / 2 + 1) as f64 * f * i as f64 / rate;
        if j % 2 == 0 {
            phase.sin()
        } else {
            phase.cos()
        }
    });
    for mut col in y.column_iter_mut() {
        let mean = col.mean();
        col.add_scalar_mut(-mean);
    }
    let qr = y.qr();
    let (mut q, r) = (qr.q(), qr.r());
    for j in 0..q.ncols() {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    let mut basis = DMatrix::zeros(samples, 2 * HARMONICS);
    basis.columns_mut(0, 2 * usable).copy_from(&q);
    basis
}

/// A fitted `fbtrca`: per sub-band, one spatial filter a class (`channels × classes`), and the
/// per-class bias.
#[derive(Debug, Clone)]
pub struct FbTrca {
    pub bank: Bank,
    pub filters: Vec<DMatrix<f64>>,
    pub bias: DVector<f64>,
}

impl FbTrca {
    /// Fits to `windows` (`channels × samples`, preprocessed) of classes `labels` (in
    /// `0..freqs.len()`), at `rate` Hz; over FBCCA's filter bank, or (`filter_bank` false, the
    /// method `trca`) over its first sub-band alone.
    pub fn fit(
        windows: &[DMatrix<f64>],
        labels: &[usize],
        freqs: &[f64],
        rate: f64,
        filter_bank: bool,
    ) -> Result<FbTrca, FitError> {
        let classes = freqs.len();
        crate::check_labels(labels, windows.len(), classes)?;
        let (channels, samples) = windows.first().map(|w| w.shape()).ok_or(FitError::TooFew("no windows".into()))?;
        let bank = Bank::new(rate, samples, freqs)?;
        let bank = if filter_bank { bank } else { bank.first_band_only() };
        if let Some(k) = (0..classes).find(|k| !labels.contains(k)) {
            return Err(FitError::TooFew(format!("class {k} has no windows")));
        }
        // Sums over the windows, one window's sub-bands at a time (never all of them at once:
        // they would take the bands' count times the windows' memory).
        let bands = bank.bands();
        let mut broad = vec![DMatrix::zeros(channels, channels); bands];
        let mut task = vec![vec![DMatrix::zeros(channels, channels); classes]; bands];
        for (w, &l) in windows.iter().zip(labels) {
            for (n, xn) in bank.filter(w).iter().enumerate() {
                broad[n] += xn * xn.transpose();
                let p = xn * &bank.refs[l];
                task[n][l] += &p * p.transpose();
            }
        }
        let mut filters = Vec::with_capacity(bands);
        for (broad, task) in broad.iter_mut().zip(&task) {
            let ridge = FILTER_RIDGE * broad.trace() / channels as f64 + 1e-30;
            for i in 0..channels {
                broad[(i, i)] += ridge;
            }
            let mut v = DMatrix::zeros(channels, classes);
            for (k, task) in task.iter().enumerate() {
                let (values, w) = linalg::generalized_eigh(task, broad)?;
                v.set_column(k, &w.column(values.len() - 1));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(FitError::NotPositiveDefinite("a sub-band's broadband covariance"));
            }
            filters.push(v);
        }
        let mut model = FbTrca { bank, filters, bias: DVector::zeros(classes) };
        // The bias: each class's mean score on the other classes' windows.
        let mut sums: DVector<f64> = DVector::zeros(classes);
        let mut counts = vec![0usize; classes];
        for (w, &l) in windows.iter().zip(labels) {
            let s = model.scores_banded(&model.bank.filter(w))?;
            for k in (0..classes).filter(|&k| k != l) {
                sums[k] += s[k];
                counts[k] += 1;
            }
        }
        model.bias = DVector::from_fn(classes, |k, _| if counts[k] > 0 { sums[k] / counts[k] as f64 } else { 0.0 });
        Ok(model)
    }

    /// Σₙ wₙ ρ²ₙ,ₖ − bₖ of a window's sub-bands.
    fn scores_banded(&self, banded: &[DMatrix<f64>]) -> Result<DVector<f64>, FitError> {
        let mut score = -self.bias.clone();
        for (n, xn) in banded.iter().enumerate() {
            let mut y = self.filters[n].transpose() * xn;
            for mut row in y.row_iter_mut() {
                let mean = row.mean();
                row.add_scalar_mut(-mean);
            }
            score += self.bank.correlations(&y)? * self.bank.weights[n];
        }
        Ok(score)
    }

    /// Each class's score for a window (`channels × samples`); the largest wins.
    pub fn scores(&self, x: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
        if x.ncols() != self.bank.samples || x.nrows() != self.filters[0].nrows() {
            return Err(FitError::Shape(format!(
                "a window of {:?} for a model of {} channels × {} samples",
                x.shape(),
                self.filters[0].nrows(),
                self.bank.samples
            )));
        }
        self.scores_banded(&self.bank.filter(x))
    }
}

/// FBCCA's score of a window (no fitting): Σₙ wₙ ρ²ₙ,ₖ of its sub-bands' channels.
pub fn fbcca_scores(bank: &Bank, x: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
    let mut score = DVector::zeros(bank.refs.len());
    for (n, xn) in bank.filter(x).iter().enumerate() {
        score += bank.correlations(xn)? * bank.weights[n];
    }
    Ok(score)
}

/// The frequency a class label names: "13Hz", "13 Hz", "13.5hz" or "13".
pub fn frequency_of(label: &str) -> Option<f64> {
    let t = label.trim();
    let number = t.strip_suffix("Hz").or_else(|| t.strip_suffix("hz")).or_else(|| t.strip_suffix("HZ")).unwrap_or(t);
    number.trim().parse::<f64>().ok().filter(|f| f.is_finite() && *f > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `channels × samples` of a sine at `f` on the first two channels (opposite signs, a random
    /// phase), noise everywhere.
    fn window(f: f64, rate: f64, samples: usize, seed: &mut u64) -> DMatrix<f64> {
        let mut noise = || {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let phase = noise() * std::f64::consts::PI;
        DMatrix::from_fn(4, samples, |c, i| {
            let s = (2.0 * std::f64::consts::PI * f * i as f64 / rate + phase).sin();
            let signal = match c {
                0 => s,
                1 => -s,
                _ => 0.0,
            };
            0.6 * signal + noise()
        })
    }

    #[test]
    fn references_are_orthonormal_and_masks_pass_their_band() {
        let bank = Bank::new(256.0, 256, &[13.0, 17.0]).unwrap();
        assert_eq!((bank.nfft, bank.bands()), (512, 5));
        for q in &bank.refs {
            assert!((q.transpose() * q - DMatrix::identity(10, 10)).norm() < 1e-9);
        }
        let at = |n: usize, hz: f64| bank.masks[(n, (hz * 512.0 / 256.0) as usize)];
        assert_eq!((at(0, 5.0), at(0, 20.0), at(0, 100.0)), (0.0, 1.0, 0.0));
        assert!((at(0, 7.0) - 0.5).abs() < 1e-12 && (at(0, 89.0) - 0.5).abs() < 1e-12);
        assert_eq!((at(4, 30.0), at(4, 60.0)), (0.0, 1.0));
        assert!((bank.weights.sum() - 1.0).abs() < 1e-12);
        // A 20 Hz sine comes through sub-band 0 (8–88 Hz) whole, and not through sub-band 3 (32–88).
        let x = DMatrix::from_fn(1, 256, |_, i| (2.0 * std::f64::consts::PI * 20.0 * i as f64 / 256.0).sin());
        let bands = bank.filter(&x);
        let power = |m: &DMatrix<f64>| m.iter().map(|v| v * v).sum::<f64>() / 256.0;
        assert!((power(&bands[0]) - 0.5).abs() < 0.06, "{}", power(&bands[0]));
        assert!(power(&bands[3]) < 1e-3, "{}", power(&bands[3]));
        // Low rates keep only the sub-bands below Nyquist.
        assert_eq!(Bank::new(100.0, 100, &[13.0]).unwrap().bands(), 4);
        assert!(Bank::new(256.0, 256, &[200.0]).is_err());
    }

    #[test]
    fn fbtrca_finds_the_flickering_channels_and_classifies_windows_at_any_phase() {
        let (rate, samples) = (256.0, 256);
        let freqs = [13.0, 17.0, 21.0];
        let mut seed = 7u64;
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..30 {
            xs.push(window(freqs[i % 3], rate, samples, &mut seed));
            ys.push(i % 3);
        }
        let model = FbTrca::fit(&xs, &ys, &freqs, rate, true).unwrap();
        let single = FbTrca::fit(&xs, &ys, &freqs, rate, false).unwrap();
        assert_eq!((single.bank.bands(), single.filters.len(), single.bank.weights[0]), (1, 1, 1.0));
        // The filters weigh the two flickering channels, in opposition, above the noise channels.
        let v = model.filters[0].column(0);
        assert!(v[0] * v[1] < 0.0 && v[0].abs() > 2.0 * v[2].abs() && v[1].abs() > 2.0 * v[3].abs(), "{v}");
        let bank = Bank::new(rate, samples, &freqs).unwrap();
        let (mut right, mut fbcca_right, mut single_right) = (0, 0, 0);
        for i in 0..30 {
            let x = window(freqs[i % 3], rate, samples, &mut seed);
            right += usize::from(model.scores(&x).unwrap().argmax().0 == i % 3);
            single_right += usize::from(single.scores(&x).unwrap().argmax().0 == i % 3);
            fbcca_right += usize::from(fbcca_scores(&bank, &x).unwrap().argmax().0 == i % 3);
        }
        assert!(right >= 28 && single_right >= 27, "fbtrca {right}, trca {single_right} of 30");
        assert!(right >= fbcca_right, "fbtrca {right}, fbcca {fbcca_right}");
        assert!(model.scores(&DMatrix::zeros(4, 100)).is_err());
    }

    #[test]
    fn frequencies_are_read_from_labels() {
        assert_eq!(frequency_of("13Hz"), Some(13.0));
        assert_eq!(frequency_of(" 8.5 hz"), Some(8.5));
        assert_eq!(frequency_of("21"), Some(21.0));
        assert_eq!(frequency_of("left"), None);
        assert_eq!(frequency_of("-3Hz"), None);
    }
}

//! Power spectral density by Welch's method, and band power.
//!
//! [`Welch::psd`] equals `scipy.signal.welch(x, fs, window="hann", nperseg=nperseg,
//! noverlap=nperseg // 2 (or the given overlap), nfft=nperseg, detrend="constant",
//! return_onesided=True, scaling="density", average="mean")`: segments of `nperseg` samples every
//! `nperseg - noverlap` samples (`(len - noverlap) / step` of them, the tail that does not fill a
//! segment is ignored), each with its mean removed and multiplied by the periodic Hann window;
//! `|FFT|² / (fs · Σ w²)`, doubled except at 0 Hz and (for even `nperseg`) at the Nyquist
//! frequency, averaged over the segments. Unit: µV²/Hz for a signal in µV.
//!
//! The FFT is planned once ([`rustfft`]) and its buffers reused, so computing a PSD allocates
//! nothing. Two segments are transformed at once as the real and imaginary parts of one complex
//! FFT.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use thiserror::Error;

use crate::sample::Sample;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SpectrumError {
    #[error("Welch segment length nperseg = {nperseg} is invalid: it must be at least 2 samples")]
    SegmentLength { nperseg: usize },
    #[error("Welch overlap of {noverlap} samples is invalid: it must be less than the segment length ({nperseg})")]
    Overlap { noverlap: usize, nperseg: usize },
    #[error("sample rate {fs} Hz is invalid: it must be a positive, finite number")]
    SampleRate { fs: f64 },
    #[error("signal of {len} samples is shorter than one Welch segment ({nperseg} samples)")]
    TooShort { len: usize, nperseg: usize },
}

/// A Welch PSD estimator for one segment length, reusable for any number of signals.
pub struct Welch {
    fs: f64,
    nperseg: usize,
    noverlap: usize,
    window: Vec<f64>,
    /// 1 / (fs · Σ w²)
    scale: f64,
    freqs: Vec<f64>,
    fft: Arc<dyn Fft<f64>>,
    buf: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl std::fmt::Debug for Welch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welch")
            .field("fs", &self.fs)
            .field("nperseg", &self.nperseg)
            .field("noverlap", &self.noverlap)
            .finish_non_exhaustive()
    }
}

impl Welch {
    /// Segments of `nperseg` samples overlapping by half (`nperseg / 2`, scipy's default).
    pub fn new(fs: f64, nperseg: usize) -> Result<Welch, SpectrumError> {
        Welch::with_overlap(fs, nperseg, nperseg / 2)
    }

    pub fn with_overlap(fs: f64, nperseg: usize, noverlap: usize) -> Result<Welch, SpectrumError> {
        if !(fs.is_finite() && fs > 0.0) {
            return Err(SpectrumError::SampleRate { fs });
        }
        if nperseg < 2 {
            return Err(SpectrumError::SegmentLength { nperseg });
        }
        if noverlap >= nperseg {
            return Err(SpectrumError::Overlap { noverlap, nperseg });
        }
        let window = hann_periodic(nperseg);
        let scale = 1.0 / (fs * window.iter().map(|w| w * w).sum::<f64>());
        // numpy's rfftfreq: k * (1 / (n * d)) with d = 1 / fs.
        let val = 1.0 / (nperseg as f64 * (1.0 / fs));
        let freqs = (0..nperseg / 2 + 1).map(|k| k as f64 * val).collect();
        let fft = FftPlanner::new().plan_fft_forward(nperseg);
        let scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
        Ok(Welch {
            fs,
            nperseg,
            noverlap,
            window,
            scale,
            freqs,
            fft,
            buf: vec![Complex::new(0.0, 0.0); nperseg],
            scratch,
        })
    }

    pub fn fs(&self) -> f64 {
        self.fs
    }
    pub fn nperseg(&self) -> usize {
        self.nperseg
    }
    pub fn noverlap(&self) -> usize {
        self.noverlap
    }
    /// Number of frequency bins: `nperseg / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.freqs.len()
    }
    /// The bins' frequencies in Hz, `k · fs / nperseg` (scipy's `f`).
    pub fn frequencies(&self) -> &[f64] {
        &self.freqs
    }
    /// How many segments a signal of `len` samples gives (0 if shorter than one segment).
    pub fn segments(&self, len: usize) -> usize {
        if len < self.nperseg {
            0
        } else {
            (len - self.noverlap) / (self.nperseg - self.noverlap)
        }
    }

    /// The PSD of `x` into `out` (`bins()` values, µV²/Hz). Returns the number of segments
    /// averaged. Panics if `out.len() != bins()`.
    pub fn psd<T: Sample>(&mut self, x: &[T], out: &mut [f64]) -> Result<usize, SpectrumError> {
        assert_eq!(out.len(), self.bins(), "PSD output must have nperseg / 2 + 1 = {} bins", self.bins());
        let nseg = self.segments(x.len());
        if nseg == 0 {
            return Err(SpectrumError::TooShort { len: x.len(), nperseg: self.nperseg });
        }
        let n = self.nperseg;
        let step = n - self.noverlap;
        out.fill(0.0);
        let mut s = 0;
        while s < nseg {
            let a = &x[s * step..s * step + n];
            let mean_a = a.iter().map(|v| v.to_f64()).sum::<f64>() / n as f64;
            if s + 1 < nseg {
                // Two real segments as one complex signal: X = FFT(a + i b).
                let b = &x[(s + 1) * step..(s + 1) * step + n];
                let mean_b = b.iter().map(|v| v.to_f64()).sum::<f64>() / n as f64;
                for (((c, w), va), vb) in self.buf.iter_mut().zip(&self.window).zip(a).zip(b) {
                    *c = Complex::new((va.to_f64() - mean_a) * w, (vb.to_f64() - mean_b) * w);
                }
                self.fft.process_with_scratch(&mut self.buf, &mut self.scratch);
                for (k, o) in out.iter_mut().enumerate() {
                    let xk = self.buf[k];
                    let xm = self.buf[(n - k) % n].conj();
                    // A_k = (X_k + conj X_{n-k}) / 2, B_k = (X_k - conj X_{n-k}) / 2i
                    *o += ((xk + xm).norm_sqr() + (xk - xm).norm_sqr()) * 0.25;
                }
                s += 2;
            } else {
                for ((c, w), va) in self.buf.iter_mut().zip(&self.window).zip(a) {
                    *c = Complex::new((va.to_f64() - mean_a) * w, 0.0);
                }
                self.fft.process_with_scratch(&mut self.buf, &mut self.scratch);
                for (o, c) in out.iter_mut().zip(&self.buf) {
                    *o += c.norm_sqr();
                }
                s += 1;
            }
        }
        let scale = self.scale / nseg as f64;
        let last = out.len() - 1;
        for (k, o) in out.iter_mut().enumerate() {
            let one_sided = k > 0 && (k < last || n % 2 == 1);
            *o *= if one_sided { 2.0 * scale } else { scale };
        }
        Ok(nseg)
    }

    /// [`band_power`] over this estimator's frequencies.
    pub fn band_power(&self, psd: &[f64], lo: f64, hi: f64) -> f64 {
        band_power(&self.freqs, psd, lo, hi)
    }
}

/// The periodic Hann window of scipy (`get_window("hann", n)`): `0.5 + 0.5 cos(-π + 2πk/n)`.
fn hann_periodic(n: usize) -> Vec<f64> {
    // general_cosine over linspace(-pi, pi, n + 1), last point dropped.
    let step = 2.0 * std::f64::consts::PI / n as f64;
    (0..n).map(|k| 0.5 + 0.5 * (k as f64 * step - std::f64::consts::PI).cos()).collect()
}

/// Power in `[lo, hi]` Hz (µV² for a PSD in µV²/Hz): the trapezoid rule over the bins whose
/// frequency `f` satisfies `lo <= f <= hi`, i.e. `numpy.trapezoid(psd[mask], freqs[mask])`.
/// Nothing is interpolated at the edges: the integral runs from the first bin at or above `lo` to
/// the last bin at or below `hi` (0 if fewer than two bins fall in the band).
pub fn band_power(freqs: &[f64], psd: &[f64], lo: f64, hi: f64) -> f64 {
    assert_eq!(freqs.len(), psd.len(), "band_power: {} frequencies for {} PSD values", freqs.len(), psd.len());
    let mut total = 0.0;
    let mut prev: Option<(f64, f64)> = None;
    for (&f, &p) in freqs.iter().zip(psd) {
        if f >= lo && f <= hi {
            if let Some((pf, pp)) = prev {
                total += (f - pf) * (p + pp) / 2.0;
            }
            prev = Some((f, p));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_power_lands_at_its_frequency() {
        let fs = 250.0;
        let amp = 10.0;
        let x: Vec<f64> =
            (0..1000).map(|i| amp * (2.0 * std::f64::consts::PI * 20.0 * i as f64 / fs).sin() + 3.0).collect();
        let mut w = Welch::new(fs, 250).unwrap();
        let mut psd = vec![0.0; w.bins()];
        assert_eq!(w.psd(&x, &mut psd).unwrap(), 7);
        let peak = psd.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(w.frequencies()[peak], 20.0);
        // The Hann window spreads the sine's A²/2 over ±1 bin; the band integral recovers it.
        let p = w.band_power(&psd, 17.0, 23.0);
        assert!((p - amp * amp / 2.0).abs() < 0.01 * amp * amp, "band power {p}");
        assert!(psd[0] < 1e-20, "the mean is removed: {}", psd[0]);
    }

    #[test]
    fn band_power_is_the_trapezoid_over_the_bins_in_the_band() {
        let f = [0.0, 1.0, 2.0, 3.0, 4.0];
        let p = [5.0, 1.0, 3.0, 2.0, 100.0];
        assert_eq!(band_power(&f, &p, 1.0, 3.0), (1.0 + 3.0) / 2.0 + (3.0 + 2.0) / 2.0);
        assert_eq!(band_power(&f, &p, 0.5, 2.5), 2.0);
        assert_eq!(band_power(&f, &p, 1.5, 2.5), 0.0);
    }

    #[test]
    fn errors() {
        assert_eq!(Welch::new(250.0, 1).unwrap_err(), SpectrumError::SegmentLength { nperseg: 1 });
        assert_eq!(Welch::with_overlap(250.0, 8, 8).unwrap_err(), SpectrumError::Overlap { noverlap: 8, nperseg: 8 });
        let mut w = Welch::new(250.0, 16).unwrap();
        let mut out = vec![0.0; 9];
        assert_eq!(w.psd(&[0.0f32; 15], &mut out).unwrap_err(), SpectrumError::TooShort { len: 15, nperseg: 16 });
        assert_eq!(w.segments(16), 1);
        assert_eq!(w.segments(24), 2);
        assert_eq!(w.segments(31), 2);
    }
}

//! Band power of the last second of a channel, by Welch's method (`bci2token_dsp`).

use bci2token_dsp::spectrum::Welch;

/// A frequency band, Hz.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub name: &'static str,
    pub lo: f64,
    pub hi: f64,
}

/// The classic EEG bands the monitor shows.
pub const BANDS: [Band; 5] = [
    Band { name: "delta", lo: 1.0, hi: 4.0 },
    Band { name: "theta", lo: 4.0, hi: 8.0 },
    Band { name: "alpha", lo: 8.0, hi: 13.0 },
    Band { name: "beta", lo: 13.0, hi: 30.0 },
    Band { name: "gamma", lo: 30.0, hi: 45.0 },
];

/// Band powers (µV² for a signal in µV) of one stretch of signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Powers {
    /// Per band of [`BANDS`].
    pub bands: [f64; 5],
    /// 1–45 Hz, for the relative powers.
    pub total: f64,
}

impl Powers {
    /// Each band's share of the 1–45 Hz power (0 when there is none).
    pub fn relative(&self) -> [f64; 5] {
        self.bands.map(|p| if self.total > 0.0 { p / self.total } else { 0.0 })
    }
}

/// Welch's estimate over the last second: segments of one second (1 Hz bins, so that the band
/// edges fall on bins), Hann window.
pub struct BandMeter {
    welch: Welch,
    psd: Vec<f64>,
    window: Vec<f32>,
}

impl BandMeter {
    /// For a sample rate of `fs` Hz; `None` when the rate cannot give a spectrum up to 45 Hz.
    pub fn new(fs: f64) -> Option<BandMeter> {
        if !(fs.is_finite() && fs >= 2.0 * BANDS[4].hi) {
            return None;
        }
        let nperseg = fs.round() as usize;
        let welch = Welch::new(fs, nperseg).ok()?;
        let psd = vec![0.0; welch.bins()];
        Some(BandMeter { welch, psd, window: Vec::with_capacity(nperseg) })
    }

    /// How many samples a computation uses (one second).
    pub fn samples(&self) -> usize {
        self.welch.nperseg()
    }

    /// The band powers of the last second of `values` (oldest first): `None` with less than a
    /// second, or when that second holds a sample that is not finite (a gap).
    pub fn compute(&mut self, values: impl Iterator<Item = f32>, len: usize) -> Option<Powers> {
        let n = self.samples();
        if len < n {
            return None;
        }
        self.window.clear();
        self.window.extend(values.skip(len - n));
        if self.window.len() != n || self.window.iter().any(|v| !v.is_finite()) {
            return None;
        }
        self.welch.psd(&self.window, &mut self.psd).ok()?;
        let bands = BANDS.map(|b| self.welch.band_power(&self.psd, b.lo, b.hi));
        let total = self.welch.band_power(&self.psd, BANDS[0].lo, BANDS[4].hi);
        Some(Powers { bands, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(fs: f64, hz: f64, amplitude: f64, seconds: f64) -> Vec<f32> {
        (0..(fs * seconds) as usize)
            .map(|i| (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / fs).sin()) as f32)
            .collect()
    }

    #[test]
    fn a_sine_puts_its_power_in_its_band() {
        // A sine of amplitude A has power A²/2: 20 µV → 200 µV².
        for (fs, hz, band) in [(250.0, 10.0, 2), (256.0, 6.0, 1), (160.0, 20.0, 3), (1000.0, 38.0, 4)] {
            let x = sine(fs, hz, 20.0, 3.0);
            let mut m = BandMeter::new(fs).unwrap();
            assert_eq!(m.samples(), fs as usize);
            let p = m.compute(x.iter().copied(), x.len()).unwrap();
            for (i, &v) in p.bands.iter().enumerate() {
                if i == band {
                    assert!((v - 200.0).abs() < 0.02 * 200.0, "{hz} Hz at {fs} Hz: {} = {v}", BANDS[i].name);
                } else {
                    assert!(v < 0.01 * 200.0, "{hz} Hz at {fs} Hz leaks into {}: {v}", BANDS[i].name);
                }
            }
            let rel = p.relative();
            assert!(rel[band] > 0.98, "{rel:?}");
        }
        // Delta has no bin clear of its edges (1 and 4 Hz): a 2 Hz sine is still mostly delta.
        let x = sine(250.0, 2.0, 20.0, 1.0);
        let p = BandMeter::new(250.0).unwrap().compute(x.iter().copied(), x.len()).unwrap();
        assert!(p.relative()[0] > 0.9 && (p.bands[0] - 200.0).abs() < 0.1 * 200.0, "{p:?}");
    }

    #[test]
    fn uses_only_the_last_second() {
        // 2 s of 10 Hz, then 1 s of 20 Hz: the last second is all beta.
        let fs = 250.0;
        let mut x = sine(fs, 10.0, 30.0, 2.0);
        x.extend(sine(fs, 20.0, 10.0, 1.0));
        let mut m = BandMeter::new(fs).unwrap();
        let p = m.compute(x.iter().copied(), x.len()).unwrap();
        assert!((p.bands[3] - 50.0).abs() < 1.0, "{p:?}");
        assert!(p.bands[2] < 0.5, "{p:?}");
    }

    #[test]
    fn too_little_or_broken_signal_gives_nothing() {
        let mut m = BandMeter::new(250.0).unwrap();
        let x = sine(250.0, 10.0, 1.0, 0.9);
        assert_eq!(m.compute(x.iter().copied(), x.len()), None);
        let mut x = sine(250.0, 10.0, 1.0, 1.0);
        x[100] = f32::NAN;
        assert_eq!(m.compute(x.iter().copied(), x.len()), None);
        // A flat channel: no power, no share.
        let zeros = vec![0.0f32; 250];
        let p = m.compute(zeros.iter().copied(), zeros.len()).unwrap();
        assert_eq!((p.total, p.relative()), (0.0, [0.0; 5]));
        // 45 Hz needs at least 90 Hz.
        assert!(BandMeter::new(64.0).is_none());
        assert!(BandMeter::new(f64::NAN).is_none());
    }
}

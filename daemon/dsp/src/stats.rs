//! Per-channel statistics over consecutive windows: mean, RMS about the mean, and the power of
//! the mains component (measured with the Goertzel algorithm at the line frequency).

/// Statistics of one channel over one window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    /// µV
    pub mean: f64,
    /// µV, about the mean
    pub rms: f64,
    /// µV²; a sine of amplitude A at the line frequency gives A²/2.
    pub line_power: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    /// First value of the window; sums are taken about it so that large DC offsets (tens of mV on
    /// an OpenBCI board) do not cancel the variance's digits away.
    shift: f64,
    sum: f64,
    sum_sq: f64,
    // Goertzel state
    s1: f64,
    s2: f64,
}

/// Accumulates channel-major blocks of any size into fixed windows.
#[derive(Debug, Clone)]
pub struct WindowStats {
    window_frames: usize,
    coeff: f64,
    filled: usize,
    acc: Vec<Acc>,
    out: Vec<Stat>,
}

impl WindowStats {
    /// `window_seconds` of data per result; the line component is measured at `line_frequency`.
    pub fn new(channels: usize, sample_rate: f64, window_seconds: f64, line_frequency: f64) -> Self {
        let window_frames = ((window_seconds * sample_rate).round() as usize).max(1);
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * line_frequency / sample_rate).cos();
        Self {
            window_frames,
            coeff,
            filled: 0,
            acc: vec![Acc::default(); channels],
            out: vec![Stat::default(); channels],
        }
    }

    pub fn window_frames(&self) -> usize {
        self.window_frames
    }

    /// Feeds `frames` frames of `data` (channel-major). Calls `on_window(frames_into_block, stats)`
    /// each time a window completes, where `frames_into_block` is how many frames of this block the
    /// window includes (so the caller can time-stamp it).
    pub fn push(&mut self, data: &[f32], frames: usize, mut on_window: impl FnMut(usize, &[Stat])) {
        debug_assert!(data.len() >= self.acc.len() * frames);
        let mut start = 0;
        while start < frames {
            let take = (self.window_frames - self.filled).min(frames - start);
            for (ch, acc) in self.acc.iter_mut().enumerate() {
                let samples = &data[ch * frames + start..ch * frames + start + take];
                if self.filled == 0 {
                    *acc = Acc { shift: f64::from(samples[0]), ..Acc::default() };
                }
                let (mut sum, mut sum_sq, mut s1, mut s2) = (acc.sum, acc.sum_sq, acc.s1, acc.s2);
                for &x in samples {
                    let x = f64::from(x);
                    let d = x - acc.shift;
                    sum += d;
                    sum_sq += d * d;
                    let s = x + self.coeff * s1 - s2;
                    s2 = s1;
                    s1 = s;
                }
                *acc = Acc { shift: acc.shift, sum, sum_sq, s1, s2 };
            }
            self.filled += take;
            start += take;
            if self.filled == self.window_frames {
                let n = self.window_frames as f64;
                for (acc, out) in self.acc.iter().zip(self.out.iter_mut()) {
                    let mean_d = acc.sum / n;
                    let var = (acc.sum_sq / n - mean_d * mean_d).max(0.0);
                    let mag_sq = (acc.s1 * acc.s1 + acc.s2 * acc.s2 - self.coeff * acc.s1 * acc.s2).max(0.0);
                    *out = Stat { mean: acc.shift + mean_d, rms: var.sqrt(), line_power: 2.0 * mag_sq / (n * n) };
                }
                self.filled = 0;
                on_window(start, &self.out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine_block(channels: usize, frames: usize, offset: usize, fs: f64, f: f64, amp: f64, dc: f64) -> Vec<f32> {
        let mut data = vec![0f32; channels * frames];
        for ch in 0..channels {
            for i in 0..frames {
                let t = (offset + i) as f64 / fs;
                data[ch * frames + i] =
                    (dc + (ch as f64 + 1.0) * amp * (2.0 * std::f64::consts::PI * f * t).sin()) as f32;
            }
        }
        data
    }

    #[test]
    fn sine_at_line_frequency_over_large_dc() {
        let fs = 250.0;
        let mut stats = WindowStats::new(2, fs, 1.0, 50.0);
        let mut results = Vec::new();
        // 2.5 s in blocks of 10 frames: two complete windows.
        for b in 0..62 {
            let block = sine_block(2, 10, b * 10, fs, 50.0, 10.0, 60_000.0);
            stats.push(&block, 10, |_, s| results.push(s.to_vec()));
        }
        assert_eq!(results.len(), 2);
        for window in &results {
            for (ch, s) in window.iter().enumerate() {
                let a = 10.0 * (ch as f64 + 1.0);
                assert!((s.mean - 60_000.0).abs() < 0.01, "mean {}", s.mean);
                assert!((s.rms - a / 2f64.sqrt()).abs() < 1e-3 * a, "rms {} for amplitude {a}", s.rms);
                assert!((s.line_power - a * a / 2.0).abs() < 1e-3 * a * a, "line power {}", s.line_power);
            }
        }
    }

    #[test]
    fn off_line_frequency_has_little_line_power_and_window_end_is_reported() {
        let fs = 160.0;
        let mut stats = WindowStats::new(1, fs, 1.0, 60.0);
        let block = sine_block(1, 200, 0, fs, 10.0, 20.0, 0.0);
        let mut seen = Vec::new();
        stats.push(&block, 200, |at, s| seen.push((at, s[0])));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, 160, "the window ends 160 frames into the block");
        assert!(seen[0].1.line_power < 1e-6, "line power {}", seen[0].1.line_power);
        assert!((seen[0].1.rms - 20.0 / 2f64.sqrt()).abs() < 1e-3);
    }
}

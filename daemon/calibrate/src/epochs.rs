//! Training windows cut out of a preprocessed recording by its trials: only windows lying wholly
//! inside a trial (as `evaluate` counts tokens by default), so that no window carries the tail of
//! the previous trial's stimulus.

use nalgebra::DMatrix;

use crate::trials::Trial;
use crate::FitError;

/// Where in a trial the windows are taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    /// Window length, seconds (the model's input window).
    pub seconds: f64,
    /// Seconds after the trial's start where the first window begins (the brain's response is
    /// late: about 0.1–0.2 s for SSVEP, 0.5 s for motor imagery).
    pub offset: f64,
    /// With `Some(hop)`, a window every `hop` seconds while it fits in the trial; else one.
    pub hop: Option<f64>,
}

/// Windows of one recording: each with its class and the index of its trial (folds keep a
/// trial's windows together).
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub windows: Vec<DMatrix<f64>>,
    pub classes: Vec<usize>,
    pub trial: Vec<usize>,
}

/// Cuts `spec`'s windows of `trials` out of `signal` (`channels × frames` at `rate` Hz, its first
/// frame at stream time `t0`). A trial with no whole window in the signal gives none.
pub fn cut(signal: &DMatrix<f64>, rate: f64, t0: f64, trials: &[Trial], spec: WindowSpec) -> Result<Windows, FitError> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(FitError::Shape(format!("a sample rate of {rate} Hz")));
    }
    let len = (spec.seconds * rate).round() as usize;
    if !(spec.seconds.is_finite() && len >= 2) {
        return Err(FitError::Shape(format!("a window of {} s at {rate} Hz", spec.seconds)));
    }
    if spec.hop.is_some_and(|h| !(h.is_finite() && h > 0.0)) || !spec.offset.is_finite() {
        return Err(FitError::Shape("a window hop must be a positive number of seconds".into()));
    }
    let mut out = Windows::default();
    for (index, trial) in trials.iter().enumerate() {
        let mut start = trial.start + spec.offset;
        while start + spec.seconds <= trial.end + 1e-9 {
            // The frame nearest the window's start.
            let first = ((start - t0) * rate).round();
            if first >= 0.0 && first as usize + len <= signal.ncols() {
                out.windows.push(signal.columns(first as usize, len).into_owned());
                out.classes.push(trial.class);
                out.trial.push(index);
            }
            match spec.hop {
                Some(hop) => start += hop,
                None => break,
            }
        }
    }
    Ok(out)
}

/// The trial that a window from `start` to `end` (stream seconds) lies wholly inside, at least
/// `offset` seconds after the trial's start (half a frame's tolerance: `frame` seconds).
pub fn trial_containing(trials: &[Trial], offset: f64, (start, end): (f64, f64), frame: f64) -> Option<usize> {
    let tolerance = frame / 2.0;
    trials.iter().position(|t| start + tolerance >= t.start + offset && end <= t.end + tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(class: usize, start: f64, end: f64) -> Trial {
        Trial { class, cue_onset: start, start, end }
    }

    #[test]
    fn windows_lie_wholly_in_their_trials_at_the_right_frames() {
        // One channel whose value is its frame index, 10 Hz, starting at stream time 1.0 s.
        let signal = DMatrix::from_fn(1, 100, |_, c| c as f64);
        let trials = [trial(0, 2.0, 4.0), trial(1, 5.0, 6.5), trial(0, 10.0, 12.0)];
        let one = cut(&signal, 10.0, 1.0, &trials, WindowSpec { seconds: 1.0, offset: 0.5, hop: None }).unwrap();
        assert_eq!(one.classes, [0, 1]);
        assert_eq!(one.trial, [0, 1]);
        // Trial 0 starts at 2.0 s + 0.5: frame (2.5 - 1.0) × 10 = 15.
        assert_eq!(one.windows[0][(0, 0)], 15.0);
        assert_eq!(one.windows[0].ncols(), 10);
        assert_eq!(one.windows[1][(0, 0)], 45.0);
        // The third trial's window (10.5 s: frames 95..105) runs past the signal's end: none.
        let hops = cut(&signal, 10.0, 1.0, &trials, WindowSpec { seconds: 1.0, offset: 0.0, hop: Some(0.5) }).unwrap();
        let firsts: Vec<f64> = hops.windows.iter().map(|w| w[(0, 0)]).collect();
        assert_eq!(firsts, [10.0, 15.0, 20.0, 40.0, 45.0, 90.0]);
        assert_eq!(hops.trial, [0, 0, 0, 1, 1, 2]);
        assert!(cut(&signal, 10.0, 1.0, &trials, WindowSpec { seconds: 0.1, offset: 0.0, hop: None }).is_err());
        assert!(cut(&signal, 10.0, 1.0, &trials, WindowSpec { seconds: 1.0, offset: 0.0, hop: Some(0.0) }).is_err());
    }
}

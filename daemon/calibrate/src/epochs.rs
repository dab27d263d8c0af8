//! Which trial a training window belongs to: only windows lying wholly inside a trial (as
//! `evaluate` counts tokens by default), so that no window carries the tail of the previous
//! trial's stimulus.

use crate::trials::Trial;

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
    fn a_window_belongs_to_the_trial_it_lies_in_after_the_offset() {
        let trials = [trial(0, 2.0, 4.0), trial(1, 5.0, 6.5)];
        let frame = 0.1;
        assert_eq!(trial_containing(&trials, 0.5, (2.5, 3.5), frame), Some(0));
        assert_eq!(trial_containing(&trials, 0.5, (2.4, 3.4), frame), None, "before the offset");
        assert_eq!(trial_containing(&trials, 0.0, (3.5, 4.5), frame), None, "past the trial's end");
        assert_eq!(trial_containing(&trials, 0.0, (5.0, 6.5), frame), Some(1));
        // Half a frame of rounding either way is the same frame.
        assert_eq!(trial_containing(&trials, 0.0, (4.96, 6.54), frame), Some(1));
        assert_eq!(trial_containing(&trials, 0.0, (9.0, 10.0), frame), None);
    }
}

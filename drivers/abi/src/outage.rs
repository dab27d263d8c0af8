//! A lost live device and the attempts to get it back, for the drivers that reconnect themselves
//! (openbci, brainflow): the first attempt after 0.25 s, then a doubling back-off up to 4 s;
//! each distinct reason an attempt failed is reported once, as a warning.

use std::time::{Duration, Instant};

use crate::plugin::ReadOutcome;
use crate::types::DriverEvent;

/// First and longest wait between attempts.
pub const FIRST: Duration = Duration::from_millis(250);
pub const MAX: Duration = Duration::from_secs(4);

#[derive(Debug)]
pub struct Outage {
    /// When the data stopped (the last data, not when the loss was noticed).
    since: Instant,
    /// Stream time of the first missing frame.
    pub t: f64,
    next_try: Instant,
    backoff: Duration,
    last_failure: String,
}

impl Outage {
    pub fn new(since: Instant, t: f64) -> Outage {
        Outage { since, t, next_try: Instant::now() + FIRST, backoff: FIRST, last_failure: String::new() }
    }

    /// Waits until the next attempt is due: true then; false after sleeping `timeout` when it is
    /// further away (the caller reports [`ReadOutcome::Timeout`]).
    pub fn wait(&self, timeout: Duration) -> bool {
        let wait = self.next_try.saturating_duration_since(Instant::now());
        if wait > timeout {
            std::thread::sleep(timeout);
            return false;
        }
        std::thread::sleep(wait);
        true
    }

    /// An attempt failed with `message`: the next waits twice as long (at most [`MAX`]); a reason
    /// not reported before becomes a warning, a repeated one a time-out.
    pub fn failed(&mut self, message: String) -> ReadOutcome {
        self.backoff = (self.backoff * 2).min(MAX);
        self.next_try = Instant::now() + self.backoff;
        if message == self.last_failure {
            return ReadOutcome::Timeout;
        }
        self.last_failure = message.clone();
        ReadOutcome::Event(DriverEvent::Warning { message: format!("reconnecting: {message}; trying again") })
    }

    /// Seconds since the data stopped.
    pub fn seconds(&self) -> f64 {
        self.since.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_reported_once_and_the_back_off_doubles_up_to_its_cap() {
        let mut o = Outage::new(Instant::now(), 1.5);
        let warn = o.failed("no reply".into());
        assert!(
            matches!(warn, ReadOutcome::Event(DriverEvent::Warning { ref message }) if message.contains("no reply"))
        );
        assert_eq!(o.failed("no reply".into()), ReadOutcome::Timeout);
        assert!(matches!(o.failed("busy".into()), ReadOutcome::Event(_)));
        for _ in 0..10 {
            o.failed("busy".into());
        }
        assert_eq!(o.backoff, MAX);
        assert!(!o.wait(Duration::from_millis(1)), "the next attempt is seconds away");
    }
}

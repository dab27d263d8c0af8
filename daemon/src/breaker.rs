//! A circuit breaker around one session's model. After `failures` failed windows in a row the
//! session stops handing windows to the model (its recording goes on) until a back-off has passed;
//! then one window tries the model (half-open): an answer closes the breaker, a failure opens it
//! again for twice the back-off (at most 32 times the first).
//!
//! The acquisition thread asks [`Breaker::admit`] before it submits a window; the publisher
//! thread reports each answer with [`Breaker::record`]. Transitions are published to the session's
//! events under the breaker's lock, so they reach subscribers in the order they happened.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bci2token_api::observe::BreakerState;

/// The longest back-off, as a multiple of the first.
const MAX_BACKOFF_FACTOR: u32 = 32;

/// A change of state, to be told to the session's subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: BreakerState,
    /// Failures in a row so far.
    pub failures: u32,
    /// Seconds until the model is tried again (when open).
    pub retry_in: Option<f64>,
    pub message: String,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    retry_at: Instant,
    backoff: Duration,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    first_backoff: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, backoff: Duration) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner { state: BreakerState::Closed, consecutive: 0, retry_at: Instant::now(), backoff }),
            threshold: threshold.max(1),
            first_backoff: backoff,
        }
    }

    /// The state and the failures in a row.
    pub fn state(&self) -> (BreakerState, u32) {
        let inner = self.inner.lock().unwrap();
        (inner.state, inner.consecutive)
    }

    /// Whether the next window may go to the model, and whether it is the half-open try (whose
    /// answer decides). `told` is called with a transition while the lock is held.
    pub fn admit(&self, now: Instant, told: &mut dyn FnMut(Transition)) -> Option<Try> {
        let mut inner = self.inner.lock().unwrap();
        match inner.state {
            BreakerState::Closed => Some(Try::Normal),
            BreakerState::Open if now >= inner.retry_at => {
                inner.state = BreakerState::HalfOpen;
                told(Transition {
                    state: BreakerState::HalfOpen,
                    failures: inner.consecutive,
                    retry_in: None,
                    message: "trying the model again with one window".into(),
                });
                Some(Try::HalfOpen)
            }
            // One try at a time: the rest wait for its answer.
            BreakerState::Open | BreakerState::HalfOpen => None,
        }
    }

    /// The model answered a window (`ok`) or failed it; `attempt` is what [`Breaker::admit`] said
    /// when the window was submitted.
    pub fn record(&self, attempt: Try, ok: bool, now: Instant, told: &mut dyn FnMut(Transition)) {
        let mut inner = self.inner.lock().unwrap();
        match (inner.state, attempt) {
            (BreakerState::Closed, _) if ok => inner.consecutive = 0,
            (BreakerState::Closed, _) => {
                inner.consecutive += 1;
                if inner.consecutive >= self.threshold {
                    inner.backoff = self.first_backoff;
                    self.open(&mut inner, now, told);
                }
            }
            (BreakerState::HalfOpen, Try::HalfOpen) if ok => {
                inner.state = BreakerState::Closed;
                let failures = std::mem::take(&mut inner.consecutive);
                inner.backoff = self.first_backoff;
                told(Transition {
                    state: BreakerState::Closed,
                    failures,
                    retry_in: None,
                    message: format!("the model answered again after {failures} failure(s) in a row"),
                });
            }
            (BreakerState::HalfOpen, Try::HalfOpen) => {
                inner.consecutive += 1;
                inner.backoff = (inner.backoff * 2).min(self.first_backoff * MAX_BACKOFF_FACTOR);
                self.open(&mut inner, now, told);
            }
            // Answers to windows submitted before the breaker opened: counted, deciding nothing.
            (_, _) => {
                if !ok {
                    inner.consecutive += 1;
                }
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, told: &mut dyn FnMut(Transition)) {
        inner.state = BreakerState::Open;
        inner.retry_at = now + inner.backoff;
        let retry_in = inner.backoff.as_secs_f64();
        told(Transition {
            state: BreakerState::Open,
            failures: inner.consecutive,
            retry_in: Some(retry_in),
            message: format!(
                "the model failed {} window(s) in a row: no window goes to it for {retry_in:.1} s (recording goes on)",
                inner.consecutive
            ),
        });
    }
}

/// What [`Breaker::admit`] let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    Normal,
    /// The one window whose answer closes or opens the breaker again.
    HalfOpen,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(log: &[Transition]) -> Vec<BreakerState> {
        log.iter().map(|t| t.state).collect()
    }

    #[test]
    fn opens_after_n_failures_tries_after_the_back_off_and_closes_on_an_answer() {
        let b = Breaker::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let log = std::cell::RefCell::new(Vec::new());
        let mut tell = |t: Transition| log.borrow_mut().push(t);
        for _ in 0..2 {
            assert_eq!(b.admit(t0, &mut tell), Some(Try::Normal));
            b.record(Try::Normal, false, t0, &mut tell);
        }
        // A success in between starts the count again.
        b.record(Try::Normal, true, t0, &mut tell);
        for _ in 0..3 {
            b.record(Try::Normal, false, t0, &mut tell);
        }
        assert_eq!(b.state(), (BreakerState::Open, 3));
        // Open: nothing goes through before the back-off; a late failure counts, decides nothing.
        assert_eq!(b.admit(t0 + Duration::from_millis(999), &mut tell), None);
        b.record(Try::Normal, false, t0, &mut tell);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1, &mut tell), Some(Try::HalfOpen));
        assert_eq!(b.admit(t1, &mut tell), None, "one try at a time");
        // The try fails: open again for twice as long.
        b.record(Try::HalfOpen, false, t1, &mut tell);
        assert_eq!(log.borrow().last().unwrap().retry_in, Some(2.0));
        assert_eq!(b.admit(t1 + Duration::from_millis(1999), &mut tell), None);
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(b.admit(t2, &mut tell), Some(Try::HalfOpen));
        // A late answer of an older window does not close it; the try's answer does.
        b.record(Try::Normal, true, t2, &mut tell);
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        b.record(Try::HalfOpen, true, t2, &mut tell);
        assert_eq!(b.state(), (BreakerState::Closed, 0));
        assert_eq!(
            states(&log.borrow()),
            [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
        assert_eq!(log.borrow()[0].failures, 3);
        assert_eq!(log.borrow()[4].failures, 5, "3, the late one, the failed try");
        // Closed again: the next opening waits the first back-off again.
        for _ in 0..3 {
            b.record(Try::Normal, false, t2, &mut tell);
        }
        assert_eq!(log.borrow().last().unwrap().retry_in, Some(1.0));
    }

    #[test]
    fn the_back_off_stops_growing() {
        let b = Breaker::new(1, Duration::from_secs(1));
        let mut now = Instant::now();
        let mut last = None;
        let mut tell = |t: Transition| last = t.retry_in.or(last);
        b.record(Try::Normal, false, now, &mut tell);
        for _ in 0..10 {
            now += Duration::from_secs(100);
            assert_eq!(b.admit(now, &mut tell), Some(Try::HalfOpen));
            b.record(Try::HalfOpen, false, now, &mut tell);
        }
        assert_eq!(last, Some(32.0));
    }
}

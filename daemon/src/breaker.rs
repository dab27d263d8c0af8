//! A circuit breaker around one session's model. After `failures` failed windows in a row the
//! session stops handing windows to the model (its recording goes on) until a back-off has passed;
//! then one window tries the model (half-open): an answer closes the breaker, a failure opens it
//! again for twice the back-off (at most 32 times the first).
//!
//! The acquisition thread asks [`Breaker::admit`] before it submits a window; the publisher
//! thread reports each answer with [`Breaker::record`]. Both return the transition they made,
//! if any, to be published after the breaker's lock is released (publishing may wait for a
//! lossless subscriber; nobody reading the breaker's state must wait for that).

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

/// What [`Breaker::admit`] let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    Normal,
    /// The one window whose answer closes or opens the breaker again.
    HalfOpen,
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

    /// Whether the next window may go to the model (and whether it is the half-open try, whose
    /// answer decides), with the transition that made, if any.
    pub fn admit(&self, now: Instant) -> (Option<Try>, Option<Transition>) {
        let mut inner = self.inner.lock().unwrap();
        match inner.state {
            BreakerState::Closed => (Some(Try::Normal), None),
            BreakerState::Open if now >= inner.retry_at => {
                inner.state = BreakerState::HalfOpen;
                let told = Transition {
                    state: BreakerState::HalfOpen,
                    failures: inner.consecutive,
                    retry_in: None,
                    message: "trying the model again with one window".into(),
                };
                (Some(Try::HalfOpen), Some(told))
            }
            // One try at a time: the rest wait for its answer.
            BreakerState::Open | BreakerState::HalfOpen => (None, None),
        }
    }

    /// The half-open try could not be handed to the model (its queue was full): open again, to
    /// try after another back-off, rather than wait for an answer that will not come.
    pub fn try_not_sent(&self, now: Instant) -> Option<Transition> {
        let mut inner = self.inner.lock().unwrap();
        if inner.state != BreakerState::HalfOpen {
            return None;
        }
        Some(self.open(&mut inner, now, "the try could not be queued (the session's decode queue is full)"))
    }

    /// The model answered a window (`ok`) or failed it; `attempt` is what [`Breaker::admit`] said
    /// when the window was submitted.
    pub fn record(&self, attempt: Try, ok: bool, now: Instant) -> Option<Transition> {
        let mut inner = self.inner.lock().unwrap();
        match (inner.state, attempt) {
            (BreakerState::Closed, _) if ok => {
                inner.consecutive = 0;
                None
            }
            (BreakerState::Closed, _) => {
                inner.consecutive = inner.consecutive.saturating_add(1);
                if inner.consecutive < self.threshold {
                    return None;
                }
                inner.backoff = self.first_backoff;
                let why = format!("the model failed {} window(s) in a row", inner.consecutive);
                Some(self.open(&mut inner, now, &why))
            }
            (BreakerState::HalfOpen, Try::HalfOpen) if ok => {
                inner.state = BreakerState::Closed;
                let failures = std::mem::take(&mut inner.consecutive);
                inner.backoff = self.first_backoff;
                Some(Transition {
                    state: BreakerState::Closed,
                    failures,
                    retry_in: None,
                    message: format!("the model answered again after {failures} failure(s) in a row"),
                })
            }
            (BreakerState::HalfOpen, Try::HalfOpen) => {
                inner.consecutive = inner.consecutive.saturating_add(1);
                inner.backoff = (inner.backoff * 2).min(self.first_backoff * MAX_BACKOFF_FACTOR);
                Some(self.open(&mut inner, now, "the model failed the try"))
            }
            // Answers to windows submitted before the breaker opened: counted, deciding nothing.
            (_, _) => {
                if !ok {
                    inner.consecutive = inner.consecutive.saturating_add(1);
                }
                None
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, why: &str) -> Transition {
        inner.state = BreakerState::Open;
        inner.retry_at = now + inner.backoff;
        let retry_in = inner.backoff.as_secs_f64();
        Transition {
            state: BreakerState::Open,
            failures: inner.consecutive,
            retry_in: Some(retry_in),
            message: format!("{why}: no window goes to it for {retry_in:.1} s (recording goes on)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(b: &Breaker, log: &mut Vec<Transition>, attempt: Try, ok: bool, now: Instant) {
        log.extend(b.record(attempt, ok, now));
    }

    #[test]
    fn opens_after_n_failures_tries_after_the_back_off_and_closes_on_an_answer() {
        let b = Breaker::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let mut log: Vec<Transition> = Vec::new();
        for _ in 0..2 {
            rec(&b, &mut log, Try::Normal, false, t0);
        }
        // A success in between starts the count again.
        rec(&b, &mut log, Try::Normal, true, t0);
        for _ in 0..3 {
            rec(&b, &mut log, Try::Normal, false, t0);
        }
        assert_eq!(b.state(), (BreakerState::Open, 3));
        // Open: nothing goes through before the back-off; a late failure counts, decides nothing.
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), (None, None));
        rec(&b, &mut log, Try::Normal, false, t0);
        let t1 = t0 + Duration::from_secs(1);
        let (attempt, told) = b.admit(t1);
        assert_eq!(attempt, Some(Try::HalfOpen));
        log.extend(told);
        assert_eq!(b.admit(t1), (None, None), "one try at a time");
        // The try fails: open again for twice as long.
        rec(&b, &mut log, Try::HalfOpen, false, t1);
        assert_eq!(log.last().unwrap().retry_in, Some(2.0));
        assert_eq!(b.admit(t1 + Duration::from_millis(1999)).0, None);
        let t2 = t1 + Duration::from_secs(2);
        let (attempt, told) = b.admit(t2);
        assert_eq!(attempt, Some(Try::HalfOpen));
        log.extend(told);
        // A late answer of an older window does not close it; the try's answer does.
        rec(&b, &mut log, Try::Normal, true, t2);
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        rec(&b, &mut log, Try::HalfOpen, true, t2);
        assert_eq!(b.state(), (BreakerState::Closed, 0));
        let states: Vec<BreakerState> = log.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
        assert_eq!(log[0].failures, 3);
        assert_eq!(log[4].failures, 5, "3, the late one, the failed try");
        // Closed again: the next opening waits the first back-off again.
        for _ in 0..3 {
            rec(&b, &mut log, Try::Normal, false, t2);
        }
        assert_eq!(log.last().unwrap().retry_in, Some(1.0));
    }

    #[test]
    fn a_try_that_could_not_be_queued_opens_it_again_instead_of_waiting_forever() {
        let b = Breaker::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        b.record(Try::Normal, false, t0);
        assert_eq!(b.try_not_sent(t0), None, "only a half-open try");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1).0, Some(Try::HalfOpen));
        let told = b.try_not_sent(t1).unwrap();
        assert_eq!((told.state, told.retry_in), (BreakerState::Open, Some(1.0)));
        assert_eq!(b.admit(t1 + Duration::from_secs(1)).0, Some(Try::HalfOpen), "tried again");
    }

    #[test]
    fn the_back_off_stops_growing() {
        let b = Breaker::new(1, Duration::from_secs(1));
        let mut now = Instant::now();
        let mut last = b.record(Try::Normal, false, now).and_then(|t| t.retry_in);
        for _ in 0..10 {
            now += Duration::from_secs(100);
            assert_eq!(b.admit(now).0, Some(Try::HalfOpen));
            last = b.record(Try::HalfOpen, false, now).and_then(|t| t.retry_in).or(last);
        }
        assert_eq!(last, Some(32.0));
    }
}

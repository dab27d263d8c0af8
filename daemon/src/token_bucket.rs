//! A token bucket: `burst` tokens at most, refilled continuously at `rate` per second. The request
//! limit of each uid (control socket) and the audit log's allowance of refusals use it.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: f64) -> Self {
        TokenBucket { tokens: burst, at: Instant::now() }
    }

    /// Takes one token; `Err(seconds)` until the next one is there.
    pub fn take(&mut self, rate: f64, burst: f64) -> Result<(), f64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::full(2.0);
        assert!(b.take(1.0, 2.0).is_ok());
        assert!(b.take(1.0, 2.0).is_ok());
        let wait = b.take(1.0, 2.0).unwrap_err();
        assert!(wait > 0.9 && wait <= 1.0, "{wait}");
        std::thread::sleep(std::time::Duration::from_millis(60));
        let wait = b.take(20.0, 2.0);
        assert!(wait.is_ok(), "60 ms at 20/s refill more than one token: {wait:?}");
    }
}

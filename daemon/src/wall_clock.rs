//! Steps of the wall clock, seen against the boot-time clock (which counts suspend too but
//! never steps). Deletion by age (retention) reads the wall clock: a clock set a year ahead, by
//! hand or by a bad time source, would delete a year of recordings at once. A step is therefore
//! held against: after one, deletions by age wait a day, time for a mistaken clock to be put
//! right, and the log says so.

use std::sync::Mutex;
use std::time::Duration;

/// A difference between the two clocks this large (plus [`MAX_DRIFT`] of the time between two
/// looks) is a step, not an NTP slew.
const STEP_SECONDS: f64 = 300.0;
/// NTP slews at most 500 ppm; twice that is still a slew.
const MAX_DRIFT: f64 = 0.001;
/// How long deletions by age wait after a step.
pub const HOLD: Duration = Duration::from_secs(24 * 3600);

/// Seconds since the Unix epoch, by the wall clock.
pub fn wall_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn boot_now() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

struct Look {
    wall: f64,
    boot: f64,
    /// Boot-time clock reading until which deletions wait.
    hold_until: Option<f64>,
}

/// Compares the wall clock with the boot-time clock at each look.
pub struct StepWatch {
    last: Mutex<Look>,
}

impl StepWatch {
    pub fn new() -> StepWatch {
        StepWatch { last: Mutex::new(Look { wall: wall_now(), boot: boot_now(), hold_until: None }) }
    }

    /// The wall clock's time now when it can be trusted for deleting by age; otherwise why not
    /// (it stepped since the last look, or less than [`HOLD`] ago).
    pub fn trusted_now(&self) -> Result<f64, String> {
        self.look(wall_now(), boot_now())
    }

    fn look(&self, wall: f64, boot: f64) -> Result<f64, String> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = boot - last.boot;
        let step = (wall - last.wall) - elapsed;
        *last = Look { wall, boot, hold_until: last.hold_until };
        if step.abs() > STEP_SECONDS + MAX_DRIFT * elapsed.abs() {
            last.hold_until = Some(boot + HOLD.as_secs_f64());
            let message = format!(
                "the wall clock stepped {} by {:.0} s; deletions by age wait {} h in case the clock is wrong",
                if step > 0.0 { "forward" } else { "back" },
                step.abs(),
                HOLD.as_secs() / 3600
            );
            log::warn!("{message}");
            return Err(message);
        }
        match last.hold_until {
            Some(until) if boot < until => Err(format!(
                "the wall clock stepped less than {} h ago; deletions by age resume in {:.1} h",
                HOLD.as_secs() / 3600,
                (until - boot) / 3600.0
            )),
            _ => {
                last.hold_until = None;
                Ok(wall)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(wall: f64, boot: f64) -> StepWatch {
        StepWatch { last: Mutex::new(Look { wall, boot, hold_until: None }) }
    }

    #[test]
    fn clocks_that_agree_are_trusted_and_a_slew_is_not_a_step() {
        let w = watch(1_000_000.0, 50.0);
        assert_eq!(w.look(1_003_600.0, 3650.0), Ok(1_003_600.0));
        // A year of 500 ppm slew: 4.4 h apart, still no step.
        let year = 365.0 * 86_400.0;
        assert!(w.look(1_003_600.0 + year + 0.0005 * year, 3650.0 + year).is_ok());
    }

    #[test]
    fn a_step_either_way_holds_deletions_for_a_day_then_trusts_the_clock_again() {
        for step in [2.0 * 86_400.0, -3600.0] {
            let w = watch(1_000_000.0, 50.0);
            let held = w.look(1_000_060.0 + step, 110.0).unwrap_err();
            assert!(held.contains("stepped"), "{held}");
            // An hour later, the clocks agree again, but the day is not over.
            let still = w.look(1_003_660.0 + step, 3710.0).unwrap_err();
            assert!(still.contains("resume in 23.0 h"), "{still}");
            let after = 110.0 + HOLD.as_secs_f64() + 1.0;
            assert_eq!(w.look(1_000_060.0 + step + (after - 110.0), after), Ok(1_000_060.0 + step + (after - 110.0)));
        }
    }
}

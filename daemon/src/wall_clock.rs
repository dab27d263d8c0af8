//! Steps of the wall clock, seen against the boot-time clock (which counts suspend too but
//! never steps). Deletion by age (retention) reads the wall clock: a clock set a year ahead, by
//! hand or by a bad time source, would delete a year of recordings at once. A step is therefore
//! held against: after one, deletions by age wait a day, time for a mistaken clock to be put
//! right, and the log says so. The hold is kept in a file beside the store, so that a restart
//! within the day does not end it (after a reboot, whose boot-time clock starts again, a held
//! step is held a whole day from the start).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// A difference between the two clocks this large (plus [`MAX_DRIFT`] of the time between two
/// looks) is a step, not an NTP slew.
const STEP_SECONDS: f64 = 300.0;
/// ntpd slews at most 500 ppm; twice that is still a slew (chrony catching up a large offset
/// faster is a change of the clock like a step).
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
    /// Where a hold outlives the process: "BOOT_ID UNTIL" (UNTIL on the boot-time clock).
    hold_file: PathBuf,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// A hold an earlier run left in `path`: until its end in the same boot; a whole hold from `boot`
/// after a reboot or when the file cannot be read as one.
fn read_hold(path: &std::path::Path, boot: f64) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let same_boot = text
        .trim()
        .split_once(' ')
        .filter(|(id, _)| *id == boot_id())
        .and_then(|(_, until)| until.parse::<f64>().ok())
        .filter(|until| until.is_finite());
    Some(same_boot.unwrap_or(boot + HOLD.as_secs_f64()))
}

impl StepWatch {
    /// `hold_file`: where a hold is kept across restarts (beside the store).
    pub fn new(hold_file: PathBuf) -> StepWatch {
        let boot = boot_now();
        let hold_until = read_hold(&hold_file, boot);
        if let Some(until) = hold_until.filter(|until| *until > boot) {
            log::warn!(
                "retention: the wall clock stepped before this start; deletions by age resume in {:.1} h",
                (until - boot) / 3600.0
            );
        }
        StepWatch { last: Mutex::new(Look { wall: wall_now(), boot, hold_until }), hold_file }
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
            let until = boot + HOLD.as_secs_f64();
            last.hold_until = Some(until);
            if let Err(e) = std::fs::write(&self.hold_file, format!("{} {until}\n", boot_id())) {
                log::warn!("retention: {}: cannot keep the hold across restarts: {e}", self.hold_file.display());
            }
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
                if last.hold_until.take().is_some() {
                    let _ = std::fs::remove_file(&self.hold_file);
                }
                Ok(wall)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(wall: f64, boot: f64) -> (StepWatch, tempfile_dir::Dir) {
        let dir = tempfile_dir::Dir::new();
        let w = StepWatch { last: Mutex::new(Look { wall, boot, hold_until: None }), hold_file: dir.0.join("hold") };
        (w, dir)
    }

    /// A directory removed on drop (the daemon has no tempfile crate).
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("b2t-wall-clock-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn clocks_that_agree_are_trusted_and_a_slew_is_not_a_step() {
        let (w, _dir) = watch(1_000_000.0, 50.0);
        assert_eq!(w.look(1_003_600.0, 3650.0), Ok(1_003_600.0));
        // A year of 500 ppm slew: 4.4 h apart, still no step.
        let year = 365.0 * 86_400.0;
        assert!(w.look(1_003_600.0 + year + 0.0005 * year, 3650.0 + year).is_ok());
    }

    #[test]
    fn a_step_either_way_holds_deletions_for_a_day_then_trusts_the_clock_again() {
        for step in [2.0 * 86_400.0, -3600.0] {
            let (w, _dir) = watch(1_000_000.0, 50.0);
            let held = w.look(1_000_060.0 + step, 110.0).unwrap_err();
            assert!(held.contains("stepped"), "{held}");
            assert!(w.hold_file.exists(), "the hold is kept across restarts");
            // An hour later, the clocks agree again, but the day is not over.
            let still = w.look(1_003_660.0 + step, 3710.0).unwrap_err();
            assert!(still.contains("resume in 23.0 h"), "{still}");
            let after = 110.0 + HOLD.as_secs_f64() + 1.0;
            assert_eq!(w.look(1_000_060.0 + step + (after - 110.0), after), Ok(1_000_060.0 + step + (after - 110.0)));
            assert!(!w.hold_file.exists(), "an ended hold is forgotten");
        }
    }

    #[test]
    fn a_hold_outlives_a_restart_and_a_reboot_holds_a_whole_day() {
        let dir = tempfile_dir::Dir::new();
        let file = dir.0.join("hold");
        // Same boot: held until the written end.
        let boot = boot_now();
        std::fs::write(&file, format!("{} {}\n", boot_id(), boot + 7200.0)).unwrap();
        let w = StepWatch::new(file.clone());
        let held = w.trusted_now().unwrap_err();
        assert!(held.contains("resume in 2.0 h") || held.contains("resume in 1.9 h"), "{held}");
        // Another boot (or a damaged file): a whole day from now.
        for text in ["00000000-0000-0000-0000-000000000000 5.0\n", "garbage"] {
            std::fs::write(&file, text).unwrap();
            let held = StepWatch::new(file.clone()).trusted_now().unwrap_err();
            assert!(held.contains("resume in 24.0 h") || held.contains("resume in 23.9 h"), "{held}");
        }
        // No file: trusted.
        std::fs::remove_file(&file).unwrap();
        assert!(StepWatch::new(file).trusted_now().is_ok());
    }
}

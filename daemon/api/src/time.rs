//! The protocol's times are Unix seconds; this turns them into UTC calendar dates for display and
//! for file headers (without a date library).

/// A UTC date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// The UTC calendar date of whole Unix seconds (Howard Hinnant's civil_from_days).
pub fn civil(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let tod = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil { year, month, day, hour: (tod / 3600) as u32, minute: (tod % 3600 / 60) as u32, second: (tod % 60) as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil(0), Civil { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
        assert_eq!(civil(951_782_400), Civil { year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0 });
        assert_eq!(civil(1_796_037_396), Civil { year: 2026, month: 11, day: 30, hour: 11, minute: 16, second: 36 });
    }
}

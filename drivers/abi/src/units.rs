//! Channel units as LSL streams and XDF files write them (`<unit>` in a stream description: XDF's
//! convention is `microvolts`, amplifier apps write `uV`, `µV`, `mV`, `V`, ...) and the factor to
//! µV, for the drivers that read them (lsl, and replay's XDF reader).

/// The factor from `unit` to µV and the unit the session reports: voltages become `uV`; an empty
/// unit is taken as µV (the LSL/XDF convention for EEG); anything else is passed through as is.
pub fn to_microvolts(unit: &str) -> (f64, String) {
    let u = unit.trim();
    let factor = match u.to_ascii_lowercase().as_str() {
        "" | "uv" | "microvolts" | "microvolt" => Some(1.0),
        "mv" | "millivolts" | "millivolt" => Some(1e3),
        "v" | "volts" | "volt" => Some(1e6),
        "nv" | "nanovolts" | "nanovolt" => Some(1e-3),
        _ if u == "µV" || u == "μV" => Some(1.0),
        _ => None,
    };
    match factor {
        Some(f) => (f, "uV".to_string()),
        None => (1.0, u.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voltages_become_microvolts_and_others_pass() {
        assert_eq!(to_microvolts("microvolts"), (1.0, "uV".into()));
        assert_eq!(to_microvolts("µV"), (1.0, "uV".into()));
        assert_eq!(to_microvolts("μV"), (1.0, "uV".into()));
        assert_eq!(to_microvolts(""), (1.0, "uV".into()));
        assert_eq!(to_microvolts("mV"), (1e3, "uV".into()));
        assert_eq!(to_microvolts("volts"), (1e6, "uV".into()));
        assert_eq!(to_microvolts("nV"), (1e-3, "uV".into()));
        assert_eq!(to_microvolts("degC"), (1.0, "degC".into()));
    }
}

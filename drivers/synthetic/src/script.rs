//! The script of intents of the simulated user.
//!
//! A script is a list of [`Intent`]s played in order: the simulated user
//! either rests (eyes on nothing in particular, strong alpha rhythm) or looks
//! at a target flickering at some frequency (an SSVEP appears at that
//! frequency and its second harmonic).
//!
//! Two written forms are accepted:
//!
//! * compact: `"13Hz:3,rest:2,17Hz:3"` — comma-separated `LABEL:SECONDS`
//!   items where `LABEL` is `rest` or a frequency like `13Hz` / `8.57Hz`
//!   (case-insensitive, a space before `Hz` allowed) and `SECONDS` is a
//!   positive number (an `s` suffix is allowed: `2.5s`). An empty string is
//!   an empty script.
//! * JSON: an array of objects with `seconds` (required), `label` and
//!   `frequency`:
//!   `[{"label":"13Hz","seconds":3}, {"label":"rest","seconds":2},
//!     {"frequency":17.0,"seconds":3,"label":"B"}]`.
//!   `label` may be left out when `frequency` is given (it becomes `"17Hz"`);
//!   `frequency` may be left out when the label is `rest` or `<number>Hz`.
//!   Numbers may also be written as strings (`"seconds":"3"`).
//!
//! [`parse_script`] accepts either (a string starting with `[` is read as
//! JSON), [`parse_script_value`] takes an already parsed JSON value.
//!
//! Limits that depend on the sample rate (frequency below Nyquist, each item
//! at least one sample long) are checked by the config validation in
//! [`crate::generator::SyntheticConfig::validate`].

use std::fmt;

use serde_json::Value;

/// The label of a resting intent.
pub const REST_LABEL: &str = "rest";

/// One step of the script: what the simulated user does, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// `"rest"`, `"13Hz"`, or any label given in the JSON form (e.g. a
    /// speller letter `"B"`).
    pub label: String,
    /// The flicker frequency of the attended target in Hz; `None` for rest.
    pub frequency: Option<f64>,
    /// How long the intent lasts, in seconds (> 0, finite).
    pub seconds: f64,
}

impl Intent {
    /// A resting intent of `seconds`.
    pub fn rest(seconds: f64) -> Self {
        Self { label: REST_LABEL.to_string(), frequency: None, seconds }
    }

    /// Attending a target flickering at `frequency` Hz, labelled like `13Hz`.
    pub fn target(frequency: f64, seconds: f64) -> Self {
        Self { label: frequency_label(frequency), frequency: Some(frequency), seconds }
    }

    /// True for a resting intent (no target frequency).
    pub fn is_rest(&self) -> bool {
        self.frequency.is_none()
    }
}

impl fmt::Display for Intent {
    /// The compact form when it says everything (`13Hz:3`, `rest:2`), else
    /// `LABEL (FREQHz):SECONDS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frequency {
            Some(freq) if self.label != frequency_label(freq) => {
                write!(f, "{} ({}):{}", self.label, frequency_label(freq), self.seconds)
            }
            _ => write!(f, "{}:{}", self.label, self.seconds),
        }
    }
}

/// The label given to a target without an explicit label: `13Hz`, `8.57Hz`.
pub fn frequency_label(frequency: f64) -> String {
    format!("{frequency}Hz")
}

/// A script that cannot be read. The messages name the item (1-based), its
/// text, what is wrong and how to write it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptError {
    /// One item is wrong.
    #[error("script item {index} ({text:?}): {problem}")]
    Item {
        /// 1-based position of the item in the script.
        index: usize,
        /// The item as written (compact form) or as JSON.
        text: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The script as a whole is not readable (bad JSON, not an array...).
    #[error("script {text:?}: {problem}")]
    Whole {
        /// The script (shortened when long).
        text: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

const COMPACT_HINT: &str = "write LABEL:SECONDS like 13Hz:3 or rest:2";
const JSON_HINT: &str = r#"write items like {"label":"13Hz","seconds":3} or {"frequency":17,"seconds":3,"label":"B"}"#;

/// Parses a script in the compact form or, when it starts with `[`, the
/// JSON form. Surrounding whitespace is ignored; an empty string is an empty
/// script.
pub fn parse_script(text: &str) -> Result<Vec<Intent>, ScriptError> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(trimmed).map_err(|e| ScriptError::Whole {
            text: shorten(trimmed),
            problem: format!("not valid JSON ({e}); {JSON_HINT}"),
        })?;
        return parse_script_value(&value);
    }
    parse_compact(trimmed)
}

/// Parses a script given as a JSON value: a string (either form) or an
/// array of item objects.
pub fn parse_script_value(value: &Value) -> Result<Vec<Intent>, ScriptError> {
    match value {
        Value::String(s) => parse_script(s),
        Value::Array(items) => items.iter().enumerate().map(|(i, item)| parse_json_item(i + 1, item)).collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(ScriptError::Whole {
            text: shorten(&other.to_string()),
            problem: format!("a script is a string like \"13Hz:3,rest:2\" or a JSON array of items; {JSON_HINT}"),
        }),
    }
}

/// Parses the compact form `13Hz:3,rest:2,17Hz:3`.
pub fn parse_compact(text: &str) -> Result<Vec<Intent>, ScriptError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').enumerate().map(|(i, item)| parse_compact_item(i + 1, item.trim())).collect()
}

fn parse_compact_item(index: usize, item: &str) -> Result<Intent, ScriptError> {
    let err = |problem: String| ScriptError::Item { index, text: item.to_string(), problem };
    if item.is_empty() {
        return Err(err(format!("the item is empty (stray comma?); {COMPACT_HINT}")));
    }
    let Some((label, seconds)) = item.rsplit_once(':') else {
        return Err(err(format!("no \":\" between label and seconds; {COMPACT_HINT}")));
    };
    let label = label.trim();
    let seconds_text = seconds.trim();
    let frequency = label_frequency(label).map_err(|p| err(format!("{p}; {COMPACT_HINT}")))?;
    let seconds_number = seconds_text.strip_suffix(['s', 'S']).unwrap_or(seconds_text).trim();
    let seconds = parse_number(seconds_number)
        .ok_or_else(|| err(format!("seconds {seconds_text:?} is not a number; {COMPACT_HINT}")))?;
    check_seconds(seconds).map_err(|p| err(format!("{p}; {COMPACT_HINT}")))?;
    Ok(match frequency {
        None => Intent::rest(seconds),
        Some(f) => Intent::target(f, seconds),
    })
}

fn parse_json_item(index: usize, item: &Value) -> Result<Intent, ScriptError> {
    let err = |problem: String| ScriptError::Item { index, text: shorten(&item.to_string()), problem };
    let Value::Object(map) = item else {
        return Err(err(format!("an item must be a JSON object; {JSON_HINT}")));
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "label" | "frequency" | "seconds") {
            return Err(err(format!("unknown key {key:?}; an item has the keys label, frequency and seconds")));
        }
    }
    let seconds = match map.get("seconds") {
        None | Some(Value::Null) => {
            return Err(err(format!("\"seconds\" is missing; {JSON_HINT}")));
        }
        Some(v) => json_number(v).ok_or_else(|| err(format!("seconds {v} is not a number; {JSON_HINT}")))?,
    };
    check_seconds(seconds).map_err(&err)?;
    let frequency = match map.get("frequency") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let f = json_number(v).ok_or_else(|| err(format!("frequency {v} is not a number of Hz; {JSON_HINT}")))?;
            check_frequency(f).map_err(&err)?;
            Some(f)
        }
    };
    let label = match map.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(v) => {
            return Err(err(format!(
                "label {v} is not a non-empty string; use \"rest\", \"13Hz\" or a name like \"B\""
            )));
        }
    };
    let label_freq = match &label {
        // A free label ("B") is fine when a frequency is given.
        Some(l) if frequency.is_some() => match label_frequency(l) {
            Ok(lf) => lf,
            Err(_) => frequency,
        },
        Some(l) => label_frequency(l).map_err(|p| err(format!("{p}, or give a \"frequency\" with the label")))?,
        None => None,
    };
    match (label, frequency, label_freq) {
        (None, None, _) => Err(err(format!("give a \"label\" (\"rest\" or \"13Hz\") or a \"frequency\"; {JSON_HINT}"))),
        (None, Some(f), _) => Ok(Intent::target(f, seconds)),
        (Some(l), None, lf) => {
            Ok(Intent { label: if lf.is_none() { REST_LABEL.to_string() } else { l }, frequency: lf, seconds })
        }
        (Some(l), Some(f), lf) => {
            if l.eq_ignore_ascii_case(REST_LABEL) {
                return Err(err(format!("label \"rest\" cannot have a frequency ({f} Hz); drop one of them")));
            }
            if let Some(lf) = lf {
                if lf != f {
                    return Err(err(format!(
                        "label {l:?} says {lf} Hz but frequency is {f} Hz; make them agree or use a name like \"B\" as label"
                    )));
                }
            }
            Ok(Intent { label: l, frequency: Some(f), seconds })
        }
    }
}

/// Reads a label: `Ok(None)` for rest, `Ok(Some(f))` for `<f>Hz`.
fn label_frequency(label: &str) -> Result<Option<f64>, String> {
    if label.eq_ignore_ascii_case(REST_LABEL) {
        return Ok(None);
    }
    let lower = label.to_ascii_lowercase();
    let Some(number) = lower.strip_suffix("hz") else {
        return Err(format!("label {label:?} is neither \"rest\" nor a frequency like \"13Hz\""));
    };
    let number = number.trim();
    let f = parse_number(number).ok_or_else(|| format!("frequency {number:?} in label {label:?} is not a number"))?;
    check_frequency(f)?;
    Ok(Some(f))
}

fn check_seconds(seconds: f64) -> Result<(), String> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("seconds {seconds} must be a finite number greater than 0"));
    }
    Ok(())
}

fn check_frequency(f: f64) -> Result<(), String> {
    if !f.is_finite() || f <= 0.0 {
        return Err(format!("frequency {f} Hz must be a finite number greater than 0"));
    }
    Ok(())
}

/// A decimal number as typed by a user: `3`, `2.5`, `1e1`. Rejects the
/// words Rust's parser also accepts (`inf`, `nan`), which are never meant.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() || t.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') {
        return None;
    }
    t.parse::<f64>().ok()
}

/// A JSON number, or a string holding one.
pub(crate) fn json_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_form() {
        let s = parse_script("13Hz:3,rest:2,17Hz:3").unwrap();
        assert_eq!(s, vec![Intent::target(13.0, 3.0), Intent::rest(2.0), Intent::target(17.0, 3.0)]);
        assert_eq!(s[0].label, "13Hz");
        assert_eq!(s[0].frequency, Some(13.0));
        assert!(s[1].is_rest());
        assert_eq!(s[1].frequency, None);
    }

    #[test]
    fn compact_form_variants() {
        let s = parse_script(" 8.57hz : 2.5s , REST:1 , 12 Hz:0.5 ").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].frequency, Some(8.57));
        assert_eq!(s[0].label, "8.57Hz");
        assert_eq!(s[0].seconds, 2.5);
        assert!(s[1].is_rest());
        assert_eq!(s[1].label, "rest");
        assert_eq!(s[2].frequency, Some(12.0));
        assert_eq!(s[2].seconds, 0.5);
        assert!(parse_script("").unwrap().is_empty());
        assert!(parse_script("   ").unwrap().is_empty());
    }

    #[test]
    fn json_form() {
        let text = r#"[{"label":"13Hz","seconds":3}, {"label":"rest","seconds":2},
                       {"frequency":17.0,"seconds":3,"label":"B"}, {"frequency":"9.5","seconds":"1"}]"#;
        let s = parse_script(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], Intent::target(13.0, 3.0));
        assert_eq!(s[1], Intent::rest(2.0));
        assert_eq!(s[2], Intent { label: "B".into(), frequency: Some(17.0), seconds: 3.0 });
        assert_eq!(s[3], Intent::target(9.5, 1.0));
        // Same through a parsed value.
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse_script_value(&v).unwrap(), s);
        // A label agreeing with the frequency is fine.
        let ok = parse_script_value(&json!([{"label":"13Hz","frequency":13,"seconds":1}])).unwrap();
        assert_eq!(ok[0], Intent::target(13.0, 1.0));
    }

    #[test]
    fn compact_errors_name_item_text_and_problem() {
        let e = parse_script("13Hz:3,13Hz:abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "script item 2 (\"13Hz:abc\"): seconds \"abc\" is not a number; write LABEL:SECONDS like 13Hz:3 or rest:2"
        );
        assert!(matches!(e, ScriptError::Item { index: 2, .. }));

        let e = parse_script("13Hz").unwrap_err().to_string();
        assert!(e.starts_with("script item 1 (\"13Hz\"): no \":\""), "{e}");

        let e = parse_script("rest:1,blink:2").unwrap_err().to_string();
        assert!(e.contains("item 2") && e.contains("\"blink\"") && e.contains("neither"), "{e}");

        let e = parse_script("13Hz:-1").unwrap_err().to_string();
        assert!(e.contains("item 1") && e.contains("greater than 0"), "{e}");

        let e = parse_script("13Hz:0").unwrap_err().to_string();
        assert!(e.contains("greater than 0"), "{e}");

        let e = parse_script("13Hz:inf").unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");

        let e = parse_script("0Hz:1").unwrap_err().to_string();
        assert!(e.contains("frequency 0 Hz") && e.contains("greater than 0"), "{e}");

        let e = parse_script("xHz:1").unwrap_err().to_string();
        assert!(e.contains("\"x\"") && e.contains("not a number"), "{e}");

        let e = parse_script("13Hz:1,").unwrap_err().to_string();
        assert!(e.starts_with("script item 2 (\"\"): the item is empty"), "{e}");
    }

    #[test]
    fn json_errors_name_item_text_and_problem() {
        let e = parse_script_value(&json!([{"label":"13Hz","seconds":1}, {"label":"13Hz"}])).unwrap_err().to_string();
        assert!(e.starts_with(r#"script item 2 ("{\"label\":\"13Hz\"}"): "seconds" is missing"#), "{e}");

        let e = parse_script_value(&json!([{"label":"13Hz","frequency":17,"seconds":1}])).unwrap_err().to_string();
        assert!(e.contains("item 1") && e.contains("says 13 Hz but frequency is 17 Hz"), "{e}");

        let e = parse_script_value(&json!([{"label":"rest","frequency":17,"seconds":1}])).unwrap_err().to_string();
        assert!(e.contains("cannot have a frequency"), "{e}");

        let e = parse_script_value(&json!([{"label":"B","seconds":1}])).unwrap_err().to_string();
        assert!(e.contains("\"B\"") && e.contains("give a \"frequency\" with the label"), "{e}");

        let e = parse_script_value(&json!([{"seconds":1}])).unwrap_err().to_string();
        assert!(e.contains("give a \"label\""), "{e}");

        let e = parse_script_value(&json!([{"frequency":"abc","seconds":1}])).unwrap_err().to_string();
        assert!(e.contains("frequency \"abc\" is not a number"), "{e}");

        let e = parse_script_value(&json!([{"frequency":13,"seconds":1,"sec":2}])).unwrap_err().to_string();
        assert!(e.contains("unknown key \"sec\""), "{e}");

        let e = parse_script_value(&json!([3])).unwrap_err().to_string();
        assert!(e.starts_with("script item 1 (\"3\"): an item must be a JSON object"), "{e}");

        let e = parse_script_value(&json!(5)).unwrap_err().to_string();
        assert!(e.contains("JSON array"), "{e}");

        let e = parse_script("[{\"label\":").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn display_round_trips_compact_items() {
        let s = parse_script("13Hz:3,rest:2.5").unwrap();
        let text: Vec<String> = s.iter().map(|i| i.to_string()).collect();
        assert_eq!(text, ["13Hz:3", "rest:2.5"]);
        assert_eq!(parse_script(&text.join(",")).unwrap(), s);
        let b = Intent { label: "B".into(), frequency: Some(17.0), seconds: 3.0 };
        assert_eq!(b.to_string(), "B (17Hz):3");
    }
}

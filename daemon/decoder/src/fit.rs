//! Whether a model fits a device's stream, and which device channel feeds each model input.

use crate::manifest::Manifest;

/// Rates closer than this are the same rate (headers round, e.g. 255.99 Hz).
pub const RATE_TOLERANCE: f64 = 1e-6;

/// For each model input channel, the index of the device channel that feeds it.
pub type ChannelMap = Vec<usize>;

/// Maps the model's channels onto the device's by label (exact, then case-insensitive with
/// trailing dots and spaces ignored, as EDF labels often carry them). A model that needs a channel
/// the device lacks, or another sample rate, is refused with a message saying what differs.
pub fn fit(manifest: &Manifest, device_labels: &[String], device_rate: f64) -> Result<ChannelMap, String> {
    let mut problems = Vec::new();
    let want_rate = manifest.input.sample_rate;
    if (want_rate - device_rate).abs() > RATE_TOLERANCE * want_rate.max(1.0) {
        problems.push(format!("the model needs {want_rate} Hz, the device delivers {device_rate} Hz"));
    }
    let (map, missing) = match_labels(&manifest.input.channels, device_labels);
    if !missing.is_empty() {
        problems.push(format!(
            "the model needs {} channels ({}), the device has {} ({}); missing: {}",
            manifest.input.channels.len(),
            manifest.input.channels.join(", "),
            device_labels.len(),
            device_labels.join(", "),
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(format!("model `{}` does not fit this device: {}", manifest.name, problems.join("; ")))
    }
}

/// For each of `wanted`, the index of the label in `labels` that names it (exact, then
/// case-insensitive with trailing dots and spaces ignored, as EDF labels often carry them);
/// those not found are returned beside.
pub fn match_labels<'w>(wanted: &'w [String], labels: &[String]) -> (ChannelMap, Vec<&'w str>) {
    let normal = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
    let mut map = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for label in wanted {
        let found =
            labels.iter().position(|d| d == label).or_else(|| labels.iter().position(|d| normal(d) == normal(label)));
        match found {
            Some(i) => map.push(i),
            None => missing.push(label.as_str()),
        }
    }
    (map, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Input, Manifest, Output, OutputKind, Policy, Tokens};

    fn manifest(channels: &[&str], rate: f64) -> Manifest {
        Manifest {
            name: "m".into(),
            version: "1".into(),
            description: String::new(),
            input: Input {
                channels: channels.iter().map(|s| s.to_string()).collect(),
                sample_rate: rate,
                window_seconds: 1.0,
                hop_seconds: 0.5,
            },
            preprocessing: Default::default(),
            output: Output {
                kind: OutputKind::Classes,
                labels: vec!["a".into()],
                null_label: String::new(),
                blank_label: String::new(),
                beam_width: 1,
            },
            tokens: Tokens { tokenizer: "gpt2".into(), text: Default::default() },
            policy: Policy { confidence_threshold: 0.5, consecutive: 1, refractory_seconds: 0.0 },
            provenance: Default::default(),
            test_vectors: None,
            speller: None,
            training: None,
            path: "model.toml".into(),
        }
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn channels_are_selected_and_ordered_by_label() {
        let m = manifest(&["Oz", "O1"], 160.0);
        assert_eq!(fit(&m, &labels(&["Fp1", "O1.", "oz.."]), 160.0).unwrap(), vec![2, 1]);
    }

    #[test]
    fn what_differs_is_said() {
        let m = manifest(&["Oz", "O1", "O2"], 256.0);
        let err = fit(&m, &labels(&["Oz", "O1"]), 250.0).unwrap_err();
        assert!(err.contains("needs 256 Hz, the device delivers 250 Hz"), "{err}");
        assert!(err.contains("needs 3 channels") && err.contains("has 2") && err.contains("missing: O2"), "{err}");
    }
}

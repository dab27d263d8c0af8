//! `model.toml`: what a model package promises (input layout, preprocessing, outputs, tokens,
//! emission policy). The format is documented in docs/models.md.
//!
//! A crate of its own, without libtorch, so that the manifests (outside input: an admin installs
//! third-party models) can be fuzzed (fuzz/fuzz_targets/model_manifest.rs); `bci2token-decoder`
//! re-exports it as `bci2token_decoder::manifest`. [`DevicePreference`] (the daemon's
//! `decoder_device`) is here too, so that the daemon's configuration needs no libtorch either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bci2token_dsp::pipeline::PreprocessConfig;
use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "model.toml";
pub const MODEL_FILE: &str = "model.pt";
/// The most samples (channels × frames) in one input window: 64 MiB of `f32`, far beyond any EEG
/// model, and a bound on what a session and the decoder allocate for a model's windows.
pub const MAX_WINDOW_FLOATS: usize = 1 << 24;
/// The longest hop between windows, in frames (more than a day at 160 Hz).
pub const MAX_HOP_FRAMES: usize = 1 << 24;
/// Tokenizers the token bridge knows.
pub const TOKENIZERS: &[&str] = &["gpt2", "cl100k_base", "o200k_base"];

/// Where a model runs, as configured (`decoder_device = "auto" | "cpu" | "cuda"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePreference {
    /// CUDA when available, else CPU.
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DevicePreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DevicePreference::Auto),
            "cpu" => Ok(DevicePreference::Cpu),
            "cuda" => Ok(DevicePreference::Cuda),
            other => Err(format!("{other:?} is not a device (auto, cpu or cuda)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read the model manifest: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Channel labels in the order the model expects them.
    pub channels: Vec<String>,
    pub sample_rate: f64,
    pub window_seconds: f64,
    pub hop_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Logits `[batch, labels]`; the daemon applies softmax.
    Classes,
    /// Per-frame logits `[batch, frames, labels]` with a blank label, decoded greedily or by beam search.
    Ctc,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub kind: OutputKind,
    pub labels: Vec<String>,
    /// A label that emits nothing (rest); empty for none.
    #[serde(default)]
    pub null_label: String,
    /// CTC only: the blank label.
    #[serde(default)]
    pub blank_label: String,
    /// CTC only: prefix beam search width (1 = greedy decoding).
    #[serde(default = "one_usize")]
    pub beam_width: usize,
}

fn one_usize() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub tokenizer: String,
    /// Label → text emitted.
    #[serde(default)]
    pub text: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub confidence_threshold: f64,
    #[serde(default = "one")]
    pub consecutive: u32,
    #[serde(default)]
    pub refractory_seconds: f64,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    #[serde(default)]
    pub script: String,
    /// Data a learned model was trained on.
    #[serde(default)]
    pub trained_on: Vec<String>,
    #[serde(default)]
    pub notes: String,
}

/// `[training]`: how the daemon fitted a person's model (`bci2tokenctl model train`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// `trca`, `fbtrca`, `csp-lda`, `riemann-mdm`, `riemann-ts`.
    pub method: String,
    /// The recordings trained on: stored session ids or file names.
    pub sources: Vec<String>,
    pub trials: usize,
    /// The method's settings (components, shrinkage, sub-bands, window…).
    #[serde(default)]
    pub parameters: toml::Table,
    /// k-fold cross-validated accuracy on the training trials, and k.
    pub cv_accuracy: f64,
    pub cv_folds: usize,
    /// Wolpaw's information transfer rate at that accuracy, one decision a window.
    pub itr_bits_per_minute: f64,
    /// When it was trained (seconds since the epoch), and for whom (the owner's uid).
    pub trained_at: f64,
    pub owner_uid: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestVectors {
    pub file: String,
    pub tolerance: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub input: Input,
    /// Applied by the daemon before the model (notch, band, CAR), as in training.
    #[serde(default)]
    pub preprocessing: PreprocessConfig,
    pub output: Output,
    pub tokens: Tokens,
    pub policy: Policy,
    #[serde(default)]
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_vectors: Option<TestVectors>,
    /// Speller layout (label → stimulus frequency) for models that drive a speller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speller: Option<toml::Table>,
    /// How a model the daemon fitted was trained (absent from shipped models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// Where the manifest was read from (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
}

/// A model's name: lower-case letters, digits and '-'.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be lower-case letters, digits and '-'"))
    }
}

impl Manifest {
    /// The manifest as `model.toml` text (what [`Manifest::parse`] reads back as this manifest).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("the manifest of {:?} cannot be written: {e}", self.name))
    }

    /// Reads and validates `DIR/model.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|source| ManifestError::Read { path: path.clone(), source })?;
        Manifest::parse(&text, path)
    }

    /// Parses and validates the text of a manifest read from `path` (named in errors).
    pub fn parse(text: &str, path: PathBuf) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Parse { path: path.clone(), message: e.to_string() })?;
        manifest.path = path;
        manifest.validate()?;
        Ok(manifest)
    }

    fn invalid(&self, key: &'static str, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid { path: self.path.clone(), key, message: message.into() }
    }

    fn validate(&self) -> Result<(), ManifestError> {
        check_name(&self.name).map_err(|m| self.invalid("name", m))?;
        let i = &self.input;
        if i.channels.is_empty() {
            return Err(self.invalid("input.channels", "lists no channels"));
        }
        if let Some(dup) = duplicate(&i.channels) {
            return Err(self.invalid("input.channels", format!("{dup:?} is listed twice")));
        }
        if !(i.sample_rate.is_finite() && i.sample_rate > 0.0) {
            return Err(self.invalid("input.sample_rate", format!("{} is not a positive rate in Hz", i.sample_rate)));
        }
        if !(i.window_seconds.is_finite() && i.window_seconds > 0.0) || self.window_frames() < 2 {
            return Err(self.invalid("input.window_seconds", format!("{} gives no usable window", i.window_seconds)));
        }
        let floats = i.channels.len().saturating_mul(self.window_frames());
        if floats > MAX_WINDOW_FLOATS {
            return Err(self.invalid(
                "input.window_seconds",
                format!(
                    "{} s of {} channels at {} Hz is {floats} samples per window; at most {MAX_WINDOW_FLOATS}",
                    i.window_seconds,
                    i.channels.len(),
                    i.sample_rate
                ),
            ));
        }
        if !(i.hop_seconds.is_finite() && i.hop_seconds > 0.0) || self.hop_frames() < 1 {
            return Err(self.invalid("input.hop_seconds", format!("{} is not a positive hop", i.hop_seconds)));
        }
        if self.hop_frames() > MAX_HOP_FRAMES {
            return Err(self.invalid(
                "input.hop_seconds",
                format!(
                    "{} s at {} Hz is {} frames; at most {MAX_HOP_FRAMES}",
                    i.hop_seconds,
                    i.sample_rate,
                    self.hop_frames()
                ),
            ));
        }
        self.preprocessing.validate(i.sample_rate).map_err(|e| self.invalid("preprocessing", e.to_string()))?;
        let o = &self.output;
        if o.labels.is_empty() {
            return Err(self.invalid("output.labels", "lists no labels"));
        }
        if let Some(dup) = duplicate(&o.labels) {
            return Err(self.invalid("output.labels", format!("{dup:?} is listed twice")));
        }
        if o.kind == OutputKind::Ctc {
            if !o.labels.contains(&o.blank_label) {
                return Err(
                    self.invalid("output.blank_label", format!("{:?} is not one of output.labels", o.blank_label))
                );
            }
            if (i.hop_seconds - i.window_seconds).abs() > 1e-9 {
                return Err(self.invalid(
                    "input.hop_seconds",
                    "a CTC model decodes non-overlapping segments: set hop_seconds = window_seconds",
                ));
            }
        }
        if o.beam_width == 0 {
            return Err(self.invalid("output.beam_width", "must be at least 1 (1 = greedy)"));
        }
        if !o.null_label.is_empty() && !o.labels.contains(&o.null_label) {
            return Err(self.invalid("output.null_label", format!("{:?} is not one of output.labels", o.null_label)));
        }
        if !TOKENIZERS.contains(&self.tokens.tokenizer.as_str()) {
            return Err(self.invalid(
                "tokens.tokenizer",
                format!("{:?} is not supported; use one of {}", self.tokens.tokenizer, TOKENIZERS.join(", ")),
            ));
        }
        if let Some(label) = self.tokens.text.keys().find(|l| !o.labels.contains(l)) {
            return Err(self.invalid("tokens.text", format!("maps {label:?}, which is not one of output.labels")));
        }
        let p = &self.policy;
        if !(p.confidence_threshold > 0.0 && p.confidence_threshold <= 1.0) {
            return Err(
                self.invalid("policy.confidence_threshold", format!("{} is not in (0, 1]", p.confidence_threshold))
            );
        }
        if p.consecutive == 0 {
            return Err(self.invalid("policy.consecutive", "must be at least 1"));
        }
        if !(p.refractory_seconds.is_finite() && p.refractory_seconds >= 0.0) {
            return Err(self.invalid("policy.refractory_seconds", format!("{} is negative", p.refractory_seconds)));
        }
        if let Some(tv) = &self.test_vectors {
            if !(tv.tolerance.is_finite() && tv.tolerance >= 0.0) {
                return Err(self.invalid("test_vectors.tolerance", format!("{} is negative", tv.tolerance)));
            }
        }
        Ok(())
    }

    /// Frames per model input window.
    pub fn window_frames(&self) -> usize {
        (self.input.window_seconds * self.input.sample_rate).round() as usize
    }

    /// Frames between consecutive windows.
    pub fn hop_frames(&self) -> usize {
        (self.input.hop_seconds * self.input.sample_rate).round() as usize
    }

    /// The package directory.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

fn duplicate(items: &[String]) -> Option<&String> {
    items.iter().enumerate().find(|(i, a)| items[..*i].contains(a)).map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped manifest, written by `to_toml` and read again, is the same manifest; and a
    /// `[training]` table survives the trip.
    #[test]
    fn manifests_written_read_back_the_same() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let mut seen = 0;
        for entry in std::fs::read_dir(&models).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.join(MANIFEST_FILE).exists() {
                continue;
            }
            let m = Manifest::load(&dir).unwrap();
            let again = Manifest::parse(&m.to_toml().unwrap(), m.path.clone()).unwrap();
            assert_eq!(again, m, "{}", dir.display());
            seen += 1;
        }
        assert!(seen >= 3, "{seen} shipped models");
        let mut m = Manifest::parse(GOOD, PathBuf::from("model.toml")).unwrap();
        let mut parameters = toml::Table::new();
        parameters.insert("components".into(), 6.into());
        m.training = Some(Training {
            method: "csp-lda".into(),
            sources: vec!["0123456789ab".into()],
            trials: 45,
            parameters,
            cv_accuracy: 0.9,
            cv_folds: 5,
            itr_bits_per_minute: 7.5,
            trained_at: 1.8e9,
            owner_uid: 1000,
        });
        let text = m.to_toml().unwrap();
        assert!(text.contains("[training]") && text.contains("method = \"csp-lda\""), "{text}");
        assert_eq!(Manifest::parse(&text, m.path.clone()).unwrap(), m);
    }

    pub(crate) const GOOD: &str = r#"
name = "test-model"
version = "1.0.0"
[input]
channels = ["O1", "Oz", "O2"]
sample_rate = 250.0
window_seconds = 1.0
hop_seconds = 0.1
[preprocessing]
notch_hz = 50
[output]
kind = "classes"
labels = ["rest", "a", "b"]
null_label = "rest"
[tokens]
tokenizer = "gpt2"
text = { a = " yes", b = " no" }
[policy]
confidence_threshold = 0.7
consecutive = 2
refractory_seconds = 0.5
"#;

    fn load_text(text: &str) -> Result<Manifest, ManifestError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bci2token-manifest-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), text).unwrap();
        let result = Manifest::load(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[test]
    fn a_good_manifest_loads() {
        let m = load_text(GOOD).unwrap();
        assert_eq!(m.window_frames(), 250);
        assert_eq!(m.hop_frames(), 25);
        assert_eq!(m.output.kind, OutputKind::Classes);
        assert_eq!(m.tokens.text["a"], " yes");
        assert_eq!(m.policy.consecutive, 2);
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let msg = load_text(&GOOD.replace("sample_rate = 250.0\n", "")).unwrap_err().to_string();
        assert!(msg.contains("missing field `sample_rate`") && msg.contains("model.toml"), "{msg}");
        let msg = load_text(&GOOD.replace("hop_seconds", "hop_secs")).unwrap_err().to_string();
        assert!(msg.contains("unknown field `hop_secs`"), "{msg}");
        let msg = load_text(&GOOD.replace("sample_rate = 250.0", "sample_rate = \"fast\"")).unwrap_err().to_string();
        assert!(msg.contains("sample_rate"), "{msg}");
    }

    #[test]
    fn wrong_values_are_named() {
        let cases = [
            (GOOD.replace("test-model", "Test Model"), "`name`"),
            (GOOD.replace("\"O2\"]", "\"O1\"]"), "`input.channels`: \"O1\" is listed twice"),
            (GOOD.replace("null_label = \"rest\"", "null_label = \"idle\""), "`output.null_label`"),
            (GOOD.replace("\"gpt2\"", "\"bert\""), "`tokens.tokenizer`: \"bert\" is not supported"),
            (GOOD.replace("b = \" no\"", "c = \" no\""), "`tokens.text`: maps \"c\""),
            (GOOD.replace("0.7", "1.5"), "`policy.confidence_threshold`"),
            (GOOD.replace("consecutive = 2", "consecutive = 0"), "`policy.consecutive`"),
            (GOOD.replace("window_seconds = 1.0", "window_seconds = 0.0"), "`input.window_seconds`"),
            // Found by fuzzing (fuzz/fuzz_targets/model_manifest.rs): a window too large to
            // allocate aborted the daemon when a session (or the model's warm-up) made one, and
            // a hop past 2^64 frames overflowed the window's frame count.
            (GOOD.replace("window_seconds = 1.0", "window_seconds = 1e12"), "`input.window_seconds`: 1000000000000 s"),
            (GOOD.replace("window_seconds = 1.0", "window_seconds = 22370"), "is 16777500 samples per window"),
            (GOOD.replace("hop_seconds = 0.1", "hop_seconds = 1e20"), "`input.hop_seconds`: 100000000000000000000 s"),
            (GOOD.replace("notch_hz = 50", "notch_hz = 55"), "`preprocessing`: preprocessing: notch_hz = 55"),
        ];
        for (text, want) in cases {
            let msg = load_text(&text).unwrap_err().to_string();
            assert!(msg.contains(want), "want {want:?} in {msg}");
        }
    }
}

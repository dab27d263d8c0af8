//! Test vectors shipped beside a model: inputs and the outputs the exporting Python produced.
//! The Rust decoder must reproduce them within the manifest's tolerance.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::{Model, ModelError};

#[derive(Debug, Deserialize)]
struct VectorFile {
    input_shape: [usize; 3],
    input: Vec<f32>,
    output_shape: [usize; 2],
    output: Vec<f32>,
}

/// How a model did on its test vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorCheck {
    pub file: PathBuf,
    pub windows: usize,
    pub max_abs_diff: f32,
    pub tolerance: f64,
}

impl VectorCheck {
    pub fn passed(&self) -> bool {
        f64::from(self.max_abs_diff) <= self.tolerance
    }
}

/// Runs the model on its test vectors. `Ok(None)` when the manifest names none.
pub fn check(model: &Model) -> Result<Option<VectorCheck>, ModelError> {
    let Some(tv) = &model.manifest.test_vectors else { return Ok(None) };
    let file = model.manifest.dir().join(&tv.file);
    let bad = |message: String| ModelError::Shape { model: model.name().into(), message };
    let text = std::fs::read_to_string(&file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
    let v: VectorFile = serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", file.display())))?;
    let [b, c, t] = v.input_shape;
    if c != model.channels() || t != model.manifest.window_frames() || v.input.len() != b * c * t {
        return Err(bad(format!(
            "{}: input shape {:?} ({} values) does not match the manifest's [B, {}, {}]",
            file.display(),
            v.input_shape,
            v.input.len(),
            model.channels(),
            model.manifest.window_frames()
        )));
    }
    if model.output_frames() != 1 {
        return Err(bad(format!("{}: test vectors for CTC models are not supported yet", file.display())));
    }
    if v.output_shape != [b, model.classes()] || v.output.len() != b * model.classes() {
        return Err(bad(format!(
            "{}: output shape {:?} is not [{b}, {}]",
            file.display(),
            v.output_shape,
            model.classes()
        )));
    }
    let got = model.forward(&v.input, b)?;
    let max_abs_diff = got.iter().zip(&v.output).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    Ok(Some(VectorCheck { file, windows: b, max_abs_diff, tolerance: tv.tolerance }))
}

//! TorchScript modules made in Rust, by tracing (`CModule::create_by_tracing`), for the models
//! the daemon fits itself (issue 17): the fitted numbers become constants of the traced graph, and
//! the saved `model.pt` runs through the same decoder path as a shipped model. Each graph is traced
//! on a batch of two windows and uses no size read from its input, so it takes any batch.
//!
//! Input, as for every model: `[batch, channels, frames]` of preprocessed µV (float32); output:
//! `[batch, classes]` logits.

use tch::{CModule, Kind, TchError, Tensor};

/// A linear read-out: `classes × features` weights (row-major) and one bias a class.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Linear {
    fn classes(&self) -> usize {
        self.bias.len()
    }
}

fn matrix(values: &[f32], rows: usize, cols: usize) -> Result<Tensor, TchError> {
    if values.len() != rows * cols {
        return Err(TchError::Shape(format!("{} values for a {rows} × {cols} matrix", values.len())));
    }
    Tensor::f_from_slice(values)?.f_reshape([rows as i64, cols as i64])
}

/// CSP log-variance features, then a linear read-out: `filters` holds `components × channels`
/// (row-major); feature k of a window is log(mean over frames of (filter k · x)²).
pub fn csp_linear(filters: &[f32], channels: usize, readout: &Linear, frames: usize) -> Result<CModule, TchError> {
    let components = readout.weight.len() / readout.classes().max(1);
    let w = matrix(filters, components, channels)?;
    let weight = matrix(&readout.weight, readout.classes(), components)?;
    let bias = Tensor::f_from_slice(&readout.bias)?;
    let example = Tensor::f_zeros([2, channels as i64, frames as i64], (Kind::Float, tch::Device::Cpu))?;
    let mut forward = |inputs: &[Tensor]| {
        let y = w.matmul(&inputs[0]);
        let features = y.square().mean_dim(-1, false, Kind::Float).log();
        vec![features.matmul(&weight.tr()) + &bias]
    };
    CModule::create_by_tracing("CspLinear", "forward", &[example], &mut forward)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic sequence in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 - 1.0) as f32
            })
            .collect()
    }

    #[test]
    fn a_traced_csp_linear_module_saves_loads_and_computes_what_it_was_given_for_any_batch() {
        let (channels, frames, components, classes) = (4, 50, 3, 2);
        let filters = values(components * channels, 1);
        let readout = Linear { weight: values(classes * components, 2), bias: vec![0.25, -0.5] };
        let module = csp_linear(&filters, channels, &readout, frames).unwrap();
        let dir = std::env::temp_dir().join(format!("bci2token-traced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.pt");
        module.save(&path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for batch in [1usize, 5] {
            let x = values(batch * channels * frames, 3 + batch as u64);
            let input = Tensor::from_slice(&x).reshape([batch as i64, channels as i64, frames as i64]);
            let out = loaded.forward_ts(&[input]).unwrap();
            assert_eq!(out.size(), [batch as i64, classes as i64]);
            let mut got = vec![0f32; batch * classes];
            out.copy_data(&mut got, batch * classes);
            for b in 0..batch {
                let window = &x[b * channels * frames..(b + 1) * channels * frames];
                let features: Vec<f64> = (0..components)
                    .map(|k| {
                        let power: f64 = (0..frames)
                            .map(|t| {
                                let y: f64 = (0..channels)
                                    .map(|c| f64::from(filters[k * channels + c]) * f64::from(window[c * frames + t]))
                                    .sum();
                                y * y
                            })
                            .sum();
                        (power / frames as f64).ln()
                    })
                    .collect();
                for j in 0..classes {
                    let want: f64 = f64::from(readout.bias[j])
                        + (0..components)
                            .map(|k| f64::from(readout.weight[j * components + k]) * features[k])
                            .sum::<f64>();
                    let g = f64::from(got[b * classes + j]);
                    assert!(
                        (g - want).abs() < 1e-4 * want.abs().max(1.0),
                        "batch {batch}, window {b}, class {j}: {g} against {want}"
                    );
                }
            }
        }
    }
}

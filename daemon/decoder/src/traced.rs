//! TorchScript modules made in Rust, by tracing (`CModule::create_by_tracing`), for the models
//! the daemon fits itself (issue 17): the fitted numbers become constants of the traced graph, and
//! the saved `model.pt` runs through the same decoder path as a shipped model. Each graph is traced
//! on a batch of two windows and uses no size read from its input, so it takes any batch.
//!
//! Input, as for every model: `[batch, channels, frames]` of preprocessed µV (float32); output:
//! `[batch, classes]` logits.

use bci2token_calibrate::ssvep::Bank;
use bci2token_calibrate::DMatrix;
use tch::{CModule, Kind, TchError, Tensor};

/// The least variance or eigenvalue taken before a logarithm: a flat window or a rank-deficient
/// covariance (a channel no longer connected) gives finite logits rather than -inf or NaN.
const FLOOR: f64 = 1e-30;

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

/// `values` (row-major) as a `rows × cols` tensor of their kind.
fn matrix<T: tch::kind::Element>(values: &[T], rows: usize, cols: usize) -> Result<Tensor, TchError> {
    if values.len() != rows * cols {
        return Err(TchError::Shape(format!("{} values for a {rows} × {cols} matrix", values.len())));
    }
    Tensor::f_from_slice(values)?.f_reshape([rows as i64, cols as i64])
}

/// Traces `forward` on a batch of two windows of `channels × frames` (float32).
fn trace(
    name: &str,
    channels: usize,
    frames: usize,
    mut forward: impl FnMut(&Tensor) -> Tensor,
) -> Result<CModule, TchError> {
    let example = Tensor::f_zeros([2, channels as i64, frames as i64], (Kind::Float, tch::Device::Cpu))?;
    CModule::create_by_tracing(name, "forward", &[example], &mut |inputs: &[Tensor]| vec![forward(&inputs[0])])
}

/// CSP log-variance features, then a linear read-out: `filters` holds `components × channels`
/// (row-major); feature k of a window is log(mean over frames of (filter k · x)²).
pub fn csp_linear(filters: &[f32], channels: usize, readout: &Linear, frames: usize) -> Result<CModule, TchError> {
    let components = readout.weight.len() / readout.classes().max(1);
    let w = matrix(filters, components, channels)?;
    let weight = matrix(&readout.weight, readout.classes(), components)?;
    let bias = Tensor::f_from_slice(&readout.bias)?;
    trace("CspLinear", channels, frames, |x| {
        let y = w.matmul(x);
        // A flat window (the loader's warm-up of zeros, a disconnected lead) has no variance:
        // clamped, its logits stay finite.
        let features = y.square().mean_dim(-1, false, Kind::Float).clamp_min(FLOOR).log();
        features.matmul(&weight.tr()) + &bias
    })
}

/// The covariance of each window, channels centred, divided by the frames, in float64
/// (`[batch, channels, channels]`): what [`mdm`] and [`tangent_linear`] are fitted on.
fn window_covariance(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Double);
    let centred = &x - x.mean_dim(-1, true, Kind::Double);
    let frames = x.size().last().copied().unwrap_or(1);
    // The frames of the trace are a constant: a window always has the manifest's length.
    centred.matmul(&centred.transpose(-1, -2)) / frames as f64
}

/// `V f(Λ) Vᵀ` of a batch of symmetric matrices.
fn sym_log(m: &Tensor) -> Tensor {
    let (values, vectors) = m.linalg_eigh("L");
    vectors.matmul(&values.clamp_min(FLOOR).log().diag_embed(0, -2, -1)).matmul(&vectors.transpose(-1, -2))
}

/// Minimum distance to the mean: `means_isqrt` holds each class mean's M^-½ (`channels ×
/// channels`, row-major, one a class); the logits are the negated affine-invariant distances of
/// the window's covariance to the means, times `scale`.
pub fn mdm(means_isqrt: &[Vec<f64>], channels: usize, frames: usize, scale: f64) -> Result<CModule, TchError> {
    let isqrt = means_isqrt.iter().map(|m| matrix(m, channels, channels)).collect::<Result<Vec<_>, _>>()?;
    let stacked = Tensor::f_stack(&isqrt, 0)?;
    trace("Mdm", channels, frames, |x| {
        // [batch, 1, c, c] against [classes, c, c]: M^-½ C M^-½ for every pair.
        let c = window_covariance(x).unsqueeze(1);
        let whitened = stacked.matmul(&c).matmul(&stacked);
        let d = whitened
            .linalg_eigvalsh("L")
            .clamp_min(FLOOR)
            .log()
            .square()
            .sum_dim_intlist(-1, false, Kind::Double)
            .sqrt();
        (d * -scale).to_kind(Kind::Float)
    })
}

/// Tangent space at a reference (its R^-½, row-major) and a linear read-out of the tangent
/// vector: the upper triangle of log(R^-½ C R^-½), row by row, off-diagonal entries × √2.
pub fn tangent_linear(
    reference_isqrt: &[f64],
    channels: usize,
    readout: &Linear,
    frames: usize,
) -> Result<CModule, TchError> {
    let r = matrix(reference_isqrt, channels, channels)?;
    let features = channels * (channels + 1) / 2;
    let weight =
        matrix(&readout.weight.iter().map(|&w| f64::from(w)).collect::<Vec<_>>(), readout.classes(), features)?;
    let bias = Tensor::f_from_slice(&readout.bias.iter().map(|&b| f64::from(b)).collect::<Vec<_>>())?;
    let (mut index, mut coef) = (Vec::with_capacity(features), Vec::with_capacity(features));
    for i in 0..channels {
        for j in i..channels {
            index.push((i * channels + j) as i64);
            coef.push(if i == j { 1.0 } else { std::f64::consts::SQRT_2 });
        }
    }
    let index = Tensor::f_from_slice(&index)?;
    let coef = Tensor::f_from_slice(&coef)?;
    trace("TangentLinear", channels, frames, |x| {
        let c = window_covariance(x);
        let log = sym_log(&r.matmul(&c).matmul(&r));
        let t = log.flatten(1, 2).index_select(1, &index) * &coef;
        (t.matmul(&weight.tr()) + &bias).to_kind(Kind::Float)
    })
}

/// An SSVEP scorer as FBCCA's (Chen et al. 2015): the filter bank (zero-phase masks on the
/// zero-padded spectrum), per sub-band a spatial projection to `signals` signals, the largest
/// squared canonical correlation of those with each class's sine/cosine references, weighted
/// over the sub-bands, minus a bias a class, times `scale`. With identity projections and no
/// bias it is FBCCA itself; with `fbtrca`'s filters and bias, that method
/// (bci2token-calibrate's `ssvep`). All in float64; a window with a NaN or infinite sample gets
/// NaN logits (the others of its batch are unaffected).
#[derive(Debug, Clone, PartialEq)]
pub struct Ssvep {
    /// FFT length (zero padding), and `bands × (nfft / 2 + 1)` masks, row-major.
    pub nfft: usize,
    pub masks: Vec<f64>,
    /// `frames × (classes · refdim)`, row-major: each class's orthonormal reference basis side by side.
    pub refs: Vec<f64>,
    pub refdim: usize,
    /// `bands × channels × signals`, row-major: each sub-band's projection.
    pub projections: Vec<f64>,
    pub signals: usize,
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
    pub scale: f64,
    /// The whitening's ridge, times the mean variance (FBCCA's 1e-9).
    pub ridge: f64,
}

impl Ssvep {
    /// The scorer of `bank` with one projection a sub-band (`channels × signals`) and a bias a
    /// class; FBCCA's logits scale (30: the score lies in [-1, 1] around the bias).
    pub fn from_bank(bank: &Bank, projections: &[DMatrix<f64>], bias: &[f64]) -> Ssvep {
        let frames = bank.samples;
        let refdim = bank.refs.first().map_or(0, |q| q.ncols());
        let refs =
            (0..frames).flat_map(|i| bank.refs.iter().flat_map(move |q| (0..refdim).map(move |j| q[(i, j)]))).collect();
        Ssvep {
            nfft: bank.nfft,
            masks: bank.masks.transpose().as_slice().to_vec(),
            refs,
            refdim,
            projections: projections.iter().flat_map(|v| v.transpose().as_slice().to_vec()).collect(),
            signals: projections.first().map_or(0, |v| v.ncols()),
            weights: bank.weights.as_slice().to_vec(),
            bias: bias.to_vec(),
            scale: SSVEP_SCALE,
            ridge: bci2token_calibrate::ssvep::CCA_RIDGE,
        }
    }
}

/// The logits per unit of score of the SSVEP scorers (as `ssvep-fbcca-3`'s).
pub const SSVEP_SCALE: f64 = 30.0;

pub fn ssvep(p: &Ssvep, channels: usize, frames: usize) -> Result<CModule, TchError> {
    let bands = p.weights.len();
    let classes = p.bias.len();
    let bins = p.nfft / 2 + 1;
    let masks = matrix(&p.masks, bands, bins)?.f_unsqueeze(0)?.f_unsqueeze(2)?; // [1, N, 1, F]
    let refs = matrix(&p.refs, frames, classes * p.refdim)?;
    let projections = matrix(&p.projections, bands * channels, p.signals)?.f_reshape([
        bands as i64,
        channels as i64,
        p.signals as i64,
    ])?;
    let projections_t = projections.f_transpose(-1, -2)?; // [N, S, C]
    let weights = Tensor::f_from_slice(&p.weights)?.f_view([1, bands as i64, 1])?;
    let bias = Tensor::f_from_slice(&p.bias)?;
    let eye = Tensor::f_eye(p.signals as i64, (Kind::Double, tch::Device::Cpu))?;
    let (nfft, signals, refdim, ridge, scale) = (p.nfft as i64, p.signals as i64, p.refdim as i64, p.ridge, p.scale);
    trace("Ssvep", channels, frames, |x| {
        let x = x.to_kind(Kind::Double);
        let finite = x.isfinite().flatten(1, -1).all_dim(1, false); // [B]
        let x = x.where_self(&finite.view([-1, 1, 1]), &x.zeros_like());
        let x = &x - x.mean_dim(-1, true, Kind::Double);
        let spectrum = x.fft_rfft(nfft, -1, "backward").unsqueeze(1); // [B, 1, C, F]
        let bands = (spectrum * &masks).fft_irfft(nfft, -1, "backward").narrow(-1, 0, frames as i64); // [B, N, C, T]
        let bands = &bands - bands.mean_dim(-1, true, Kind::Double);
        let y = projections_t.matmul(&bands); // [B, N, S, T]
        let y = &y - y.mean_dim(-1, true, Kind::Double);
        let cov = y.matmul(&y.transpose(-1, -2)); // [B, N, S, S]
        let trace = cov.diagonal(0, -2, -1).sum_dim_intlist(-1, false, Kind::Double);
        let r = (trace / p.signals as f64 * ridge + 1e-30).unsqueeze(-1).unsqueeze(-1);
        let chol = (cov + r * &eye).linalg_cholesky(false);
        let a = chol.linalg_solve_triangular(&y.matmul(&refs), false, true, false); // [B, N, S, K·R]
        let a = a.reshape([-1, p.weights.len() as i64, signals, classes as i64, refdim]).permute([0, 1, 3, 2, 4]);
        let gram = if refdim <= signals { a.transpose(-1, -2).matmul(&a) } else { a.matmul(&a.transpose(-1, -2)) };
        let last = refdim.min(signals) - 1;
        let rho2 = gram.linalg_eigvalsh("L").narrow(-1, last, 1).squeeze_dim(-1).clamp(0.0, 1.0); // [B, N, K]
        let score = (rho2 * &weights).sum_dim_intlist(1, false, Kind::Double) - &bias;
        let logits = score * scale;
        let nan = logits.full_like(f64::NAN);
        logits.where_self(&finite.view([-1, 1]), &nan).to_kind(Kind::Float)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bci2token_calibrate::{riemann, DMatrix};

    /// A trained module saved and loaded again, run on `x` as `[batch, channels, frames]`.
    fn run_saved(module: &CModule, x: &[f32], batch: usize, channels: usize, frames: usize) -> Vec<f32> {
        // One directory a call: the tests of this module run at once in one process.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("bci2token-traced-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.pt");
        module.save(&path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let input = Tensor::from_slice(x).reshape([batch as i64, channels as i64, frames as i64]);
        let out = loaded.forward_ts(&[input]).unwrap();
        let n = out.numel();
        let mut got = vec![0f32; n];
        out.copy_data(&mut got, n);
        got
    }

    /// `batch` windows with channels of different scales, so that their covariances differ.
    fn windows(batch: usize, channels: usize, frames: usize, seed: u64) -> (Vec<f32>, Vec<DMatrix<f64>>) {
        let mut x = values(batch * channels * frames, seed);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= 1.0 + ((i / frames) % channels) as f32;
        }
        let covs = (0..batch)
            .map(|b| {
                let w = DMatrix::from_row_slice(
                    channels,
                    frames,
                    &x[b * channels * frames..(b + 1) * channels * frames]
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect::<Vec<_>>(),
                );
                bci2token_calibrate::covariance::sample(&w)
            })
            .collect();
        (x, covs)
    }

    #[test]
    fn the_traced_ssvep_scorer_computes_what_the_fitting_code_computes() {
        use bci2token_calibrate::ssvep::{fbcca_scores, FbTrca};
        let (channels, frames, rate) = (4, 128, 128.0);
        let freqs = [11.0, 15.0];
        // Windows whose first two channels carry each class's frequency.
        let window = |k: usize, seed: u64| {
            let noise = values(channels * frames, seed);
            DMatrix::from_fn(channels, frames, |c, i| {
                let s = (2.0 * std::f64::consts::PI * freqs[k] * i as f64 / rate + seed as f64).sin();
                f64::from(noise[c * frames + i]) + if c < 2 { s } else { 0.0 }
            })
        };
        let xs: Vec<DMatrix<f64>> = (0..12).map(|i| window(i % 2, 40 + i as u64)).collect();
        let ys: Vec<usize> = (0..12).map(|i| i % 2).collect();
        let fitted = FbTrca::fit(&xs, &ys, &freqs, rate, true).unwrap();
        let trained =
            ssvep(&Ssvep::from_bank(&fitted.bank, &fitted.filters, fitted.bias.as_slice()), channels, frames).unwrap();
        let eye = vec![DMatrix::identity(channels, channels); fitted.bank.bands()];
        let fbcca = ssvep(&Ssvep::from_bank(&fitted.bank, &eye, &[0.0, 0.0]), channels, frames).unwrap();
        let tests: Vec<DMatrix<f64>> = (0..3).map(|i| window(i % 2, 90 + i as u64)).collect();
        let flat: Vec<f32> =
            tests.iter().flat_map(|w| w.transpose().as_slice().iter().map(|&v| v as f32).collect::<Vec<_>>()).collect();
        let got = run_saved(&trained, &flat, 3, channels, frames);
        let got_fbcca = run_saved(&fbcca, &flat, 3, channels, frames);
        for (b, w) in tests.iter().enumerate() {
            // The fitting code on the same float32 values.
            let w32 = w.map(|v| f64::from(v as f32));
            let want = fitted.scores(&w32).unwrap() * SSVEP_SCALE;
            let want_fbcca = fbcca_scores(&fitted.bank, &w32).unwrap() * SSVEP_SCALE;
            for k in 0..2 {
                let (g, f) = (f64::from(got[b * 2 + k]), f64::from(got_fbcca[b * 2 + k]));
                assert!((g - want[k]).abs() < 1e-4, "window {b} class {k}: {g} against {}", want[k]);
                assert!((f - want_fbcca[k]).abs() < 1e-4, "fbcca window {b} class {k}: {f} against {}", want_fbcca[k]);
            }
        }
        // A window with a NaN gets NaN logits, the other window of its batch its own.
        let mut two = flat[..2 * channels * frames].to_vec();
        two[5] = f32::NAN;
        let got = run_saved(&trained, &two, 2, channels, frames);
        assert!(got[0].is_nan() && got[1].is_nan() && got[2].is_finite() && got[3].is_finite(), "{got:?}");
        let zeros = run_saved(&trained, &vec![0f32; channels * frames], 1, channels, frames);
        assert!(zeros.iter().all(|v| v.is_finite()), "{zeros:?}");
    }

    #[test]
    fn a_flat_window_gives_finite_logits_in_every_traced_module() {
        let (channels, frames) = (3, 32);
        let eye: Vec<f64> = DMatrix::<f64>::identity(channels, channels).as_slice().to_vec();
        let readout = |features: usize| Linear { weight: values(2 * features, 22), bias: vec![0.0, 0.0] };
        let modules = [
            csp_linear(&values(2 * channels, 23), channels, &readout(2), frames).unwrap(),
            mdm(&[eye.clone(), eye.clone()], channels, frames, 1.0).unwrap(),
            tangent_linear(&eye, channels, &readout(6), frames).unwrap(),
        ];
        let zeros = vec![0f32; channels * frames];
        for m in &modules {
            let got = run_saved(m, &zeros, 1, channels, frames);
            assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
        }
    }

    #[test]
    fn traced_mdm_and_tangent_space_modules_compute_what_the_fitting_code_computes() {
        let (channels, frames) = (4, 64);
        let (_, covs) = windows(6, channels, frames, 11);
        let labels = [0, 1, 0, 1, 0, 1];
        let fitted = riemann::Mdm::fit(&covs, &labels, 2).unwrap();
        let isqrt: Vec<Vec<f64>> =
            fitted.means.iter().map(|m| riemann::inverse_sqrt(m).unwrap().transpose().as_slice().to_vec()).collect();
        let module = mdm(&isqrt, channels, frames, 2.0).unwrap();
        let (x, test_covs) = windows(3, channels, frames, 12);
        let got = run_saved(&module, &x, 3, channels, frames);
        for (b, cov) in test_covs.iter().enumerate() {
            let d = fitted.distances(cov).unwrap();
            for k in 0..2 {
                let want = -2.0 * d[k];
                let g = f64::from(got[b * 2 + k]);
                assert!((g - want).abs() < 1e-5 * want.abs().max(1.0), "window {b} class {k}: {g} against {want}");
            }
        }
        // Tangent space at the mean of all, read out by a linear map of the 10 coordinates.
        let reference = riemann::mean(&covs).unwrap();
        let r = riemann::inverse_sqrt(&reference).unwrap();
        let readout = Linear { weight: values(2 * 10, 13), bias: vec![0.1, -0.2] };
        let module = tangent_linear(r.transpose().as_slice(), channels, &readout, frames).unwrap();
        let got = run_saved(&module, &x, 3, channels, frames);
        for (b, cov) in test_covs.iter().enumerate() {
            let t = riemann::tangent_vector(cov, &r).unwrap();
            for k in 0..2 {
                let want = f64::from(readout.bias[k])
                    + (0..10).map(|j| f64::from(readout.weight[k * 10 + j]) * t[j]).sum::<f64>();
                let g = f64::from(got[b * 2 + k]);
                assert!((g - want).abs() < 1e-5 * want.abs().max(1.0), "window {b} class {k}: {g} against {want}");
            }
        }
    }

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

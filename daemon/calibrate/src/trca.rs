//! Task-related component analysis (Nakanishi et al., IEEE TBME 65(1), 2018): for one class
//! (stimulus frequency), the spatial filter that makes its trials most alike. With each trial's
//! channels centred, S = Σ_{i≠j} Xᵢ Xⱼᵀ (the trials' cross-covariances) and Q = U Uᵀ for U the
//! trials side by side; the filter is the eigenvector of the largest λ in S w = λ Q w, scaled so
//! that wᵀ Q w = 1 and signed so that its entry of largest magnitude is positive.

use nalgebra::{DMatrix, DVector};

use crate::{covariance, linalg, FitError};

/// The TRCA filter of one class's trials (at least two, of equal channels).
pub fn filter(trials: &[DMatrix<f64>]) -> Result<DVector<f64>, FitError> {
    let channels = covariance::check(trials, "a class")?;
    if channels == 0 {
        return Err(FitError::Shape("TRCA needs channels".into()));
    }
    if trials.len() < 2 {
        return Err(FitError::TooFew(format!("TRCA needs at least 2 trials of a class, got {}", trials.len())));
    }
    let centred: Vec<DMatrix<f64>> = trials
        .iter()
        .map(|x| {
            let mean = x.column_mean();
            DMatrix::from_fn(channels, x.ncols(), |r, c| x[(r, c)] - mean[r])
        })
        .collect();
    let len = centred[0].ncols();
    if centred.iter().any(|x| x.ncols() != len) {
        return Err(FitError::Shape("TRCA needs trials of one length".into()));
    }
    let total = centred.iter().skip(1).fold(centred[0].clone(), |acc, x| acc + x);
    let mut q = DMatrix::<f64>::zeros(channels, channels);
    for x in &centred {
        q.gemm(1.0, x, &x.transpose(), 1.0);
    }
    let s = &total * total.transpose() - &q;
    let (_, w) = linalg::generalized_eigh(&s, &q)?;
    let w = w.column(channels - 1).into_owned();
    // An eigenvector's sign is the solver's; an ensemble's correlation depends on it (the rows are
    // concatenated), so it is fixed: the entry of largest magnitude is positive.
    let largest = w.iter().copied().fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
    Ok(if largest < 0.0 { -w } else { w })
}

/// Ensemble TRCA (Nakanishi et al. 2018): every class's filter side by side, `W` (`channels ×
/// classes`), and each class's template (the mean of its trials); a window's score for class k is
/// the correlation of `Wᵀ X` with `Wᵀ T_k`, both flattened.
#[derive(Debug, Clone)]
pub struct Ensemble {
    pub filters: DMatrix<f64>,
    pub templates: Vec<DMatrix<f64>>,
}

/// Pearson's correlation of two equally long sequences.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

impl Ensemble {
    /// Fits `trials` (equal `channels × frames`) with `labels` in `0..classes`, two trials a class
    /// at least.
    pub fn fit(trials: &[DMatrix<f64>], labels: &[usize], classes: usize) -> Result<Ensemble, FitError> {
        covariance::check(trials, "TRCA")?;
        crate::check_labels(labels, trials.len(), classes)?;
        let mut filters = Vec::with_capacity(classes);
        let mut templates = Vec::with_capacity(classes);
        for k in 0..classes {
            let class = crate::of_class(trials, labels, k);
            if class.len() < 2 {
                return Err(FitError::TooFew(format!("class {k} has {} trials; TRCA needs at least 2", class.len())));
            }
            filters.push(filter(&class)?);
            let sum = class.iter().skip(1).fold(class[0].clone(), |acc, t| acc + t);
            templates.push(sum / class.len() as f64);
        }
        Ok(Ensemble { filters: DMatrix::from_columns(&filters), templates })
    }

    /// Each class's correlation for one window.
    pub fn correlations(&self, x: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
        if self.templates.first().is_some_and(|t| t.shape() != x.shape()) {
            return Err(FitError::Shape(format!(
                "a window of {:?} for templates of {:?}",
                x.shape(),
                self.templates[0].shape()
            )));
        }
        let wt = self.filters.transpose();
        // Row-major flattening, as numpy's.
        let flat = |m: DMatrix<f64>| m.transpose().as_slice().to_vec();
        let projected = flat(&wt * x);
        Ok(DVector::from_iterator(
            self.templates.len(),
            self.templates.iter().map(|t| correlation(&projected, &flat(&wt * t))),
        ))
    }
}

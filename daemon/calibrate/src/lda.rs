//! Linear discriminant analysis with Ledoit–Wolf shrinkage of the pooled covariance, as
//! scikit-learn's `LinearDiscriminantAnalysis(solver='lsqr', shrinkage='auto')` computes it: each
//! class's covariance is shrunk on standardised features (Ledoit & Wolf 2004) and scaled back, the
//! pooled covariance Σ is their prior-weighted sum, and class k scores
//! `xᵀ Σ⁻¹ μₖ − ½ μₖᵀ Σ⁻¹ μₖ + log πₖ`. Shrinkage is what lets it fit more features than trials
//! (a tangent space of 64 channels has 2080).

use nalgebra::{DMatrix, DVector};

use crate::FitError;

#[derive(Debug, Clone)]
pub struct Lda {
    /// Σ⁻¹ μₖ, one row a class.
    pub coef: DMatrix<f64>,
    pub intercept: DVector<f64>,
}

/// The Ledoit–Wolf shrinkage intensity of centred rows `x` (samples × features), scikit-learn's
/// `ledoit_wolf_shrinkage`.
fn ledoit_wolf_shrinkage(x: &DMatrix<f64>) -> f64 {
    let (n, p) = (x.nrows() as f64, x.ncols() as f64);
    let x2 = x.map(|v| v * v);
    let emp_cov_trace: f64 = x2.sum() / n;
    let mu = emp_cov_trace / p;
    let beta_: f64 = (x2.transpose() * &x2).sum();
    let delta_: f64 = (x.transpose() * x).map(|v| v * v).sum() / (n * n);
    let beta = 1.0 / (p * n) * (beta_ / n - delta_);
    let delta = (delta_ - 2.0 * mu * emp_cov_trace + p * mu * mu) / p;
    let beta = beta.min(delta);
    if beta == 0.0 {
        0.0
    } else {
        beta / delta
    }
}

/// One class's shrunk covariance (scikit-learn's `_cov(X, 'auto')`): standardise, Ledoit–Wolf,
/// scale back.
fn shrunk_covariance(rows: &DMatrix<f64>) -> DMatrix<f64> {
    let (n, p) = (rows.nrows(), rows.ncols());
    let mean = rows.row_mean();
    let centred = DMatrix::from_fn(n, p, |i, j| rows[(i, j)] - mean[j]);
    let scale: Vec<f64> = (0..p)
        .map(|j| {
            let sd = (centred.column(j).map(|v| v * v).sum() / n as f64).sqrt();
            if sd == 0.0 {
                1.0
            } else {
                sd
            }
        })
        .collect();
    let standard = DMatrix::from_fn(n, p, |i, j| centred[(i, j)] / scale[j]);
    let shrinkage = ledoit_wolf_shrinkage(&standard);
    let emp = standard.transpose() * &standard / n as f64;
    let mu = emp.trace() / p as f64;
    let shrunk = emp * (1.0 - shrinkage) + DMatrix::identity(p, p) * (shrinkage * mu);
    DMatrix::from_fn(p, p, |i, j| scale[i] * shrunk[(i, j)] * scale[j])
}

impl Lda {
    /// Fits `features` (one row a trial) with `labels` in `0..classes`; each class needs two trials.
    pub fn fit(features: &DMatrix<f64>, labels: &[usize], classes: usize) -> Result<Lda, FitError> {
        let (n, p) = (features.nrows(), features.ncols());
        crate::check_labels(labels, n, classes)?;
        let mut means = DMatrix::<f64>::zeros(classes, p);
        let mut pooled = DMatrix::<f64>::zeros(p, p);
        let mut priors = DVector::<f64>::zeros(classes);
        for k in 0..classes {
            let rows: Vec<usize> = (0..n).filter(|&i| labels[i] == k).collect();
            if rows.len() < 2 {
                return Err(FitError::TooFew(format!("class {k} has {} trials; LDA needs at least 2", rows.len())));
            }
            let class = DMatrix::from_rows(&rows.iter().map(|&i| features.row(i).into_owned()).collect::<Vec<_>>());
            means.set_row(k, &class.row_mean());
            priors[k] = rows.len() as f64 / n as f64;
            pooled += shrunk_covariance(&class) * priors[k];
        }
        let chol = pooled.cholesky().ok_or(FitError::NotPositiveDefinite("the pooled LDA covariance"))?;
        let coef = chol.solve(&means.transpose()).transpose();
        let intercept = DVector::from_fn(classes, |k, _| -0.5 * means.row(k).dot(&coef.row(k)) + priors[k].ln());
        Ok(Lda { coef, intercept })
    }

    /// Each class's score for one trial's features; the largest wins.
    pub fn scores(&self, x: &DVector<f64>) -> Result<DVector<f64>, FitError> {
        if x.len() != self.coef.ncols() {
            return Err(FitError::Shape(format!("{} features for an LDA of {}", x.len(), self.coef.ncols())));
        }
        Ok(&self.coef * x + &self.intercept)
    }
}

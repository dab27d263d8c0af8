//! Task-related component analysis (Nakanishi et al., IEEE TBME 65(1), 2018): for one class
//! (stimulus frequency), the spatial filter that makes its trials most alike. With each trial's
//! channels centred, S = Σ_{i≠j} Xᵢ Xⱼᵀ (the trials' cross-covariances) and Q = U Uᵀ for U the
//! trials side by side; the filter is the eigenvector of the largest λ in S w = λ Q w, scaled so
//! that wᵀ Q w = 1 (its sign is the eigensolver's).

use nalgebra::{DMatrix, DVector};

use crate::{covariance, linalg, FitError};

/// The TRCA filter of one class's trials (at least two, of equal channels).
pub fn filter(trials: &[DMatrix<f64>]) -> Result<DVector<f64>, FitError> {
    let channels = covariance::check(trials, "a class")?;
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
    Ok(w.column(channels - 1).into_owned())
}

//! Covariance estimates of epochs (`channels × samples`).

use nalgebra::DMatrix;

use crate::FitError;

/// The shapes of `epochs` agree: all `channels × samples` with the same channels; at least one.
pub fn check(epochs: &[DMatrix<f64>], what: &str) -> Result<usize, FitError> {
    let first = epochs.first().ok_or_else(|| FitError::TooFew(format!("{what}: no trials")))?;
    let channels = first.nrows();
    if let Some(bad) = epochs.iter().find(|e| e.nrows() != channels || e.ncols() < 2) {
        return Err(FitError::Shape(format!(
            "{what}: a trial of {} × {} beside trials of {channels} channels",
            bad.nrows(),
            bad.ncols()
        )));
    }
    Ok(channels)
}

/// One class's covariance from its epochs concatenated in time, not centred, divided by the
/// samples less one: `X Xᵀ / (n − 1)` of the concatenation, as MNE's CSP (`cov_est='concat'`,
/// `reg=None`) estimates it (checked against it to 1e-10: the scale sets each filter's norm);
/// band-pass filtered EEG has no mean to remove.
pub fn concatenated(epochs: &[DMatrix<f64>]) -> Result<DMatrix<f64>, FitError> {
    let channels = check(epochs, "a class")?;
    let n: usize = epochs.iter().map(|e| e.ncols()).sum();
    let mut cov = DMatrix::<f64>::zeros(channels, channels);
    for e in epochs {
        cov.gemm(1.0, e, &e.transpose(), 1.0);
    }
    Ok(cov / (n as f64 - 1.0))
}

/// One epoch's sample covariance, each channel centred, divided by the samples (pyriemann's
/// `scm`).
pub fn sample(epoch: &DMatrix<f64>) -> DMatrix<f64> {
    let mean = epoch.column_mean();
    let centred = DMatrix::from_fn(epoch.nrows(), epoch.ncols(), |r, c| epoch[(r, c)] - mean[r]);
    (&centred * centred.transpose()) / epoch.ncols() as f64
}

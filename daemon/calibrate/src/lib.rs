//! Fitting per-person decoders from a person's own recorded trials (issue 17), with no I/O: the
//! daemon cuts the epochs, this crate fits, the model package is written elsewhere.
//!
//! - [`linalg`]: the symmetric and generalised symmetric eigenproblems (nalgebra) and the matrix
//!   functions of symmetric positive-definite matrices built on them.
//! - [`covariance`]: covariance estimates of epochs.
//! - [`csp`]: common spatial patterns for two classes (Koles 1990; Ramoser et al. 2000), as MNE
//!   computes them.
//! - [`epochs`]: which trial a training window belongs to.
//! - [`lda`]: linear discriminant analysis with Ledoit–Wolf shrinkage, as scikit-learn's.
//! - [`method`]: the methods `model train` offers (fit, scores, cross-validation), one place.
//! - [`metrics`]: stratified k-fold cross-validation and the information transfer rate.
//! - [`riemann`]: the affine-invariant Riemannian mean of covariance matrices and the tangent space
//!   at a reference, and minimum distance to the mean (Barachant et al. 2012), as pyriemann
//!   computes them.
//! - [`ssvep`]: FBCCA's filter bank and correlations, and `fbtrca`, the per-person SSVEP method.
//! - [`trials`]: trials from cue annotations, the rules `evaluate` and `model train` share.
//! - [`trca`]: task-related component analysis (Nakanishi et al. 2018), the SSVEP spatial filter.
//!
//! Epochs are `channels × samples` matrices of f64.

pub mod covariance;
pub mod csp;
pub mod epochs;
pub mod lda;
pub mod linalg;
pub mod method;
pub mod metrics;
pub mod riemann;
pub mod ssvep;
pub mod trca;
pub mod trials;

pub use nalgebra::{DMatrix, DVector};

/// Why a fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("{0}")]
    Shape(String),
    #[error("too few trials: {0}")]
    TooFew(String),
    #[error("the covariance is not positive definite ({0}): a flat or duplicated channel, or too few samples")]
    NotPositiveDefinite(&'static str),
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
}

/// `labels` has one label a trial, each in `0..classes`.
pub(crate) fn check_labels(labels: &[usize], trials: usize, classes: usize) -> Result<(), FitError> {
    if labels.len() != trials {
        return Err(FitError::Shape(format!("{trials} trials with {} labels", labels.len())));
    }
    match labels.iter().find(|&&l| l >= classes) {
        Some(l) => Err(FitError::Shape(format!("a label {l} beyond the {classes} classes"))),
        None => Ok(()),
    }
}

/// The items whose label is `class`.
pub(crate) fn of_class<T: Clone>(items: &[T], labels: &[usize], class: usize) -> Vec<T> {
    items.iter().zip(labels).filter(|(_, &l)| l == class).map(|(x, _)| x.clone()).collect()
}

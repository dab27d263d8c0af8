//! Common spatial patterns for two classes: the filters `w` that solve `C₁ w = λ (C₁ + C₂) w` for
//! the classes' covariances; a filter's λ is the share of class 1 in its output's variance, so
//! those nearest 0 and 1 separate the classes best. Computed as MNE's `CSP(reg=None, cov_est=
//! 'concat')` does (class covariances of the concatenated epochs, the generalised eigenproblem
//! against their sum); the order is by |λ − ½|, the most discriminative first.

use nalgebra::{DMatrix, DVector};

use crate::{covariance, linalg, FitError};

#[derive(Debug, Clone)]
pub struct Csp {
    /// One filter a row (`channels` columns), most discriminative first; each scaled so that
    /// `wᵀ (C₁ + C₂) w = 1`.
    pub filters: DMatrix<f64>,
    /// The inverse of `filters`: column `i` is what component `i` looks like on the scalp.
    pub patterns: DMatrix<f64>,
    /// λ of each filter, in the same order.
    pub eigenvalues: DVector<f64>,
}

impl Csp {
    pub fn fit(class1: &[DMatrix<f64>], class2: &[DMatrix<f64>]) -> Result<Csp, FitError> {
        let c1 = covariance::concatenated(class1)?;
        let c2 = covariance::concatenated(class2)?;
        if c1.nrows() != c2.nrows() {
            return Err(FitError::Shape(format!("classes of {} and {} channels", c1.nrows(), c2.nrows())));
        }
        let (values, w) = linalg::generalized_eigh(&c1, &(&c1 + &c2))?;
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&i, &j| (values[j] - 0.5).abs().total_cmp(&(values[i] - 0.5).abs()));
        let filters = DMatrix::from_rows(&order.iter().map(|&i| w.column(i).transpose()).collect::<Vec<_>>());
        let patterns = filters.clone().try_inverse().ok_or(FitError::NotPositiveDefinite("the CSP filters"))?;
        let eigenvalues = DVector::from_iterator(order.len(), order.iter().map(|&i| values[i]));
        Ok(Csp { filters, patterns, eigenvalues })
    }
}

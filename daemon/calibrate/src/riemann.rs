//! Covariance matrices as points of the manifold of SPD matrices with its affine-invariant metric:
//! the Riemannian (Karcher) mean, and tangent vectors at a reference, as pyriemann computes them
//! (`mean_riemann`, `TangentSpace(metric='riemann')`).

use nalgebra::{DMatrix, DVector};

use crate::{linalg, FitError};

/// Most iterations of the mean, and the step size under which it has converged (pyriemann's).
const MAX_ITERATIONS: usize = 50;
const TOLERANCE: f64 = 1e-8;

/// The affine-invariant mean of `covs`: the SPD matrix M minimising Σ δ²(M, Cᵢ), by the gradient
/// iteration M ← M^½ exp(ν Σ log(M^-½ Cᵢ M^-½) / n) M^½ from the arithmetic mean, with pyriemann's
/// step control (ν halves when the step grows, stops under 1e-8 of the step's norm, or after 50
/// iterations with the estimate reached).
pub fn mean(covs: &[DMatrix<f64>]) -> Result<DMatrix<f64>, FitError> {
    let first = covs.first().ok_or_else(|| FitError::TooFew("a Riemannian mean of no matrices".into()))?;
    if let Some(bad) = covs.iter().find(|c| c.shape() != first.shape() || !c.is_square()) {
        return Err(FitError::Shape(format!("covariances of {:?} and {:?}", first.shape(), bad.shape())));
    }
    let n = covs.len() as f64;
    let mut m = covs.iter().fold(DMatrix::zeros(first.nrows(), first.ncols()), |acc, c| acc + c) / n;
    let mut nu = 1.0;
    let mut tau = f64::MAX;
    for _ in 0..MAX_ITERATIONS {
        let half = linalg::spd_function(&m, f64::sqrt).ok_or(FitError::NotPositiveDefinite("the mean"))?;
        let ihalf = linalg::spd_function(&m, |x| 1.0 / x.sqrt()).ok_or(FitError::NotPositiveDefinite("the mean"))?;
        let mut step = DMatrix::zeros(m.nrows(), m.ncols());
        for c in covs {
            step += linalg::spd_function(&(&ihalf * c * &ihalf), f64::ln)
                .ok_or(FitError::NotPositiveDefinite("a covariance"))?;
        }
        step /= n;
        let crit = step.norm();
        m = &half * linalg::sym_function(&(step * nu), f64::exp) * &half;
        let h = nu * crit;
        if h < tau {
            nu *= 0.95;
            tau = h;
        } else {
            nu *= 0.5;
        }
        if crit <= TOLERANCE || nu <= TOLERANCE {
            break;
        }
    }
    // Not converged within the iterations is still the best estimate (pyriemann warns and
    // returns it too); a mean that is not SPD any more is an error.
    if m.iter().all(|v| v.is_finite()) {
        Ok(m)
    } else {
        Err(FitError::NoConvergence("the Riemannian mean"))
    }
}

/// The tangent vector of `c` at `reference`: the upper triangle (row by row) of
/// log(R^-½ C R^-½), off-diagonal entries × √2 so that the Euclidean norm is the Riemannian
/// distance.
pub fn tangent_vector(c: &DMatrix<f64>, reference_isqrt: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
    let log = linalg::spd_function(&(reference_isqrt * c * reference_isqrt), f64::ln)
        .ok_or(FitError::NotPositiveDefinite("a covariance"))?;
    let n = log.nrows();
    let mut out = Vec::with_capacity(n * (n + 1) / 2);
    for i in 0..n {
        for j in i..n {
            out.push(if i == j { log[(i, j)] } else { log[(i, j)] * std::f64::consts::SQRT_2 });
        }
    }
    Ok(DVector::from_vec(out))
}

/// R^-½ of a reference, for [`tangent_vector`].
pub fn inverse_sqrt(reference: &DMatrix<f64>) -> Result<DMatrix<f64>, FitError> {
    linalg::spd_function(reference, |x| 1.0 / x.sqrt()).ok_or(FitError::NotPositiveDefinite("the reference"))
}

/// The affine-invariant distance δ(A, B) = ‖log(A^-½ B A^-½)‖_F.
pub fn distance(a_isqrt: &DMatrix<f64>, b: &DMatrix<f64>) -> Result<f64, FitError> {
    let log =
        linalg::spd_function(&(a_isqrt * b * a_isqrt), f64::ln).ok_or(FitError::NotPositiveDefinite("a covariance"))?;
    Ok(log.norm())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_of_two_commuting_matrices_is_their_geometric_mean() {
        let a = DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 4.0]));
        let b = DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 16.0]));
        let m = mean(&[a.clone(), b.clone()]).unwrap();
        let want = DMatrix::from_diagonal(&DVector::from_vec(vec![2.0, 8.0]));
        assert!((m - want).norm() < 1e-7);
        // The tangent vector's norm is the distance.
        let ri = inverse_sqrt(&a).unwrap();
        let t = tangent_vector(&b, &ri).unwrap();
        assert!((t.norm() - distance(&ri, &b).unwrap()).abs() < 1e-12);
        assert!((t.norm() - (2.0 * 4f64.ln().powi(2)).sqrt()).abs() < 1e-12);
    }
}

/// Minimum distance to the mean (Barachant et al. 2012; pyriemann's `MDM`): each class is its
/// trials' Riemannian mean, and a trial belongs to the nearest.
#[derive(Debug, Clone)]
pub struct Mdm {
    pub means: Vec<DMatrix<f64>>,
    /// M^-½ of each mean, for the distances.
    isqrt: Vec<DMatrix<f64>>,
}

impl Mdm {
    /// Fits class means from `covs` with `labels` in `0..classes`.
    pub fn fit(covs: &[DMatrix<f64>], labels: &[usize], classes: usize) -> Result<Mdm, FitError> {
        crate::check_labels(labels, covs.len(), classes)?;
        let mut means = Vec::with_capacity(classes);
        for k in 0..classes {
            let class = crate::of_class(covs, labels, k);
            if class.is_empty() {
                return Err(FitError::TooFew(format!("class {k} has no trials")));
            }
            means.push(mean(&class)?);
        }
        let isqrt = means.iter().map(inverse_sqrt).collect::<Result<_, _>>()?;
        Ok(Mdm { means, isqrt })
    }

    /// M^-½ of each class mean (what the traced model measures distances with).
    pub fn means_isqrt(&self) -> &[DMatrix<f64>] {
        &self.isqrt
    }

    /// The distance of `cov` to each class mean.
    pub fn distances(&self, cov: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
        if self.means.first().is_some_and(|m| m.shape() != cov.shape()) {
            return Err(FitError::Shape(format!(
                "a covariance of {:?} for means of {:?}",
                cov.shape(),
                self.means[0].shape()
            )));
        }
        let d: Vec<f64> = self.isqrt.iter().map(|m| distance(m, cov)).collect::<Result<_, _>>()?;
        Ok(DVector::from_vec(d))
    }
}

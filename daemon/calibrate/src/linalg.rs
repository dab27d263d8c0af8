//! Eigenproblems of symmetric matrices, and functions of symmetric positive-definite (SPD)
//! matrices through their eigendecomposition: `f(C) = V f(Λ) Vᵀ`.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::FitError;

/// The eigenvalues (ascending) and eigenvectors (columns, in the same order) of symmetric `a`.
pub fn eigh(a: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let sym = (a + a.transpose()) * 0.5;
    // Bounded iterations: a matrix with a NaN would otherwise never converge. One that does not
    // converge gives NaN eigenvalues, which every caller refuses (not positive definite).
    let n = sym.nrows();
    let Some(e) = SymmetricEigen::try_new(sym, f64::EPSILON, 1000 * n.max(1)) else {
        return (DVector::from_element(n, f64::NAN), DMatrix::from_element(n, n, f64::NAN));
    };
    let mut order: Vec<usize> = (0..e.eigenvalues.len()).collect();
    order.sort_by(|&i, &j| e.eigenvalues[i].total_cmp(&e.eigenvalues[j]));
    let values = DVector::from_iterator(order.len(), order.iter().map(|&i| e.eigenvalues[i]));
    let vectors =
        DMatrix::from_columns(&order.iter().map(|&i| e.eigenvectors.column(i).into_owned()).collect::<Vec<_>>());
    (values, vectors)
}

/// The generalised symmetric-definite problem `A w = λ B w` (B SPD): eigenvalues ascending and
/// eigenvectors as columns, scaled so that `Wᵀ B W = I` (what LAPACK's `sygv`, and so
/// `scipy.linalg.eigh(a, b)`, return). Through B's Cholesky factor L: the eigenvectors V of
/// L⁻¹ A L⁻ᵀ give W = L⁻ᵀ V.
pub fn generalized_eigh(a: &DMatrix<f64>, b: &DMatrix<f64>) -> Result<(DVector<f64>, DMatrix<f64>), FitError> {
    let l =
        b.clone().cholesky().ok_or(FitError::NotPositiveDefinite("the reference of a generalised eigenproblem"))?.l();
    let linv_a = l.solve_lower_triangular(a).ok_or(FitError::NotPositiveDefinite("a Cholesky factor"))?;
    let c = l.solve_lower_triangular(&linv_a.transpose()).ok_or(FitError::NotPositiveDefinite("a Cholesky factor"))?;
    let (values, v) = eigh(&c);
    let w = l.transpose().solve_upper_triangular(&v).ok_or(FitError::NotPositiveDefinite("a Cholesky factor"))?;
    Ok((values, w))
}

/// `f(C)` for symmetric `c`, applying `f` to its eigenvalues; `None` when an eigenvalue is not
/// positive (C is not SPD).
pub fn spd_function(c: &DMatrix<f64>, f: impl Fn(f64) -> f64) -> Option<DMatrix<f64>> {
    let (values, v) = eigh(c);
    if values.iter().any(|&x| x <= 0.0 || !x.is_finite()) {
        return None;
    }
    let d = DMatrix::from_diagonal(&values.map(f));
    Some(&v * d * v.transpose())
}

/// `f(C)` for any symmetric `c` (the exponential of a tangent vector, whose eigenvalues may be
/// negative).
pub fn sym_function(c: &DMatrix<f64>, f: impl Fn(f64) -> f64) -> DMatrix<f64> {
    let (values, v) = eigh(c);
    let d = DMatrix::from_diagonal(&values.map(f));
    &v * d * v.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_eigenvectors_solve_the_problem_and_are_b_orthonormal() {
        let a = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0]);
        let b = DMatrix::from_row_slice(3, 3, &[2.0, 0.3, 0.0, 0.3, 1.5, 0.1, 0.0, 0.1, 1.0]);
        let (values, w) = generalized_eigh(&a, &b).unwrap();
        assert!(values[0] <= values[1] && values[1] <= values[2]);
        for i in 0..3 {
            let wi = w.column(i);
            let residual = &a * wi - (&b * wi) * values[i];
            assert!(residual.norm() < 1e-12, "{residual}");
        }
        let gram = w.transpose() * &b * &w;
        assert!((gram - DMatrix::identity(3, 3)).norm() < 1e-12);
        assert!(generalized_eigh(&a, &-b).is_err(), "B must be positive definite");
    }

    #[test]
    fn matrix_functions_invert_each_other() {
        let c = DMatrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, 1.0]);
        let log = spd_function(&c, f64::ln).unwrap();
        let back = sym_function(&log, f64::exp);
        assert!((back - &c).norm() < 1e-12);
        let isqrt = spd_function(&c, |x| 1.0 / x.sqrt()).unwrap();
        assert!((&isqrt * &c * &isqrt - DMatrix::identity(2, 2)).norm() < 1e-12);
        assert!(spd_function(&-c, f64::ln).is_none());
    }
}

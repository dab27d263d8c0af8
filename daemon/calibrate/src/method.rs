//! The per-person methods `model train` offers, each a fit from labelled windows and a decision
//! per window, so that training, cross-validation and the traced model compute the same thing:
//!
//! - `csp-lda`: CSP (two classes; the [`CSP_COMPONENTS`] filters of largest |λ − ½|), the log of
//!   each component's mean power, shrinkage LDA.
//! - `riemann-mdm`: each window's covariance, minimum distance to the class means.
//! - `riemann-ts`: each window's covariance, its tangent vector at the training windows' mean,
//!   shrinkage LDA.
//! - `fbtrca` (SSVEP): FBCCA's filter bank and correlations on per-person spatial filters, with
//!   a bias a class ([`crate::ssvep`]); `trca` the same on one band (8–88 Hz).

use nalgebra::{DMatrix, DVector};

use crate::{covariance, csp::Csp, lda::Lda, metrics, riemann, ssvep, FitError};

/// CSP filters kept: three from each end, as MNE's motor-imagery example does.
pub const CSP_COMPONENTS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    CspLda,
    RiemannMdm,
    RiemannTs,
    Trca,
    FbTrca,
}

impl Method {
    pub const ALL: [Method; 5] = [Method::CspLda, Method::RiemannMdm, Method::RiemannTs, Method::Trca, Method::FbTrca];

    pub fn name(self) -> &'static str {
        match self {
            Method::CspLda => "csp-lda",
            Method::RiemannMdm => "riemann-mdm",
            Method::RiemannTs => "riemann-ts",
            Method::Trca => "trca",
            Method::FbTrca => "fbtrca",
        }
    }

    /// Whether the method decodes SSVEP (it needs each class's stimulus frequency).
    pub fn is_ssvep(self) -> bool {
        matches!(self, Method::Trca | Method::FbTrca)
    }

    /// The method of a name, or an error that lists the names.
    pub fn parse(name: &str) -> Result<Method, String> {
        Method::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("no method `{name}`; the methods are {}", names.join(", "))
        })
    }
}

/// What a fit needs besides the windows: the classes, the sample rate, and (SSVEP) each class's
/// stimulus frequency.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub classes: usize,
    pub rate: f64,
    pub frequencies: Vec<f64>,
}

/// A fitted decoder: what the traced model is built from.
#[derive(Debug, Clone)]
pub enum Fitted {
    /// `filters`: [`CSP_COMPONENTS`] rows of `channels`; `lda` reads their log-powers.
    CspLda {
        filters: DMatrix<f64>,
        lda: Lda,
    },
    Mdm(riemann::Mdm),
    /// `reference_isqrt`: R^-½ of the training windows' mean covariance; `lda` reads the tangent
    /// vectors at R.
    TangentLda {
        reference_isqrt: DMatrix<f64>,
        lda: Lda,
    },
    FbTrca(ssvep::FbTrca),
}

/// The log of the mean power of each CSP component of `x` (MNE's `log=True` features).
fn csp_features(filters: &DMatrix<f64>, x: &DMatrix<f64>) -> DVector<f64> {
    let y = filters * x;
    DVector::from_iterator(y.nrows(), y.row_iter().map(|r| (r.map(|v| v * v).sum() / r.len() as f64).ln()))
}

/// Rows of `features` stacked into a matrix.
fn rows(features: &[DVector<f64>]) -> DMatrix<f64> {
    let width = features.first().map_or(0, |f| f.len());
    DMatrix::from_fn(features.len(), width, |i, j| features[i][j])
}

impl Fitted {
    /// Fits `method` to `windows` (`channels × frames` each) with `labels` in `0..classes`.
    pub fn fit(
        method: Method,
        windows: &[DMatrix<f64>],
        labels: &[usize],
        setting: &Setting,
    ) -> Result<Fitted, FitError> {
        let classes = setting.classes;
        crate::check_labels(labels, windows.len(), classes)?;
        covariance::check(windows, "training windows")?;
        match method {
            Method::CspLda => {
                if classes != 2 {
                    return Err(FitError::Shape(format!(
                        "csp-lda separates two classes, not {classes}: use riemann-mdm or riemann-ts"
                    )));
                }
                let channels = windows[0].nrows();
                if channels < CSP_COMPONENTS {
                    return Err(FitError::Shape(format!(
                        "csp-lda needs at least {CSP_COMPONENTS} channels, the recording has {channels}"
                    )));
                }
                let csp = Csp::fit(&crate::of_class(windows, labels, 0), &crate::of_class(windows, labels, 1))?;
                let filters = csp.filters.rows(0, CSP_COMPONENTS).into_owned();
                let features: Vec<DVector<f64>> = windows.iter().map(|x| csp_features(&filters, x)).collect();
                let lda = Lda::fit(&rows(&features), labels, classes)?;
                Ok(Fitted::CspLda { filters, lda })
            }
            Method::RiemannMdm => {
                let covs: Vec<DMatrix<f64>> = windows.iter().map(covariance::sample).collect();
                Ok(Fitted::Mdm(riemann::Mdm::fit(&covs, labels, classes)?))
            }
            Method::RiemannTs => {
                let covs: Vec<DMatrix<f64>> = windows.iter().map(covariance::sample).collect();
                let reference_isqrt = riemann::inverse_sqrt(&riemann::mean(&covs)?)?;
                let tangents: Vec<DVector<f64>> =
                    covs.iter().map(|c| riemann::tangent_vector(c, &reference_isqrt)).collect::<Result<_, _>>()?;
                let lda = Lda::fit(&rows(&tangents), labels, classes)?;
                Ok(Fitted::TangentLda { reference_isqrt, lda })
            }
            Method::Trca | Method::FbTrca => {
                if setting.frequencies.len() != classes {
                    return Err(FitError::Shape(format!(
                        "{} needs a stimulus frequency for each of the {classes} classes, not {}",
                        method.name(),
                        setting.frequencies.len()
                    )));
                }
                let filter_bank = method == Method::FbTrca;
                Ok(Fitted::FbTrca(ssvep::FbTrca::fit(
                    windows,
                    labels,
                    &setting.frequencies,
                    setting.rate,
                    filter_bank,
                )?))
            }
        }
    }

    /// Each class's score for one window, the largest the decision: what the traced model's
    /// logits are (MDM: the negated distances).
    pub fn scores(&self, x: &DMatrix<f64>) -> Result<DVector<f64>, FitError> {
        match self {
            Fitted::CspLda { filters, lda } => {
                if x.nrows() != filters.ncols() {
                    return Err(FitError::Shape(format!("a window of {} channels for {}", x.nrows(), filters.ncols())));
                }
                lda.scores(&csp_features(filters, x))
            }
            Fitted::Mdm(mdm) => Ok(-mdm.distances(&covariance::sample(x))?),
            Fitted::TangentLda { reference_isqrt, lda } => {
                lda.scores(&riemann::tangent_vector(&covariance::sample(x), reference_isqrt)?)
            }
            Fitted::FbTrca(m) => m.scores(x),
        }
    }

    pub fn predict(&self, x: &DMatrix<f64>) -> Result<usize, FitError> {
        Ok(self.scores(x)?.argmax().0)
    }
}

/// The cross-validated window accuracy of `method`: folds of trials (`trial_labels`, one class a
/// trial, stratified, `k` folds), each trial's windows (`window_trial`) held out together.
pub fn cross_validate(
    method: Method,
    windows: &[DMatrix<f64>],
    labels: &[usize],
    window_trial: &[usize],
    trial_labels: &[usize],
    k: usize,
    setting: &Setting,
) -> Result<f64, FitError> {
    let folds = metrics::window_folds(&metrics::stratified_folds(trial_labels, k), window_trial);
    metrics::cross_validate(labels, &folds, |train, test| {
        let xs: Vec<DMatrix<f64>> = train.iter().map(|&i| windows[i].clone()).collect();
        let ys: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
        let fitted = Fitted::fit(method, &xs, &ys, setting)?;
        test.iter().map(|&i| fitted.predict(&windows[i])).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows of two classes that differ in which channel carries the power.
    fn windows(n: usize, channels: usize, frames: usize) -> (Vec<DMatrix<f64>>, Vec<usize>) {
        let mut state = 12345u64;
        let mut noise = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for i in 0..n {
            let class = i % 2;
            xs.push(DMatrix::from_fn(channels, frames, |c, _| noise() * if c == class { 3.0 } else { 1.0 }));
            ys.push(class);
        }
        (xs, ys)
    }

    #[test]
    fn every_method_separates_two_classes_by_where_the_power_is() {
        let (xs, ys) = windows(40, 6, 100);
        let (test, truth) = windows(20, 6, 100);
        let setting = Setting { classes: 2, rate: 100.0, frequencies: Vec::new() };
        for method in [Method::CspLda, Method::RiemannMdm, Method::RiemannTs] {
            let fitted = Fitted::fit(method, &xs, &ys, &setting).unwrap();
            let right = test.iter().zip(&truth).filter(|(x, &y)| fitted.predict(x).unwrap() == y).count();
            assert!(right >= 19, "{}: {right} of 20", method.name());
            let trials: Vec<usize> = (0..xs.len()).collect();
            let cv = cross_validate(method, &xs, &ys, &trials, &ys, 5, &setting).unwrap();
            assert!(cv >= 0.9, "{}: cross-validated {cv}", method.name());
        }
    }

    #[test]
    fn methods_refuse_what_they_cannot_fit() {
        let (xs, ys) = windows(12, 6, 100);
        let three: Vec<usize> = (0..12).map(|i| i % 3).collect();
        let setting = |classes| Setting { classes, rate: 100.0, frequencies: Vec::new() };
        let refused = |m, xs: &[DMatrix<f64>], ys: &[usize], classes| {
            Fitted::fit(m, xs, ys, &setting(classes)).unwrap_err().to_string()
        };
        assert!(refused(Method::CspLda, &xs, &three, 3).contains("two classes"));
        let (narrow, ys4) = windows(12, 4, 100);
        assert!(refused(Method::CspLda, &narrow, &ys4, 2).contains("6 channels"));
        assert!(Fitted::fit(Method::RiemannMdm, &xs, &ys[..5], &setting(2)).is_err());
        assert!(refused(Method::FbTrca, &xs, &ys, 2).contains("stimulus frequency"));
        assert_eq!(Method::parse("riemann-ts"), Ok(Method::RiemannTs));
        assert!(Method::parse("trca-x").unwrap_err().contains("csp-lda, riemann-mdm, riemann-ts, trca, fbtrca"));
    }
}

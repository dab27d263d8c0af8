//! The calibration math against its references on a real recording (eegmmidb S001R06, imagined
//! both fists / both feet, 64 channels at 160 Hz; the epochs cut and filtered by MNE in
//! tools/reference/calibration_reference.py, so both sides start from the same numbers):
//! CSP against MNE's, the Riemannian mean and tangent vectors against pyriemann's, TRCA against a
//! numpy/scipy reference.

use std::path::Path;
use std::process::Command;

use bci2token_calibrate::{covariance, csp::Csp, lda::Lda, riemann, trca, DMatrix, DVector};
use bci2token_tests::{data_dir, read_f64, reference_python, workspace_root, TempDir};

/// Runs `calibration_reference.py ARGS`.
fn reference(args: &[&str]) {
    let out = Command::new(reference_python(&["mne", "pyriemann", "scipy"]))
        .arg(workspace_root().join("tools/reference/calibration_reference.py"))
        .args(args)
        .output()
        .expect("run calibration_reference.py");
    assert!(out.status.success(), "calibration_reference.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Array `name` of `dir` and its shape.
fn array(dir: &Path, name: &str) -> (Vec<f64>, Vec<usize>) {
    let shapes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shapes.json")).unwrap()).unwrap();
    let shape = shapes[name].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    (read_f64(&dir.join(format!("{name}.f64"))), shape)
}

/// `count` matrices of `rows × cols` from C-order data.
fn matrices(data: &[f64], count: usize, rows: usize, cols: usize) -> Vec<DMatrix<f64>> {
    (0..count).map(|i| DMatrix::from_row_slice(rows, cols, &data[i * rows * cols..(i + 1) * rows * cols])).collect()
}

struct Epochs {
    dir: TempDir,
    by_class: [Vec<DMatrix<f64>>; 2],
    all: Vec<DMatrix<f64>>,
}

fn epochs() -> Epochs {
    let dir = TempDir::new("calibration-reference");
    let edf = data_dir().join("eegmmidb/S001R06.edf");
    reference(&["epochs", edf.to_str().unwrap(), dir.path().to_str().unwrap()]);
    let (data, shape) = array(dir.path(), "epochs");
    let (labels, _) = array(dir.path(), "labels");
    let all = matrices(&data, shape[0], shape[1], shape[2]);
    let by_class =
        [0.0, 1.0].map(|c| all.iter().zip(&labels).filter(|(_, &l)| l == c).map(|(e, _)| e.clone()).collect());
    Epochs { dir, by_class, all }
}

/// Largest |a − b| over the largest |b|.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Every row of `theirs` is a row of `ours` up to its sign (order free), to `tolerance` relative.
fn same_rows_up_to_sign_and_order(ours: &DMatrix<f64>, theirs: &DMatrix<f64>, tolerance: f64, what: &str) {
    assert_eq!(ours.shape(), theirs.shape(), "{what}");
    let mut used = vec![false; ours.nrows()];
    for (i, t) in theirs.row_iter().enumerate() {
        let t: Vec<f64> = t.iter().copied().collect();
        let (best, err) = (0..ours.nrows())
            .filter(|j| !used[*j])
            .map(|j| {
                let o: Vec<f64> = ours.row(j).iter().copied().collect();
                let neg: Vec<f64> = o.iter().map(|x| -x).collect();
                (j, relative(&o, &t).min(relative(&neg, &t)))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(err < tolerance, "{what}: their row {i} is nearest our row {best}, relative difference {err:e}");
        used[best] = true;
    }
}

#[test]
fn csp_filters_and_patterns_are_mne_s() {
    let e = epochs();
    reference(&["csp", e.dir.path().to_str().unwrap()]);
    let (f, fs) = array(e.dir.path(), "filters");
    let (p, ps) = array(e.dir.path(), "patterns");
    let csp = Csp::fit(&e.by_class[0], &e.by_class[1]).unwrap();
    let theirs_f = DMatrix::from_row_slice(fs[0], fs[1], &f);
    // MNE's patterns_ are rows (the transpose of the inverse of the filters).
    let theirs_p = DMatrix::from_row_slice(ps[0], ps[1], &p);
    same_rows_up_to_sign_and_order(&csp.filters, &theirs_f, 1e-6, "CSP filters");
    same_rows_up_to_sign_and_order(&csp.patterns.transpose(), &theirs_p, 1e-6, "CSP patterns");
}

#[test]
fn the_riemannian_mean_and_tangent_vectors_are_pyriemann_s() {
    let e = epochs();
    reference(&["riemann", e.dir.path().to_str().unwrap()]);
    let (c, cs) = array(e.dir.path(), "covs");
    let theirs_covs = matrices(&c, cs[0], cs[1], cs[2]);
    let ours_covs: Vec<DMatrix<f64>> = e.all.iter().map(covariance::sample).collect();
    for (o, t) in ours_covs.iter().zip(&theirs_covs) {
        assert!(relative(o.as_slice(), t.as_slice()) < 1e-12, "a covariance differs from pyriemann's scm");
    }
    let (m, _) = array(e.dir.path(), "mean");
    let mean = riemann::mean(&ours_covs).unwrap();
    let theirs_mean = DMatrix::from_row_slice(cs[1], cs[2], &m);
    let err = relative(mean.as_slice(), theirs_mean.as_slice());
    assert!(err < 1e-6, "the Riemannian mean differs by {err:e}");
    let (tv, ts) = array(e.dir.path(), "tangent");
    let isqrt = riemann::inverse_sqrt(&mean).unwrap();
    for (i, cov) in ours_covs.iter().enumerate() {
        let ours = riemann::tangent_vector(cov, &isqrt).unwrap();
        let theirs = &tv[i * ts[1]..(i + 1) * ts[1]];
        let err = relative(ours.as_slice(), theirs);
        assert!(err < 1e-6, "tangent vector {i} differs by {err:e}");
    }
    // MDM: the distances of every epoch to the two class means.
    let (labels, _) = array(e.dir.path(), "labels");
    let classes: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let mdm = riemann::Mdm::fit(&ours_covs, &classes, 2).unwrap();
    let (d, _) = array(e.dir.path(), "mdm_distances");
    for (i, cov) in ours_covs.iter().enumerate() {
        let ours = mdm.distances(cov).unwrap();
        let err = relative(ours.as_slice(), &d[2 * i..2 * i + 2]);
        assert!(err < 1e-6, "MDM distances of epoch {i} differ by {err:e}");
    }
}

#[test]
fn trca_filters_are_the_reference_s() {
    let e = epochs();
    reference(&["trca", e.dir.path().to_str().unwrap()]);
    let (w, ws) = array(e.dir.path(), "trca");
    for class in 0..2 {
        let ours = trca::filter(&e.by_class[class]).unwrap();
        let theirs = &w[class * ws[1]..(class + 1) * ws[1]];
        let neg: Vec<f64> = ours.iter().map(|x| -x).collect();
        let err = relative(ours.as_slice(), theirs).min(relative(&neg, theirs));
        assert!(err < 1e-6, "class {class}: the TRCA filter differs by {err:e}");
    }
}

/// Writes `values` (C order) as array `name` of `dir`, for the reference to read.
fn write_array(dir: &Path, name: &str, values: &[f64], shape: &[usize]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join(format!("{name}.f64")), bytes).unwrap();
    let path = dir.join("shapes.json");
    let mut shapes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    shapes[name] = serde_json::json!(shape);
    std::fs::write(&path, shapes.to_string()).unwrap();
}

/// Shrinkage LDA on the trials' CSP log-variances (all 64 components, more features than the 15
/// trials): the same weights, intercept and decision values as scikit-learn's.
#[test]
fn shrinkage_lda_is_scikit_learn_s() {
    let e = epochs();
    let csp = Csp::fit(&e.by_class[0], &e.by_class[1]).unwrap();
    let (labels, _) = array(e.dir.path(), "labels");
    let rows: Vec<Vec<f64>> = e
        .all
        .iter()
        .map(|x| {
            let y = &csp.filters * x;
            y.row_iter().map(|r| (r.map(|v| v * v).sum() / r.len() as f64).ln()).collect()
        })
        .collect();
    let (n, p) = (rows.len(), rows[0].len());
    let flat: Vec<f64> = rows.concat();
    write_array(e.dir.path(), "features", &flat, &[n, p]);
    reference(&["lda", e.dir.path().to_str().unwrap()]);
    let features = DMatrix::from_row_slice(n, p, &flat);
    let classes: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let lda = Lda::fit(&features, &classes, 2).unwrap();
    // scikit-learn gives two classes as one row: class 1's weights less class 0's.
    let coef: Vec<f64> = (lda.coef.row(1) - lda.coef.row(0)).iter().copied().collect();
    let (theirs, _) = array(e.dir.path(), "lda_coef");
    let err = relative(&coef, &theirs);
    assert!(err < 1e-6, "LDA weights differ by {err:e}");
    let (intercept, _) = array(e.dir.path(), "lda_intercept");
    let ours = lda.intercept[1] - lda.intercept[0];
    assert!((ours - intercept[0]).abs() < 1e-6 * intercept[0].abs().max(1.0), "{ours} against {}", intercept[0]);
    let (decision, _) = array(e.dir.path(), "lda_decision");
    for (i, want) in decision.iter().enumerate() {
        let s = lda.scores(&DVector::from_row_slice(&flat[i * p..(i + 1) * p])).unwrap();
        let got = s[1] - s[0];
        assert!((got - want).abs() < 1e-6 * want.abs().max(1.0), "trial {i}: {got} against {want}");
    }
}

/// Ensemble TRCA on real SSVEP (ssvep subject01, 8 channels at 256 Hz, 2 s after each stimulus
/// onset): fitted on the first half of the trials, each later trial's correlations with the class
/// templates are the numpy reference's.
#[test]
fn ensemble_trca_correlations_are_the_reference_s() {
    let dir = TempDir::new("calibration-ssvep");
    let edf = bci2token_tests::ssvep_files()[0].clone();
    reference(&["ssvep-epochs", &edf, dir.path().to_str().unwrap()]);
    reference(&["trca-classify", dir.path().to_str().unwrap()]);
    let (data, shape) = array(dir.path(), "epochs");
    let (labels, _) = array(dir.path(), "labels");
    let all = matrices(&data, shape[0], shape[1], shape[2]);
    let half = all.len() / 2;
    let classes: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let ensemble = trca::Ensemble::fit(&all[..half], &classes[..half], 3).unwrap();
    let (rho, _) = array(dir.path(), "trca_rho");
    assert_eq!(rho.len(), 3 * (all.len() - half));
    for (i, x) in all[half..].iter().enumerate() {
        let ours = ensemble.correlations(x).unwrap();
        let theirs = &rho[3 * i..3 * i + 3];
        for k in 0..3 {
            assert!((ours[k] - theirs[k]).abs() < 1e-6, "trial {i} class {k}: {} against {}", ours[k], theirs[k]);
        }
    }
    // Accuracy is not asserted here: with these 2 s epochs at stimulus onset and 4 training
    // trials a class, classic TRCA is near chance on this data set (its flicker is only partly
    // phase-locked to `stim_start`: inter-trial coherence 0.35–0.67 on Oz); the daemon-level
    // evaluation decides the method.
}

/// FBCCA's filter bank, references and correlations here are the shipped `ssvep-fbcca-3`'s
/// (written by tools/models/fbcca.py in Python torch): its test vectors' logits,
/// 30 × (Σ wₙ ρ²ₙ − ½), to 1e-6.
#[test]
fn fbcca_scores_equal_the_shipped_ssvep_model_s_test_vectors() {
    use bci2token_calibrate::ssvep::{fbcca_scores, Bank};
    let root = bci2token_tests::workspace_root();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models/ssvep-fbcca-3/test_vectors.json")).unwrap())
            .unwrap();
    let shape: Vec<usize> = v["input_shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let bits = |key: &str| -> Vec<f32> {
        v[key].as_array().unwrap().iter().map(|b| f32::from_bits(b.as_u64().unwrap() as u32)).collect()
    };
    let (input, output) = (bits("input_bits"), bits("output_bits"));
    let (channels, samples) = (shape[1], shape[2]);
    let bank = Bank::new(256.0, samples, &[13.0, 17.0, 21.0]).unwrap();
    for w in 0..shape[0] {
        let x = DMatrix::from_fn(channels, samples, |c, i| f64::from(input[(w * channels + c) * samples + i]));
        let scores = fbcca_scores(&bank, &x).unwrap();
        for k in 0..3 {
            let logit = 30.0 * (scores[k] - 0.5);
            let want = f64::from(output[w * 3 + k]);
            assert!((logit - want).abs() < 1e-6 * want.abs().max(1.0), "window {w} class {k}: {logit} vs {want}");
        }
    }
}

"""References for bci2token's calibration math (daemon/calibrate): MNE's CSP, pyriemann's
Riemannian mean and tangent space, and TRCA written here with numpy/scipy from Nakanishi et al.
(2018). Every array is written as raw little-endian float64 (C order) with its shape in
shapes.json, in DIR.

  calibration_reference.py epochs EDF DIR
      Motor-imagery epochs of an eegmmidb run (MNE): band-pass 8-30 Hz (MNE's default FIR),
      T1 and T2 cues, 0.5 s to 2.5 s after each: epochs.f64 (n, channels, times), labels.f64
      (0 for T1, 1 for T2).
  calibration_reference.py csp DIR
      MNE's CSP (n_components = channels, reg None, cov_est 'concat') on DIR's epochs:
      filters.f64, patterns.f64 (rows are components).
  calibration_reference.py riemann DIR
      covs.f64: each epoch's covariance, X X^T / times (pyriemann's 'scm'); mean.f64: pyriemann's
      mean_riemann of them; tangent.f64: TangentSpace(metric='riemann') of them at that mean;
      mdm_distances.f64: each epoch's distances to the class means of MDM(metric='riemann').
  calibration_reference.py trca DIR
      trca.f64: the TRCA spatial filter of each class's epochs (class 0 then 1), from
      scipy.linalg.eigh(S, Q) with S the summed cross-covariances of distinct trials and Q the
      covariance of the concatenated trials (each trial's channels centred), the eigenvector of
      the largest eigenvalue, scaled so that w^T Q w = 1 and signed so that its entry of largest
      magnitude is positive.
  calibration_reference.py ssvep-epochs EDF DIR
      SSVEP epochs of a recording of the ssvep set (MNE): band-pass 6-90 Hz, the 2 s after the
      stim_start that follows each 13Hz/17Hz/21Hz cue: epochs.f64, labels.f64 (0, 1, 2).
  calibration_reference.py trca-classify DIR
      Ensemble TRCA fitted on the first half of DIR's epochs (each class's filter side by side,
      templates the class means), then each later epoch's correlation with each template after the
      filters: trca_rho.f64 (test epochs, classes).
  calibration_reference.py lda DIR
      scikit-learn's LinearDiscriminantAnalysis(solver='lsqr', shrinkage='auto') on DIR's
      features.f64 (trials, features) and labels: lda_coef.f64, lda_intercept.f64 (two classes:
      one row, class 1 against class 0) and lda_decision.f64.
"""
import json
import os
import sys

import numpy as np


def save(dir, name, array):
    array = np.ascontiguousarray(array, dtype="<f8")
    array.tofile(os.path.join(dir, name + ".f64"))
    path = os.path.join(dir, "shapes.json")
    shapes = json.load(open(path)) if os.path.exists(path) else {}
    shapes[name] = list(array.shape)
    json.dump(shapes, open(path, "w"))


def load(dir, name):
    shapes = json.load(open(os.path.join(dir, "shapes.json")))
    return np.fromfile(os.path.join(dir, name + ".f64"), dtype="<f8").reshape(shapes[name])


def signed(w):
    """The filter with its entry of largest magnitude positive (an eigenvector's sign is free)."""
    return w if w[np.argmax(np.abs(w))] > 0 else -w


def main():
    cmd = sys.argv[1]
    if cmd == "epochs":
        import mne
        mne.set_log_level("ERROR")
        edf, dir = sys.argv[2], sys.argv[3]
        raw = mne.io.read_raw_edf(edf, preload=True)
        raw.filter(8.0, 30.0)
        events, ids = mne.events_from_annotations(raw, event_id={"T1": 0, "T2": 1})
        epochs = mne.Epochs(raw, events, ids, tmin=0.5, tmax=2.5, baseline=None, preload=True)
        save(dir, "epochs", epochs.get_data())
        save(dir, "labels", epochs.events[:, 2].astype(float))
    elif cmd == "csp":
        import mne
        from mne.decoding import CSP
        mne.set_log_level("ERROR")
        dir = sys.argv[2]
        x, y = load(dir, "epochs"), load(dir, "labels")
        csp = CSP(n_components=x.shape[1], reg=None, cov_est="concat").fit(x, y)
        save(dir, "filters", csp.filters_)
        save(dir, "patterns", csp.patterns_)
    elif cmd == "riemann":
        from pyriemann.estimation import Covariances
        from pyriemann.tangentspace import TangentSpace
        from pyriemann.geometry.mean import mean_riemann
        dir = sys.argv[2]
        covs = Covariances(estimator="scm").fit_transform(load(dir, "epochs"))
        save(dir, "covs", covs)
        save(dir, "mean", mean_riemann(covs))
        save(dir, "tangent", TangentSpace(metric="riemann").fit_transform(covs))
        from pyriemann.classification import MDM
        save(dir, "mdm_distances", MDM(metric="riemann").fit(covs, load(dir, "labels")).transform(covs))
    elif cmd == "trca":
        import scipy.linalg
        dir = sys.argv[2]
        x, y = load(dir, "epochs"), load(dir, "labels")
        out = []
        for c in (0, 1):
            trials = x[y == c]
            trials = trials - trials.mean(axis=2, keepdims=True)
            total = trials.sum(axis=0)
            s = total @ total.T - sum(t @ t.T for t in trials)
            u = np.concatenate(list(trials), axis=1)
            q = u @ u.T
            vals, vecs = scipy.linalg.eigh(s, q)
            out.append(signed(vecs[:, -1]))
        save(dir, "trca", np.array(out))
    elif cmd == "ssvep-epochs":
        import mne
        mne.set_log_level("ERROR")
        edf, dir = sys.argv[2], sys.argv[3]
        raw = mne.io.read_raw_edf(edf, preload=True)
        raw.filter(6.0, 90.0)
        classes = ["13Hz", "17Hz", "21Hz"]
        starts = [a["onset"] for a in raw.annotations if a["description"] == "stim_start"]
        x, y = [], []
        for a in raw.annotations:
            if a["description"] in classes:
                onset = min(s for s in starts if s > a["onset"])
                first = int(round(onset * raw.info["sfreq"]))
                x.append(raw.get_data(start=first, stop=first + int(2 * raw.info["sfreq"])))
                y.append(classes.index(a["description"]))
        save(dir, "epochs", np.array(x))
        save(dir, "labels", np.array(y, dtype=float))
    elif cmd == "trca-classify":
        import scipy.linalg
        dir = sys.argv[2]
        x, y = load(dir, "epochs"), load(dir, "labels")
        half = len(y) // 2
        train, test, ytrain = x[:half], x[half:], y[:half]
        filters, templates = [], []
        for c in range(int(y.max()) + 1):
            trials = train[ytrain == c]
            centred = trials - trials.mean(axis=2, keepdims=True)
            total = centred.sum(axis=0)
            s = total @ total.T - sum(t @ t.T for t in centred)
            q = np.concatenate(list(centred), axis=1)
            vals, vecs = scipy.linalg.eigh(s, q @ q.T)
            filters.append(signed(vecs[:, -1]))
            templates.append(trials.mean(axis=0))
        w = np.array(filters).T
        rho = [[np.corrcoef((w.T @ t).ravel(), (w.T @ tpl).ravel())[0, 1] for tpl in templates] for t in test]
        save(dir, "trca_rho", np.array(rho))
    elif cmd == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        dir = sys.argv[2]
        x, y = load(dir, "features"), load(dir, "labels")
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y)
        save(dir, "lda_coef", lda.coef_)
        save(dir, "lda_intercept", lda.intercept_)
        save(dir, "lda_decision", lda.decision_function(x))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

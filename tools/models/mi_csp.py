#!/usr/bin/env python3
"""CSP+LDA baseline for the mi-eegnet model (numpy/scipy), trained on S001R06, tested on S001R10.

    .cache/export-venv/bin/python tools/models/mi_csp.py [--json]

Two variants, both train on R06 only:
  mne       MNE-Python's example ("Motor imagery decoding from EEG data using CSP"): 7-30 Hz
            band-pass applied forward-backward (zero phase), epochs 1-2 s after each T1/T2 onset,
            CSP with 4 components (log-variance), LDA; scored per trial on R10 epochs cut the same way.
  causal    the daemon's way: 64 channels, 4th-order Butterworth 7-30 Hz run causally from the first
            frame (mi_data/pipeline), 2 s windows every 0.25 s; CSP+LDA trained on the R06 windows lying
            entirely inside a trial (window starting at least 0.5 s after onset); scored on R10 with the
            same figures as the EEGNet model (mi_eval.py), with a two-class policy.
"""

import argparse
import json
import os
import sys

import numpy as np
from scipy import linalg, signal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mi_data  # noqa: E402
import mi_eval  # noqa: E402


class CspLda:
    def __init__(self, n_components: int = 4):
        self.k = n_components

    @staticmethod
    def _cov(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(-1, keepdims=True)
        c = x @ x.transpose(0, 2, 1)
        return c / np.trace(c, axis1=1, axis2=2)[:, None, None]

    def fit(self, x: np.ndarray, y: np.ndarray) -> "CspLda":
        covs = self._cov(x.astype(np.float64))
        ca, cb = covs[y == 0].mean(0), covs[y == 1].mean(0)
        w, v = linalg.eigh(ca, ca + cb)
        # Most discriminative at both ends of the spectrum, alternating like MNE's "mutual_info"-free ordering.
        order = np.argsort(np.abs(w - 0.5))[::-1][: self.k]
        self.filters = v[:, order].T
        f = self._features(x)
        m0, m1 = f[y == 0].mean(0), f[y == 1].mean(0)
        sw = np.cov(f[y == 0].T) * (np.sum(y == 0) - 1) + np.cov(f[y == 1].T) * (np.sum(y == 1) - 1)
        sw /= len(y) - 2
        self.coef = linalg.solve(sw, m1 - m0)
        p0, p1 = np.mean(y == 0), np.mean(y == 1)
        self.intercept = -0.5 * (m0 + m1) @ self.coef + np.log(p1 / p0)
        return self

    def _features(self, x: np.ndarray) -> np.ndarray:
        z = np.einsum("kc,nct->nkt", self.filters, x.astype(np.float64))
        return np.log(z.var(-1))

    def decision(self, x: np.ndarray) -> np.ndarray:
        """LDA score: > 0 means class 1."""
        return self._features(x) @ self.coef + self.intercept


def epochs(run, x: np.ndarray, t0: float, t1: float):
    fs = run.fs
    xs, ys = [], []
    for onset, _, lab in run.trials():
        s = int(round((onset + t0) * fs))
        xs.append(x[:, s : s + int(round((t1 - t0) * fs))])
        ys.append(0 if lab == "hands" else 1)
    return np.stack(xs), np.array(ys)


def mne_variant(train, test) -> dict:
    sos = signal.butter(4, [7.0, 30.0], "bandpass", fs=train.fs, output="sos")
    xa = signal.sosfiltfilt(sos, train.x, axis=-1)
    xb = signal.sosfiltfilt(sos, test.x, axis=-1)
    a, ya = epochs(train, xa, 1.0, 2.0)
    b, yb = epochs(test, xb, 1.0, 2.0)
    m = CspLda(4).fit(a, ya)
    acc = float(np.mean((m.decision(b) > 0).astype(int) == yb))
    train_acc = float(np.mean((m.decision(a) > 0).astype(int) == ya))
    # Also the trial epoch 0.5-2.5 s, for a sense of the spread.
    a2, _ = epochs(train, xa, 0.5, 2.5)
    b2, _ = epochs(test, xb, 0.5, 2.5)
    m2 = CspLda(4).fit(a2, ya)
    acc2 = float(np.mean((m2.decision(b2) > 0).astype(int) == yb))
    return {"trial_acc_1_2s": acc, "train_acc_1_2s": train_acc, "trial_acc_0.5_2.5s": acc2, "trials": len(yb)}


CAUSAL_SPEC = {
    "input": {"window_seconds": 2.0, "hop_seconds": 0.25},
    "preprocessing": {"bandpass_hz": [7.0, 30.0], "filter_order": 4},
    "output": {"labels": ["hands", "feet"], "null_label": ""},
    "policy": {"confidence_threshold": 0.8, "consecutive": 3, "refractory_seconds": 3.0},
}


def causal_variant(train, test) -> dict:
    spec = json.loads(json.dumps(CAUSAL_SPEC))
    spec["input"]["channels"] = train.channels
    fs = train.fs
    win = int(round(spec["input"]["window_seconds"] * fs))
    y = mi_data.preprocessed(train, train.channels, spec["preprocessing"])
    ends = mi_data.window_ends(y.shape[1], win, int(round(spec["input"]["hop_seconds"] * fs)))
    trials = train.trials()
    ann = mi_data.label_windows(ends, win, fs, trials, 1.0)
    keep = ann >= 0
    # Windows starting at least 0.5 s after onset (the first 0.5 s after the cue holds no imagery yet).
    starts = ends - win
    for i in np.nonzero(keep)[0]:
        if starts[i] < int(round((trials[ann[i]][0] + 0.5) * fs)):
            keep[i] = False
    x = mi_data.stack(y, ends[keep], win)
    lab = np.array([0 if trials[j][2] == "hands" else 1 for j in ann[keep]])
    m = CspLda(4).fit(x, lab)

    def logits(w):
        d = m.decision(w)
        return np.stack([-d / 2, d / 2], 1)  # softmax of these = LDA posterior

    return {"train_windows": int(keep.sum()), "policy": spec["policy"], **mi_eval.evaluate(test, spec, logits)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    train, test = mi_data.Run("eegmmidb/S001R06.edf"), mi_data.Run("eegmmidb/S001R10.edf")
    out = {"train": train.rel, "test": test.rel, "mne": mne_variant(train, test), "causal": causal_variant(train, test)}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"CSP+LDA, trained on {train.rel}, tested on {test.rel}")
        for k, v in out["mne"].items():
            print(f"  mne    {k}: {v}")
        for k, v in out["causal"].items():
            print(f"  causal {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""scipy reference for bci2token-dsp (driven by daemon/dsp/tests/scipy_agreement.rs).

Usage: dsp_reference.py DIR

Reads DIR/cases.json and DIR/signal.f64 (channels x frames float64, little-endian, C order) and
writes DIR/results.json plus one raw little-endian float64 file per case with the filtered signal
(C order, same shape as its input) or the Welch PSD (channels x bins):

- butter:   sos = scipy.signal.butter(order, wn, btype, fs=fs, output="sos");
            sosfilt(sos, x[:channels]) over the whole signal at once                -> butter_I.f64
- notch:    one iirnotch(k * f0, q, fs) section per harmonic k, stacked, sosfilt    -> notch_I.f64
- pipeline: notches, then butter band sections, sosfilt, then (car) x - mean over channels
                                                                                    -> pipeline_I.f64
- prime:    sosfilt(sos, x + offset, zi=sosfilt_zi(sos) * first sample)             -> prime_I.f64
- welch:    scipy.signal.welch(x[:, :frames], fs, window="hann", nperseg, noverlap, detrend="constant",
            scaling="density", return_onesided=True, average="mean"), and band powers
            numpy.trapezoid(psd[..., mask], f[mask]) with mask = (f >= lo) & (f <= hi)
            -> welch_I.f64, welch_I_freqs.f64 (bins), welch_I_band_power.f64 (bands x channels)

Coefficients go into results.json (compared with a tolerance); everything compared exactly or
scaled goes through the raw files, which keep every bit.
"""

import json
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.signal as sig


def write(path, array):
    np.ascontiguousarray(array, dtype="<f8").tofile(path)


def notch_sections(f0, harmonics, q, fs):
    rows = []
    for k in range(1, harmonics + 1):
        b, a = sig.iirnotch(k * f0, q, fs)
        rows.append(np.concatenate([b, a]))
    return np.array(rows).reshape(-1, 6)


def main():
    out = Path(sys.argv[1])
    cases = json.loads((out / "cases.json").read_text())
    shape = (cases["signal"]["channels"], cases["signal"]["frames"])
    x = np.fromfile(out / "signal.f64", dtype="<f8").reshape(shape)
    results = {"scipy": scipy.__version__, "numpy": np.__version__}

    res = []
    for i, c in enumerate(cases["butter"]):
        wn = c["wn"][0] if len(c["wn"]) == 1 else c["wn"]
        sos = sig.butter(c["order"], wn, btype=c["btype"], fs=c["fs"], output="sos")
        write(out / f"butter_{i}.f64", sig.sosfilt(sos, x[: c["channels"]], axis=-1))
        res.append({"sos": sos.tolist()})
    results["butter"] = res

    res = []
    for i, c in enumerate(cases["notch"]):
        sos = notch_sections(c["f0"], c["harmonics"], c["q"], c["fs"])
        write(out / f"notch_{i}.f64", sig.sosfilt(sos, x[: c["channels"]], axis=-1))
        res.append({"sos": sos.tolist()})
    results["notch"] = res

    for i, c in enumerate(cases["pipeline"]):
        parts = []
        if c["notch_hz"]:
            parts.append(notch_sections(c["notch_hz"], c["notch_harmonics"], c["notch_q"], c["fs"]))
        for band in c["bands"]:
            wn = band["wn"][0] if len(band["wn"]) == 1 else band["wn"]
            parts.append(sig.butter(c["order"], wn, btype=band["btype"], fs=c["fs"], output="sos"))
        y = x[: c["channels"]]
        if parts:
            y = sig.sosfilt(np.vstack(parts), y, axis=-1)
        if c["car"]:
            y = y - y.mean(axis=0, keepdims=True)
        write(out / f"pipeline_{i}.f64", y)

    for i, c in enumerate(cases["prime"]):
        wn = c["wn"][0] if len(c["wn"]) == 1 else c["wn"]
        sos = sig.butter(c["order"], wn, btype=c["btype"], fs=c["fs"], output="sos")
        xi = x[: c["channels"]] + c["offset"]
        zi = sig.sosfilt_zi(sos)[:, None, :] * xi[:, 0][None, :, None]
        y, _ = sig.sosfilt(sos, xi, axis=-1, zi=zi)
        write(out / f"prime_{i}.f64", y)

    for i, c in enumerate(cases["welch"]):
        xs = x[: c["channels"], : c["frames"]]
        f, p = sig.welch(xs, fs=c["fs"], window="hann", nperseg=c["nperseg"], noverlap=c["noverlap"],
                         detrend="constant", scaling="density", return_onesided=True, average="mean",
                         axis=-1)
        write(out / f"welch_{i}.f64", p)
        write(out / f"welch_{i}_freqs.f64", f)
        bp = []
        for lo, hi in c["bands"]:
            mask = (f >= lo) & (f <= hi)
            bp.append(np.trapezoid(p[:, mask], f[mask], axis=-1))
        write(out / f"welch_{i}_band_power.f64", np.array(bp))

    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""scipy peer for the bci2token-dsp throughput benchmark (daemon/dsp/benches/throughput.rs).

Usage: dsp_bench.py CHANNELS SECONDS FS ROUNDS WELCH_WINDOW WELCH_NPERSEG

Times, inside Python (perf_counter, best and median of ROUNDS):
- filter:  sosfilt(notch 50 Hz (Q 30) + butter(4, [1, 40], "bandpass"), x, axis=-1) on the whole
           CHANNELS x SECONDS*FS float64 array, then CAR (y - y.mean(axis=0));
- filter_only: the same without CAR;
- welch_windows: welch(w, fs, nperseg=WELCH_NPERSEG) of one CHANNELS x WELCH_WINDOW window (one call
           for all channels, as a vectorised caller would);
- welch_long: welch over the whole CHANNELS x SECONDS*FS array in one call.
Prints one JSON object with the seconds of each.
"""

import json
import statistics
import sys
import time

import numpy as np
import scipy
import scipy.signal as sig


def timed(rounds, f):
    f()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return {"best": min(times), "median": statistics.median(times)}


def main():
    channels, seconds, fs, rounds, win, nperseg = (int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                                                   int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    frames = int(round(seconds * fs))
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 20.0, (channels, frames))
    b, a = sig.iirnotch(50.0, 30.0, fs)
    sos = np.vstack([np.concatenate([b, a]), sig.butter(4, [1.0, 40.0], btype="bandpass", fs=fs, output="sos")])

    def filt_car():
        y = sig.sosfilt(sos, x, axis=-1)
        y -= y.mean(axis=0, keepdims=True)
        return y

    window = x[:, :win].copy()
    out = {
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "filter": timed(rounds, filt_car),
        "filter_only": timed(rounds, lambda: sig.sosfilt(sos, x, axis=-1)),
        "welch_windows": timed(rounds * 20, lambda: sig.welch(window, fs=fs, nperseg=nperseg, axis=-1)),
        "welch_long": timed(rounds, lambda: sig.welch(x, fs=fs, nperseg=nperseg, axis=-1)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

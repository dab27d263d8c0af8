"""MNE-Python's reading of an EDF+/BDF+ file, for bci2token's export test.

  mne_read.py FILE OUTDIR

Writes OUTDIR/mne.json: {"ch_names", "sfreq", "n_times", "annotations": [[onset, duration,
description], ...]} and OUTDIR/mne.f64: the data in µV (MNE reads volts), channel-major, raw
little-endian float64.
"""
import json
import os
import sys

import mne
import numpy as np


def main(path, out):
    os.makedirs(out, exist_ok=True)
    reader = mne.io.read_raw_bdf if path.lower().endswith(".bdf") else mne.io.read_raw_edf
    raw = reader(path, preload=True, verbose="error")
    data = raw.get_data() * 1e6
    np.asarray(data, dtype="<f8").tofile(os.path.join(out, "mne.f64"))
    ann = [[float(a["onset"]), float(a["duration"]), a["description"]] for a in raw.annotations]
    with open(os.path.join(out, "mne.json"), "w") as f:
        json.dump({"ch_names": raw.ch_names, "sfreq": float(raw.info["sfreq"]), "n_times": int(raw.n_times), "annotations": ann}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

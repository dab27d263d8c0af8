#!/usr/bin/env python3
"""Reference dump of an EDF/EDF+/BDF file made with pyedflib.

Used by drivers/replay/tests/pyedflib_agreement.rs to check the Rust reader against an
independent implementation (pyedflib wraps Teunis van Beelen's EDFlib, the C library behind
EDFbrowser).

Usage: edf_reference.py FILE OUTDIR

Writes OUTDIR/reference.json:
  {"pyedflib_version", "filetype", "n_records", "record_duration",
   "signals": [{"label", "unit", "sample_rate", "physical_min", "physical_max",
                "digital_min", "digital_max", "digital_step", "n_samples", "file"}],
   "annotations": [{"onset", "duration" (null when the TAL has none), "text"}]}
and, per signal, OUTDIR/<file> with the physical values (pyedflib readSignal, in the file's
unit) as raw little-endian float64.

pyedflib lists only ordinary signals (EDF+/BDF+ annotation signals are parsed into
readAnnotations() instead); the BDF "Status" channel is an ordinary signal to it.

Exit status: 0 ok, 3 when pyedflib or numpy cannot be imported, 1 on other errors.
"""
import json
import os
import sys

try:
    import numpy as np
    import pyedflib
except ImportError as e:  # the Rust test turns this into a clear failure
    print(f"cannot import pyedflib/numpy: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    r = pyedflib.EdfReader(path)
    try:
        signals = []
        for i in range(r.signals_in_file):
            pmin = float(r.getPhysicalMinimum(i))
            pmax = float(r.getPhysicalMaximum(i))
            dmin = int(r.getDigitalMinimum(i))
            dmax = int(r.getDigitalMaximum(i))
            data = np.asarray(r.readSignal(i, digital=False), dtype="<f8")
            name = f"signal_{i:03d}.f64"
            data.tofile(os.path.join(outdir, name))
            signals.append({
                "label": r.getLabel(i).strip(),
                "unit": r.getPhysicalDimension(i).strip(),
                "sample_rate": float(r.getSampleFrequency(i)),
                "physical_min": pmin,
                "physical_max": pmax,
                "digital_min": dmin,
                "digital_max": dmax,
                "digital_step": (pmax - pmin) / (dmax - dmin),
                "n_samples": int(data.shape[0]),
                "file": name,
            })
        onsets, durations, texts = r.readAnnotations()
        annotations = []
        for onset, duration, text in zip(onsets, durations, texts):
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            d = float(duration)
            annotations.append({
                "onset": float(onset),
                # pyedflib reports -1 for a TAL without duration.
                "duration": None if d < 0 else d,
                "text": str(text),
            })
        ref = {
            "pyedflib_version": pyedflib.__version__,
            "filetype": int(r.filetype),
            "n_records": int(r.datarecords_in_file),
            "record_duration": float(r.datarecord_duration),
            "signals": signals,
            "annotations": annotations,
        }
    finally:
        r.close()
    with open(os.path.join(outdir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""pyedflib side of drivers/replay/benches/decode.rs: decode every signal of an EDF/BDF file.

Usage: edf_decode_bench.py FILE REPS

Each pass opens the file with pyedflib.EdfReader (which also parses the EDF+ annotations),
reads every signal with readSignal(i) (physical values, float64) and closes it. One warm-up pass,
then REPS timed passes. Prints one JSON line:
  {"reader": "pyedflib <version>", "passes": [...seconds...], "samples": N, "bytes": file size}
"""
import json
import os
import sys
import time

try:
    import numpy as np  # noqa: F401  (pyedflib returns numpy arrays)
    import pyedflib
except ImportError as e:
    print(f"cannot import pyedflib/numpy: {e}", file=sys.stderr)
    sys.exit(3)


def one_pass(path):
    r = pyedflib.EdfReader(path)
    try:
        n = 0
        checksum = 0.0
        for i in range(r.signals_in_file):
            x = r.readSignal(i)
            n += x.shape[0]
            checksum += float(x[-1]) if x.shape[0] else 0.0
    finally:
        r.close()
    return n, checksum


def main():
    path, reps = sys.argv[1], int(sys.argv[2])
    one_pass(path)  # warm-up (page cache, imports)
    passes = []
    samples = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        samples, _ = one_pass(path)
        passes.append(time.perf_counter() - t0)
    print(json.dumps({
        "reader": f"pyedflib {pyedflib.__version__}",
        "passes": passes,
        "samples": samples,
        "bytes": os.path.getsize(path),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

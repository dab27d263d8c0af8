"""pyxdf's reading of an XDF file, for bci2token's XDF agreement test.

  xdf_reference.py FILE OUTDIR

Loads FILE with pyxdf.load_xdf(synchronize_clocks=True, handle_clock_resets=True,
dejitter_timestamps=False) -- clock offsets applied as pyxdf does by default, time stamps not
dejittered -- and writes OUTDIR/streams.json (one entry per stream: id, name, type, channel count,
nominal rate, format, sample count, and the strings of string streams) and, per stream,
OUTDIR/<id>.stamps.f64 and OUTDIR/<id>.values.f64 (raw little-endian float64, row-major).
"""
import json
import os
import sys

import numpy as np
import pyxdf


def main(path, out):
    os.makedirs(out, exist_ok=True)
    streams, _ = pyxdf.load_xdf(path, synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=False)
    summary = []
    for s in streams:
        info = s["info"]
        sid = int(info["stream_id"])
        fmt = info["channel_format"][0]
        entry = {
            "id": sid,
            "name": info["name"][0],
            "type": info["type"][0],
            "channel_count": int(info["channel_count"][0]),
            "nominal_srate": float(info["nominal_srate"][0]),
            "format": fmt,
            "samples": len(s["time_stamps"]),
        }
        np.asarray(s["time_stamps"], dtype="<f8").tofile(os.path.join(out, f"{sid}.stamps.f64"))
        if fmt == "string":
            entry["strings"] = [list(row) for row in s["time_series"]]
        else:
            np.asarray(s["time_series"], dtype="<f8").tofile(os.path.join(out, f"{sid}.values.f64"))
        summary.append(entry)
    with open(os.path.join(out, "streams.json"), "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

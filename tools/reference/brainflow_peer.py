"""BrainFlow reference for bci2token's brainflow driver tests (the `brainflow` wheel, from .venv).

  brainflow_peer.py lib
      Prints the path of the libBoardController.so the wheel carries.
  brainflow_peer.py descr BOARD_ID [PRESET]
      Prints BrainFlow's description of a board (get_board_descr) as one JSON line.
  brainflow_peer.py boards
      Prints {"id": .., "name": .., "rate": .., "eeg": .., "presets": [..]} lines for every board the library knows,
      asking BrainFlow's Python binding (its BoardIds enum), to compare with the driver's probe.
  brainflow_peer.py playback EDF OUT SECONDS
      Writes a BrainFlow CSV for master board Cyton (id 0, 24 rows) with DataFilter.write_file:
      the first 8 channels of EDF (µV, pyEDFlib), SECONDS of them, in the EEG rows, the package
      counter k % 256 in row 0, time stamps 1e9 + k / 250 in row 22, all else 0 (BrainFlow's playback
      board clears the marker row: markers come only from insert_marker). Prints
      {"samples": n}.
"""
import json
import os
import sys

import numpy as np
from brainflow.board_shim import BoardIds, BoardShim
from brainflow.data_filter import DataFilter


def main():
    cmd = sys.argv[1]
    if cmd == "lib":
        import brainflow
        print(os.path.join(os.path.dirname(brainflow.__file__), "lib", "libBoardController.so"))
    elif cmd == "descr":
        preset = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        print(json.dumps(BoardShim.get_board_descr(int(sys.argv[2]), preset)))
    elif cmd == "boards":
        for b in sorted(set(x.value for x in BoardIds)):
            try:
                d = BoardShim.get_board_descr(b)
            except Exception:
                continue
            print(json.dumps({"id": b, "name": d["name"], "rate": d.get("sampling_rate"),
                              "eeg": len(d.get("eeg_channels", [])),
                              "presets": sorted(BoardShim.get_board_presets(b))}))
    elif cmd == "playback":
        import pyedflib
        edf, out, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4])
        with pyedflib.EdfReader(edf) as r:
            n = int(seconds * r.getSampleFrequency(0))
            eeg = np.array([r.readSignal(c)[:n] for c in range(8)])
        d = BoardShim.get_board_descr(BoardIds.CYTON_BOARD.value)
        data = np.zeros((d["num_rows"], n))
        data[d["package_num_channel"]] = np.arange(n) % 256
        for i, row in enumerate(d["eeg_channels"]):
            data[row] = eeg[i]
        data[d["timestamp_channel"]] = 1e9 + np.arange(n) / d["sampling_rate"]
        DataFilter.write_file(data, out, "w")
        print(json.dumps({"samples": n}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

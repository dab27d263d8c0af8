"""eegmmidb motor-imagery runs for the mi-eegnet model: reading, the daemon's preprocessing, windows
and the labels of each window. Shared by train_mi_eegnet.py, mi_eval.py and mi_csp.py.

Labels: T1 = imagined both fists ("hands"), T2 = imagined both feet ("feet") in runs R06/R10
(and R14, not shipped here); T0 = rest between trials.
"""

import os
from typing import Dict, List, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.environ.get("BCI2TOKEN_DATA", os.path.join(ROOT, "..", "shared", "data"))

CUE_LABEL = {"T1": "hands", "T2": "feet", "T0": "rest"}


class Run:
    """One EDF+ recording: x [channels, frames] in µV (float64), channel labels as in the file,
    the sample rate, and its annotations [(onset s, duration s, text)]."""

    def __init__(self, rel: str):
        import pyedflib

        self.rel = rel
        self.path = os.path.join(DATA, rel)
        r = pyedflib.EdfReader(self.path)
        try:
            self.x = np.stack([r.readSignal(i) for i in range(r.signals_in_file)])
            self.channels = [s for s in r.getSignalLabels()]
            self.fs = float(r.getSampleFrequency(0))
            onsets, durations, texts = r.readAnnotations()
        finally:
            r.close()
        self.annotations = [(float(o), float(d), str(t)) for o, d, t in zip(onsets, durations, texts)]

    def trials(self, cues=("T1", "T2")) -> List[Tuple[float, float, str]]:
        """(onset s, duration s, label) of the annotations whose text is in cues."""
        return [(o, d, CUE_LABEL[t]) for o, d, t in self.annotations if t in cues]

    def select(self, wanted: List[str]) -> np.ndarray:
        """Rows of x in the order of `wanted` (labels exactly as in the file)."""
        idx = [self.channels.index(c) for c in wanted]
        return self.x[idx]


def preprocessed(run: Run, channels: List[str], pre: Dict) -> np.ndarray:
    """What the daemon feeds the model, before windowing: the manifest's channels, then the
    [preprocessing] cascade run causally from a zero state at the run's first frame (pipeline.py)."""
    import pipeline

    return pipeline.preprocess(run.select(channels), run.fs, pre)


def window_ends(frames: int, win: int, hop: int) -> np.ndarray:
    import pipeline

    return pipeline.window_ends(frames, win, hop)


def label_windows(
    ends: np.ndarray, win: int, fs: float, annotations, min_inside: float
) -> Tuple[np.ndarray, np.ndarray]:
    """For each window (end frame, exclusive), the index of the annotation that covers at least
    `min_inside` (a fraction of the window) of it, its label, or -1/"" for none. Windows are
    labelled by the annotation containing their last `min_inside * win` frames: a window is a
    trial window when the trial began at least that long before the window's end."""
    need = int(round(min_inside * win))
    ann = np.full(len(ends), -1)
    for i, (o, d, _t) in enumerate(annotations):
        s, e = int(round(o * fs)), int(round((o + d) * fs))
        ok = (ends - need >= s) & (ends <= e)
        ann[ok] = i
    return ann


def trial_fraction(ends: np.ndarray, win: int, fs: float, annotations) -> np.ndarray:
    """For each window (end frame, exclusive), the fraction of it inside any of the annotations."""
    inside = np.zeros(len(ends))
    for o, d, _t in annotations:
        s, e = int(round(o * fs)), int(round((o + d) * fs))
        inside += np.clip(np.minimum(ends, e) - np.maximum(ends - win, s), 0, None)
    return inside / win


def stack(y: np.ndarray, ends: np.ndarray, win: int) -> np.ndarray:
    return np.stack([y[:, e - win : e] for e in ends]).astype(np.float32)

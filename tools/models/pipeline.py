"""What the daemon does around a model, in scipy/numpy, as docs/models.md specifies it:
preprocessing from the manifest's [preprocessing] table, sliding windows from [input], softmax,
and the emission policy from [policy]. Used by the evaluation scripts to measure the shipped
models the way the daemon will run them (this is a Python mirror for model authors, not the
reference for the Rust tests, which use scipy directly).
"""

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import signal


def preprocessing_sos(pre: Dict, fs: float) -> np.ndarray:
    """The cascade of second-order sections the daemon applies, in order: notches (notch_hz and
    its multiples, notch_harmonics of them counting the fundamental, those below Nyquist), then
    high-pass, low-pass, band-pass (Butterworth of filter_order, scipy.signal.butter)."""
    sections = []
    notch = float(pre.get("notch_hz", 0) or 0)
    if notch > 0:
        q = float(pre.get("notch_q", 30.0))
        for h in range(1, int(pre.get("notch_harmonics", 1)) + 1):
            f0 = notch * h
            if f0 >= fs / 2:
                break
            b, a = signal.iirnotch(f0, q, fs=fs)
            sections.append(signal.tf2sos(b, a))
    order = int(pre.get("filter_order", 4))
    if pre.get("highpass_hz"):
        sections.append(signal.butter(order, float(pre["highpass_hz"]), "highpass", fs=fs, output="sos"))
    if pre.get("lowpass_hz"):
        sections.append(signal.butter(order, float(pre["lowpass_hz"]), "lowpass", fs=fs, output="sos"))
    if pre.get("bandpass_hz"):
        lo, hi = pre["bandpass_hz"]
        sections.append(signal.butter(order, [float(lo), float(hi)], "bandpass", fs=fs, output="sos"))
    if not sections:
        return np.zeros((0, 6))
    return np.concatenate(sections, axis=0)


def preprocess(x: np.ndarray, fs: float, pre: Dict) -> np.ndarray:
    """Causal filtering of a whole recording [channels, frames] from the steady state for its
    first frame (as a session does from its start, and again after an outage), then common
    average reference when car."""
    sos = preprocessing_sos(pre, fs)
    if len(sos):
        x = np.asarray(x, dtype=np.float64)
        zi = signal.sosfilt_zi(sos)[:, None, :] * x[None, :, 0, None]
        y, _ = signal.sosfilt(sos, x, axis=-1, zi=zi)
    else:
        y = np.array(x, dtype=np.float64)
    if pre.get("car", False):
        y = y - y.mean(axis=0, keepdims=True)
    return y


def window_ends(frames: int, win: int, hop: int) -> np.ndarray:
    """End frames (exclusive) of the daemon's sliding windows: the first window ends when `win`
    frames have arrived, then every `hop` frames."""
    return np.arange(win, frames + 1, hop)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def emit_tokens(
    probs: np.ndarray,
    times: np.ndarray,
    labels: List[str],
    threshold: float,
    consecutive: int,
    refractory: float,
    null_label: str = "",
    texts: Optional[Dict[str, str]] = None,
) -> List[Tuple[float, str, float]]:
    """The emission policy of docs/models.md (as daemon/decoder/src/bridge.rs implements it),
    window by window:

    * a window whose best probability is below `threshold` breaks the run and emits nothing;
    * otherwise the run of windows agreeing on the best label grows by one (or restarts at 1
      for a new label);
    * when the run has at least `consecutive` windows, the label is not the null label (and has
      a text), and at least `refractory` seconds have passed since the last token, the label is
      emitted and the run restarts from zero: a target looked at for long gives one token per
      `max(consecutive * hop, refractory)` seconds. A window held back only by the refractory
      time keeps counting, so the token comes with the first window after it.

    Returns (time, label, confidence) triples; time is the end of the deciding window."""
    out = []
    run_label: Optional[int] = None
    run = 0
    last = -math.inf
    for p, t in zip(probs, times):
        k = int(np.argmax(p))
        if p[k] < threshold:
            run_label, run = None, 0
            continue
        if k == run_label:
            run += 1
        else:
            run_label, run = k, 1
        if run < consecutive or labels[k] == null_label or (texts is not None and not texts.get(labels[k])):
            continue
        if t - last < refractory:
            continue
        out.append((float(t), labels[k], float(p[k])))
        last = t
        run_label, run = None, 0
    return out

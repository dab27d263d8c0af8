"""A numpy re-implementation of the synthetic board's signal model (drivers/synthetic/src/generator.rs).

Statistically the same signal as the Rust driver, not bit-identical: the noise comes from numpy's
generator instead of xoshiro256**, and the per-channel alpha/mains phases are drawn here. Everything
else follows generator.rs:

* pink noise of RMS ``noise_uv`` per channel: white Gaussian noise through Paul Kellet's refined
  pink filter, scaled by the filter's analytic output variance, after 8192 warm-up samples;
* alpha: a sine at ``alpha_hz`` of amplitude ``alpha_uv`` with a random per-channel phase, doubled
  during rest (raised-cosine ramped);
* mains: a sine at ``line_hz`` of amplitude ``line_uv``, common phase plus a +-0.1 rad offset;
* during an intent at frequency f: ``ssvep_uv * weight_c * env * (sin(2 pi f tau) +
  0.5 sin(2 pi 2f tau))`` with ``tau = time since the intent's onset - delay_c``; the harmonic only
  when 2f is below Nyquist; ``env`` is a raised-cosine ramp of 0.1 s (at most a quarter of the
  intent) at both ends.

Channel labels O1 Oz O2 PO3 POz PO4 PO7 PO8 with SSVEP weights 0.95 1 0.95 0.8 0.85 0.8 0.7 0.7 and
delays 2 0 2 5 4 5 6 6 ms.

Used by the speller's export (test vectors) and by eval_speller.py (separability, demo timing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

LABELS = ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"]
WEIGHTS = np.array([0.95, 1.0, 0.95, 0.8, 0.85, 0.8, 0.7, 0.7])
DELAYS_S = np.array([2.0, 0.0, 2.0, 5.0, 4.0, 5.0, 6.0, 6.0]) / 1000.0
RAMP_S = 0.1
PINK_POLES = np.array([0.99886, 0.99332, 0.96900, 0.86650, 0.55000, -0.7616])
PINK_GAINS = np.array([0.0555179, 0.0750759, 0.1538520, 0.3104856, 0.5329522, -0.0168980])
PINK_DIRECT = 0.5362
PINK_DELAYED = 0.115926
PINK_WARMUP = 8192


def pink_unit_variance() -> float:
    v = PINK_DIRECT**2 + PINK_DELAYED**2
    for j in range(6):
        v += 2 * PINK_DIRECT * PINK_GAINS[j]
        v += 2 * PINK_DELAYED * PINK_GAINS[j] * PINK_POLES[j]
        for k in range(6):
            v += PINK_GAINS[j] * PINK_GAINS[k] / (1 - PINK_POLES[j] * PINK_POLES[k])
    return v


def pink_noise(rng: np.random.Generator, channels: int, frames: int, rms: float) -> np.ndarray:
    """[channels, frames] pink noise of the given RMS (Kellet's filter, as the driver)."""
    w = rng.standard_normal((channels, PINK_WARMUP + frames))
    y = PINK_DIRECT * w
    y[:, 1:] += PINK_DELAYED * w[:, :-1]
    for a, g in zip(PINK_POLES, PINK_GAINS):
        y += lfilter([g], [1.0, -a], w, axis=1)
    return y[:, PINK_WARMUP:] * (rms / math.sqrt(pink_unit_variance()))


def _ramp(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


@dataclass
class Board:
    sample_rate: float = 250.0
    channels: int = 8
    noise_uv: float = 10.0
    alpha_uv: float = 8.0
    alpha_hz: float = 10.0
    line_hz: float = 50.0
    line_uv: float = 5.0
    ssvep_uv: float = 4.0
    seed: int = 1
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def render(self, script: list[tuple[float | None, float]]) -> tuple[np.ndarray, list[tuple[int, int, float | None]]]:
        """Renders a script of (frequency or None for rest, seconds) items.

        Returns the signal [channels, frames] in µV (float64) and the segments (start, end, freq)
        in frames, placed like the driver (cumulative rounding).
        """
        fs = self.sample_rate
        segs = []
        start = 0
        elapsed = 0.0
        for freq, sec in script:
            elapsed += sec
            end = int(round(elapsed * fs))
            segs.append((start, end, freq))
            start = end
        n = start
        c = self.channels
        t = np.arange(n) / fs
        x = pink_noise(self.rng, c, n, self.noise_uv)
        alpha_phase = self.rng.uniform(0, 2 * np.pi, c)
        line_phase = self.rng.uniform(0, 2 * np.pi) + 0.2 * (self.rng.uniform(size=c) - 0.5)
        rest_boost = np.zeros(n)
        w = np.concatenate([WEIGHTS, np.full(max(0, c - 8), 0.5)])[:c]
        d = np.concatenate([DELAYS_S, np.full(max(0, c - 8), 0.008)])[:c]
        for s, e, freq in segs:
            idx = np.arange(s, e)
            since = (idx - s) / fs
            until = (e - idx) / fs
            r = min(RAMP_S, (e - s) / fs / 4)
            env = _ramp(np.minimum(since, until) / r) if r > 0 else np.ones(e - s)
            if freq is None:
                rest_boost[s:e] = env
            else:
                tau = since[None, :] - d[:, None]
                amp = self.ssvep_uv * w[:, None] * env[None, :]
                x[:, s:e] += amp * np.sin(2 * np.pi * freq * tau)
                if 2 * freq < 0.5 * fs:
                    x[:, s:e] += 0.5 * amp * np.sin(2 * np.pi * 2 * freq * tau)
        x += (self.alpha_uv * (1 + rest_boost))[None, :] * np.sin(2 * np.pi * self.alpha_hz * t[None, :] + alpha_phase[:, None])
        if self.line_hz > 0 and self.line_uv > 0:
            x += self.line_uv * np.sin(2 * np.pi * self.line_hz * t[None, :] + line_phase[:, None])
        return x, segs

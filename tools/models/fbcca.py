"""Filter-bank CCA (Chen et al. 2015, J. Neural Eng. 12:046008) as a TorchScript module.

The model takes ``x: [batch, channels, samples]`` float32 µV (already preprocessed by the daemon:
notch and band-pass as in the manifest) and returns float32 logits ``[batch, targets]``:

    logits[b, k] = scale * (sum_n w_n * rho[b, n, k]^2 - 0.5)

where ``rho[b, n, k]`` is the largest canonical correlation between sub-band ``n`` of window ``b``
and the sine/cosine references of target ``k`` (harmonics 1..H), and ``w_n = n^-a + b``
normalised to sum to 1, so the weighted score lies in [0, 1] and the logits in
[-scale/2, scale/2]. The constant shift changes no probability (softmax is shift-invariant); it
keeps |logit| < 16 for scale < 32, where one float32 ulp is below 1e-6, so a test-vector
tolerance of 1e-6 (absolute) holds even if a different BLAS path moved a value by one ulp.

Everything inside ``forward`` runs in float64 (the input is cast on entry, the logits cast back
to float32 at the end): the float32 output is then the same whatever the thread count or SIMD
path of the BLAS/LAPACK/FFT kernels, which only move float64 results by a few ulp.

Steps (all torch ops, scripted with torch.jit.script); a window containing a NaN or infinite
sample gives NaN logits (the other windows of the batch are unaffected), an empty batch an empty
[0, K] tensor:

1. remove each channel's mean over the window;
2. filter bank in the frequency domain: ``rfft`` of the window zero-padded to ``nfft`` samples,
   multiplied by one fixed real (zero-phase) mask per sub-band, ``irfft`` and cropped back to the
   window (a linear, non-causal zero-phase filtering with zero padding at both ends). Each mask is
   1 on [lo_n, hi] with raised-cosine transitions of ``transition_hz`` below lo_n and above hi;
   with ``decimate`` d > 1 (unused by the shipped models) the inverse FFT keeps only the bins
   below fs/(2d) and returns the sub-band at fs/d, exactly, as the masks are zero above;
3. per sub-band, the channel covariance ``S = Xn Xn^T`` (after removing the mean again) plus a
   ridge of ``ridge * trace(S)/C`` (a flat or linearly dependent channel, e.g. after CAR, cannot
   make the Cholesky factorisation fail), and its Cholesky factor ``L``;
4. ``A_k = L^-1 Xn Q_k`` where ``Q_k`` ([samples, 2H], a buffer) is an orthonormal basis of the
   centred references of target k; the squared canonical correlations are the eigenvalues of
   ``A_k^T A_k`` (or ``A_k A_k^T``, whichever is smaller), the largest one is ``rho^2``
   (``torch.linalg.eigvalsh``).
"""

from typing import List

import numpy as np
import torch
from torch import Tensor, nn


def raised_cosine_edge(f: np.ndarray, start: float, width: float) -> np.ndarray:
    """0 below ``start``, 1 above ``start + width``, raised cosine in between."""
    if width <= 0:
        return (f >= start).astype(np.float64)
    x = np.clip((f - start) / width, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def band_masks(nfft: int, fs: float, lows: List[float], high: float, width: float) -> np.ndarray:
    """[N, nfft//2+1] zero-phase masks: 1 on [lo_n, high], raised-cosine edges of ``width`` Hz
    below lo_n and above high."""
    f = np.arange(nfft // 2 + 1) * fs / nfft
    rows = []
    for lo in lows:
        m = raised_cosine_edge(f, lo - width, width) * (1.0 - raised_cosine_edge(f, high, width))
        rows.append(m)
    return np.stack(rows)


def reference_bases(freqs: List[float], harmonics: int, samples: int, fs: float) -> np.ndarray:
    """[K, samples, 2H]: orthonormal bases (QR) of the mean-removed sin/cos references
    sin(2 pi h f t), cos(2 pi h f t), h = 1..H, t = n / fs."""
    t = np.arange(samples) / fs
    out = []
    for f in freqs:
        cols = []
        for h in range(1, harmonics + 1):
            cols.append(np.sin(2 * np.pi * h * f * t))
            cols.append(np.cos(2 * np.pi * h * f * t))
        y = np.stack(cols, axis=1)
        y = y - y.mean(axis=0, keepdims=True)
        q, r = np.linalg.qr(y)
        # A fixed sign convention so the basis is the same on every machine.
        s = np.sign(np.diag(r))
        s[s == 0] = 1.0
        out.append(q * s[None, :])
    return np.stack(out)


def subband_weights(n: int, a: float = 1.25, b: float = 0.25) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** (-a) + b
    return w / w.sum()


class FBCCA(nn.Module):
    """See the module docstring. Buffers only, no parameters."""

    channels: int
    samples: int
    nfft: int
    targets: int
    refdim: int
    scale: float
    ridge: float
    decimate: int
    nbins: int

    def __init__(
        self,
        freqs: List[float],
        fs: float,
        channels: int,
        samples: int,
        harmonics: int,
        lows: List[float],
        high: float,
        transition_hz: float,
        scale: float,
        weight_a: float = 1.25,
        weight_b: float = 0.25,
        ridge: float = 1e-9,
        decimate: int = 1,
    ) -> None:
        super().__init__()
        nfft = 1
        while nfft < 2 * samples:
            nfft *= 2
        if decimate < 1 or samples % decimate or nfft % (2 * decimate):
            raise ValueError(f"decimate={decimate} must divide samples={samples} and nfft/2={nfft // 2}")
        if decimate > 1 and high + transition_hz >= fs / (2 * decimate):
            raise ValueError(
                f"decimate={decimate}: the masks must be zero from the new Nyquist {fs / 2 / decimate} Hz on, "
                f"but high + transition_hz = {high + transition_hz} Hz"
            )
        self.channels = channels
        self.samples = samples
        self.nfft = nfft
        self.targets = len(freqs)
        self.refdim = 2 * harmonics
        self.scale = float(scale)
        self.ridge = float(ridge)
        self.decimate = int(decimate)
        # Spectrum bins kept: all of them, or those below the decimated Nyquist.
        self.nbins = nfft // (2 * decimate) + 1
        q = reference_bases(freqs, harmonics, samples // decimate, fs / decimate)  # [K, T/d, 2H]
        # [T/d, K*2H]: all targets' bases side by side, so one matmul projects onto all of them.
        qflat = np.ascontiguousarray(q.transpose(1, 0, 2).reshape(samples // decimate, -1))
        self.register_buffer("refs", torch.from_numpy(qflat))
        masks = band_masks(nfft, fs, lows, high, transition_hz)[:, : self.nbins]
        self.register_buffer("masks", torch.from_numpy(np.ascontiguousarray(masks)))
        self.register_buffer("weights", torch.from_numpy(subband_weights(len(lows), weight_a, weight_b)))
        self.register_buffer("eye", torch.eye(channels, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.size(1) != self.channels or x.size(2) != self.samples:
            raise ValueError(
                "FBCCA expects input [batch, "
                + str(self.channels)
                + ", "
                + str(self.samples)
                + "] (batch, channels, samples), got "
                + str(x.shape)
            )
        b = x.size(0)
        c = self.channels
        t = self.samples // self.decimate
        k = self.targets
        r = self.refdim
        n = self.masks.size(0)
        if b == 0:
            return torch.zeros([0, k], dtype=torch.float32, device=x.device)
        xd = x.to(torch.float64)
        # A window with a NaN or infinite sample gets NaN logits (the daemon emits nothing for
        # them); it is computed as zeros so that it cannot make the factorisations throw.
        finite = torch.isfinite(xd).flatten(1).all(dim=1)  # [B]
        xd = torch.where(finite.view(b, 1, 1), xd, torch.zeros_like(xd))
        xd = xd - xd.mean(dim=-1, keepdim=True)
        # Filter bank: zero-phase masks in the frequency domain.
        spec = torch.fft.rfft(xd, n=self.nfft, dim=-1)[:, :, : self.nbins]  # [B, C, F]
        sub = spec.unsqueeze(1) * self.masks.unsqueeze(0).unsqueeze(2)  # [B, N, C, F]
        # Back to time at fs/d (band-limited, so the shorter inverse FFT samples it exactly).
        xs = torch.fft.irfft(sub, n=self.nfft // self.decimate, dim=-1)[:, :, :, :t]  # [B, N, C, T/d]
        xs = xs - xs.mean(dim=-1, keepdim=True)
        # Whitening of the channels per sub-band.
        cov = torch.matmul(xs, xs.transpose(-1, -2))  # [B, N, C, C]
        tr = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)  # [B, N]
        ridge = (tr / c * self.ridge + 1e-30).unsqueeze(-1).unsqueeze(-1)
        chol = torch.linalg.cholesky(cov + ridge * self.eye)
        # Projection onto every target's reference basis, whitened.
        proj = torch.matmul(xs, self.refs)  # [B, N, C, K*2H]
        a = torch.linalg.solve_triangular(chol, proj, upper=False)  # [B, N, C, K*2H]
        a = a.reshape(b, n, c, k, r).permute(0, 1, 3, 2, 4)  # [B, N, K, C, 2H]
        if r <= c:
            gram = torch.matmul(a.transpose(-1, -2), a)  # [B, N, K, 2H, 2H]
        else:
            gram = torch.matmul(a, a.transpose(-1, -2))  # [B, N, K, C, C]
        rho2 = torch.linalg.eigvalsh(gram)[..., -1].clamp(0.0, 1.0)  # [B, N, K]
        score = (rho2 * self.weights.view(1, n, 1)).sum(dim=1)  # [B, K]
        logits = (score - 0.5) * self.scale
        logits = torch.where(finite.view(b, 1), logits, torch.full_like(logits, float("nan")))
        return logits.to(torch.float32)


def fbcca_numpy(x: np.ndarray, model: FBCCA) -> np.ndarray:
    """Reference implementation of the same score in plain numpy/float64 (textbook CCA via QR and
    SVD, on the same filter bank), to cross-check the torch module. Returns logits [B, K]."""
    masks = model.masks.numpy()
    refs = model.refs.numpy()
    d = model.decimate
    t, nfft, k, r = model.samples // d, model.nfft, model.targets, model.refdim
    w = model.weights.numpy()
    out = np.zeros((x.shape[0], k))
    for bi in range(x.shape[0]):
        xb = x[bi].astype(np.float64)
        xb = xb - xb.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(xb, n=nfft, axis=-1)[:, : model.nbins]
        for ni in range(masks.shape[0]):
            xs = np.fft.irfft(spec * masks[ni][None, :], n=nfft // d, axis=-1)[:, :t]
            xs = xs - xs.mean(axis=1, keepdims=True)
            qx, _ = np.linalg.qr(xs.T)
            for ki in range(k):
                qy = refs[:, ki * r : (ki + 1) * r]
                s = np.linalg.svd(qx.T @ qy, compute_uv=False)
                out[bi, ki] += w[ni] * min(s[0], 1.0) ** 2
    return (out - 0.5) * model.scale


def script_and_save(model: FBCCA, path: str) -> torch.jit.ScriptModule:
    model.eval()
    sm = torch.jit.script(model)
    torch.jit.save(sm, path)
    return sm

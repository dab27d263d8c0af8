"""EEGNet (Lawhern et al. 2018, J. Neural Eng. 15:056013) for the mi-eegnet package, scriptable
with torch.jit.script.

Input ``x: [batch, channels, samples]`` float32 µV, already preprocessed by the daemon (band-pass,
optional CAR); output float32 logits ``[batch, classes]``.

    scale (a fixed buffer: 1 / the training windows' median channel standard deviation)
    -> average pooling by ``decimate`` in time (the daemon's low-pass already removed what would alias)
    -> temporal conv, F1 filters of length K1 (zero 'same' padding), BatchNorm
    -> depthwise spatial conv (D filters per temporal filter over all channels, max-norm 1), BatchNorm, ELU,
       average pooling 4, dropout
    -> separable conv (depthwise length 16, pointwise to F2), BatchNorm, ELU, average pooling 8, dropout
    -> linear to the classes (max-norm 0.25)
"""

import torch
from torch import Tensor, nn


class EEGNet(nn.Module):
    def __init__(
        self,
        channels: int,
        samples: int,
        classes: int,
        f1: int = 8,
        d: int = 2,
        f2: int = 16,
        k1: int = 32,
        k2: int = 16,
        decimate: int = 2,
        pool1: int = 4,
        pool2: int = 8,
        dropout: float = 0.5,
        scale: float = 1.0,
    ):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))
        self.decimate = nn.AvgPool2d((1, decimate)) if decimate > 1 else nn.Identity()
        t = samples // decimate
        self.temporal = nn.Sequential(
            nn.ZeroPad2d(((k1 - 1) // 2, k1 // 2, 0, 0)),
            nn.Conv2d(1, f1, (1, k1), bias=False),
            nn.BatchNorm2d(f1),
        )
        self.spatial = nn.Conv2d(f1, f1 * d, (channels, 1), groups=f1, bias=False)
        self.block1 = nn.Sequential(
            nn.BatchNorm2d(f1 * d),
            nn.ELU(),
            nn.AvgPool2d((1, pool1)),
            nn.Dropout(dropout),
        )
        t = t // pool1
        self.block2 = nn.Sequential(
            nn.ZeroPad2d(((k2 - 1) // 2, k2 // 2, 0, 0)),
            nn.Conv2d(f1 * d, f1 * d, (1, k2), groups=f1 * d, bias=False),
            nn.Conv2d(f1 * d, f2, 1, bias=False),
            nn.BatchNorm2d(f2),
            nn.ELU(),
            nn.AvgPool2d((1, pool2)),
            nn.Dropout(dropout),
        )
        t = t // pool2
        self.features = f2 * t
        self.classify = nn.Linear(self.features, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x * self.scale).unsqueeze(1)  # [B, 1, C, T]
        x = self.decimate(x)
        x = self.temporal(x)
        x = self.spatial(x)
        x = self.block1(x)
        x = self.block2(x)
        return self.classify(x.flatten(1))

    @torch.jit.ignore
    def apply_max_norm(self) -> None:
        """EEGNet's weight constraints, applied after each optimiser step."""
        with torch.no_grad():
            w = self.spatial.weight
            w.copy_(torch.renorm(w, 2, 0, 1.0))
            w = self.classify.weight
            w.copy_(torch.renorm(w, 2, 0, 0.25))


class Ensemble(nn.Module):
    """Several EEGNets trained from different seeds on the same data. Output: the log of the mean
    of their softmax probabilities (so the daemon's softmax of it gives exactly that mean),
    with the probabilities floored at 1e-7 so every logit stays finite (>= -16.2)."""

    def __init__(self, members: list):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.n = len(members)

    def forward(self, x: Tensor) -> Tensor:
        p = torch.zeros(0)
        first = True
        for m in self.members:
            q = torch.softmax(m(x), dim=1)
            if first:
                p = q
                first = False
            else:
                p = p + q
        return torch.log(torch.clamp(p / float(self.n), min=1e-7))

"""Exports the TorchScript fixtures the end-to-end tests use (not product models).

tests/fixtures/models/throws: a model for the synthetic board (8 channels, 250 Hz) that raises a
RuntimeError for every window whose last sample on the first channel is positive and returns
uniform logits otherwise, so a test can see decoder errors while the session keeps recording.

Run with the export environment: .cache/export-venv/bin/python tools/models/export_test_fixtures.py
"""
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


class ThrowsOnPositive(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0, -1] > 0).any()):
            raise RuntimeError("test model: refusing a window whose last O1 sample is positive")
        return torch.zeros(x.shape[0], 2)


def main() -> None:
    out = ROOT / "tests/fixtures/models/throws"
    out.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(ThrowsOnPositive()), str(out / "model.pt"))
    (out / "model.toml").write_text(
        """name = "throws"
version = "0.1.0"
description = "Test fixture: raises for about half of the windows (tools/models/export_test_fixtures.py)"
[input]
channels = ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"]
sample_rate = 250.0
window_seconds = 0.5
hop_seconds = 0.1
[output]
kind = "classes"
labels = ["a", "b"]
[tokens]
tokenizer = "gpt2"
text = { a = " a", b = " b" }
[policy]
confidence_threshold = 0.4
[provenance]
script = "tools/models/export_test_fixtures.py"
"""
    )
    print("wrote", out)


if __name__ == "__main__":
    main()

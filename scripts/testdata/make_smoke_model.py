#!/usr/bin/env python3
"""Writes the two tiny deterministic TorchScript models used by the tests.

models/smoke/: one 3x3x3 convolution (every weight 1/27, bias 0.5, zero padding) followed
by a sigmoid, so its output is known in closed form: fed all ones, a voxel with n
neighbours inside the volume reads sigmoid(n/27 + 0.5). src/inference/smoke.rs checks
exactly that.

models/threshold-test/: a complete bundle (manifest in the real format) whose "network"
marks soft tissue: logits = 40 * (x - 0.5), where x is HU windowed [-1000, 400] to [0, 1],
so voxels above -300 HU score above 0.5. Pipeline tests use it to check geometry and
measurements end to end without depending on a trained model.

models/threshold-test/classifier.pt: a stand-in candidate classifier for the same tests,
logit = 40 * (0.3 - mean of the crop).

Run with the project's venv: .venv/bin/python3 scripts/testdata/make_smoke_model.py
"""
import hashlib
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / "models" / "smoke"


class Smoke(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, kernel_size=3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 27.0)
            self.conv.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


class Threshold(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 40.0


class MeanClassifier(torch.nn.Module):
    """A stand-in candidate classifier: logit = 40 * (0.3 - mean of the crop), which
    prefers candidates with little tissue around them (`[N, 1, d, h, w]` to `[N, 1]`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.3 - x.mean(dim=(2, 3, 4))) * 40.0


def write_test_classifier() -> None:
    """models/threshold-test/classifier.pt, which pipeline tests add to the bundle."""
    path = OUT.parent / "threshold-test" / "classifier.pt"
    torch.jit.script(MeanClassifier().eval()).save(str(path))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def write_threshold_bundle() -> None:
    out = OUT.parent / "threshold-test"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.pt"
    torch.jit.script(Threshold().eval()).save(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "manifest.toml").write_text(
        f'''# Made by scripts/testdata/make_smoke_model.py; do not edit by hand.
id = "threshold-test"
version = "1"
file = "model.pt"
sha256 = "{digest}"
architecture = "no network: logits = 40 * (windowed HU - 0.5), i.e. soft tissue above -300 HU"
intended_use = "tests only: checks the pipeline's geometry and measurements"
[input]
spacing_mm = [2.0, 2.0, 2.0]
patch = [32, 32, 32]
overlap = 0.25
hu_window = [-1000.0, 400.0]
divisible_by = 1
[output]
kind = "logits"
channels = 1
[thresholds]
probability = 0.5
min_score = 0.1
min_diameter_mm = 3.0
[precision]
half_on_cuda = false
'''
    )
    print(f"wrote {path} ({path.stat().st_size} bytes, sha256 {digest})")


def main() -> None:
    write_threshold_bundle()
    write_test_classifier()
    OUT.mkdir(parents=True, exist_ok=True)
    model = torch.jit.script(Smoke().eval())
    path = OUT / "model.pt"
    model.save(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (OUT / "manifest.toml").write_text(
        f'''# Made by scripts/testdata/make_smoke_model.py; do not edit by hand.
id = "smoke"
version = "1"
sha256 = "{digest}"
description = "one 3x3x3 convolution (weights 1/27, bias 0.5, zero padding) and a sigmoid"
intended_use = "tests only: proves that libtorch loads and runs TorchScript here"
torch = "{torch.__version__}"
'''
    )
    print(f"wrote {path} ({path.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()

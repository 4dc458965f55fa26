#!/usr/bin/env python3
"""Writes models/smoke/: a tiny deterministic TorchScript model that proves libtorch runs.

The model is one 3x3x3 convolution (every weight 1/27, bias 0.5, zero padding) followed
by a sigmoid, so its output is known in closed form: fed all ones, a voxel with n
neighbours inside the volume reads sigmoid(n/27 + 0.5). src/inference/smoke.rs checks
exactly that. Run with the project's venv: .venv/bin/python3 scripts/make_smoke_model.py
"""
import hashlib
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "smoke"


class Smoke(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, kernel_size=3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 27.0)
            self.conv.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = torch.jit.script(Smoke().eval())
    path = OUT / "model.pt"
    model.save(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (OUT / "manifest.toml").write_text(
        f'''# Made by scripts/make_smoke_model.py; do not edit by hand.
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

#!/usr/bin/env python3
"""Average two detector checkpoints of the same network ("model soup").

    .venv/bin/python3 scripts/model/soup.py A.pth B.pth OUT.pth [--weight-b 0.5]

Every floating-point tensor (BatchNorm's running statistics included) becomes
(1 - w) * A + w * B; integer tensors (BatchNorm's step counters) are taken from B. Only
meaningful for checkpoints that continue from the same weights (a fine-tune and where it
started), as stage 18's candidate E (docs/model-history-stage14.md). Export the result with
scripts/model/export.py like any checkpoint.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch


def soup(a: dict, b: dict, weight_b: float) -> dict:
    if a.keys() != b.keys():
        sys.exit(f"soup: the checkpoints hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    out = type(a)()
    for k, va in a.items():
        vb = b[k]
        if va.shape != vb.shape:
            sys.exit(f"soup: {k} is {tuple(va.shape)} in A and {tuple(vb.shape)} in B")
        out[k] = ((1 - weight_b) * va.float() + weight_b * vb.float()).to(va.dtype) if va.is_floating_point() else vb
    out._metadata = getattr(a, "_metadata", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=pathlib.Path)
    ap.add_argument("b", type=pathlib.Path)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--weight-b", type=float, default=0.5, help="B's share (default 0.5)")
    args = ap.parse_args()
    if not 0.0 <= args.weight_b <= 1.0:
        ap.error("--weight-b must lie in [0, 1]")
    merged = soup(torch.load(args.a, map_location="cpu"), torch.load(args.b, map_location="cpu"), args.weight_b)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(merged, args.out)


if __name__ == "__main__":
    main()

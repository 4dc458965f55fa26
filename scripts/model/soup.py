#!/usr/bin/env python3
"""Average the weights of two checkpoints of the same network (a "model soup").

    .venv/bin/python3 scripts/model/soup.py --a models/pulmo-nodule-v1 --b DIR --out OUT [--weight-b 0.5]
    .venv/bin/python3 scripts/model/export.py --dir OUT --version V ...

Both must descend from the same weights (one fine-tuned from the other, or both from one
parent), or the average means nothing. Every floating-point tensor of the state dict,
BatchNorm running statistics included, becomes (1 - w) * a + w * b; integer counters are
taken from A. OUT gets the averaged checkpoint.pth, A's candidate classifier files, and a
training-log.json that is A's with the soup recorded under "soup".
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=pathlib.Path, required=True, help="bundle folder with checkpoint.pth")
    ap.add_argument("--b", type=pathlib.Path, required=True, help="bundle folder with checkpoint.pth")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--weight-b", type=float, default=0.5, help="share of B in the average")
    args = ap.parse_args()
    w = args.weight_b
    for folder in (args.a, args.b):
        if not (folder / "checkpoint.pth").is_file():
            raise SystemExit(f"soup: {folder / 'checkpoint.pth'} is not there (a bundle folder made by scripts/model/train.py)")
    if not 0.0 <= w <= 1.0:
        raise SystemExit(f"soup: --weight-b {w} is not between 0 and 1")
    a = torch.load(args.a / "checkpoint.pth", map_location="cpu")
    b = torch.load(args.b / "checkpoint.pth", map_location="cpu")
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise SystemExit("soup: the two checkpoints are not the same network")
    soup = {k: (1 - w) * v + w * b[k] if v.is_floating_point() else v.clone() for k, v in a.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(soup, args.out / "checkpoint.pth")
    for name in ("classifier.pt", "classifier.pth", "classifier-log.json"):
        if (args.a / name).exists():
            shutil.copy(args.a / name, args.out / name)
    log = json.loads((args.a / "training-log.json").read_text())
    log["soup"] = {"a": str(args.a), "b": str(args.b), "weight_b": w}
    (args.out / "training-log.json").write_text(json.dumps(log, indent=1))
    print(f"soup: {len(soup)} tensors, {1 - w:g} x {args.a} + {w:g} x {args.b} -> {args.out / 'checkpoint.pth'}")


if __name__ == "__main__":
    main()

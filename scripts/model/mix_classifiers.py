#!/usr/bin/env python3
"""One TorchScript candidate classifier that mixes two trained ones, logit by logit.

    logit = a × plain(centre 32³ of the crop) + (1 − a) × context(whole 64³ crop)

`plain` is a CandidateNet (train_fpr.py without `--context`, e.g. 1.9.0's classifier.pth),
`context` a ContextNet (train_fpr.py `--context`). pulmo hands the classifier a 64³ crop
centred on the finding (manifest `[classifier] crop = [64, 64, 64]`), whose central 32³ is
exactly the 32³ crop the plain classifier was trained on and run on alone, so each half
gives the logit it gives by itself. No training: `a` and the manifest's weight are chosen
on tuning sets (docs/model-history.md, stage 17).

    .venv/bin/python3 scripts/model/mix_classifiers.py --plain models/pulmo-nodule-v1/classifier.pth \
        --context CTX/classifier.pth --a 0.5 --out DIR
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import pathlib
import sys

import torch
import torch.nn as nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_fpr import CandidateNet, ContextNet  # noqa: E402


class MixNet(nn.Module):
    """64³ crop → a × plain(centre 32³) + (1 − a) × context(64³)."""

    def __init__(self, plain: CandidateNet, context: ContextNet, a: float):
        super().__init__()
        self.plain = plain
        self.context = context
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :, 16:48, 16:48, 16:48]
        return self.a * self.plain(centre) + (1.0 - self.a) * self.context(x)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", type=pathlib.Path, required=True, help="CandidateNet weights (.pth)")
    ap.add_argument("--context", type=pathlib.Path, required=True, help="ContextNet weights (.pth)")
    ap.add_argument("--a", type=float, required=True, help="the plain classifier's share of the logit, 0..1")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    if not 0.0 <= args.a <= 1.0:
        sys.exit(f"--a {args.a}: must lie in 0..1")
    plain, context = CandidateNet(), ContextNet()
    plain.load_state_dict(torch.load(args.plain, map_location="cpu"))
    context.load_state_dict(torch.load(args.context, map_location="cpu"))
    model = MixNet(plain, context, args.a).eval()

    # The mix must give what its halves give: check on random crops before saving.
    with torch.no_grad():
        x = torch.rand(3, 1, 64, 64, 64)
        want = args.a * plain(x[:, :, 16:48, 16:48, 16:48]) + (1 - args.a) * context(x)
        scripted = torch.jit.script(model)
        got = scripted(x)
        if not torch.allclose(got, want, atol=1e-5):
            sys.exit(f"the scripted mix differs from its halves by {float((got - want).abs().max())}")
        # pulmo runs the classifier in bfloat16 on CPUs that have it: every operation must too.
        torch.jit.script(copy.deepcopy(model)).to(torch.bfloat16)(torch.zeros(2, 1, 64, 64, 64, dtype=torch.bfloat16))

    args.out.mkdir(parents=True, exist_ok=True)
    scripted.save(str(args.out / "classifier.pt"))
    torch.save(model.state_dict(), args.out / "classifier.pth")
    log = {"kind": "mix", "crop": 64, "a": args.a,
           "plain": {"path": str(args.plain), "sha256": sha256(args.plain)},
           "context": {"path": str(args.context), "sha256": sha256(args.context)}}
    (args.out / "classifier-log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()

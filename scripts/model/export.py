#!/usr/bin/env python3
"""Export a trained NoduleNet checkpoint to TorchScript and write its manifest.toml.

    .venv/bin/python3 scripts/model/export.py --dir models/pulmo-nodule-v1

Writes DIR/model.pt (torch.jit.script of the eval-mode net with BatchNorm folded into the
convolutions; input [N,1,D,H,W] float32 in
[0,1], D/H/W divisible by 8; output [N,1,D,H,W] float32 logits) and DIR/manifest.toml
with the sha256 of model.pt. Checks that the saved module reloads and matches eager output.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import pathlib
import sys

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from pulmo_net import NoduleNet, count_parameters  # noqa: E402

MANIFEST = '''# Made by scripts/model/export.py from {ckpt}; do not edit by hand.
id = "{id}"
version = "{version}"
file = "model.pt"
sha256 = "{sha}"
architecture = "{arch}"
parameters = {params}
intended_use = "research and demonstration; trained on synthetic phantoms; not for clinical use"
training_data = "{data}"

[input]
spacing_mm = [1.25, 1.25, 1.25]   # [z, y, x] working spacing
patch = [64, 64, 64]              # [z, y, x]
overlap = 0.25                    # fraction of the patch
hu_window = [-1000.0, 400.0]      # clip to this, then scale linearly to [0, 1]
divisible_by = 8                  # spatial sizes the net accepts
extra_spacings_mm = {extra}  # further passes: small nodules look larger (docs/model-card.md)

[output]
kind = "logits"                   # apply sigmoid for probability
channels = 1

[thresholds]
probability = {prob}                 # voxel threshold for candidate components
min_score = {min_score}                   # drop candidates scoring below
min_diameter_mm = 3.0{operating}

[precision]
half_on_cuda = true
bfloat16_on_cpu = true            # held-out FROC checked in bfloat16 (docs/model-card.md)
'''


CLASSIFIER = '''
[classifier]
file = "classifier.pt"            # scripts/model/train_fpr.py: 32^3 crop of the first pass's image -> one logit
sha256 = "{sha}"
crop = [{crop}, {crop}, {crop}]               # [z, y, x] working voxels
weight = {weight}                      # rank by peak logit / 8 + weight * classifier logit
'''


def export(model_dir: pathlib.Path, version: str, prob: float, min_score: float,
           extra_spacings: list[float] | None = None, classifier_weight: float | None = None,
           operating_score: float | None = None) -> dict:
    """Script, save, verify and describe the model in model_dir."""
    log = json.loads((model_dir / "training-log.json").read_text())
    net = NoduleNet(int(log["hyper_parameters"]["width"]))
    net.load_state_dict(torch.load(model_dir / "checkpoint.pth", map_location="cpu"))
    net.eval()
    scripted = torch.jit.script(fuse_batch_norm(net))
    path = model_dir / "model.pt"
    scripted.save(str(path))
    _verify(net, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    d = log["data"]
    lo, hi = log["hyper_parameters"].get("spacing_range", [0.85, 1.15])  # logs before the option: +-15%
    data = (f"{d['cases_rendered']} synthetic chest phantoms (scripts/model/phantom.py seeds {d['training_seeds'][0]}-"
            f"{d['training_seeds'][1]}) rendered at 1.25 mm x {lo:g}-{hi:g}, {d['patches_seen']} patches of "
            f"{log['hyper_parameters']['patch']}^3 voxels")
    if log["hyper_parameters"].get("init") not in (None, "None"):
        data += ", continuing from earlier weights (see docs/model-card.md)"
    text = MANIFEST.format(ckpt="checkpoint.pth", id=model_dir.name, version=version, sha=sha,
                           arch=net.describe(), params=count_parameters(net), data=data, prob=prob,
                           min_score=min_score, extra=json.dumps([[s] * 3 for s in extra_spacings or []]),
                           operating="" if operating_score is None else
                           f"\noperating_score = {operating_score}           # positive calls: they set the study's category")
    if classifier_weight is not None:
        clf = model_dir / "classifier.pt"
        clf_log = json.loads((model_dir / "classifier-log.json").read_text())
        text += CLASSIFIER.format(sha=hashlib.sha256(clf.read_bytes()).hexdigest(), crop=clf_log["crop"],
                                  weight=classifier_weight)
    (model_dir / "manifest.toml").write_text(text)
    return {"sha256": sha, "bytes": path.stat().st_size, "parameters": count_parameters(net)}


def fuse_batch_norm(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of the eval-mode net with each BatchNorm folded into the convolution before it.

    Same outputs (to float rounding, checked by _verify against the unfused net), about 7 %
    less CPU time per patch; the folded weights stay parameters, so libtorch's
    `module.to(half)` still converts them for CUDA (torch.jit.freeze would make them
    constants that stay float32).
    """
    fused = copy.deepcopy(net)
    for seq in fused.modules():
        if isinstance(seq, torch.nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], torch.nn.Conv3d) and isinstance(seq[i + 1], torch.nn.BatchNorm3d):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = torch.nn.Identity()
    return fused


def _verify(net: torch.nn.Module, path: pathlib.Path) -> None:
    """Reload the TorchScript file and compare it with the eager net on a random input."""
    loaded = torch.jit.load(str(path))
    x = torch.rand(1, 1, 32, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = net(x), loaded(x)
    assert a.shape == b.shape == (1, 1, 32, 40, 48), a.shape
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("models/pulmo-nodule-v1"))
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--probability", type=float, default=0.5)
    ap.add_argument("--min-score", type=float, default=0.1)
    ap.add_argument("--extra-spacing", type=float, action="append", default=[], metavar="MM",
                    help="also run the network at this isotropic working spacing (repeatable); below the "
                         "training spacing small nodules look larger to it (docs/model-card.md)")
    ap.add_argument("--classifier-weight", type=float, default=None, metavar="W",
                    help="add the candidate classifier DIR/classifier.pt (scripts/model/train_fpr.py) to the manifest: "
                         "findings rank by peak logit / 8 + W * its logit")
    ap.add_argument("--operating-score", type=float, default=None, metavar="S",
                    help="the operating point: findings scoring at least S are positive calls and alone set "
                         "the study's Lung-RADS category (default: every finding above --min-score)")
    args = ap.parse_args()
    print(json.dumps(export(args.dir, args.version, args.probability, args.min_score, args.extra_spacing,
                            args.classifier_weight, args.operating_score)))


if __name__ == "__main__":
    main()

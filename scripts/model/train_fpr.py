#!/usr/bin/env python3
"""Train the false-positive-reduction classifier on candidate crops from scripts/fpr_data.py.

A small 3-D CNN looks at a 32³ crop (1.25 mm voxels, 40 mm across) around each candidate
the segmentation network found and says whether it is a nodule. With `--context` it takes a
64³ crop instead (80 mm across) and sees two channels: the central 32³ at full resolution and
the whole crop averaged 2× (2.5 mm voxels), so that a vessel leaving the mediastinum or a
dome's curve is seen as such (fpr_data.py `--size 72` or more is needed for it). Crops are augmented
(random shifts of up to ±3 voxels, flips and transposes of all axes, HU scale and shift,
noise); batches are half positive, half negative. The last `--val-seeds` seeds of the data
are held back for validation (ROC AUC over the detector's own candidates). Writes the
TorchScript classifier, its weights and a training log into --out.

    .venv/bin/python3 scripts/model/train_fpr.py --data /tmp/fpr-0.npz /tmp/fpr-1.npz --minutes 12 --out DIR
"""
from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from pulmo_net import DEVICE_HELP, pick_device  # noqa: E402

CROP = 32


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                         nn.LeakyReLU(0.1, inplace=True))


class CandidateNet(nn.Module):
    """32³ crop → one logit "this candidate is a nodule"."""

    def __init__(self, w: int = 8, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            block(channels, w), block(w, w), nn.MaxPool3d(2),            # 16³
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool3d(2),  # 8³
            block(2 * w, 4 * w), block(4 * w, 4 * w), nn.MaxPool3d(2),  # 4³
            block(4 * w, 8 * w))
        self.head = nn.Sequential(nn.Linear(16 * w, 32), nn.LeakyReLU(0.1, inplace=True), nn.Dropout(0.2),
                                  nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3, 4)), f.amax(dim=(2, 3, 4))], dim=1)
        return self.head(pooled)


class ContextNet(nn.Module):
    """64³ crop → one logit: CandidateNet over [centre 32³, whole crop averaged 2×]."""

    def __init__(self, w: int = 8):
        super().__init__()
        self.net = CandidateNet(w, channels=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :, 16:48, 16:48, 16:48]
        # 2x average pooling by reshape and mean: avg_pool3d has no bfloat16 kernel on the
        # CPU, which is how pulmo runs the classifier there.
        b, c = x.shape[0], x.shape[1]
        whole = x.reshape(b, c, 32, 2, 32, 2, 32, 2).mean(dim=[3, 5, 7])
        return self.net(torch.cat([centre, whole], dim=1))

    def start_from(self, plain: dict) -> None:
        """Starts as the plain classifier `plain` (a CandidateNet state): the context channel's
        first weights are zero, so the first logits are the plain ones."""
        state = dict(plain)
        w = state["features.0.0.weight"]
        state["features.0.0.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
        self.net.load_state_dict(state)


def load(paths: list[pathlib.Path]) -> dict:
    parts = [np.load(p) for p in paths]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("crops", "labels", "feats", "seeds")}


def batch(crops: np.ndarray, idx: np.ndarray, rng: np.random.Generator, train: bool, crop: int = CROP,
          scale: float = 0.0) -> torch.Tensor:
    """The crops `idx`, `crop`³ each; augmented when `train`. `scale` > 0 also zooms each
    training crop by a factor drawn from [1 / (1 + scale), 1 + scale] (a region of
    `crop / factor` voxels, resampled to `crop`³; no larger than the stored crop), so that
    the classifier does not learn what a nodule is from how thick the vessels around it are."""
    size = crops.shape[1]
    if size < crop:
        sys.exit(f"train_fpr: the data's crops are {size}³ voxels; {crop}³ are needed (fpr_data.py --size)")
    out = np.empty((len(idx), 1, crop, crop, crop), np.float32)
    for n, i in enumerate(idx):
        c = crops[i].astype(np.float32)
        side = crop
        if train and scale > 0:
            factor = float(np.exp(rng.uniform(-np.log1p(scale), np.log1p(scale))))
            side = int(np.clip(round(crop / factor), 8, size))
        if train:
            lo = (size - side) // 2 + rng.integers(-3, 4, 3)
            lo = np.clip(lo, 0, size - side)
        else:
            lo = np.full(3, (size - crop) // 2)
        c = c[lo[0]:lo[0] + side, lo[1]:lo[1] + side, lo[2]:lo[2] + side]
        if side != crop:
            c = F.interpolate(torch.from_numpy(np.ascontiguousarray(c))[None, None], size=(crop,) * 3,
                              mode="trilinear", align_corners=False)[0, 0].numpy()
        if train:
            for ax in range(3):
                if rng.random() < 0.5:
                    c = np.flip(c, ax)
            c = np.transpose(c, rng.permutation(3))
            c = c * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03)
            c = c + rng.normal(0, rng.uniform(0, 0.015), c.shape)
        out[n, 0] = c
    return torch.from_numpy(out)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]))
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def predict(model, crops, idx, rng, crop: int = CROP) -> np.ndarray:
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for b in range(0, len(idx), 64):
            out.append(model(batch(crops, idx[b:b + 64], rng, False, crop).to(dev))[:, 0].float().cpu().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=pathlib.Path, nargs="+", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--val-seeds", type=int, default=16)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--init", type=pathlib.Path, help="start from these weights (a classifier.pth) instead of at random; "
                    "with --context, a plain classifier's weights are taken too (the context channel starts at zero)")
    ap.add_argument("--context", action="store_true",
                    help="a 64³ crop: the central 32³ and the whole averaged 2× as two channels (ContextNet)")
    ap.add_argument("--positive-weight", type=float, default=1.0,
                    help="weight of the positive crops' loss (above 1: losing a nodule costs more than keeping a false call)")
    ap.add_argument("--scale-aug", type=float, default=0.0, metavar="R",
                    help="zoom training crops by a factor from [1/(1+R), 1+R] (0: off; the crops must be larger "
                         "than the network's input for the zoom-out half)")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    d = load(args.data)
    seeds = np.unique(d["seeds"])
    val_seeds = seeds[-args.val_seeds:]
    is_val = np.isin(d["seeds"], val_seeds)
    cand = d["feats"][:, 2] >= 0  # candidates the detector found (the rest: crops at truth centres)
    train_pos = np.nonzero(~is_val & (d["labels"] == 1))[0]
    train_neg = np.nonzero(~is_val & (d["labels"] == 0))[0]
    val_idx = np.nonzero(is_val & cand)[0]
    if len(train_pos) == 0 or len(train_neg) == 0:
        sys.exit(f"train_fpr: {', '.join(map(str, args.data))} hold {len(train_pos)} positive and {len(train_neg)} "
                 f"negative crops outside the {len(val_seeds)} validation chests; both are needed "
                 "(more chests in fpr_data.py --cases, or a detector that finds something)")
    print(f"train: {len(train_pos)} positive, {len(train_neg)} negative crops from {len(seeds) - len(val_seeds)} "
          f"chests; validation: {len(val_idx)} candidates from {len(val_seeds)} chests", flush=True)
    crop = 2 * CROP if args.context else CROP
    model = ContextNet(args.width) if args.context else CandidateNet(args.width)
    if args.init:
        state = torch.load(args.init, map_location="cpu")
        if args.context and "features.0.0.weight" in state:
            model.start_from(state)
        else:
            model.load_state_dict(state)
        s = predict(model, d["crops"], val_idx, rng, crop)
        print(f"from {args.init}: validation AUC {auc(s, d['labels'][val_idx]):.3f}", flush=True)
    dev = pick_device(args.device)
    print(f"training on {dev}", flush=True)
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    t0 = time.time()
    step, losses = 0, []
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * frac))
        half = args.batch // 2
        idx = np.concatenate([rng.choice(train_pos, half), rng.choice(train_neg, args.batch - half)])
        x = batch(d["crops"], idx, rng, True, crop, args.scale_aug).to(dev, non_blocking=True)
        y = torch.from_numpy(d["labels"][idx].astype(np.float32)).to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            logit = model(x)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logit.float(), y, weight=1 + (args.positive_weight - 1) * y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            s = predict(model, d["crops"], val_idx, rng, crop)
            print(f"step {step} ({time.time() - t0:.0f} s): loss {np.mean(losses[-200:]):.3f}, "
                  f"validation AUC {auc(s, d['labels'][val_idx]):.3f}", flush=True)
    model.eval()
    model.to("cpu")  # saved, scripted and scored on the CPU, as pulmo loads it anywhere
    s = predict(model, d["crops"], val_idx, rng, crop)
    det = d["feats"][val_idx, 0]
    log = {"crop": crop, "context": args.context, "positive_weight": args.positive_weight, "scale_aug": args.scale_aug, "data": [str(p) for p in args.data], "steps": step, "batch": args.batch, "lr": args.lr,
           "minutes": args.minutes, "width": args.width, "seed": args.seed, "device": str(dev),
           "init": str(args.init) if args.init else None,
           "train_positive": int(len(train_pos)), "train_negative": int(len(train_neg)),
           "val_candidates": int(len(val_idx)), "val_auc_classifier": auc(s, d["labels"][val_idx]),
           "val_auc_detector": auc(det, d["labels"][val_idx])}
    print(json.dumps(log, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "classifier.pth")
    np.savez(args.out / "val.npz", classifier=s, detector=det, labels=d["labels"][val_idx],
             diameter=d["feats"][val_idx, 1], seeds=d["seeds"][val_idx])
    scripted = torch.jit.script(model)
    # pulmo runs the classifier in bfloat16 on CPUs that have it: every operation must too.
    with torch.no_grad():
        torch.jit.script(copy.deepcopy(model)).to(torch.bfloat16)(
            torch.zeros(2, 1, crop, crop, crop, dtype=torch.bfloat16))
    scripted.save(str(args.out / "classifier.pt"))
    (args.out / "classifier-log.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()

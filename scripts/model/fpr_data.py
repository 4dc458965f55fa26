#!/usr/bin/env python3
"""Candidate crops for a false-positive-reduction classifier, from phantoms rendered on the fly.

For each seed, a whole chest is rendered straight at the working spacing (1.25 mm, random
scanner settings as in scripts/model/train.py), the segmentation network runs over it as pulmo
runs it (sliding 64³ windows at 1.25 mm and again on the volume resampled to each extra
spacing), and every candidate (26-connected component of probability ≥ the manifest's
threshold, at least `min_diameter_mm`) becomes a crop of the 1.25 mm volume centred on it,
labelled by the truth: 1 inside a nodule's radius, 0 farther than 1.5 radii from every
nodule, dropped in between. Every true nodule also gives a crop at its centre (label 1), so
the classifier sees the nodules the network misses too.

    .venv/bin/python3 scripts/model/fpr_data.py --seed 820000 --cases 60 --out /tmp/fpr-a.npz
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
import tomllib

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import phantom  # noqa: E402
from predict_reference import sliding_logits  # noqa: E402
from pulmo_net import DEVICE_HELP, pick_device  # noqa: E402
from train import normalise  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def candidates(logits: np.ndarray, thr: float, spacing: float, min_diam: float) -> list[tuple[np.ndarray, float, float]]:
    """(centre index, peak logit, equivalent diameter mm) of each component above thr."""
    prob = 1 / (1 + np.exp(-logits))
    lab, n = ndimage.label(prob >= thr, structure=np.ones((3, 3, 3)))
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    counts = ndimage.sum(np.ones_like(prob), lab, idx)
    peaks = ndimage.maximum(logits, lab, idx)
    centres = ndimage.center_of_mass(prob, lab, idx)
    out = []
    for c, cnt, pk in zip(centres, counts, peaks):
        diam = (6 * float(cnt) * spacing**3 / np.pi) ** (1 / 3)
        if diam >= min_diam:
            out.append((np.array(c), float(pk), diam))
    return out


def crop(img: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """A size³ crop around centre (voxel index), padded with the window's floor (air)."""
    lo = np.round(centre).astype(int) - size // 2
    out = np.zeros((size,) * 3, np.float32)
    src = tuple(slice(max(0, l), min(s, l + size)) for l, s in zip(lo, img.shape))
    dst = tuple(slice(a.start - l, a.stop - l) for a, l in zip(src, lo))
    out[dst] = img[src]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--cases", type=int, required=True)
    ap.add_argument("--model", type=pathlib.Path, default=ROOT / "models/pulmo-nodule-v1")
    ap.add_argument("--size", type=int, default=40, help="stored crop edge (voxels at 1.25 mm)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probability", type=float, default=None,
                    help="candidate threshold (default: the manifest's); lower gives the classifier fainter candidates too")
    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--varied-anatomy", type=float, default=0.0, metavar="P",
                    help="draw a chest with phantom.py's varied anatomy with probability P (default 0: classic only)")
    ap.add_argument("--families", default="train", metavar="SPEC",
                    help="the anatomy families of --varied-anatomy: train (0-3, default), all, heldout, or a comma list")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    families = phantom.checked_anatomy_options(ap, args)
    torch.set_num_threads(args.threads)
    manifest = tomllib.loads((args.model / "manifest.toml").read_text())
    dev = pick_device(args.device)
    model = torch.jit.freeze(torch.jit.load(str(args.model / manifest["file"]), map_location=dev).eval())
    inp, th = manifest["input"], manifest["thresholds"]
    spacing = float(inp["spacing_mm"][0])
    extra = [float(s[0]) for s in inp.get("extra_spacings_mm", [])]
    thr = float(th["probability"]) if args.probability is None else args.probability
    crops, labels, feats, seeds, fams = [], [], [], [], []
    for seed in range(args.seed, args.seed + args.cases):
        t0 = time.time()
        rng = np.random.default_rng([seed, 0xF9])
        acq = phantom.Acquisition(psf_xy=rng.uniform(0.35, 1.0), psf_z=rng.uniform(0.4, 2.2),
                                  noise=rng.uniform(4, 45), noise_corr=rng.uniform(0.4, 1.0))
        n_nod = int(rng.integers(0, 7)) if rng.random() < 0.15 else int(rng.integers(2, 7))
        anatomy, family = "classic", None
        if args.varied_anatomy > 0:
            vr = np.random.default_rng([seed, 0xF9, 0xA7])  # its own stream: classic chests unchanged
            if vr.random() < args.varied_anatomy:
                anatomy, family = "varied", int(vr.choice(list(families)))
                if vr.random() < 1 / 3:  # a sharp (lung) kernel: edge enhancement, finer noise
                    acq.sharpen, acq.sharpen_mm, acq.noise_corr = vr.uniform(0.3, 1.0), vr.uniform(0.7, 1.5), vr.uniform(0.35, 0.55)
        vol, _, scene, grid = phantom.training_case(seed, spacing, rng, acq, n_nod, anatomy=anatomy,
                                                    families=None if family is None else [family])
        img = normalise(vol)
        origin = np.array([grid.zs[0], grid.ys[0], grid.xs[0]])
        truth = [(np.array([n.center[2], n.center[1], n.center[0]]), float(np.prod(n.radii)) ** (1 / 3))
                 for n in scene.nodules]
        cands = []
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            for k, s in enumerate([spacing] + extra):
                work = img if s == spacing else ndimage.zoom(img, spacing / s, order=1)
                logits, _ = sliding_logits(lambda x: model(x.to(dev)).float().cpu(), work, np.ones(work.shape, bool), int(inp["patch"][0]),
                                           float(inp["overlap"]), batch=4)
                for c, pk, d in candidates(logits.astype(np.float32), thr, s,
                                           float(th["min_diameter_mm"])):
                    cands.append((origin + c * s, pk, d, k))
        n_pos = n_neg = 0
        for mm, pk, d, k in cands:
            dist = [np.linalg.norm(mm - c) / r for c, r in truth]
            near = min(dist) if dist else np.inf
            if 1.0 < near <= 1.5:
                continue
            crops.append(crop(img, (mm - origin) / spacing, args.size).astype(np.float16))
            labels.append(int(near <= 1.0))
            feats.append([pk, d, k])
            seeds.append(seed)
            fams.append(-1 if family is None else family)
            n_pos += near <= 1.0
            n_neg += near > 1.0
        for c, r in truth:
            crops.append(crop(img, (c - origin) / spacing, args.size).astype(np.float16))
            labels.append(1)
            feats.append([np.nan, 2 * r, -1])
            seeds.append(seed)
            fams.append(-1 if family is None else family)
        # Saved after every chest, so a long run can be stopped at any time and still be used.
        np.savez(args.out, crops=np.stack(crops), labels=np.array(labels, np.int8),
                 feats=np.array(feats, np.float32), seeds=np.array(seeds),
                 **({"family": np.array(fams, np.int8)} if args.varied_anatomy > 0 else {}))
        print(f"seed {seed}{'' if family is None else f' (family {family})'}: {len(cands)} candidates ({n_pos} on nodules, {n_neg} false), "
              f"{len(truth)} nodules, {time.time() - t0:.1f} s; {args.out}: {len(labels)} crops, "
              f"{int(np.sum(labels))} positive", flush=True)


if __name__ == "__main__":
    main()

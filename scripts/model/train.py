#!/usr/bin/env python3
"""Train pulmo's lung-nodule segmentation net on phantoms generated on the fly.

Whole chests are rendered by scripts/model/phantom.py straight at (a jittered) working spacing
with random scanner settings (PSF, noise), in a background process; patches are drawn
from a rolling pool of recent cases, half centred near nodules, half anywhere in the lungs
(vessels are the hard negatives), and augmented (flips, axial transposes, HU scale/shift,
extra noise; with `--coarse-z`, thick slices resampled back). Loss: BCE + soft Dice. The
run stops on a wall-clock budget, evaluates on fixed validation seeds, writes
models/<id>/training-log.json and exports TorchScript.

    nice -n 10 .venv/bin/python3 scripts/model/train.py --minutes 40
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import interpolate, ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import phantom  # noqa: E402
from pulmo_net import DEVICE_HELP, NoduleNet, count_parameters, pick_device  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPACING = 1.25
HU_WINDOW = (-1000.0, 400.0)
BORDER_MM = 12.0  # how deep into the lung a --p-border negative patch's centre may lie


def normalise(hu: np.ndarray) -> np.ndarray:
    """Clip to the HU window and scale linearly to [0, 1]."""
    lo, hi = HU_WINDOW
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def make_training_case(seed: int, spacing_range: tuple[float, float] = (0.85, 1.15),
                       diameters_mm: tuple[float, float] = phantom.NODULE_DIAMETERS_MM,
                       variety: dict | None = None) -> dict:
    """Render one chest at a jittered spacing (SPACING times a factor drawn from
    `spacing_range`) with random scanner settings, nodules drawn from `diameters_mm`, the
    scene changed by `variety` (`phantom.override`: e.g. cavities, eccentric cores; and
    `faint_ggo`, the chance that its ground glass is drawn fainter; `varied_anatomy`, the
    chance that the chest is drawn with phantom.py's varied anatomy, from the families
    `anatomy_families`, and then with a sharp kernel's edge enhancement one time in three).
    The varied draws have a stream of their own, so a chest drawn classic is the same with
    or without them."""
    rng = np.random.default_rng([seed, 0x7A])
    spacing = SPACING * rng.uniform(*spacing_range)
    acq = phantom.Acquisition(psf_xy=rng.uniform(0.35, 1.0), psf_z=rng.uniform(0.4, 2.2),
                              noise=rng.uniform(4, 45), noise_corr=rng.uniform(0.4, 1.0))
    n_nod = int(rng.integers(0, 7)) if rng.random() < 0.15 else int(rng.integers(2, 7))
    variety = dict(variety or {})
    p_varied = variety.pop("varied_anatomy", 0.0)
    families = variety.pop("anatomy_families", phantom.TRAIN_FAMILIES)
    anatomy, family = "classic", None
    if p_varied > 0:
        vr = np.random.default_rng([seed, 0x7A, 0xA7])
        if vr.random() < p_varied:
            anatomy, family = "varied", int(vr.choice(list(families)))
            if vr.random() < 1 / 3:  # a sharp (lung) kernel: edge enhancement, finer noise
                acq.sharpen, acq.sharpen_mm, acq.noise_corr = vr.uniform(0.3, 1.0), vr.uniform(0.7, 1.5), vr.uniform(0.35, 0.55)
    faint = variety.pop("faint_ggo", 0.0)
    if faint > 0 and rng.random() < faint:  # this chest's ground glass fainter: onto [lo, lo + 150-250] HU
        lo = rng.uniform(-800.0, -650.0)
        variety["ggo_hu"] = (lo, lo + rng.uniform(150.0, 250.0))
    vol, occ, scene, grid = phantom.training_case(seed, spacing, rng, acq, n_nod, diameters_mm, variety,
                                                  anatomy=anatomy, families=None if family is None else [family])
    lung = np.zeros(vol.shape, bool)
    x, y, z = grid.axes()
    lung_sdf = scene.lung_sdf(x[:, :, ::4], y[:, ::4, :], z[::4])
    lung[::4, ::4, ::4] = lung_sdf < 0
    border = np.zeros(vol.shape, bool)  # lung within BORDER_MM of its surface: hilum, heart border, dome, wall
    border[::4, ::4, ::4] = (lung_sdf < 0) & (lung_sdf > -BORDER_MM)
    centres, sizes, ggo = [], [], []
    for nod in scene.nodules:
        sizes.append(2 * float(np.prod(nod.radii)) ** (1 / 3))  # equivalent diameter of the core (mm)
        ggo.append(nod.kind == "ground-glass")
        c = [(nod.center[2] - grid.zs[0]) / spacing, (nod.center[1] - grid.ys[0]) / spacing,
             (nod.center[0] - grid.xs[0]) / spacing]
        centres.append(c)
    return {"img": normalise(vol), "lab": (occ >= 0.5).astype(np.uint8), "lung": np.argwhere(lung),
            "border": np.argwhere(border), "spacing": spacing,
            "nodules": np.array(centres).reshape(-1, 3), "sizes": np.array(sizes), "ggo": np.array(ggo, bool),
            "seed": seed, "family": family}


def crop(case: dict, centre: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size³ crop around centre (voxels), padded with air where it leaves the volume."""
    img, lab = case["img"], case["lab"]
    lo = np.round(centre).astype(int) - size // 2
    out_i = np.zeros((size,) * 3, np.float32)
    out_l = np.zeros((size,) * 3, np.uint8)
    src = tuple(slice(max(0, l), min(s, l + size)) for l, s in zip(lo, img.shape))
    dst = tuple(slice(a.start - l, a.stop - l) for a, l in zip(src, lo))
    out_i[dst] = img[src]
    out_l[dst] = lab[src]
    return out_i, out_l


def sample_patch(case: dict, size: int, rng: np.random.Generator, p_pos: float, small_bias: float = 0.0,
                 ggo_bias: float = 1.0, p_border: float = 0.0, counts: dict | None = None):
    """One patch: near a nodule with probability p_pos, else anywhere in the lungs (with
    probability `p_border` of those, centred within BORDER_MM of the lung's surface, where the
    hilar vessels, the heart border and the diaphragm dome fill the rest of the patch).
    `counts`, when given, tallies where each patch was centred: "nodule", "border", "lung".

    With `small_bias` b > 0 a nodule of diameter d is picked with odds d^-b, so the small
    ones (the hardest to find, a few voxels at the working spacing) are seen more often;
    ground-glass nodules (faint, and the type missed most) have their odds times `ggo_bias`.
    """
    if len(case["nodules"]) and rng.random() < p_pos:
        odds = case["sizes"] ** -small_bias * np.where(case["ggo"], ggo_bias, 1.0)
        c = case["nodules"][rng.choice(len(odds), p=odds / odds.sum())] + rng.uniform(-size / 3, size / 3, 3)
        where = "nodule"
    else:
        where = "border" if p_border > 0 and len(case.get("border", ())) and rng.random() < p_border else "lung"
        pool = case[where]
        c = pool[rng.integers(len(pool))] + rng.uniform(-2, 2, 3)
    if counts is not None:
        counts[where] = counts.get(where, 0) + 1
    return crop(case, c, size)


def coarse_slices(img: np.ndarray, voxel_mm: float, slice_mm: float, phase: float, extra_blur_mm: float) -> np.ndarray:
    """The patch as a series of `slice_mm` slices would give it after pulmo's resampling.

    Slices are sampled along axis 0 (z) every `slice_mm` from `phase` (in voxels), after an
    extra Gaussian slice profile of `extra_blur_mm` (sigma), then linearly interpolated back
    onto the patch's grid, as `preprocess::resample` does for a thick-slice series. Rendering
    straight at the working spacing never shows a network this: a small nodule between two
    thick slices keeps only part of its contrast and smears along z.
    """
    depth = img.shape[0]
    stride = slice_mm / voxel_mm
    if stride <= 1.05:
        return img
    if extra_blur_mm > 0:
        img = ndimage.gaussian_filter1d(img, extra_blur_mm / voxel_mm, axis=0, mode="nearest")
    k = np.arange(math.floor(-phase / stride), math.ceil((depth - 1 - phase) / stride) + 1)
    at = phase + k * stride  # slice positions covering the patch, in its voxels
    linear = functools.partial(interpolate.interp1d, axis=0, assume_sorted=True)
    slices = linear(np.arange(depth), img)(np.clip(at, 0, depth - 1))
    return linear(at, slices)(np.arange(depth)).astype(np.float32)


def augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator, extra_noise: float = 25.0,
            correlated: bool = False, voxel_mm: float = SPACING, coarse_z: float = 0.0,
            coarse_z_mm: tuple[float, float] = (1.5, 5.0)):
    """Thick slices, flips, axial transpose, HU scale/shift and extra noise (in normalised units).

    With probability `coarse_z` the patch is first seen as a series of slices
    `coarse_z_mm` apart would show it after resampling (`coarse_slices`, random phase, an
    extra slice profile of up to 0.42 of the slice spacing). The extra noise is up to
    `extra_noise` HU, white, or with `correlated` given a random correlation of up to 1 voxel
    in-plane (half that along z), as reconstructed low-dose noise has.
    """
    if coarse_z > 0 and rng.random() < coarse_z:
        slice_mm = rng.uniform(*coarse_z_mm)
        img = coarse_slices(img, voxel_mm, slice_mm, rng.uniform(0, slice_mm / voxel_mm),
                            rng.uniform(0, 0.42) * slice_mm)
    for ax in range(3):
        if rng.random() < 0.5:
            img, lab = np.flip(img, ax), np.flip(lab, ax)
    if rng.random() < 0.5:
        img, lab = img.transpose(0, 2, 1), lab.transpose(0, 2, 1)
    span = HU_WINDOW[1] - HU_WINDOW[0]
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-40, 40) / span
    if rng.random() < 0.5:
        if not correlated:  # stages 1-7 drew exactly this
            img = img + rng.normal(0, rng.uniform(0, extra_noise) / span, img.shape).astype(np.float32)
        else:
            noise = rng.standard_normal(img.shape, dtype=np.float32)
            corr = rng.uniform(0.0, 1.0)
            if corr > 0.2:
                noise = ndimage.gaussian_filter(noise, (corr * 0.5, corr, corr))
                noise /= noise.std()
            img = img + noise * (rng.uniform(0, extra_noise) / span)
    return np.ascontiguousarray(np.clip(img, 0, 1), np.float32), np.ascontiguousarray(lab)


REF_VOXELS = 4 / 3 * math.pi * (5.0 / SPACING) ** 3  # a 10 mm nodule at the working spacing


def instance_weights(lab: np.ndarray, alpha: float, cap: float = 16.0) -> np.ndarray:
    """Per-voxel weights: 1 on background, (REF_VOXELS / V)^alpha (clipped to [1, cap]) on
    each labelled component of V voxels, so a 4 mm nodule is not outvoted by a 20 mm one."""
    w = np.ones(lab.shape, np.float32)
    if alpha <= 0 or not lab.any():
        return w
    comp, n = ndimage.label(lab)
    sizes = np.bincount(comp.ravel())[1:]
    per = np.clip((REF_VOXELS / np.maximum(sizes, 1)) ** alpha, 1.0, cap).astype(np.float32)
    w[comp > 0] = per[comp[comp > 0] - 1]
    return w


def loss_fn(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, float, float]:
    """BCE + batch soft Dice, both optionally weighted per voxel; returns (loss, bce, dice)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, pos_weight=torch.tensor(3.0, device=logits.device))
    p = torch.sigmoid(logits)
    w = torch.ones_like(p) if weight is None else weight
    inter = (w * p * target).sum()
    dice = (2 * inter + 1.0) / ((w * p).sum() + (w * target).sum() + 1.0)
    return bce + (1 - dice), float(bce.detach()), float(dice.detach())


def validate(model, cases: list, size: int, rng) -> dict:
    """Voxel metrics on fixed validation patches (half with nodules), and per-nodule recall:
    a nodule counts as found when the net marks any of its voxels in a patch centred on it."""
    model.eval()
    dev = next(model.parameters()).device
    tp = fp = fn = 0
    found = {"small": [0, 0], "large": [0, 0]}  # nodules under / at least 6 mm: [found, total]
    with torch.no_grad():
        for case in cases:
            for _ in range(6):
                img, lab = sample_patch(case, size, rng, 0.5)
                pr = (model(torch.from_numpy(img)[None, None].to(dev)) > 0).cpu()
                t = torch.from_numpy(lab.astype(bool))[None, None]
                tp += int((pr & t).sum()); fp += int((pr & ~t).sum()); fn += int((~pr & t).sum())
            for centre, diam in zip(case["nodules"], case["sizes"]):
                img, lab = crop(case, centre, size)
                comp, _ = ndimage.label(lab)
                mine = comp == comp[(size // 2,) * 3] if comp[(size // 2,) * 3] else lab.astype(bool)
                pr = (model(torch.from_numpy(img)[None, None].to(dev)) > 0)[0, 0].cpu().numpy()
                bucket = found["small" if diam < 6 else "large"]
                bucket[0] += int((pr & mine).any()); bucket[1] += 1
    model.train()
    return {"voxel_dice": 2 * tp / max(1, 2 * tp + fp + fn), "voxel_precision": tp / max(1, tp + fp),
            "voxel_recall": tp / max(1, tp + fn),
            "nodules_found_under_6mm": f"{found['small'][0]}/{found['small'][1]}",
            "nodules_found_6mm_and_over": f"{found['large'][0]}/{found['large'][1]}"}


def cpu_state(model: torch.nn.Module) -> dict:
    """The state_dict to save, on the CPU (`.cpu()` is a no-op there), so every checkpoint loads
    anywhere."""
    state = model.state_dict()
    out = type(state)((k, v.detach().cpu()) for k, v in state.items())
    out._metadata = getattr(state, "_metadata", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pool", type=int, default=10, help="cases kept in the rolling pool")
    ap.add_argument("--steps-per-case", type=int, default=12, help="new case every N steps (if ready)")
    ap.add_argument("--p-pos", type=float, default=0.5)
    ap.add_argument("--p-border", type=float, default=0.0, metavar="P",
                    help="of the patches not centred on a nodule, the share centred within 12 mm of the lung's "
                         "surface (the hilum, heart border and diaphragm are the hard negatives of varied anatomy)")
    ap.add_argument("--small-bias", type=float, default=0.0,
                    help="pick nodules for positive patches with odds diameter^-B (0: uniform)")
    ap.add_argument("--ggo-bias", type=float, default=1.0,
                    help="odds factor for centring a positive patch on a ground-glass nodule")
    ap.add_argument("--instance-weight", type=float, default=0.0,
                    help="weight each nodule's voxels by (V_10mm / V)^A, clipped to [1, 16] (0: off)")
    ap.add_argument("--spacing-range", type=float, nargs=2, default=[0.85, 1.15], metavar=("LO", "HI"),
                    help="render training chests at SPACING times a factor in [LO, HI] (validation keeps 0.85-1.15)")
    ap.add_argument("--diameter-range", type=float, nargs=2, default=list(phantom.NODULE_DIAMETERS_MM),
                    metavar=("LO", "HI"), help="nominal nodule diameters of the training phantoms, mm "
                    "(validation keeps the generator's default)")
    ap.add_argument("--cavitate", type=float, default=0.0, metavar="P",
                    help="give training solid nodules of 8 mm or more an air-filled cavity with probability P "
                         "(phantom.py --cavitate; 0: off, stages 1-10)")
    ap.add_argument("--eccentric-cores", type=float, default=0.0, metavar="P",
                    help="move training part-solid cores off centre with probability P (phantom.py --eccentric-cores)")
    ap.add_argument("--faint-ggo", type=float, default=0.0, metavar="P",
                    help="with probability P a training chest's ground glass (drawn -650 to -450 HU) is mapped onto "
                         "a range starting at -800 to -650 HU (phantom.py --ggo-hu; 0: off, stages 1-11)")
    ap.add_argument("--varied-anatomy", type=float, default=0.0, metavar="P",
                    help="draw a training chest with phantom.py's varied anatomy (heart, great and hilar vessels, "
                         "domes, habitus; a sharp kernel one time in three) with probability P (0: off, stages 1-13)")
    ap.add_argument("--families", default="train", metavar="SPEC",
                    help="the anatomy families of --varied-anatomy: train (0-3, default), all, heldout, or a comma "
                         "list of ids or names (phantom.py --anatomy-family); keep the held-out ones (4, 5) out of "
                         "training to evaluate on them")
    ap.add_argument("--extra-noise", type=float, default=25.0,
                    help="extra noise up to this many HU")
    ap.add_argument("--correlated-noise", action="store_true",
                    help="correlate the extra noise (up to 1 voxel), as in low-dose scans")
    ap.add_argument("--coarse-z", type=float, default=0.0,
                    help="probability that a patch is seen as thick slices resampled back (0: off, stages 1-7)")
    ap.add_argument("--coarse-z-mm", type=float, nargs=2, default=[1.5, 5.0], metavar=("LO", "HI"),
                    help="slice spacing range for --coarse-z (mm)")
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast and channels-last weights: about 3x the steps per minute on a CPU "
                         "with native bfloat16 (AMX / AVX-512 BF16); weights, optimizer and loss stay float32")
    ap.add_argument("--init", type=pathlib.Path, default=None, help="continue from this state_dict")
    ap.add_argument("--train-seed0", type=int, default=100_000, help="first training phantom seed")
    ap.add_argument("--val-cases", type=int, default=4)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "models" / "pulmo-nodule-v1")
    args = ap.parse_args()
    families = phantom.checked_anatomy_options(ap, args)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(args.device)
    print(f"training on {dev}", flush=True)
    model = NoduleNet(args.width)
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
    layout = torch.contiguous_format
    if args.bf16:
        layout = torch.channels_last_3d
        model = model.to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    t_start = time.time()
    budget = args.minutes * 60
    train_seed = args.train_seed0
    ctx = mp.get_context("fork")
    variety = {k: p for k, p in (("cavitate", args.cavitate), ("eccentric_cores", args.eccentric_cores),
                                 ("faint_ggo", args.faint_ggo), ("varied_anatomy", args.varied_anatomy)) if p > 0}
    if args.varied_anatomy > 0:
        variety["anatomy_families"] = families
    render = functools.partial(make_training_case, spacing_range=tuple(args.spacing_range),
                               diameters_mm=tuple(args.diameter_range), variety=variety)
    with ctx.Pool(1) as pool:  # forked before the network touches a GPU; the worker only renders
        model.to(dev)  # in place: the optimizer keeps the same parameters
        pool_cases = [pool.apply(render, (train_seed + i,)) for i in range(2)]
        next_seed = train_seed + 2
        pending = pool.apply_async(render, (next_seed,))
        history, step, n_cases = [], 0, 2
        patch_centres = {"nodule": 0, "border": 0, "lung": 0}  # where the training patches were centred
        n_varied = sum(c["family"] is not None for c in pool_cases)
        while step == 0 or time.time() - t_start < budget:  # at least one step, however short the budget
            frac = (time.time() - t_start) / budget
            for g in opt.param_groups:
                g["lr"] = args.lr * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * frac)))
            if step % args.steps_per_case == 0 and pending.ready():
                pool_cases.append(pending.get())
                n_varied += pool_cases[-1]["family"] is not None
                pool_cases = pool_cases[-args.pool:]
                next_seed += 1
                n_cases += 1
                pending = pool.apply_async(render, (next_seed,))
            xb, yb, wb = [], [], []
            for _ in range(args.batch):
                case = pool_cases[rng.integers(len(pool_cases))]
                patch = sample_patch(case, args.patch, rng, args.p_pos, args.small_bias, args.ggo_bias, args.p_border,
                                     patch_centres)
                img, lab = augment(*patch, rng, extra_noise=args.extra_noise, correlated=args.correlated_noise,
                                   voxel_mm=case["spacing"], coarse_z=args.coarse_z,
                                   coarse_z_mm=tuple(args.coarse_z_mm))
                xb.append(img); yb.append(lab); wb.append(instance_weights(lab, args.instance_weight))
            x = torch.from_numpy(np.stack(xb))[:, None].contiguous(memory_format=layout)
            y = torch.from_numpy(np.stack(yb).astype(np.float32))[:, None]
            w = torch.from_numpy(np.stack(wb))[:, None] if args.instance_weight > 0 else None
            y = y.to(dev, non_blocking=True)
            w = None if w is None else w.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x.to(dev, non_blocking=True))
            loss, bce, dice = loss_fn(logits.float(), y, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                rec = {"step": step, "t_s": round(time.time() - t_start, 1), "loss": round(float(loss), 4),
                       "bce": round(bce, 4), "dice": round(dice, 4), "cases_seen": n_cases,
                       "lr": opt.param_groups[0]["lr"]}
                history.append(rec)
                print(json.dumps(rec), flush=True)
            if step % 25 == 0:
                torch.save(cpu_state(model), args.out / "checkpoint.pth")
        pending.wait()
        train_time = time.time() - t_start
        model = model.to(memory_format=torch.contiguous_format)
        torch.save(cpu_state(model), args.out / "checkpoint.pth")
        print("validating", flush=True)
        val_cases = [make_training_case(900_000 + i) for i in range(args.val_cases)]
    val = validate(model, val_cases, 64, np.random.default_rng(7))
    log = {
        "model_id": args.out.name, "architecture": model.describe(), "parameters": count_parameters(model),
        "hyper_parameters": vars(args) | {"out": str(args.out), "init": str(args.init), "device": str(dev), "spacing_mm": SPACING, "hu_window": HU_WINDOW,
                                          "optimizer": "AdamW wd 1e-4, cosine-in-time lr",
                                          "loss": "BCE(pos_weight 3) + batch soft Dice"
                                          + (f", per-nodule weights (V_10mm/V)^{args.instance_weight} in [1, 16]"
                                             if args.instance_weight > 0 else "")},
        "data": {"training_seeds": [train_seed, next_seed - 1], "cases_rendered": n_cases,
                 **({"varied_anatomy_cases": n_varied, "anatomy_families": list(families)} if args.varied_anatomy > 0 else {}),
                 "patches_seen": step * args.batch, "patch_centres": patch_centres, "validation_seeds": [900_000, 900_000 + args.val_cases - 1],
                 "augmentation": f"spacing x{args.spacing_range[0]}-{args.spacing_range[1]}, PSF xy 0.35-1.0 mm / z 0.4-2.2 mm, noise 4-45 HU, "
                                 "flips (3 axes), axial transpose, HU scale 0.9-1.1, shift +-40 HU, "
                                 f"extra noise 0-{args.extra_noise:g} HU"
                                 + (" (correlated up to 1 voxel)" if args.correlated_noise else "")
                                 + (f", thick slices {args.coarse_z_mm[0]:g}-{args.coarse_z_mm[1]:g} mm resampled back"
                                    f" (p {args.coarse_z:g})" if args.coarse_z > 0 else "")},
        "steps": step, "train_seconds": round(train_time, 1), "torch": torch.__version__,
        "final_validation": val, "history": history,
    }
    (args.out / "training-log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps(val), flush=True)


if __name__ == "__main__":
    main()

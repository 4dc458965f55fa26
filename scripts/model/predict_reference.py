#!/usr/bin/env python3
"""Reference (Python) inference path: DICOM series -> pulmo.report/1 JSON findings.

What the Rust pipeline does, written plainly so its numbers can be checked: read the series
with pydicom, order slices along the slice normal, convert to HU, resample to the model's
working spacing, window and scale, slide the TorchScript model over patches that touch a
simple lung mask, average overlapping logits, sigmoid, threshold, 3-D connected components,
and report each component's centre (patient LPS mm), equivalent diameter, volume and score.

    .venv/bin/python3 scripts/model/predict_reference.py --model models/pulmo-nodule-v1 \\
        --series DIR [DIR ...] --out REPORTS/
    # or every series under a phantom set: --set HELDOUT/ (reads HELDOUT/truth.json seeds)
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time
import tomllib
from typing import NamedTuple

import numpy as np
import pydicom
import torch
from scipy import ndimage


def load_series(folder: pathlib.Path) -> tuple[np.ndarray, dict]:
    """HU volume [k, j, i] ordered along the slice normal, and its geometry."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix == ".dcm"]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    pos = np.array([np.dot(np.array(d.ImagePositionPatient, float), normal) for d in dss])
    vol = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                    for d in dss])
    ps = [float(v) for v in dss[0].PixelSpacing]  # row spacing (between rows), column spacing
    dz = float(np.median(np.diff(pos))) if len(pos) > 1 else float(dss[0].SliceThickness)
    geo = {"origin": np.array(dss[0].ImagePositionPatient, float), "row": row, "col": col, "normal": normal,
           "spacing": np.array([dz, ps[0], ps[1]]), "uid": str(dss[0].SeriesInstanceUID)}
    return vol, geo


def resample(vol: np.ndarray, spacing: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Trilinear resampling so that output voxel n sits at input index n * target / spacing."""
    scale = target / spacing
    shape = tuple(int(np.floor((s - 1) / f)) + 1 for s, f in zip(vol.shape, scale))
    return ndimage.affine_transform(vol, scale, output_shape=shape, order=1, mode="nearest")


def lung_mask(hu: np.ndarray, dilate: int) -> np.ndarray:
    """Air inside the body (not connected to the volume border), largest parts, dilated."""
    air = hu < -400
    lab, n = ndimage.label(air)
    border = np.unique(np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(),
                                       lab[:, :, -1].ravel()]))
    sizes = ndimage.sum(air, lab, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool)
    order = np.argsort(sizes)[::-1] + 1
    for idx in order[:3]:
        if idx not in border and sizes[idx - 1] > 2000:
            keep[idx] = True
    mask = keep[lab]
    return ndimage.binary_dilation(mask, iterations=dilate) if dilate else mask


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts covering [0, size) with the last window flush with the end."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch, stride))
    return starts + [size - patch]


def sliding_logits(model, img: np.ndarray, mask: np.ndarray, patch: int, overlap: float,
                   batch: int = 2) -> np.ndarray:
    """Average logits over overlapping patches that touch the mask (others stay very negative)."""
    pad = [(0, max(0, patch - s)) for s in img.shape]
    img_p = np.pad(img, pad, constant_values=0.0)
    mask_p = np.pad(mask, pad)
    acc = np.zeros(img_p.shape, np.float32)
    cnt = np.zeros(img_p.shape, np.float32)
    stride = max(8, int(round(patch * (1 - overlap))))
    boxes = [(z, y, x) for z in patch_starts(img_p.shape[0], patch, stride)
             for y in patch_starts(img_p.shape[1], patch, stride)
             for x in patch_starts(img_p.shape[2], patch, stride)
             if mask_p[z:z + patch, y:y + patch, x:x + patch].any()]
    with torch.no_grad():
        for b0 in range(0, len(boxes), batch):
            bb = boxes[b0:b0 + batch]
            x = torch.from_numpy(np.stack([img_p[z:z + patch, y:y + patch, x_:x_ + patch] for z, y, x_ in bb]))
            out = model(x[:, None]).numpy()[:, 0]
            for (z, y, x_), o in zip(bb, out):
                acc[z:z + patch, y:y + patch, x_:x_ + patch] += o
                cnt[z:z + patch, y:y + patch, x_:x_ + patch] += 1
    logits = np.where(cnt > 0, acc / np.maximum(cnt, 1), -20.0)
    return logits[: img.shape[0], : img.shape[1], : img.shape[2]], len(boxes)


def components(prob: np.ndarray, thr: float, spacing: float, min_diam: float, min_score: float) -> list[dict]:
    """Connected components above thr: voxel-index centre, diameter, volume, score."""
    lab, n = ndimage.label(prob >= thr, structure=np.ones((3, 3, 3)))
    out = []
    if n == 0:
        return out
    idx = np.arange(1, n + 1)
    counts = ndimage.sum(np.ones_like(prob), lab, idx)
    scores = ndimage.maximum(prob, lab, idx)
    centres = ndimage.center_of_mass(prob, lab, idx)
    for c, cnt, sc in zip(centres, counts, scores):
        vol = float(cnt) * spacing**3
        diam = (6 * vol / np.pi) ** (1 / 3)
        if diam < min_diam or sc < min_score:
            continue
        out.append({"index": np.array(c), "diameter_mm": diam, "volume_mm3": vol, "score": float(sc)})
    return out


def to_patient(index: np.ndarray, geo: dict, spacing: float) -> list[float]:
    """Working-grid index (k, j, i) to patient LPS mm."""
    k, j, i = index * spacing
    p = geo["origin"] + i * geo["row"] + j * geo["col"] + k * geo["normal"]
    return [round(float(v), 2) for v in p]


def load_model(model_dir: pathlib.Path):
    """TorchScript module and its manifest."""
    manifest = tomllib.loads((model_dir / "manifest.toml").read_text())
    model = torch.jit.load(str(model_dir / manifest["file"]), map_location="cpu").eval()
    return torch.jit.freeze(model), manifest  # folds BatchNorm into the convolutions


class Prediction(NamedTuple):
    """One series on the working grid: nodule probability (zero far from the lungs), the
    geometry, the patches run, and the inputs it came from (HU and the lung mask)."""

    prob: np.ndarray
    geo: dict
    patches: int
    hu: np.ndarray
    mask: np.ndarray


def probability_map(model, manifest: dict, folder: pathlib.Path) -> Prediction:
    """The model over one series folder, as pulmo runs it."""
    vol, geo = load_series(folder)
    inp = manifest["input"]
    s = float(inp["spacing_mm"][0])
    hu = resample(vol, geo["spacing"], np.array([s, s, s]))
    lo, hi = inp["hu_window"]
    img = ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    mask = lung_mask(hu, dilate=3)
    logits, n_patches = sliding_logits(model, img, mask, int(inp["patch"][0]), float(inp["overlap"]))
    prob = 1 / (1 + np.exp(-logits))
    prob[~ndimage.binary_dilation(mask, iterations=6)] = 0.0
    return Prediction(prob, geo, n_patches, hu, mask)


def report(prob: np.ndarray, geo: dict, manifest: dict, threshold: float) -> dict:
    """Findings from a probability map at one voxel threshold, as pulmo.report/1."""
    th = manifest["thresholds"]
    s = float(manifest["input"]["spacing_mm"][0])
    comps = components(prob, threshold, s, th["min_diameter_mm"], th["min_score"])
    findings = [{"center_patient_mm": to_patient(c["index"], geo, s), "diameter_mm": round(c["diameter_mm"], 2),
                 "volume_mm3": round(c["volume_mm3"], 1), "score": round(c["score"], 4)} for c in comps]
    findings.sort(key=lambda f: -f["score"])
    return {"schema": "pulmo.report/1", "series_instance_uid": geo["uid"], "findings": findings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=pathlib.Path, default=pathlib.Path("models/pulmo-nodule-v1"))
    ap.add_argument("--series", type=pathlib.Path, nargs="*", default=[])
    ap.add_argument("--set", type=pathlib.Path, help="a phantom set folder (truth.json + <seed>/)")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--thresholds", type=float, nargs="*", default=None,
                    help="voxel thresholds to report (one sub-folder each); default: the manifest's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, manifest = load_model(args.model)
    folders = list(args.series)
    if args.set:
        truth = json.loads((args.set / "truth.json").read_text())
        folders += [args.set / str(c["seed"]) for c in truth["cases"]]
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        t0 = time.time()
        prob, geo, n_patches, _, _ = probability_map(model, manifest, folder)
        thresholds = args.thresholds or [manifest["thresholds"]["probability"]]
        for thr in thresholds:
            out = args.out if len(thresholds) == 1 else args.out / f"p{thr:g}"
            out.mkdir(parents=True, exist_ok=True)
            rep = report(prob, geo, manifest, thr)
            rep["reference"] = {"patches": n_patches, "seconds": round(time.time() - t0, 1),
                                "model": manifest["id"], "probability_threshold": thr}
            (out / f"{folder.name}.json").write_text(json.dumps(rep, indent=1) + "\n")
        print(f"{folder}: {len(rep['findings'])} findings, {n_patches} patches, "
              f"{time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()

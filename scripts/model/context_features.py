#!/usr/bin/env python3
"""What surrounds each finding: features that tell a nodule from the anatomy at the lung's
inner border (hilar vessels, heart border, diaphragm dome), for choosing and measuring the
pipeline's context rule (docs/model-card.md) on sets the rule is not scored on.

For every finding of pulmo's reports (score >= --min-score) the series is read around its
centre (1 mm isotropic, a sphere of radius R = max(20, 1.25 x long axis) mm), and:
- `exit`: of the sphere's surface shell, the fraction that tissue (> -500 HU) connected to
  the finding reaches: ~0 for a nodule in the lung, large for one that is continuous with
  a wall, the mediastinum, the heart or the diaphragm;
- `medial`, `inferior`: the direction of that exit (mean unit vector from the centre to the
  exit voxels) towards the midline of the lungs and towards the feet, in [-1, 1];
- `elongation`: sqrt of the largest over the smallest principal moment of the connected
  tissue inside 0.6 R (a vessel cut along its length is long; a nodule round);
- `lung_depth_mm`: how far the centre lies inside (positive) or outside (negative) the lungs
  as pulmo's lung mask draws them (air below -400 HU inside the body, largest components,
  pleural bays closed at 10 mm, holes filled per slice), at 2.5 mm;
- `label`: TP (the finding hits a truth nodule, LUNA16 rule) or FP.

    .venv/bin/python3 scripts/model/context_features.py --set SET --reports REPORTS --out features.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import predict_reference as pr  # noqa: E402
from reports import load_reports  # noqa: E402

TISSUE_HU = -500.0


def patient_to_index(geo: dict, p: np.ndarray) -> np.ndarray:
    """Fractional [k, j, i] of patient point(s) p (..., 3)."""
    d = p - geo["origin"]
    return np.stack([d @ geo["normal"] / geo["spacing"][0], d @ geo["col"] / geo["spacing"][1],
                     d @ geo["row"] / geo["spacing"][2]], -1)


def local_crop(vol: np.ndarray, geo: dict, centre: np.ndarray, radius: float) -> np.ndarray:
    """HU on a 1 mm grid of patient offsets [-radius, radius]^3 (axes z, y, x) about centre."""
    ax = np.arange(-radius, radius + 0.5, 1.0)
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    pts = centre + np.stack([xx, yy, zz], -1)
    idx = patient_to_index(geo, pts)
    return ndimage.map_coordinates(vol, np.moveaxis(idx, -1, 0), order=1, mode="nearest").astype(np.float32)


def features(vol: np.ndarray, geo: dict, centre: np.ndarray, long_axis: float, midline_x: float) -> dict:
    radius = max(20.0, 1.25 * long_axis)
    crop = local_crop(vol, geo, centre, radius)
    n = crop.shape[0]
    ax = np.arange(n) - (n - 1) / 2.0
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    r = np.sqrt(xx**2 + yy**2 + zz**2)
    tissue = (crop > TISSUE_HU) & (r <= radius)
    labels, _ = ndimage.label(tissue, structure=np.ones((3, 3, 3)))
    c = n // 2
    near = labels[c - 3:c + 4, c - 3:c + 4, c - 3:c + 4]
    ids = near[near > 0]
    if ids.size == 0:
        return {"exit": 0.0, "medial": 0.0, "inferior": 0.0, "elongation": 1.0}
    grown = labels == np.bincount(ids).argmax()
    shell = (r > radius - 1.5) & (r <= radius)
    out = grown & shell
    exit_fraction = out.sum() / max(shell.sum(), 1)
    if out.any():
        d = np.stack([xx[out], yy[out], zz[out]], -1)
        mean = (d / np.linalg.norm(d, axis=1, keepdims=True)).mean(0)
    else:
        mean = np.zeros(3)
    towards_mid = np.sign(midline_x - centre[0]) or 1.0
    inner = grown & (r <= 0.6 * radius)
    pts = np.stack([xx[inner], yy[inner], zz[inner]], -1)
    if len(pts) >= 4:
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))
        elongation = float(np.sqrt(ev[2] / max(ev[0], 1e-3)))
    else:
        elongation = 1.0
    return {"exit": round(float(exit_fraction), 4), "medial": round(float(mean[0] * towards_mid), 3),
            "inferior": round(float(-mean[2]), 3), "elongation": round(elongation, 3)}


def lung_depth_map(vol: np.ndarray, geo: dict) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm, + inside) to pulmo-like lungs on a 2.5 mm grid, and that grid's step
    in source voxels."""
    step = np.maximum(np.floor(2.5 / geo["spacing"]).astype(int), 1)
    coarse = vol[::step[0], ::step[1], ::step[2]]
    sp = geo["spacing"] * step
    lungs = pr.lung_mask(coarse, 0)
    r = max(1, int(round(10.0 / max(sp[1], sp[2]))))
    disk = np.zeros((1, 2 * r + 1, 2 * r + 1), bool)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk[0] = yy**2 + xx**2 <= r * r
    lungs = ndimage.binary_closing(lungs, structure=disk)
    lungs = np.stack([ndimage.binary_fill_holes(s) for s in lungs])
    inside = ndimage.distance_transform_edt(lungs, sampling=sp)
    outside = ndimage.distance_transform_edt(~lungs, sampling=sp)
    return inside - outside, step


def hits(nodule: dict, finding: dict) -> bool:
    d = np.linalg.norm(np.asarray(nodule["center_patient_mm"]) - np.asarray(finding["center_patient_mm"]))
    return d <= nodule["diameter_mm"] / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=pathlib.Path, required=True)
    ap.add_argument("--reports", type=pathlib.Path, required=True)
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    reports = load_reports(args.reports)
    rows = []
    for truth in sorted(args.set.rglob("truth.json")):
        for case in json.loads(truth.read_text())["cases"]:
            rep = reports.get(case["series_instance_uid"])
            folder = truth.parent / str(case["seed"])
            if rep is None or not folder.is_dir():
                continue
            vol, geo = pr.load_series(folder)
            found = [f for f in rep["findings"] if f["score"] >= args.min_score]
            if not found:
                continue
            depth, step = lung_depth_map(vol, geo)
            lungs = pr.lung_mask(vol, 0)
            ii = np.nonzero(lungs.any(axis=(0, 1)))[0]
            mid_i = (ii.min() + ii.max()) / 2 if ii.size else vol.shape[2] / 2
            midline_x = float((geo["origin"] + mid_i * geo["spacing"][2] * geo["row"])[0])
            for f in found:
                centre = np.asarray(f["center_patient_mm"], float)
                row = {"seed": case["seed"], "family": (case.get("anatomy") or {}).get("family"),
                       "id": f["id"], "score": f["score"], "diameter_mm": f["diameter_mm"],
                       "long_axis_mm": f["long_axis_mm"], "type": f["type"], "mean_hu": f["mean_hu"],
                       "label": "TP" if any(hits(n, f) for n in case["nodules"]) else "FP",
                       "x": centre[0], "y": centre[1], "z": centre[2]}
                row |= features(vol, geo, centre, f["long_axis_mm"], midline_x)
                k, j, i = np.clip(np.round(patient_to_index(geo, centre) / step).astype(int), 0,
                                  np.array(depth.shape) - 1)
                row["lung_depth_mm"] = round(float(depth[k, j, i]), 1)
                rows.append(row)
                print(row, flush=True)
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Candidate crops for the false-positive-reduction classifier, from DICOM series through pulmo.

scripts/model/fpr_data.py renders chests straight at the working spacing. The series pulmo meets
come through DICOM instead (0.625-2.5 mm slices, 256 or 512 matrices, resampled by pulmo),
and its candidates are the ones `pulmo analyze` itself reports. This script takes a phantom
set written by scripts/model/phantom.py (one folder per seed and a truth.json) and the reports
`pulmo analyze --out` wrote for it, rebuilds each series' windowed image on the working grid
as pulmo does (scripts/model/predict_reference.py), and crops it around every reported finding and
every true nodule, labelled as fpr_data.py labels them (1 inside a nodule's radius, 0 farther
than 1.5 radii from every nodule, dropped in between; crops at the true centres are 1). The
output has fpr_data.py's format, so scripts/model/train_fpr.py takes both.

    .venv/bin/python3 scripts/model/phantom.py --seed 830000 --cases 20 --syntax rle --out /tmp/fpr-set
    target/release/pulmo analyze /tmp/fpr-set --model BUNDLE --no-sr --no-seg --no-images --no-capture --out /tmp/fpr-rep
    .venv/bin/python3 scripts/model/fpr_series.py --set /tmp/fpr-set --reports /tmp/fpr-rep --out /tmp/fpr-series.npz

BUNDLE may lower `thresholds.probability` so that fainter candidates reach the classifier too.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import tomllib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fpr_data import crop  # noqa: E402
from predict_reference import load_series, resample  # noqa: E402
from train import normalise  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def to_grid(p: np.ndarray, geo: dict, spacing: float | np.ndarray) -> np.ndarray:
    """Patient LPS mm to a (k, j, i) index of the working grid (inverse of predict_reference.to_patient);
    `spacing` is the grid's, one value or one per (k, j, i) axis."""
    d = np.asarray(p, float) - geo["origin"]
    return np.array([d @ geo["normal"], d @ geo["col"], d @ geo["row"]]) / spacing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", type=pathlib.Path, required=True, help="a scripts/model/phantom.py output folder")
    ap.add_argument("--reports", type=pathlib.Path, required=True, help="pulmo analyze --out of that folder")
    ap.add_argument("--model", type=pathlib.Path, default=ROOT / "models/pulmo-nodule-v1",
                    help="the bundle whose working spacing to use")
    ap.add_argument("--size", type=int, default=40, help="stored crop edge (working voxels)")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    s = float(tomllib.loads((args.model / "manifest.toml").read_text())["input"]["spacing_mm"][0])
    reports = {}
    for p in args.reports.glob("*.json"):
        rep = json.loads(p.read_text())
        if rep.get("schema") == "pulmo.report/1":
            reports[rep["series_instance_uid"]] = rep
    crops, labels, feats, seeds = [], [], [], []
    for truth_path in sorted(args.set.rglob("truth.json")):
        for case in json.loads(truth_path.read_text())["cases"]:
            t0 = time.time()
            rep = reports.get(case["series_instance_uid"])
            if rep is None:
                print(f"seed {case['seed']}: no report, skipped", flush=True)
                continue
            vol, geo = load_series(truth_path.parent / str(case["seed"]))
            img = normalise(resample(vol, geo["spacing"], np.array([s, s, s])))
            truth = [(np.asarray(n["center_patient_mm"], float), n["diameter_mm"] / 2) for n in case["nodules"]]
            n_pos = n_neg = 0
            for f in rep["findings"]:
                c = np.asarray(f["center_patient_mm"], float)
                near = min((np.linalg.norm(c - tc) / r for tc, r in truth), default=np.inf)
                if 1.0 < near <= 1.5:
                    continue
                crops.append(crop(img, to_grid(c, geo, s), args.size).astype(np.float16))
                labels.append(int(near <= 1.0))
                feats.append([f["score"], f["diameter_mm"], 9])  # pass 9: a pulmo finding (all passes merged)
                seeds.append(case["seed"])
                n_pos += near <= 1.0
                n_neg += near > 1.0
            for tc, r in truth:
                crops.append(crop(img, to_grid(tc, geo, s), args.size).astype(np.float16))
                labels.append(1)
                feats.append([np.nan, 2 * r, -1])
                seeds.append(case["seed"])
            print(f"seed {case['seed']}: {len(rep['findings'])} findings ({n_pos} on nodules, {n_neg} false), "
                  f"{len(truth)} nodules, {time.time() - t0:.1f} s", flush=True)
    np.savez(args.out, crops=np.stack(crops), labels=np.array(labels, np.int8),
             feats=np.array(feats, np.float32), seeds=np.array(seeds))
    print(f"wrote {args.out}: {len(labels)} crops, {int(np.sum(labels))} positive", flush=True)


if __name__ == "__main__":
    main()

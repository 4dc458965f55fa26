#!/usr/bin/env python3
"""Why a nodule was missed: the model's own probability around every true nodule.

For each case of a phantom set (folders written by scripts/model/phantom.py, with truth.json),
runs the reference inference path (scripts/model/predict_reference.py: same resampling, window,
lung mask and sliding window as pulmo) and prints, per true nodule, the highest voxel
probability within its radius (at least 2 mm) and whether its centre lies in the lung
mask. A miss with a probability near 0 is the network's; one with a high probability but no
finding points at post-processing (threshold, minimum size, lung mask).

    .venv/bin/python3 scripts/model/probe_misses.py --model models/pulmo-nodule-v1 \\
        --set /tmp/pulmo-heldout --json probe.json
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

import predict_reference as pr


def probe_case(model, manifest: dict, folder: pathlib.Path, nodules: list) -> list[dict]:
    """Per nodule: highest probability near its centre and whether the centre is lung."""
    s = float(manifest["input"]["spacing_mm"][0])
    prob, geo, _, hu, mask = pr.probability_map(model, manifest, folder)
    out = []
    for n in nodules:
        rel = np.array(n["center_patient_mm"]) - geo["origin"]
        idx = np.array([rel @ geo["normal"], rel @ geo["col"], rel @ geo["row"]]) / s
        r = max(n["diameter_mm"] / 2, 2.0) / s
        lo_i = np.maximum(np.floor(idx - r).astype(int), 0)
        hi_i = np.minimum(np.ceil(idx + r).astype(int) + 1, prob.shape)
        grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo_i, hi_i)], indexing="ij")
        ball = sum((g - c) ** 2 for g, c in zip(grid, idx)) <= r * r
        sub = prob[lo_i[0]:hi_i[0], lo_i[1]:hi_i[1], lo_i[2]:hi_i[2]]
        centre = tuple(np.clip(np.round(idx).astype(int), 0, np.array(prob.shape) - 1))
        out.append({"id": n["id"], "diameter_mm": n["diameter_mm"], "type": n["type"],
                    "max_probability": round(float(sub[ball].max()) if ball.any() else 0.0, 4),
                    "centre_in_lung_mask": bool(mask[centre]), "centre_hu": round(float(hu[centre]), 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=pathlib.Path, default=pathlib.Path("models/pulmo-nodule-v1"))
    ap.add_argument("--set", type=pathlib.Path, required=True, help="phantom set (folders with truth.json)")
    ap.add_argument("--json", type=pathlib.Path, help="also write every row here")
    args = ap.parse_args()
    model, manifest = pr.load_model(args.model)
    rows = []
    for truth in sorted(args.set.rglob("truth.json")):
        for case in json.loads(truth.read_text())["cases"]:
            geo = case["geometry"]
            folder = next((f for f in (truth.parent / str(case["seed"]), truth.parent / f"phantom-{case['seed']}")
                           if f.is_dir()), None)
            if folder is None:
                print(f"seed {case['seed']}: no series folder next to {truth}, skipped")
                continue
            for row in probe_case(model, manifest, folder, case["nodules"]):
                row |= {"seed": case["seed"], "slice_spacing_mm": geo["slice_spacing_mm"]}
                rows.append(row)
                print(f"seed {row['seed']} nodule {row['id']}: {row['diameter_mm']:5.1f} mm {row['type']:12s} "
                      f"max p {row['max_probability']:.3f}  lung mask {'yes' if row['centre_in_lung_mask'] else 'no '}"
                      f"  {row['centre_hu']:7.1f} HU  slices {geo['slice_spacing_mm']} mm", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

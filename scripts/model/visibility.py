#!/usr/bin/env python3
"""How visible each true nodule is on the grid the network sees, found or not.

For every case of a phantom set (folders written by scripts/model/phantom.py, with truth.json):
the series as pulmo reads it (scripts/model/predict_reference.py: sorted by position, HU,
trilinear resampling to the model's working spacing), then per true nodule
  core     the mean HU within half its radius of its centre (at least one voxel),
  lung     the mean and standard deviation of the parenchyma around it: voxels between
           1.5 radii + 2 mm and 1.5 radii + 6 mm from the centre under -500 HU (vessels
           and walls excluded),
  CNR      (core - lung mean) / lung standard deviation: how far the nodule stands out of
           the texture and noise around it, in units of that texture and noise,
  dense    the share of the shell at -500 HU or more: what touches the nodule's
           surroundings (vessels, pleura, chest wall, airway walls).
With --reports (a folder of pulmo's JSON reports, as scripts/eval/evaluate leaves them) each
nodule is also marked found or missed by the LUNA16 rule `pulmo evaluate` applies (any
finding whose centre lies within the nodule's radius), and the CNRs of the two groups are
summarised. No model is run.

    .venv/bin/python3 scripts/model/visibility.py --set /tmp/pulmo-heldout --reports REPORTS \\
        [--spacing 1.25] [--json rows.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

import predict_reference as pr
from reports import load_reports

MIN_DIAMETER = 3.0  # LUNA16: smaller nodules are not counted


def found_any(nodule: dict, findings: list[dict]) -> bool:
    """Whether a finding of any score hits the nodule (its centre within the nodule's radius,
    the LUNA16 rule `pulmo evaluate` applies)."""
    c = np.asarray(nodule["center_patient_mm"], float)
    return any(np.linalg.norm(c - np.asarray(f["center_patient_mm"], float)) <= nodule["diameter_mm"] / 2
               for f in findings)


def nodule_contrast(hu: np.ndarray, geo: dict, spacing: float, nodule: dict) -> dict:
    """core, lung mean, lung standard deviation and CNR of one nodule on the grid `hu`."""
    rel = np.array(nodule["center_patient_mm"]) - geo["origin"]
    idx = np.array([rel @ geo["normal"], rel @ geo["col"], rel @ geo["row"]]) / spacing
    r_mm = nodule["diameter_mm"] / 2
    outer_mm = 1.5 * r_mm + 6.0
    reach = int(np.ceil(outer_mm / spacing)) + 1
    lo = np.maximum(np.floor(idx).astype(int) - reach, 0)
    hi = np.minimum(np.floor(idx).astype(int) + reach + 1, hu.shape)
    if np.any(hi <= lo):
        return {"core_hu": None, "lung_hu": None, "lung_sd": None, "cnr": None, "dense": None}
    grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    dist_mm = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, idx))) * spacing
    sub = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    core = dist_mm <= max(r_mm / 2, spacing * 0.87)
    if not core.any():
        core = dist_mm <= dist_mm.min()
    ring = (dist_mm >= 1.5 * r_mm + 2.0) & (dist_mm <= outer_mm)
    shell = ring & (sub < -500)
    dense = round(float(1 - shell.sum() / max(ring.sum(), 1)), 2)
    if shell.sum() < 10:
        return {"core_hu": round(float(sub[core].mean()), 1), "lung_hu": None, "lung_sd": None, "cnr": None,
                "dense": dense}
    core_hu, lung_hu, lung_sd = float(sub[core].mean()), float(sub[shell].mean()), float(sub[shell].std())
    return {"core_hu": round(core_hu, 1), "lung_hu": round(lung_hu, 1), "lung_sd": round(lung_sd, 1),
            "cnr": round((core_hu - lung_hu) / max(lung_sd, 1e-3), 2), "dense": dense}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=pathlib.Path, required=True, help="phantom set (folders with truth.json)")
    ap.add_argument("--reports", type=pathlib.Path, help="pulmo's JSON reports for the set")
    ap.add_argument("--spacing", type=float, default=1.25, help="working spacing in mm (the model's)")
    ap.add_argument("--json", type=pathlib.Path, help="also write every row here")
    args = ap.parse_args()
    reports = load_reports(args.reports) if args.reports else {}
    rows = []
    for truth in sorted(args.set.rglob("truth.json")):
        for case in json.loads(truth.read_text())["cases"]:
            folder = truth.parent / str(case["seed"])
            if not folder.is_dir():
                continue
            findings = reports.get(case["series_instance_uid"], {"findings": []})["findings"]
            counted = [(n, found_any(n, findings) if args.reports else None)
                       for n in case["nodules"] if n["diameter_mm"] >= MIN_DIAMETER]
            if not counted:
                continue
            vol, geo = pr.load_series(folder)
            s = args.spacing
            hu = pr.resample(vol, geo["spacing"], np.array([s, s, s]))
            for n, hit in counted:
                row = {"seed": case["seed"], "id": n["id"], "diameter_mm": n["diameter_mm"], "type": n["type"],
                       "slice_spacing_mm": case["geometry"]["slice_spacing_mm"], "found": hit}
                row |= nodule_contrast(hu, geo, s, n)
                rows.append(row)
                mark = "" if hit is None else ("found " if hit else "MISSED")
                print(f"seed {row['seed']} nodule {row['id']}: {row['diameter_mm']:5.1f} mm {row['type']:12s} "
                      f"slices {row['slice_spacing_mm']:5.3f} mm  core {row['core_hu']} HU  lung {row['lung_hu']} "
                      f"± {row['lung_sd']}  CNR {row['cnr']}  dense {row['dense']}  {mark}", flush=True)
    if args.reports:
        for label, want in (("found", True), ("missed", False)):
            group = [r for r in rows if r["found"] is want and r["cnr"] is not None]
            if group:
                cnrs = sorted(r["cnr"] for r in group)
                dense = sorted(r["dense"] for r in group)
                print(f"{label}: {len(group)} nodules, CNR median {np.median(cnrs):.2f} "
                      f"(range {cnrs[0]:.2f} to {cnrs[-1]:.2f}), dense share of the shell median "
                      f"{np.median(dense):.2f} (range {dense[0]:.2f} to {dense[-1]:.2f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

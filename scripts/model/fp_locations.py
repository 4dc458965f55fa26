#!/usr/bin/env python3
"""Where pulmo's false calls lie, relative to the phantom truth's anatomy landmarks.

    .venv/bin/python3 scripts/model/fp_locations.py --truth SET/*/truth.json --reports REPORTS/ [--operating 0.93]
        [--families heldout] [--list] [--json]

A false call is a finding scoring at least the operating point (default: each report's
manifest operating point is not in the report, so 0.93, 1.9.0's) whose centre lies within
no truth nodule's radius (the rule of scripts/evaluate.py's operating points; a finding on
a nodule under 3 mm is no false call). Each one is placed by the first rule it meets:

    hilum         within 35 mm of a hilum point (which lies where the main pulmonary artery
                  meets the lung, often a little outside the lung surface), or on a hilar
                  vessel path (within its radius + 4 mm of the centre line)
    central vessel  on a central (mediastinal) vessel path: pulmonary trunk and main
                  arteries, pulmonary veins to the left atrium, aorta, SVC (within its
                  radius + 4 mm of the centre line), no more than 15 mm outside the lungs
    mediastinum   outside the lungs (lung surface farther than 3 mm) and inside the
                  mediastinum box, or within 15 mm of the heart ellipsoid's surface
    below dome    outside the lungs and lower than its side's dome apex + 5 mm
    outside lung  outside the lungs otherwise (chest wall, soft tissue)
    heart border  within 15 mm of the heart ellipsoid's surface (radial distance)
    diaphragm     lower than its side's dome apex + 15 mm (the side: the apex nearer in x)
    chest wall    within 10 mm of the lung surface
    parenchyma    everything else

The lung surface comes from the scene itself, rebuilt from the case's seed
(`phantom.make_scene`, anatomy and families as the truth says; checked by its nodule centres
against the truth's). The truth needs the "anatomy" key: varied sets always have it,
classic ones when generated with `phantom.py --landmarks`.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import phantom  # noqa: E402
from reports import load_reports  # noqa: E402

CATEGORIES = ("hilum", "central vessel", "heart border", "diaphragm", "mediastinum", "below dome", "outside lung", "chest wall",
              "parenchyma")



def seg_dist(p: np.ndarray, pts: np.ndarray) -> tuple[float, float]:
    """Distance from p to a polyline of [x, y, z, r] points, and that minus the radius there."""
    best, best_rel = np.inf, np.inf
    if len(pts) == 1:
        d = float(np.linalg.norm(p - pts[0, :3]))
        return d, d - pts[0, 3]
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b[:3] - a[:3]
        t = float(np.clip((p - a[:3]) @ ab / max(ab @ ab, 1e-9), 0, 1))
        d = float(np.linalg.norm(p - (a[:3] + t * ab)))
        r = a[3] + t * (b[3] - a[3])
        if d - r < best_rel:
            best, best_rel = d, d - r
    return best, best_rel


def heart_surface_dist(p: np.ndarray, heart: dict) -> float:
    """Radial distance from p to the heart ellipsoid's surface (negative inside)."""
    c = np.asarray(heart["center"], float)
    ax = np.asarray(heart["axes"], float)  # rows: unit vectors
    r = np.asarray(heart["radii"], float)
    u = ax @ (p - c)
    rho = float(np.sqrt(np.sum((u / r) ** 2)))
    n = float(np.linalg.norm(u))
    if rho < 1e-9:
        return -float(r.min())
    return (rho - 1) * n / rho


def scene_for(case: dict, families_spec: str | None):
    """The case's scene, rebuilt from its seed; None if its nodules do not match the truth."""
    a, geo = case["anatomy"], case["geometry"]
    fov = geo["matrix"] * geo["pixel_spacing_mm"]
    anatomy = a.get("mode", "classic")
    tries = [None]
    if anatomy == "varied":
        tries = ([phantom.parse_families(families_spec)] if families_spec else []) + [None, [a["family"]]]
    for fam in tries:
        scene = phantom.make_scene(case["seed"], fov_mm=fov, anatomy=anatomy, families=fam)
        got = np.array([n.center for n in scene.nodules], float).reshape(-1, 3)
        want = np.array([n["center_patient_mm"] for n in case["nodules"]], float).reshape(-1, 3)
        fam_ok = anatomy != "varied" or scene.varied["family"] == a["family"]
        if fam_ok and got.shape == want.shape and (len(got) == 0 or np.abs(got - want).max() < 2.0):
            return scene
    return None


def place(p: np.ndarray, a: dict, scene) -> tuple[str, dict]:
    """The category of a false call at p (patient LPS mm), and the distances behind it."""
    sdf = float(scene.lung_sdf(np.array([[[p[0]]]]), np.array([[[p[1]]]]), np.array([[[p[2]]]]))[0, 0, 0]) \
        if scene is not None else float("nan")
    hila = [np.asarray(v, float) for v in a["hilum"].values()]
    d_hilum = min(float(np.linalg.norm(p - h)) for h in hila)
    ves = [(seg_dist(p, np.asarray(v["points"], float))[1], v["name"], v["kind"]) for v in a.get("vessels", [])]
    d_vessel, v_name, v_kind = min(ves, default=(np.inf, None, None))
    d_heart = heart_surface_dist(p, a["heart"])
    domes = [v for k, v in a["diaphragm"].items() if isinstance(v, dict) and "apex" in v]
    dome = min(domes, key=lambda v: abs(v["apex"][0] - p[0]))
    dz_dome = float(p[2] - dome["apex"][2])
    m = a["mediastinum"]
    in_med = abs(p[0] - m["center_xy"][0]) <= m["half_width_mm"] and abs(p[1] - m["center_xy"][1]) <= m["half_depth_mm"]
    info = {"lung_sdf_mm": round(sdf, 1), "hilum_mm": round(d_hilum, 1), "vessel_wall_mm": round(float(d_vessel), 1), "vessel": v_name,
            "heart_surface_mm": round(d_heart, 1), "above_dome_apex_mm": round(dz_dome, 1), "in_mediastinum_box": bool(in_med)}
    if d_hilum <= 35 or (d_vessel <= 4 and v_kind != "central" and not sdf > 15):
        return "hilum", info
    if d_vessel <= 4 and not sdf > 15:
        return "central vessel", info
    if sdf > 3:
        if in_med or d_heart <= 15:
            return "mediastinum", info
        if dz_dome < 5:
            return "below dome", info
        return "outside lung", info
    if abs(d_heart) <= 15:
        return "heart border", info
    if dz_dome <= 15:
        return "diaphragm", info
    if sdf >= -10:
        return "chest wall", info
    return "parenchyma", info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--truth", type=pathlib.Path, nargs="+", required=True)
    ap.add_argument("--reports", type=pathlib.Path, required=True)
    ap.add_argument("--operating", type=float, default=0.93)
    ap.add_argument("--families", default=None, help="the --anatomy-family SPEC the varied set was made with (tried first)")
    ap.add_argument("--list", action="store_true", help="print every false call")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cases = [c for p in args.truth for c in json.loads(p.read_text())["cases"]]
    reports = load_reports(args.reports)
    counts: collections.Counter = collections.Counter()
    rows, unplaced = [], 0
    for case in cases:
        if "anatomy" not in case:
            sys.exit(f"fp_locations: case {case['seed']} has no 'anatomy' in its truth (phantom.py --landmarks)")
        findings = reports.get(case["series_instance_uid"], {"findings": []})["findings"]
        nod = case["nodules"]
        centres = np.array([n["center_patient_mm"] for n in nod], float).reshape(-1, 3)
        radii = np.array([n["diameter_mm"] / 2 for n in nod], float)
        falses = [f for f in findings if f["score"] >= args.operating
                  and not np.any(np.linalg.norm(centres - np.asarray(f["center_patient_mm"], float), axis=1) <= radii)]
        if not falses:
            continue
        scene = scene_for(case, args.families)
        unplaced += scene is None
        for f in falses:
            cat, info = place(np.asarray(f["center_patient_mm"], float), case["anatomy"], scene)
            counts[cat] += 1
            rows.append({"seed": case["seed"], "family": case["anatomy"].get("family_name"), "category": cat,
                         "score": round(float(f["score"]), 4), "diameter_mm": f.get("diameter_mm"),
                         "center_patient_mm": f["center_patient_mm"], **info})
    n = max(1, len(cases))
    out = {"scans": len(cases), "operating_score": args.operating, "false_calls": len(rows),
           "false_calls_per_scan": len(rows) / n, "by_category": {c: counts[c] for c in CATEGORIES},
           "scenes_not_rebuilt": unplaced, "false_calls_list": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{len(cases)} scans, operating point {args.operating}: {len(rows)} false calls "
          f"({len(rows) / n:.2f} per scan)" + (f"; {unplaced} scenes not rebuilt (no lung surface)" if unplaced else ""))
    print("  " + ", ".join(f"{c} {counts[c]}" for c in CATEGORIES))
    if args.list:
        for r in rows:
            d = r["diameter_mm"]
            print(f"  {r['seed']} {r['family']:<18} {r['category']:<12} score {r['score']:.3f} "
                  f"d {d if d is None else round(d, 1)} mm  sdf {r['lung_sdf_mm']} hilum {r['hilum_mm']} "
                  f"vessel {r['vessel_wall_mm']} ({r['vessel']}) heart {r['heart_surface_mm']} dome {r['above_dome_apex_mm']}")


if __name__ == "__main__":
    main()

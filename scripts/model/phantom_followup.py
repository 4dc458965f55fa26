#!/usr/bin/env python3
"""Follow-up pairs of phantom CT studies: one patient scanned twice, with known change.

For each seed, the same anatomy (scripts/model/phantom.py's scene for that seed) is written
twice as two studies of one patient (same PatientID, different study, series and SOP UIDs,
StudyDates `--interval-days` apart):

  SEED/prior/     the baseline: the nodules that will grow (at their smaller size), the
                  stable ones and the ones that will resolve;
  SEED/current/   the follow-up: the grown, stable and new nodules, with the patient
                  repositioned (shifted by centimetres, rotated by a few degrees) and
                  breathing differently (the chest a few per cent taller).

The repositioning is applied to the rendered volume (trilinear resampling, scipy), so the
scanner's coordinates of one scan say nothing about the other's: a comparison must align the
scans from the anatomy itself.

truth.json (`pulmo.truth/1`) lists both scans as ordinary cases (so `pulmo evaluate` scores
detection on them) and adds `followups`, one per pair:

  {"prior_series_instance_uid", "series_instance_uid", "interval_days",
   "motion": {"rotation_deg": [x, y, z], "shift_mm": [x, y, z], "breath_scale_z": s},
   "nodules": [{"id", "prior_id", "change", "volume_change_percent"}],   # current nodules
   "resolved": [prior ids]}

`change` is the Lung-RADS class from the true mean diameters (growing: up by more than
1.5 mm); the current case's nodule sizes are those of the image (a deeper breath stretches a
nodule as it stretches the lung: its volume is scaled by the breath factor).

usage: phantom_followup.py --seed S [--cases N] --out DIR [--interval-days D] [--matrix 256]
                           [--slices N] [--nodules N] [--diameter-range LO HI] [--free-only] [--solid-only]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import sys
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import phantom  # noqa: E402

ROLES = ("grow", "stable", "resolve", "new")


def roles(n: int, rng: np.random.Generator) -> list[str]:
    """Each nodule's role: every role once when there are four or more, then drawn."""
    base = list(ROLES[: min(n, 4)])
    extra = list(rng.choice(ROLES, size=max(0, n - 4), p=[0.35, 0.35, 0.15, 0.15]))
    out = base + [str(r) for r in extra]
    rng.shuffle(out)
    return out


def scaled(nod: phantom.Nodule, s: float) -> phantom.Nodule:
    """The nodule with every length scaled by s about its centre."""
    out = copy.deepcopy(nod)
    out.radii = nod.radii * s
    out.lobes = [(np.asarray(off) * s, r * s) for off, r in nod.lobes]
    out.core_offset = np.asarray(nod.core_offset) * s
    return out


def motion(rng: np.random.Generator) -> dict:
    """A repositioning: rotations (degrees) about x, y, z, a shift (mm), a breath factor."""
    return {
        "rotation_deg": [round(float(rng.uniform(-3, 3)), 2), round(float(rng.uniform(-2, 2)), 2),
                         round(float(rng.uniform(-5, 5)), 2)],
        "shift_mm": [round(float(rng.uniform(-25, 25)), 1), round(float(rng.uniform(-15, 15)), 1),
                     round(float(rng.uniform(-20, 20)), 1)],
        "breath_scale_z": round(float(rng.uniform(1.02, 1.06)), 3),
    }


def motion_matrix(m: dict) -> np.ndarray:
    """The linear part (x, y, z) of the motion: rotations after the breath's z stretch."""
    ax, ay, az = (math.radians(a) for a in m["rotation_deg"])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx @ np.diag([1.0, 1.0, m["breath_scale_z"]])


def moved_point(p, m: dict, centre: np.ndarray) -> list[float]:
    """Where anatomy at p (the prior's patient mm) lies in the follow-up scan."""
    q = motion_matrix(m) @ (np.asarray(p, float) - centre) + centre + np.asarray(m["shift_mm"])
    return [round(float(v), 3) for v in q]


def render_volume(scene: phantom.Scene, geo: dict) -> np.ndarray:
    """The whole series as one HU array, [slice, row, column] in instance order."""
    grid, _, _ = phantom.series_grid(scene, geo)
    vol = np.empty(grid.shape, np.float32)
    for c0, slab in phantom.render_series(scene, geo):
        vol[c0:c0 + slab.shape[0]] = slab
    return vol


def reposition(vol: np.ndarray, scene: phantom.Scene, geo: dict, m: dict, centre: np.ndarray) -> np.ndarray:
    """Resamples `vol` so that its anatomy appears moved by `m` (about `centre`)."""
    grid, _, _ = phantom.series_grid(scene, geo)
    # index (k, j, i) -> patient (z, y, x): origin + step * index, per axis.
    origin = np.array([grid.zs[0], grid.ys[0], grid.xs[0]])
    step = np.array([grid.zs[1] - grid.zs[0], grid.ys[1] - grid.ys[0], grid.xs[1] - grid.xs[0]])
    lin = motion_matrix(m)[::-1, ::-1]  # (x, y, z) -> (z, y, x) order
    inv = np.linalg.inv(lin)
    c = centre[::-1]
    t = np.asarray(m["shift_mm"])[::-1]
    # Output voxel o shows the anatomy at a = inv @ (P(o) - c - t) + c, input index D^-1 (a - origin).
    matrix = np.diag(1 / step) @ inv @ np.diag(step)
    offset = np.diag(1 / step) @ (inv @ (origin - c - t) + c - origin)
    return ndimage.affine_transform(vol, matrix, offset=offset, order=1, mode="nearest").astype(np.float32)


def write_volume(vol: np.ndarray, scene, geo: dict, case: dict, out: pathlib.Path, visit: str, date: str) -> None:
    """Writes `vol` as one CT series with the visit's own UIDs and StudyDate."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    out.mkdir(parents=True, exist_ok=True)
    grid, row_dir, _ = phantom.series_grid(scene, geo)
    signed = geo["pixel_representation"] == 1
    icpt = geo["rescale_intercept"]
    seed = case["seed"]
    for idx in range(vol.shape[0]):
        stored = np.clip(np.rint(vol[idx] - icpt), *((-32768, 32767) if signed else (0, 4095)))
        arr = stored.astype(np.int16 if signed else np.uint16)
        ds = phantom._slice_dataset(scene, geo, case, idx, arr, grid, row_dir)
        ds.SOPInstanceUID = phantom.uid(seed, f"{visit}/sop/{idx}")
        ds.FrameOfReferenceUID = phantom.uid(seed, f"{visit}/for")
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.AccessionNumber = f"PH{seed}{visit[0].upper()}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "2.25.201600746217313404846183419391722925473"
        ds.file_meta = meta
        pydicom.dcmwrite(out / f"CT{idx + 1:04d}.dcm", ds, enforce_file_format=True)


def change_class(d_now: float, d_before: float) -> str:
    delta = round(d_now, 1) - round(d_before, 1)
    return "growing" if delta > 1.5 + 1e-9 else "shrinking" if delta < -1.5 - 1e-9 else "stable"


def make_pair(seed: int, out: pathlib.Path, interval_days: int, geo_over: dict, n_nodules: int | None,
              diameters: tuple[float, float], truth_only: bool, anatomy: str = "classic",
              families=None) -> tuple[dict, dict, dict]:
    """Writes SEED/prior and SEED/current; returns (prior case, current case, follow-up)."""
    scene, geo, case = phantom.make_case(seed, geo_over, n_nodules, diameters_mm=diameters,
                                         anatomy=anatomy, families=families)
    rng = np.random.default_rng([seed, 0xF011])
    role = roles(len(scene.nodules), rng)
    growth = {}
    for n, nod in enumerate(scene.nodules):
        if role[n] == "grow":
            d = phantom.nodule_truth(nod)["diameter_mm"]
            # The follow-up diameter is 2-5 mm more than the prior's (well over 1.5 mm).
            before = max(3.0, d - float(rng.uniform(2.0, 5.0)))
            growth[n] = before / d
    lung_centre = np.array([scene.cx, scene.cy, (scene.z_base + scene.z_apex) / 2])
    m = motion(rng)
    prior_nodules = [scaled(nd, growth.get(n, 1.0)) for n, nd in enumerate(scene.nodules) if role[n] != "new"]
    prior_index = {n: k for k, n in enumerate(n for n in range(len(scene.nodules)) if role[n] != "new")}
    current_index = [n for n in range(len(scene.nodules)) if role[n] != "resolve"]
    prior_case = {
        "study_instance_uid": phantom.uid(seed, "prior/study"),
        "series_instance_uid": phantom.uid(seed, "prior/series"),
        "seed": seed, "geometry": case["geometry"], "study_date": "20250106",
        "nodules": [dict(id=k + 1, **phantom.nodule_truth(nd)) for k, nd in enumerate(prior_nodules)],
    }
    current_date = (np.datetime64("2025-01-06") + np.timedelta64(interval_days, "D")).astype(str).replace("-", "")
    current_case = {
        "study_instance_uid": phantom.uid(seed, "current/study"),
        "series_instance_uid": phantom.uid(seed, "current/series"),
        "seed": seed, "geometry": case["geometry"], "study_date": current_date, "nodules": [],
    }
    followup = {"prior_series_instance_uid": prior_case["series_instance_uid"],
                "series_instance_uid": current_case["series_instance_uid"],
                "interval_days": interval_days, "motion": m, "nodules": [],
                "resolved": [prior_index[n] + 1 for n in range(len(scene.nodules)) if role[n] == "resolve"]}
    for k, n in enumerate(current_index):
        t = phantom.nodule_truth(scene.nodules[n])
        t["center_patient_mm"] = moved_point(t["center_patient_mm"], m, lung_centre)
        t["volume_mm3"] = round(t["volume_mm3"] * m["breath_scale_z"], 2)
        current_case["nodules"].append(dict(id=k + 1, **t))
        entry = {"id": k + 1, "prior_id": None, "change": "new", "volume_change_percent": None}
        if role[n] != "new":
            before = prior_case["nodules"][prior_index[n]]
            entry.update(prior_id=before["id"], change=change_class(t["diameter_mm"], before["diameter_mm"]),
                         volume_change_percent=round(100 * (t["volume_mm3"] / before["volume_mm3"] - 1), 1))
        followup["nodules"].append(entry)
    if not truth_only:
        before_scene = copy.copy(scene)
        before_scene.nodules = prior_nodules
        write_volume(render_volume(before_scene, geo), before_scene, geo, prior_case, out / str(seed) / "prior",
                     "prior", prior_case["study_date"])
        after_scene = copy.copy(scene)
        after_scene.nodules = [scene.nodules[n] for n in current_index]
        vol = reposition(render_volume(after_scene, geo), after_scene, geo, m, lung_centre)
        write_volume(vol, after_scene, geo, current_case, out / str(seed) / "current", "current",
                     current_case["study_date"])
    return prior_case, current_case, followup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--cases", type=int, default=1)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--interval-days", type=int, default=365)
    ap.add_argument("--matrix", type=int, choices=[256, 512], default=None)
    ap.add_argument("--slices", type=int, default=None, help="slice count (sets the slice spacing)")
    ap.add_argument("--nodules", type=int, default=None, help="nodules per patient (default: drawn)")
    ap.add_argument("--diameter-range", type=float, nargs=2, default=[5.0, 20.0], metavar=("LO", "HI"))
    ap.add_argument("--free-only", action="store_true",
                    help="place every nodule free in the parenchyma (none on a vessel or the pleura): "
                         "for tests with models/threshold-test, which cannot tell a nodule from what it touches")
    ap.add_argument("--solid-only", action="store_true",
                    help="make every nodule solid (models/threshold-test sees only soft tissue)")
    ap.add_argument("--truth-only", action="store_true")
    ap.add_argument("--anatomy", choices=["classic", "varied"], default="classic",
                    help="as phantom.py: varied draws heart, hilar vessels, domes, habitus and the scanner "
                         "from the anatomy families (the same body in both scans of a pair)")
    ap.add_argument("--anatomy-family", default=None, metavar="SPEC",
                    help="with --anatomy varied: all (default), train (0-3), heldout (4-5), or ids/names")
    args = ap.parse_args()
    if args.anatomy_family is not None:
        if args.anatomy != "varied":
            ap.error("--anatomy-family needs --anatomy varied")
        try:
            args.anatomy_family = phantom.parse_families(args.anatomy_family)
        except ValueError as e:
            ap.error(f"--anatomy-family: {e}")
    if args.solid_only:
        make = phantom._make_nodule
        phantom._make_nodule = lambda rng, diam, kind: make(rng, diam, "solid")
    if args.free_only:
        place = phantom._place
        phantom._place = lambda scene, rng, r, mode: place(scene, rng, r, "free")
    if args.interval_days <= 0:
        ap.error("--interval-days must be positive")
    geo_over: dict = {"transfer_syntax": "1.2.840.10008.1.2.1"}
    if args.matrix:
        geo_over["matrix"] = args.matrix
    if args.slices:
        geo_over["slices_wanted"] = args.slices
    cases, followups = [], []
    for seed in range(args.seed, args.seed + args.cases):
        t0 = time.time()
        prior, current, followup = make_pair(seed, args.out, args.interval_days, geo_over, args.nodules,
                                             tuple(args.diameter_range), args.truth_only, args.anatomy,
                                             args.anatomy_family)
        cases += [prior, current]
        followups.append(followup)
        changes = [n["change"] for n in followup["nodules"]]
        print(f"seed {seed}: {len(prior['nodules'])} prior, {len(current['nodules'])} current nodules "
              f"({', '.join(changes)}; {len(followup['resolved'])} resolved) ({time.time() - t0:.1f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = {"schema": "pulmo.truth/1", "cases": cases, "followups": followups}
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sanity checks of phantom.py's varied anatomy, seconds per chest.

For each seed (families in turn): every nodule lies inside a lung (analytic field); every
painted vessel (central, hilar, tree) and the heart lie inside the thoracic cavity; both
hilum landmarks lie near a lung; an axial slice at the hila and one at the lung bases render
with no NaN, with lung (HU < -500) filling a plausible share of the cavity. With `--series
DIR` it also reads a series phantom.py wrote (DIR/<seed>/*.dcm and DIR/truth.json) and checks
its HU, its lungs and that each truth nodule's centre is within the volume and denser than
lung.

    nice -n 15 .venv/bin/python3 scripts/model/check_anatomy.py --seeds 1 36
    nice -n 15 .venv/bin/python3 scripts/model/check_anatomy.py --series /tmp/v256
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import phantom  # noqa: E402


def in_cavity(scene, p, margin: float = 0.0) -> np.ndarray:
    p = np.atleast_2d(p)
    return ((p[:, 0] - scene.cx) / (scene.cav_a + 9 + margin)) ** 2 + ((p[:, 1] - scene.cy) / (scene.cav_b + 9 + margin)) ** 2 <= 1.0


def check_scene(seed: int, family: int) -> list[str]:
    problems = []
    sc = phantom.make_scene(seed, anatomy="varied", families=[family])
    V = sc.varied
    for n in sc.nodules:
        if sc.lung_sdf(*n.center) >= 0:
            problems.append(f"nodule at {np.round(n.center, 1)} outside the lungs")
    for name, segs in (("central", V["central_painted"]), ("hilar", sc.roots), ("tree", sc.vessels)):
        pts = np.vstack([segs[:, 0:3], segs[:, 3:6]])
        inside = in_cavity(sc, pts)
        # the great vessels' tubes leave the chest upwards (neck) and downwards (abdomen): only the thorax
        keep = (pts[:, 2] > V["z_c"] - 20) & (pts[:, 2] < sc.z_apex)
        bad = int((~inside & keep).sum())
        if bad:
            problems.append(f"{bad} {name} vessel points outside the cavity")
    for ch in V["chambers"]:
        e = phantom._chamber_extent(ch)
        for sgn in (-1, 1):
            for ax in range(2):
                q = ch["center"].copy()
                q[ax] += sgn * e[ax]
                if not in_cavity(sc, q, -9)[0]:
                    problems.append(f"heart chamber {ch['name']} pokes out of the cavity")
    for side, h in V["hilum"].items():
        d = phantom._varied_lung_sdf(sc, *h, carve_tubes=False)  # the main artery itself carves the lung
        if d > 2:
            problems.append(f"{side} hilum {np.round(h, 1)} {d:.1f} mm from the lung")
    lm = phantom.anatomy_landmarks(sc)
    json.dumps(lm)  # serialisable
    xs = sc.cx + np.arange(-200, 200, 2.0)
    ys = sc.cy + np.arange(-160, 160, 2.0)
    cav = (((xs[None, :] - sc.cx) / sc.cav_a) ** 2 + ((ys[:, None] - sc.cy) / sc.cav_b) ** 2) <= 1
    for label, z, lo, hi in (("hila", np.mean([lm["hilum"]["right"][2], lm["hilum"]["left"][2]]), 0.35, 0.85),
                             ("bases", min(t[2] for t in V["dome_tops"]) + 5, 0.05, 0.8)):
        vol, _ = phantom.render(sc, phantom.Grid(xs, ys, np.array([z])), phantom.Acquisition(noise=10.0),
                                np.random.default_rng(0))
        if np.isnan(vol).any():
            problems.append(f"NaN in the slice at the {label}")
        share = float(((vol[0] < -500) & cav).sum() / cav.sum())
        if not lo <= share <= hi:
            problems.append(f"lung is {share:.2f} of the cavity at the {label} (expected {lo}-{hi})")
    return problems


def check_series(root: pathlib.Path) -> int:
    import pydicom

    truth = json.loads((root / "truth.json").read_text())
    bad = 0
    for case in truth["cases"]:
        files = sorted((root / str(case["seed"])).glob("*.dcm"))
        dss = [pydicom.dcmread(f) for f in files]
        dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss]).astype(np.float32)
        z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
        px = float(dss[0].PixelSpacing[0])
        x0, y0 = float(dss[0].ImagePositionPatient[0]), float(dss[0].ImagePositionPatient[1])
        xdir = float(dss[0].ImageOrientationPatient[0])
        mid = vol[len(vol) // 2]
        body = ndimage.binary_fill_holes(ndimage.binary_opening(mid > -300, iterations=2))
        lung = float(((mid < -500) & body).sum() / max(1, body.sum()))
        msg = (f"seed {case['seed']} ({case['anatomy']['family_name']}): {vol.shape} px {px} kernel "
               f"{dss[0].ConvolutionKernel} HU {vol.min():.0f}..{vol.max():.0f} lung share of the body in the mid slice {lung:.2f}")
        ok = np.isfinite(vol).all() and 0.1 < lung < 0.75
        for n in case["nodules"]:
            cx, cy, cz = n["center_patient_mm"]
            k = int(np.argmin(np.abs(z - cz)))
            i = int(round((cx - x0) / (px * xdir)))
            j = int(round((cy - y0) / px))
            inside = 0 <= i < vol.shape[2] and 0 <= j < vol.shape[1] and abs(z[k] - cz) < 5
            hu = float(vol[k, j, i]) if inside else float("nan")
            if not inside or hu < -700:
                ok = False
            msg += f"\n  nodule {n['id']} {n['type']} {n['diameter_mm']:.1f} mm: HU at centre {hu:.0f}"
        print(("ok   " if ok else "FAIL ") + msg)
        bad += not ok
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"))
    ap.add_argument("--series", type=pathlib.Path, default=None)
    args = ap.parse_args()
    bad = 0
    if args.seeds:
        fams = sorted(phantom.ANATOMY_FAMILIES)
        for seed in range(args.seeds[0], args.seeds[1] + 1):
            fam = fams[seed % len(fams)]
            problems = check_scene(seed, fam)
            print(f"seed {seed} family {fam}: " + ("ok" if not problems else "; ".join(problems)), flush=True)
            bad += bool(problems)
    if args.series:
        bad += check_series(args.series)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

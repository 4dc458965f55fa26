#!/usr/bin/env python3
"""A harder copy of a phantom set: the same scans as a low-dose or a sharp-kernel scanner
would reconstruct them, for checking that the detector holds up beyond the generator's own
acquisition settings.

    .venv/bin/python3 scripts/model/perturb_set.py --src /tmp/pulmo-heldout --out /tmp/ho-lowdose --mode lowdose
    scripts/eval/evaluate --set /tmp/ho-lowdose --json F        # the set already exists, so it is only scored

Modes, applied slice by slice to the Hounsfield values of every series (deterministic from
the series' seed):
- `lowdose`: adds noise of `--noise` HU (default 50) standard deviation, correlated in-plane
  (Gaussian, sigma 0.7 pixels), as a scan at a fraction of the dose has on top of the
  generator's 4-45 HU;
- `sharp`: an edge-enhancing reconstruction kernel (unsharp mask, sigma 1 mm, amount
  `--amount`, default 1), which also amplifies the noise;
- `soft`: a smoothing reconstruction kernel (in-plane Gaussian blur of `--blur` mm standard
  deviation, default 0.6), less noise and softer edges;
- `thick`: a wider slice profile, as a scanner reconstructing thick slices at a smaller
  spacing (overlapping slices): a Gaussian along the slice axis whose full width at half
  maximum is `--thickness` mm (default 2.5), applied to the series ordered by position;
  SliceThickness becomes the root sum of squares of the old value and that width.

Each part folder keeps its name and its truth.json (the UIDs are unchanged, so the truth
still matches); the series are written uncompressed (explicit VR little endian), with the
stored values clipped to the range BitsStored allows.
"""
from __future__ import annotations

import argparse
import functools
import pathlib
import shutil
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage


def perturb_slice(hu: np.ndarray, pixel_mm: float, mode: str, rng: np.random.Generator,
                  noise: float, amount: float, blur: float) -> np.ndarray:
    if mode == "soft":
        return ndimage.gaussian_filter(hu, blur / pixel_mm)
    if mode == "lowdose":
        n = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), 0.7)
        n /= np.sqrt(1 / (4 * np.pi * 0.7**2))  # unit standard deviation after the filter
        return hu + noise * n
    return hu + amount * (hu - ndimage.gaussian_filter(hu, 1.0 / pixel_mm))


def thicken(series: list[tuple[pathlib.Path, pydicom.Dataset, np.ndarray]], fwhm: float) -> None:
    """Blurs the series' HU along the slice axis in place (Gaussian of `fwhm` mm)."""
    iop = np.array(series[0][1].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = [float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))) for _, ds, _ in series]
    order = sorted(range(len(series)), key=positions.__getitem__)
    series[:] = [series[i] for i in order]
    spacing = float(np.median(np.diff([positions[i] for i in order])))
    volume = ndimage.gaussian_filter1d(np.stack([s[2] for s in series]), fwhm / 2.3548 / spacing, axis=0)
    for i, (path, ds, _) in enumerate(series):
        ds.SliceThickness = f"{np.hypot(float(ds.SliceThickness), fwhm):.2f}"
        series[i] = (path, ds, volume[i])


def perturb_series(src: pathlib.Path, dst: pathlib.Path, mode: str, noise: float, amount: float,
                   blur: float, thickness: float) -> str:
    rng = np.random.default_rng([int(src.name), 99])
    dst.mkdir(parents=True, exist_ok=True)
    series = []
    for path in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        if mode != "thick":
            hu = perturb_slice(hu, float(ds.PixelSpacing[0]), mode, rng, noise, amount, blur)
        series.append((path, ds, hu))
    if mode == "thick":
        thicken(series, thickness)
    for path, ds, hu in series:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        bits, signed = int(ds.BitsStored), int(ds.PixelRepresentation) == 1
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        stored = np.clip(np.round((hu - intercept) / slope), lo, hi).astype(np.int16 if signed else np.uint16)
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
        ds["PixelData"].is_undefined_length = False
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(dst / path.relative_to(src), enforce_file_format=True)
    return src.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=pathlib.Path, required=True, help="a set written by scripts/eval/evaluate or phantom.py")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--mode", choices=("lowdose", "sharp", "soft", "thick"), required=True)
    ap.add_argument("--noise", type=float, default=50.0, help="lowdose: added noise, HU (standard deviation)")
    ap.add_argument("--amount", type=float, default=1.0, help="sharp: unsharp-mask amount")
    ap.add_argument("--blur", type=float, default=0.6, help="soft: in-plane Gaussian, mm (standard deviation)")
    ap.add_argument("--thickness", type=float, default=2.5, help="thick: slice profile, mm (full width at half maximum)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    jobs = []
    for truth in sorted(args.src.rglob("truth.json")):
        part = args.out / truth.parent.relative_to(args.src)
        part.mkdir(parents=True, exist_ok=True)
        shutil.copy(truth, part / "truth.json")
        jobs += [(d, part / d.name) for d in sorted(truth.parent.iterdir()) if d.is_dir() and d.name.isdigit()]
    work = functools.partial(perturb_series, mode=args.mode, noise=args.noise, amount=args.amount,
                             blur=args.blur, thickness=args.thickness)
    with ProcessPoolExecutor(args.jobs) as pool:
        for name in pool.map(work, *zip(*jobs)):
            print(f"perturb_set: {args.mode} {name}", flush=True)


if __name__ == "__main__":
    main()

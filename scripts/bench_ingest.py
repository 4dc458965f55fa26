#!/usr/bin/env python3
"""pulmo convert against pydicom + numpy doing the same job, in the same run.

usage: bench_ingest.py [SLICES] [RUNS]   (defaults 300, 3)

Makes a SLICES x 512 x 512 series from the real NEMA WG04 slice 693 (pydicom-data) in three
transfer syntaxes (explicit VR little endian, RLE lossless, JPEG 2000 lossless), every slice
at its own position, in a temporary folder. Then times, RUNS times each, median reported:
  pulmo:   target/release/pulmo convert DIR --out vol.npy  (a whole process: includes
           loading libtorch, about 1 s, and writing the .npy)
  pydicom: read every file, sort by position, stack, apply_modality_lut, np.save
Prints a Markdown table for docs/benchmarks.md.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut
from pydicom.uid import RLELossless

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINGLE = os.path.join(ROOT, "tests/data/fetched/single")


def make_series(src, folder, slices, rle=False):
    os.makedirs(folder, exist_ok=True)
    base = pydicom.dcmread(src)
    if rle:
        base.compress(RLELossless, encoding_plugin="pylibjpeg")
    for k in range(slices):
        ds = base.copy()
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1079.8.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [-125, -125, 1.25 * k]
        ds.save_as(os.path.join(folder, f"{(k * 7919) % slices:05d}.dcm"), enforce_file_format=True)


def pydicom_volume(folder, out):
    datasets = [pydicom.dcmread(os.path.join(folder, f)) for f in os.listdir(folder)]
    normal = np.cross(datasets[0].ImageOrientationPatient[:3], datasets[0].ImageOrientationPatient[3:])
    datasets.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets])
    np.save(out, hu.astype(np.int16))


def timed(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(slices=300, runs=3):
    pulmo = os.path.join(ROOT, "target/release/pulmo")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, src, rle in (("explicit VR LE", "693_UNCR.dcm", False), ("RLE lossless", "693_UNCR.dcm", True),
                               ("JPEG 2000 lossless", "693_J2KR.dcm", False)):
            folder = os.path.join(tmp, name.replace(" ", "_"))
            make_series(os.path.join(SINGLE, src), folder, slices, rle)
            out = os.path.join(tmp, "vol.npy")
            ours = timed(lambda: subprocess.run([pulmo, "--log", "error", "convert", folder, "--out", out],
                                                check=True, stdout=subprocess.DEVNULL), runs)
            theirs = timed(lambda: pydicom_volume(folder, out), runs)
            rows.append((name, ours, theirs))
            print(f"{name}: pulmo {ours:.2f} s, pydicom {theirs:.2f} s", file=sys.stderr)
    print(f"| {slices}x512x512 | pulmo convert (s) | pydicom + numpy (s) | ratio |")
    print("|---|---|---|---|")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.1f}x |")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))

#!/usr/bin/env python3
"""pulmo convert against pydicom + numpy doing the same job, in the same run.

usage: bench_ingest.py [SLICES] [RUNS]   (defaults 300, 3)

Makes a SLICES x 512 x 512 series from the real NEMA WG04 slice 693 (pydicom-data) in three
transfer syntaxes (explicit VR little endian, RLE lossless, JPEG 2000 lossless), every slice
at its own position, in a temporary folder. Then times, RUNS times each (alternating), medians reported, both ways:
  as processes:  target/release/pulmo convert DIR --out vol.npy (includes loading libtorch
                 and writing the .npy) against this script's pydicom job in a fresh
                 interpreter (includes importing numpy and pydicom, and the same np.save);
  in-process:    pulmo's own scan + decode time (printed by convert) against pydicom's
                 read every file, sort by position, stack, apply_modality_lut, timed two
                 ways: inside the fresh interpreter above (a cold heap, as pulmo's process
                 has: every page of the volume is new) and again in this long-running
                 interpreter (a warm heap: numpy reuses the previous runs' freed memory).
                 The ratio column is against the cold time; the warm one is listed too.
Prints a Markdown table for docs/benchmarks.md.
PULMO_BIN=path times another pulmo binary (e.g. one built from an earlier commit) instead.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut
from pydicom.uid import RLELossless

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    """Read, sort by position, HU, save; returns the seconds spent before the save."""
    start = time.perf_counter()
    datasets = [pydicom.dcmread(os.path.join(folder, f)) for f in os.listdir(folder)]
    normal = np.cross(datasets[0].ImageOrientationPatient[:3], datasets[0].ImageOrientationPatient[3:])
    datasets.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets])
    volume_s = time.perf_counter() - start
    np.save(out, hu.astype(np.int16))
    return volume_s


def median(values):
    return statistics.median(values)


def run_pulmo(pulmo, folder, out):
    """(process wall, scan + decode in-process) seconds; from pulmo convert's own timing line."""
    start = time.perf_counter()
    done = subprocess.run([pulmo, "--log", "error", "convert", folder, "--out", out],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    timing = dict((k, float(v)) for k, v in re.findall(r"(scan|decode|write) ([0-9.]+) ms", done.stdout))
    return wall, (timing["scan"] + timing["decode"]) / 1e3


def run_pydicom_process(folder, out):
    """The pydicom job as a fresh process: (wall with interpreter start and imports, its
    own read + sort + HU time)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--pydicom-only", folder, out],
                          check=True, capture_output=True, text=True)
    return time.perf_counter() - start, float(done.stdout.split()[-1])


def main(slices=300, runs=3):
    pulmo = os.environ.get("PULMO_BIN") or os.path.join(ROOT, "target/release/pulmo")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, src, rle in (("explicit VR LE", "693_UNCR.dcm", False), ("RLE lossless", "693_UNCR.dcm", True),
                               ("JPEG 2000 lossless", "693_J2KR.dcm", False)):
            folder = os.path.join(tmp, name.replace(" ", "_"))
            make_series(os.path.join(SINGLE, src), folder, slices, rle)
            out = os.path.join(tmp, "vol.npy")
            ours, ours_in, theirs, theirs_cold, theirs_in = [], [], [], [], []
            for _ in range(runs):  # alternating, so drifting load hits both sides alike
                wall, inproc = run_pulmo(pulmo, folder, out)
                ours.append(wall); ours_in.append(inproc)
                theirs_in.append(pydicom_volume(folder, out))
                wall, cold = run_pydicom_process(folder, out)
                theirs.append(wall); theirs_cold.append(cold)
            row = (name, median(ours), median(ours_in), median(theirs), median(theirs_cold), median(theirs_in))
            rows.append(row)
            print(f"{name}: pulmo {row[1]:.2f} s ({row[2]:.2f} s in-process: "
                  f"{' '.join(f'{v:.3f}' for v in ours_in)}), pydicom {row[3]:.2f} s ({row[4]:.2f} s in-process "
                  f"cold: {' '.join(f'{v:.3f}' for v in theirs_cold)}; warm {row[5]:.2f}: "
                  f"{' '.join(f'{v:.3f}' for v in theirs_in)})", file=sys.stderr)
    print(f"| {slices}x512x512 | pulmo convert, process (s) | pydicom script, process (s) | ratio | "
          "pulmo scan + decode (s) | pydicom read + sort + HU, cold (s) | ratio | pydicom, warm heap (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, ours, ours_in, theirs, cold, warm in rows:
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.1f}x | "
              f"{ours_in:.2f} | {cold:.2f} | {cold / ours_in:.1f}x | {warm:.2f} ({warm / ours_in:.1f}x) |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pydicom-only"]:
        print(f"{pydicom_volume(*sys.argv[2:4]):.6f}")
    else:
        main(*map(int, sys.argv[1:]))

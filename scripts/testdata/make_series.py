#!/usr/bin/env python3
"""Multi-slice CT series made from one real slice, to check slice ordering.

usage: make_series.py SLICE.dcm OUTDIR

Writes, from the real CT slice (pydicom's CT_small.dcm), with pydicom:
  OUTDIR/shuffled/   6 slices 2.5 mm apart, each slice's pixels offset by 10*k so the
                     order shows in the values, file names in a shuffled order;
  OUTDIR/reversed/   6 slices whose InstanceNumber and file names run against the
                     position (1 is the highest slice), and a second reconstruction's
                     header: the order must come from ImagePositionPatient alone;
  OUTDIR/gap/        5 slices with the 4th of 6 missing (a gap warning, not an error).
Deterministic: fixed UIDs and a fixed shuffle.
"""
import os
import random
import sys

import numpy as np
import pydicom


def make(src, outdir, name, zs, numbers, file_names):
    base = pydicom.dcmread(src)
    series_uid = f"1.2.826.0.1.3680043.10.1079.{len(name)}{len(zs)}.{ord(name[0])}"
    folder = os.path.join(outdir, name)
    os.makedirs(folder, exist_ok=True)
    for k, (z, number, file_name) in enumerate(zip(zs, numbers, file_names)):
        ds = base.copy()
        pixels = ds.pixel_array.astype(np.int16) + np.int16(10 * k)
        ds.PixelData = pixels.tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        x, y, _ = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, z]
        ds.SliceLocation = z
        ds.save_as(os.path.join(folder, file_name), enforce_file_format=True)


def main(src, outdir):
    random.seed(1079)
    z0 = float(pydicom.dcmread(src, stop_before_pixels=True).ImagePositionPatient[2])
    zs = [z0 + 2.5 * k for k in range(6)]
    names = [f"im{k:03d}.dcm" for k in range(6)]
    shuffled = names[:]
    random.shuffle(shuffled)
    make(src, outdir, "shuffled", zs, range(1, 7), shuffled)
    make(src, outdir, "reversed", zs, range(6, 0, -1), names[::-1])
    gap = [z for k, z in enumerate(zs) if k != 3]
    make(src, outdir, "gap", gap, range(1, 6), names[:5])


if __name__ == "__main__":
    main(*sys.argv[1:])

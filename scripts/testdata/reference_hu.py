#!/usr/bin/env python3
"""Reference Hounsfield volumes from pydicom, to check pulmo's decoder against.

usage: reference_hu.py OUT.npy=INPUT [OUT.npy=INPUT ...]

INPUT is a DICOM file or a folder of one series. Each OUT.npy gets a float32 array of
shape (slices, rows, columns): pydicom decodes (with its pylibjpeg/openjpeg/gdcm/pyjpegls
plugins) and applies the modality LUT (pydicom.pixels.apply_modality_lut), per frame for
Enhanced CT. Slices are ordered by ImagePositionPatient projected on the image normal.
The one rule pulmo adds on top of pydicom is written out here too: pixels equal to
PixelPaddingValue (or inside PixelPaddingRangeLimit) become -1024 HU (air).
Next to it, OUT.affine.npy holds the 4x4 voxel (column, row, slice) -> RAS affine as
dcm2niix computes it, from the same positions.
"""
import os
import sys

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


def frames_of(ds):
    """(position, orientation, pixel_spacing, modality LUT dataset, stored frame) per frame."""
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        pixels = pixels[np.newaxis]
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    out = []
    for n, frame in enumerate(pixels):
        groups = [g for g in (per_frame[n] if n < len(per_frame) else None, shared) if g is not None]

        def find(seq, attr):
            for g in groups:
                for item in g.get(seq, []):
                    if attr in item:
                        return item
            return ds

        pos = find("PlanePositionSequence", "ImagePositionPatient").get("ImagePositionPatient", [0, 0, 0])
        ori = find("PlaneOrientationSequence", "ImageOrientationPatient").get(
            "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])
        spacing = find("PixelMeasuresSequence", "PixelSpacing").get("PixelSpacing", [1, 1])
        lut = find("PixelValueTransformationSequence", "RescaleSlope")
        out.append((np.array(pos, float), np.array(ori, float), spacing, lut, frame))
    return out


def hounsfield(ds, lut, frame):
    hu = apply_modality_lut(frame, lut).astype(np.float64)
    pad = ds.get("PixelPaddingValue")
    if pad is not None:
        if ds.PixelRepresentation == 1 and pad > 0x7FFF and ds.BitsAllocated == 16:
            pad -= 0x10000
        limit = ds.get("PixelPaddingRangeLimit", pad)
        lo, hi = min(pad, limit), max(pad, limit)
        hu[(frame >= lo) & (frame <= hi)] = -1024.0
    return hu


def volume(path):
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path))
    frames = []
    for f in files:
        ds = pydicom.dcmread(f)
        for pos, ori, spacing, lut, frame in frames_of(ds):
            frames.append((pos, ori, spacing, hounsfield(ds, lut, frame)))
    normal = np.cross(frames[0][1][:3], frames[0][1][3:])
    frames.sort(key=lambda fr: float(np.dot(fr[0], normal)))
    hu = np.stack([fr[3] for fr in frames]).astype(np.float32)
    thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    return hu, affine(frames, normal, thickness)


def affine(frames, normal, thickness):
    row, col = frames[0][1][:3], frames[0][1][3:]
    dr, dc = float(frames[0][2][0]), float(frames[0][2][1])
    first, last = frames[0][0], frames[-1][0]
    step = (last - first) / (len(frames) - 1) if len(frames) > 1 else normal * thickness
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2], a[:3, 3] = row * dc, col * dr, step, first
    return np.diag([-1, -1, 1, 1]) @ a  # LPS -> RAS


def main(pairs):
    for pair in pairs:
        out, src = pair.split("=", 1)
        hu, aff = volume(src)
        np.save(out, hu)
        np.save(out[:-4] + ".affine.npy", aff)


if __name__ == "__main__":
    main(sys.argv[1:])

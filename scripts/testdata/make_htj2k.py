#!/usr/bin/env python3
"""HTJ2K CT slices made from one real slice, for the decoder tests.

usage: make_htj2k.py SLICE.dcm OUTDIR

No registry package ships an HTJ2K DICOM file, so this writes two from WG04's 693_UNCR
(a real 512 x 512 CT slice, 16-bit signed): the codestreams come from OpenJPH's
`ojph_compress` (the HTJ2K reference implementation, Debian package openjph-tools), and
pydicom wraps them (encapsulated, one fragment):
  OUTDIR/693_HTJ2KR.dcm   HTJ2K Lossless Only (1.2.840.10008.1.2.4.201), reversible 5/3
  OUTDIR/693_HTJ2KI.dcm   HTJ2K (1.2.840.10008.1.2.4.203), irreversible 9/7, qstep 0.0005
OpenJPH 0.9 mishandles signed raw input, so the stored values are shifted by +2000 to
unsigned (PixelRepresentation 0), and RescaleIntercept and PixelPaddingValue move with them:
the Hounsfield values are those of 693_UNCR exactly. Deterministic: same input, same bytes.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

SHIFT = 2000
VARIANTS = (("693_HTJ2KR", "1.2.840.10008.1.2.4.201", ["-reversible", "true"]),
            ("693_HTJ2KI", "1.2.840.10008.1.2.4.203", ["-qstep", "0.0005"]))


def main(src: str, outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    original = pydicom.dcmread(src)
    stored = original.pixel_array.astype(np.int32) + SHIFT
    assert stored.min() >= 0 and stored.max() < 65536, "shifted values must fit in u16"
    with tempfile.TemporaryDirectory() as tmp:
        pgm = os.path.join(tmp, "slice.pgm")
        with open(pgm, "wb") as f:
            f.write(b"P5\n%d %d\n65535\n" % (stored.shape[1], stored.shape[0]))
            f.write(stored.astype(">u2").tobytes())
        for name, syntax, options in VARIANTS:
            j2c = os.path.join(tmp, f"{name}.j2c")
            subprocess.run(["ojph_compress", "-i", pgm, "-o", j2c, *options], check=True,
                           stdout=subprocess.DEVNULL)
            ds = pydicom.dcmread(src)
            ds.PixelRepresentation = 0
            ds.BitsStored, ds.HighBit = 16, 15
            ds.RescaleIntercept = float(ds.RescaleIntercept) - SHIFT
            for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
                if tag in ds:
                    del ds[tag]
            if "PixelPaddingValue" in ds:  # the same pixels stay padding (air)
                ds.add_new("PixelPaddingValue", "US", int(ds.PixelPaddingValue) + SHIFT)
            with open(j2c, "rb") as f:
                ds.PixelData = encapsulate([f.read()])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = syntax
            uid = generate_uid(entropy_srcs=[original.SOPInstanceUID, name])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            if syntax.endswith(".203"):
                ds.LossyImageCompression = "01"
            ds.save_as(os.path.join(outdir, f"{name}.dcm"), enforce_file_format=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

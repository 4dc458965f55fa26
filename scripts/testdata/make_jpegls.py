#!/usr/bin/env python3
"""JPEG-LS CT slices made from one real slice, for the decoder tests.

usage: make_jpegls.py SLICE.dcm OUTDIR

Re-encodes the real CT slice (pydicom's CT_small.dcm, 16-bit signed) with pydicom's own
encoder (pyjpegls, i.e. CharLS as pydicom ships it) into
  OUTDIR/CT_small_jls_lossless.dcm   JPEG-LS lossless (1.2.840.10008.1.2.4.80)
  OUTDIR/CT_small_jls_near3.dcm      JPEG-LS near-lossless (1.2.840.10008.1.2.4.81), NEAR = 3
The tests decode them with pulmo and compare with pydicom's decode of the same file (exact:
JPEG-LS decoding is fully specified) and, for near-lossless, with the original pixels
(within NEAR). Deterministic: same input, same bytes.
"""
import os
import sys

import pydicom
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless


def main(src: str, outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    for name, syntax, extra in (("CT_small_jls_lossless", JPEGLSLossless, {}),
                                ("CT_small_jls_near3", JPEGLSNearLossless, {"jls_error": 3})):
        ds = pydicom.dcmread(src)
        ds.compress(syntax, encoding_plugin="pyjpegls", **extra)
        ds.save_as(os.path.join(outdir, f"{name}.dcm"), enforce_file_format=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

#!/usr/bin/env python3
"""Checks a NIfTI file written by `pulmo convert` with nibabel, a reader nobody here wrote.

usage: check_nifti.py OUT.nii[.gz] REF.npy REF.affine.npy

REF.npy is pydicom's (slices, rows, columns) volume and REF.affine.npy the dcm2niix-style
voxel (column, row, slice) -> RAS affine (both from reference_hu.py). Exits 1 with a
message when the data, the sform or the qform disagree.
"""
import sys

import nibabel as nib
import numpy as np

out, ref, ref_affine = sys.argv[1:4]
img = nib.load(out)
data = np.asarray(img.dataobj).transpose(2, 1, 0)  # (i, j, k) -> (k, j, i)
expected = np.load(ref)
errors = []
if data.shape != expected.shape or not np.array_equal(data.astype(np.float32), expected):
    errors.append(f"data differ: {data.shape} vs {expected.shape}")
want = np.load(ref_affine)
sform, sform_code = img.header.get_sform(coded=True)
qform, qform_code = img.header.get_qform(coded=True)
for name, got, code in (("sform", sform, sform_code), ("qform", qform, qform_code)):
    if code != 1 or not np.allclose(got, want, atol=1e-3):
        errors.append(f"{name} (code {code}) is\n{got}\nexpected\n{want}")
if errors:
    sys.exit("\n".join(errors))
print("nifti ok")

"""Writes a synthetic CT series for the DIMSE throughput comparison: N slices of 512x512
int16, explicit VR little endian, new UIDs each run (pydicom from the venv).

    .venv/bin/python3 scripts/eval/dimse_series.py OUT_DIR [--slices 300]
"""

import argparse
import pathlib

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def slice_at(index, study, series, frame_of_reference, pixels):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.FrameOfReferenceUID = frame_of_reference
    ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Dimse"
    ds.BodyPartExamined = "CHEST"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-200.0, -200.0, -index * 1.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.78125, 0.78125], 1.0
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = pixels.tobytes()
    return ds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    for index in range(args.slices):
        pixels = rng.integers(-1000, 400, size=(512, 512), dtype=np.int16)
        ds = slice_at(index, study, series, frame, pixels)
        ds.save_as(args.out / f"CT{index + 1:04d}.dcm", enforce_file_format=True)


if __name__ == "__main__":
    main()

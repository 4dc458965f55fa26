#!/usr/bin/env python3
"""Reads pulmo's DICOM SR and SEG back with highdicom and pydicom and checks them against
the JSON report and the source series. Used by tests/report_dicom.rs; exits non-zero with
the reasons when anything disagrees.

usage: check_dicom_results.py REPORT.json RESULT.sr.dcm RESULT.seg.dcm SOURCE_DIR
"""

import json
import math
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def close(a, b, tolerance=1e-6):
    return math.isclose(float(a), float(b), rel_tol=tolerance, abs_tol=tolerance)


MEASUREMENTS = {
    "diameter_mm": (Code("81827009", "SCT", "Diameter"), "mm"),
    "long_axis_mm": (Code("103339001", "SCT", "Long Axis"), "mm"),
    "short_axis_mm": (Code("103340004", "SCT", "Short Axis"), "mm"),
    "volume_mm3": (Code("118565006", "SCT", "Volume"), "mm3"),
    "mean_hu": (Code("112181", "DCM", "Mean Attenuation Coefficient"), "[hnsf'U]"),
    "score": (Code("111012", "DCM", "Certainty of Finding"), "1"),
}
LATERALITY = {"left": "7771000", "right": "24028007"}
# A follow-up's change class (docs/dicom-conformance.md, "Follow-up").
CHANGE = {"new": "129721008", "growing": "15454001", "stable": "129723006", "shrinking": "19776001"}
FOLLOWUP_MEASUREMENTS = {
    "diameter_change_mm": (Code("442714003", "SCT", "Difference in size"), "mm"),
    "volume_change_percent": (Code("volume-change", "99PULMO", "Volume change since prior study"), "%"),
    "volume_doubling_days": (Code("vdt", "99PULMO", "Volume doubling time"), "d"),
}
COMPOSITION = {"solid": "solid", "part-solid": "part-solid", "ground-glass": "112120"}


def source_positions(source_dir):
    """SOPInstanceUID -> (ImagePositionPatient, SOPClassUID) of every source file."""
    found = {}
    for path in Path(source_dir).rglob("*"):
        if path.is_file():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            found[ds.SOPInstanceUID] = ([float(v) for v in ds.ImagePositionPatient], ds.SOPClassUID)
    return found


def check_sr(report, sr_path, sources):
    sr = hd.sr.srread(sr_path)
    check(sr.StudyInstanceUID == report["study_instance_uid"], "SR is not in the source study")
    check(sr.SeriesInstanceUID != report["series_instance_uid"], "SR reuses the source series UID")
    check(sr.Manufacturer == "pulmo", f"SR Manufacturer is {sr.Manufacturer!r}")
    check(sr.ContentTemplateSequence[0].TemplateIdentifier == "1500", "SR is not TID 1500")
    groups = sr.content.get_planar_roi_measurement_groups()
    findings = calls(report)
    check(len(groups) == len(findings), f"SR has {len(groups)} groups for {len(findings)} calls")
    for finding, group in zip(findings, groups):
        check_group(finding, group, sources)


def check_group(finding, group, sources):
    n = finding["id"]
    # The prefix is what OHIF looks for to list the circle in its measurement panel.
    want = f"Cornerstone3DTools@^0.1.0:CircleROI:nodule-{n}"
    check(group.tracking_identifier == want, f"group {n}: tracking id {group.tracking_identifier!r}")
    check(bool(group.tracking_uid), f"group {n}: no tracking UID")
    check(group.finding_type.value == "27925004", f"group {n}: finding is {group.finding_type}")
    sites = group.finding_sites
    check(len(sites) == 1 and sites[0].value.value == "39607008", f"group {n}: finding site {[s.value for s in sites]}")
    if sites:
        side = sites[0].laterality
        check(side is not None and side.value == LATERALITY[finding["laterality"]], f"group {n}: laterality {side}")
    for key, (code, unit) in MEASUREMENTS.items():
        found = group.get_measurements(name=code)
        check(len(found) == 1, f"group {n}: {len(found)} {code.meaning} measurements")
        if found:
            check(close(found[0].value, finding[key]), f"group {n}: {key} {found[0].value} != {finding[key]}")
            check(found[0].unit.value == unit, f"group {n}: {key} unit {found[0].unit.value}")
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    check(evaluations.get("composition") == COMPOSITION[finding["type"]], f"group {n}: composition {evaluations}")
    check(evaluations.get("lung-rads") == finding["lung_rads"], f"group {n}: Lung-RADS {evaluations}")
    if "change" in finding:
        check_followup(finding, group, evaluations)
    region = group.roi
    check(region is not None and region.graphic_type.value == "CIRCLE", f"group {n}: image region {region}")
    if region is not None:
        uid = region.ReferencedSOPSequence[0].ReferencedSOPInstanceUID if "ReferencedSOPSequence" in region else None
        if uid is None:
            uid = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        check(uid == finding["sop_instance_uid"], f"group {n}: region on {uid}, not {finding['sop_instance_uid']}")
        check(uid in sources, f"group {n}: region on an image that is not in the source")
        centre = region.value[0]
        i, j, _ = finding["center_voxel"]
        check(close(centre[0], i + 0.5) and close(centre[1], j + 0.5), f"group {n}: circle centre {centre}")


def check_followup(finding, group, evaluations):
    """A compared finding: its change class as a qualitative evaluation, its growth as
    measurements, and the Tracking UID the JSON (and so the prior's SR) has."""
    n = finding["id"]
    check(evaluations.get("change") == CHANGE[finding["change"]], f"group {n}: change {evaluations}")
    check(group.tracking_uid == finding.get("tracking_uid"), f"group {n}: tracking UID {group.tracking_uid}")
    for key, (code, unit) in FOLLOWUP_MEASUREMENTS.items():
        found = group.get_measurements(name=code)
        want = finding.get(key)
        check(len(found) == (want is not None), f"group {n}: {len(found)} {code.meaning} for {key} {want}")
        if found and want is not None:
            check(close(found[0].value, want), f"group {n}: {key} {found[0].value} != {want}")
            check(found[0].unit.value == unit, f"group {n}: {key} unit {found[0].unit.value}")


def check_seg(report, seg_path, sources):
    seg = hd.seg.segread(seg_path)
    ds = pydicom.dcmread(seg_path)
    findings = calls(report)
    check(ds.StudyInstanceUID == report["study_instance_uid"], "SEG is not in the source study")
    check(ds.FrameOfReferenceUID == report["frame_of_reference_uid"], "SEG frame of reference differs")
    check(len(ds.SegmentSequence) == len(findings), "SEG has a segment count unlike the calls'")
    for finding, segment in zip(findings, ds.SegmentSequence):
        check(segment.SegmentLabel == f"nodule-{finding['id']}", f"segment label {segment.SegmentLabel}")
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    spacing = [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    thickness = float(report["series"]["spacing_mm"][2])
    voxels = {}
    for n, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        uid = source.ReferencedSOPInstanceUID
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        check(uid in sources, f"frame {n + 1} derives from {uid}, not a source image")
        if uid in sources:
            expected, sop_class = sources[uid]
            check(np.allclose(position, expected, atol=1e-3), f"frame {n + 1}: position {position} != source {expected}")
            check(source.ReferencedSOPClassUID == sop_class, f"frame {n + 1}: SOP class differs")
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        count = int(pixels[n].sum())
        check(count > 0, f"frame {n + 1} is empty")
        voxels[number] = voxels.get(number, 0) + count
    for number, finding in enumerate(findings, start=1):
        volume = voxels.get(number, 0) * spacing[0] * spacing[1] * thickness
        check(abs(volume - finding["volume_mm3"]) <= 0.1 + 1e-3 * finding["volume_mm3"],
              f"segment {number}: {volume:.1f} mm3 of voxels, report says {finding['volume_mm3']}")
    check(len(seg.segmentation_type.value) > 0, "highdicom cannot read the segmentation type")


def calls(report):
    """The findings at or above the report's operating point: what the DICOM results carry."""
    return [f for f in report["findings"] if f["score"] >= report["operating_score"]]


def main():
    report_path, sr_path, seg_path, source_dir = sys.argv[1:5]
    report = json.loads(Path(report_path).read_text())
    sources = source_positions(source_dir)
    check(len(calls(report)) > 0, "the report has no calls, so nothing is checked")
    check_sr(report, sr_path, sources)
    check_seg(report, seg_path, sources)
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(f"ok: {len(calls(report))} calls agree between JSON, SR and SEG")


if __name__ == "__main__":
    main()

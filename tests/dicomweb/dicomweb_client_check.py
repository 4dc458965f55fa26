"""PyPI's dicomweb-client against a running `pulmo serve`: searches with filters, then the
source series, its metadata and frames, compared with the files sent (read by pydicom).

usage: dicomweb_client_check.py URL TOKEN STUDY_UID SENT_DIR
Prints `dicomweb-client: ok` when everything matched; fails with the first mismatch.
"""

import sys
from pathlib import Path

import numpy as np
import pydicom
from dicomweb_client.api import DICOMwebClient


def main(url, token, study, sent_dir):
    client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {token}"})
    sent = {}
    for path in sorted(Path(sent_dir).glob("*.dcm")):
        ds = pydicom.dcmread(path)
        sent[ds.SOPInstanceUID] = ds
    first = next(iter(sent.values()))

    found = client.search_for_studies(
        search_filters={"PatientID": first.PatientID, "StudyDate": "20000101-20991231"}
    )
    assert [s["0020000D"]["Value"][0] for s in found] == [study], found
    none = client.search_for_studies(search_filters={"PatientName": "nobody*"})
    assert none == [], none
    by_name = client.search_for_studies(search_filters={"PatientName": "phantom*"}, limit=5)
    assert len(by_name) == 1, by_name

    series = client.search_for_series(study, search_filters={"Modality": "CT"})
    assert len(series) == 1, series
    series_uid = series[0]["0020000E"]["Value"][0]
    assert series_uid == first.SeriesInstanceUID

    retrieved = client.retrieve_series(study, series_uid)
    assert {ds.SOPInstanceUID for ds in retrieved} == sent.keys()
    for ds in retrieved:
        original = sent[ds.SOPInstanceUID]
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.PixelData == original.PixelData, ds.SOPInstanceUID
    study_instances = client.retrieve_study(study)
    assert len(study_instances) > len(sent), "the results are in the study too"

    metadata = client.retrieve_study_metadata(study)
    source = {}
    for item in metadata:
        ds = pydicom.Dataset.from_json(item)
        if ds.SeriesInstanceUID == series_uid:
            source[ds.SOPInstanceUID] = ds
    assert source.keys() == sent.keys(), (len(source), len(sent))
    for uid, ds in source.items():
        original = sent[uid]
        for keyword in ("PatientID", "PatientName", "StudyDate", "Rows", "Columns",
                        "ImagePositionPatient", "RescaleIntercept", "InstanceNumber"):
            assert ds.get(keyword) == original.get(keyword), (uid, keyword)
    assert len(metadata) > len(source), "the results are in the study's metadata too"

    for uid in list(sent)[:5]:
        original = sent[uid]
        frames = client.retrieve_instance_frames(study, series_uid, uid, frame_numbers=[1])
        assert len(frames) == 1
        expected = original.pixel_array.astype(original.pixel_array.dtype.newbyteorder("<"))
        got = np.frombuffer(frames[0], dtype=expected.dtype).reshape(expected.shape)
        assert np.array_equal(got, expected), uid
    print("dicomweb-client: ok")


if __name__ == "__main__":
    main(*sys.argv[1:5])

//! `pulmo analyze` on real files: the bundled phantom series (written by pydicom, RLE
//! Lossless) and real single CT slices from pydicom's test files.
//!
//! The detection model here is `models/threshold-test` (deterministic, marks soft tissue),
//! so these tests check the plumbing — selection, geometry, reports, exit codes, patient
//! data kept out — not detection quality, which `pulmo evaluate` measures.

use std::path::Path;

use crate::common::{fixture, pulmo, repo, scratch};
use serde_json::Value;

fn analyze(args: &[&str]) -> (Option<i32>, String, String) {
    let out = pulmo()
        .arg("analyze")
        .args(["--device", "cpu", "--model"])
        .arg(repo("models/threshold-test"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn truth_case() -> Value {
    let text = std::fs::read_to_string(repo("sample-dicom/truth.json")).unwrap();
    let truth: Value = serde_json::from_str(&text).unwrap();
    truth["cases"][0].clone()
}

#[test]
fn the_sample_series_gives_one_report_keyed_by_its_uids_and_written_to_out() {
    let out_dir = scratch("analyze-sample");
    let sample = repo("sample-dicom");
    let (code, stdout, stderr) = analyze(&[
        "--json",
        "--out",
        out_dir.to_str().unwrap(),
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<Value> = serde_json::from_str(&stdout).expect("stdout is the JSON array");
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    let truth = truth_case();
    assert_eq!(report["schema"], "pulmo.report/1");
    assert_eq!(report["study_instance_uid"], truth["study_instance_uid"]);
    assert_eq!(report["series_instance_uid"], truth["series_instance_uid"]);
    assert_eq!(report["analyzed"], true);
    assert_eq!(report["model"]["id"], "threshold-test");
    // Its manifest allows no 16-bit format, so `auto` keeps float32 on any CPU.
    assert_eq!(report["precision"], "float32");
    assert_eq!(report["series"]["slices"], truth["geometry"]["slices"]);
    assert_eq!(report["series"]["rows"], 256);
    assert!(
        stderr.contains("series analysed"),
        "the summary moves to stderr: {stderr}"
    );

    let uid = truth["series_instance_uid"].as_str().unwrap();
    let written = std::fs::read_to_string(out_dir.join(format!("{uid}.json"))).unwrap();
    let written: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(&written, report, "--out writes the same report");
    std::fs::remove_dir_all(out_dir).ok();
}

/// `{SOPInstanceUID: [InstanceNumber, z]}` of every file in a folder, read by pydicom.
fn slices_by_pydicom(dir: &Path) -> Value {
    let script = "import sys, json, pathlib, pydicom\n\
        out = {}\n\
        for p in pathlib.Path(sys.argv[1]).rglob('*.dcm'):\n\
        \x20   d = pydicom.dcmread(p, stop_before_pixels=True)\n\
        \x20   out[d.SOPInstanceUID] = [int(d.InstanceNumber), float(d.ImagePositionPatient[2])]\n\
        print(json.dumps(out))";
    let out = crate::common::succeeds(crate::common::python().args(["-c", script]).arg(dir));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_finding_points_at_the_slice_through_its_centre() {
    let sample = repo("sample-dicom");
    let (code, stdout, stderr) = analyze(&["--json", sample.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let findings = reports[0]["findings"].as_array().unwrap();
    assert!(
        !findings.is_empty(),
        "the test model marks some soft tissue in the lungs"
    );
    let spacing = reports[0]["series"]["spacing_mm"][2].as_f64().unwrap();
    let files = slices_by_pydicom(&sample);
    for f in findings {
        let uid = f["sop_instance_uid"].as_str().unwrap();
        let [number, z] = [&files[uid][0], &files[uid][1]];
        assert_eq!(f["instance_number"], *number, "{uid}");
        let centre_z = f["center_patient_mm"][2].as_f64().unwrap();
        assert!(
            (centre_z - z.as_f64().unwrap()).abs() <= spacing / 2.0 + 1e-6,
            "{f}"
        );
        assert!(["left", "right"].contains(&f["laterality"].as_str().unwrap()));
    }
}

#[test]
fn reports_and_summaries_carry_no_patient_data() {
    let sample = repo("sample-dicom");
    let (code, stdout, stderr) = analyze(&["--json", "--log", "debug", sample.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let seed = truth_case()["seed"].as_u64().unwrap();
    for text in [&stdout, &stderr] {
        assert!(!text.contains("PHANTOM"), "patient name or ID leaked");
        assert!(!text.contains(&format!("PHANTOM-{seed}")));
        assert!(!text.to_lowercase().contains("patient_name"));
    }
}

/// Every key `docs/report-schema.md` promises, with its type, in a real report.
#[test]
fn every_documented_report_key_is_present_with_its_type() {
    let sample = repo("sample-dicom");
    let (code, stdout, stderr) = analyze(&["--json", sample.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let r = &reports[0];
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    for key in [
        "study_instance_uid",
        "series_instance_uid",
        "frame_of_reference_uid",
        "device",
        "lung_rads",
        "disclaimer",
    ] {
        assert!(text(&r[key]), "{key}: {}", r[key]);
    }
    assert_eq!(r["schema"], "pulmo.report/1");
    for key in ["id", "version", "sha256"] {
        assert!(text(&r["model"][key]), "model.{key}");
    }
    assert_eq!(r["model"]["sha256"].as_str().unwrap().len(), 64);
    for key in ["slices", "rows", "columns"] {
        assert!(r["series"][key].as_u64().unwrap() > 0, "series.{key}");
    }
    assert_eq!(r["series"]["spacing_mm"].as_array().unwrap().len(), 3);
    assert!(r["series"]["slice_thickness_mm"].as_f64().unwrap() > 0.0);
    for stage in ["decode", "preprocess", "inference", "postprocess", "total"] {
        assert!(
            r["timing_ms"][stage].as_f64().is_some(),
            "timing_ms.{stage}"
        );
    }
    let study_score = r["study_score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&study_score));
    assert!(r["warnings"].is_array());
    let findings = r["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    for f in findings {
        for key in ["sop_instance_uid", "type", "lung_rads", "laterality"] {
            assert!(text(&f[key]), "finding {key}: {f}");
        }
        for key in ["id", "instance_number"] {
            assert!(f[key].as_u64().is_some(), "finding {key}: {f}");
        }
        assert_eq!(f["center_patient_mm"].as_array().unwrap().len(), 3);
        let voxel = f["center_voxel"].as_array().unwrap();
        assert!(voxel.len() == 3 && voxel.iter().all(|v| v.as_u64().is_some()));
        let [d, long, short] = ["diameter_mm", "long_axis_mm", "short_axis_mm"]
            .map(|k| f[k].as_f64().unwrap_or_else(|| panic!("finding {k}: {f}")));
        assert!(short <= long, "{f}");
        assert!(
            (d - (long + short) / 2.0).abs() <= 0.051,
            "diameter is the mean axis: {f}"
        );
        assert!(f["volume_mm3"].as_f64().unwrap() > 0.0);
        assert!(f["mean_hu"].as_f64().is_some());
        assert!((0.0..=1.0).contains(&f["score"].as_f64().unwrap()));
        assert!(["solid", "part-solid", "ground-glass"].contains(&f["type"].as_str().unwrap()));
        assert!(["left", "right"].contains(&f["laterality"].as_str().unwrap()));
    }
}

/// A copy of the sample with a name, an ID and a birth date: none of them reaches the
/// JSON reports, the summary or the debug log.
#[test]
fn a_patients_name_id_and_birth_date_never_reach_reports_or_logs() {
    let dir = scratch("analyze-patient");
    let series = dir.join("series");
    crate::common::succeeds(
        crate::common::python()
        .args(["-c", "import pathlib, sys, pydicom\nsrc, dst = map(pathlib.Path, sys.argv[1:3])\ndst.mkdir()\nfor f in sorted(src.rglob('*.dcm')):\n    ds = pydicom.dcmread(f)\n    ds.PatientName, ds.PatientID, ds.PatientBirthDate = 'Quixote^Alonso', 'MRN-4471-XY', '19470311'\n    ds.save_as(dst / f.name)\n"])
        .arg(repo("sample-dicom"))
        .arg(&series)
    );
    let out = dir.join("out");
    let (code, stdout, stderr) = analyze(&[
        "--json",
        "--log",
        "debug",
        "--no-sr",
        "--no-seg",
        "--out",
        out.to_str().unwrap(),
        series.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut texts = vec![stdout, stderr];
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            texts.push(std::fs::read_to_string(path).unwrap());
        }
    }
    assert!(texts.len() >= 3, "no JSON report written");
    for text in &texts {
        for secret in ["Quixote", "Alonso", "MRN-4471-XY", "19470311"] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
    }
}

#[test]
fn a_single_small_slice_is_reported_as_not_a_chest_ct() {
    let slice = fixture("single/CT_small.dcm");
    let (code, stdout, stderr) = analyze(&["--json", slice.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reports[0]["analyzed"], false);
    assert_eq!(reports[0]["findings"].as_array().unwrap().len(), 0);
    let warnings = reports[0]["warnings"].to_string();
    assert!(warnings.contains("not a chest CT"), "{warnings}");
}

#[test]
fn a_study_without_ct_fails_with_the_reason_while_others_complete() {
    let dir = scratch("analyze-mixed");
    std::fs::copy(fixture("malformed/test-SR.dcm"), dir.join("sr.dcm")).unwrap();
    let sample = repo("sample-dicom");
    let (code, stdout, stderr) = analyze(&[dir.to_str().unwrap(), sample.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAILED: no CT series to analyse"),
        "{stdout}"
    );
    assert!(stdout.contains("1 series analysed, 1 failed"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn nothing_dicom_is_an_error() {
    let dir = scratch("analyze-empty");
    std::fs::write(dir.join("notes.txt"), "not DICOM").unwrap();
    let (code, _, stderr) = analyze(&[dir.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no DICOM studies found"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn float16_on_the_cpu_is_refused_at_start_and_bfloat16_is_reported() {
    let sample = repo("sample-dicom");
    let sample = sample.to_str().unwrap();
    let (code, _, stderr) = analyze(&["--precision", "float16", sample]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("float16 runs on CUDA only"), "{stderr}");
    let (code, _, stderr) = analyze(&["--precision", "int8", sample]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("expected auto, float32, bfloat16 or float16"),
        "{stderr}"
    );
    let (code, stdout, stderr) = analyze(&["--precision", "bfloat16", "--json", sample]);
    assert_eq!(code, Some(0), "{stderr}");
    let reports: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reports[0]["precision"], "bfloat16");
}

#[test]
fn resampling_with_tensor_ops_gives_the_reports_rayon_gives() {
    // `--resample device` is the GPU's path (libtorch tensor ops on the model's device),
    // here on the CPU device; `--resample cpu` is rayon.
    let sample = repo("sample-dicom");
    let sample = sample.to_str().unwrap();
    let (code, stdout, stderr) = analyze(&["--resample", "device", "--json", sample]);
    assert_eq!(code, Some(0), "{stderr}");
    let device: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let (code, stdout, stderr) = analyze(&["--resample", "cpu", "--json", sample]);
    assert_eq!(code, Some(0), "{stderr}");
    let cpu: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert!(!cpu[0]["findings"].as_array().unwrap().is_empty());
    assert_eq!(device[0]["findings"], cpu[0]["findings"]);
    let (code, _, stderr) = analyze(&["--resample", "gpu", sample]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("expected auto, cpu or device"), "{stderr}");
}

#[test]
fn a_missing_model_fails_at_start_naming_the_bundle() {
    let out = pulmo()
        .args(["analyze", "--model", "/nonexistent/bundle"])
        .arg(repo("sample-dicom"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("could not open model bundle /nonexistent/bundle"),
        "{stderr}"
    );
}

#[test]
fn a_series_whose_pixels_contradict_its_header_fails_cleanly() {
    // RLE frames with Rows changed: the headers read, the decoder cannot make sense of it.
    let dir = scratch("analyze-corrupt");
    let script = "import pathlib, sys, pydicom\n\
        for p in sorted(pathlib.Path(sys.argv[1]).glob('*.dcm'))[:8]:\n\
        \x20   ds = pydicom.dcmread(p)\n\
        \x20   ds.Rows = 300\n\
        \x20   ds.save_as(pathlib.Path(sys.argv[2]) / p.name)\n";
    crate::common::succeeds(
        crate::common::python()
            .args(["-c", script])
            .arg(repo("sample-dicom/phantom-4242"))
            .arg(&dir),
    );
    let (code, stdout, stderr) = analyze(&[dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a failure, not a crash: {stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("1 failed"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}

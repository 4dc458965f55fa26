//! `pulmo evaluate` with researchers' own truth and folders: a LUNA16 `annotations.csv` made
//! from a `pulmo.truth/1` file scores the same as that file, a `pulmo batch` output folder is
//! found through its `reports/`, a folder without reports is an error rather than a CPM of 0,
//! and a nodule type pulmo does not know is a warning rather than a failed file.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::batch::{evaluation, fixture};
use crate::common::{pulmo, repo, scratch, succeeds};

/// `truth` (`pulmo.truth/1`) as a LUNA16 annotations CSV: one row per nodule, no types.
fn as_annotations_csv(truth: &Path, csv: &Path) {
    let truth: Value = serde_json::from_slice(&std::fs::read(truth).unwrap()).unwrap();
    let mut writer = csv::Writer::from_path(csv).unwrap();
    writer
        .write_record(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        .unwrap();
    for case in truth["cases"].as_array().unwrap() {
        for nodule in case["nodules"].as_array().unwrap() {
            let c = &nodule["center_patient_mm"];
            let uid = case["series_instance_uid"].as_str().unwrap();
            let fields = [&c[0], &c[1], &c[2], &nodule["diameter_mm"]].map(Value::to_string);
            writer
                .write_record([uid].into_iter().chain(fields.iter().map(String::as_str)))
                .unwrap();
        }
    }
    writer.flush().unwrap();
}

/// `pulmo evaluate --truth TRUTH --reports REPORTS`, which must fail.
fn fails(truth: &Path, reports: &Path) -> String {
    let out: Output = pulmo()
        .args(["evaluate", "--truth"])
        .arg(truth)
        .arg("--reports")
        .arg(reports)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn evaluate_a_luna16_csv_truth_scores_as_the_json_it_was_made_from() {
    let f = fixture();
    let dir = scratch("evaluate-truth-csv");
    let csv = dir.join("annotations.csv");
    as_annotations_csv(&f.truth, &csv);

    let json = evaluation(&f.truth, &f.first.join("reports"), &[]);
    // The batch output folder itself: its reports/ is read.
    assert_eq!(evaluation(&f.truth, &f.first, &[]), json);
    let ours = evaluation(&csv, &f.first, &[]);
    assert_eq!(ours["scans"], 2, "{ours}");
    assert_eq!(ours["nodules"], 6, "{ours}");
    for (key, want) in json.as_object().unwrap() {
        // The CSV has no nodule types, so Lung-RADS is not compared.
        if !key.starts_with("lung_rads") {
            assert_eq!(&ours[key], want, "{key}");
        }
    }
    assert_eq!(ours["lung_rads_nodules"]["compared"], 0);
}

#[test]
fn evaluate_refuses_a_folder_without_reports() {
    let dir = scratch("evaluate-truth-empty");
    let truth = repo("sample-dicom/truth.json");
    let empty = dir.join("empty");
    std::fs::create_dir_all(empty.join("reports")).unwrap();
    let err = fails(&truth, &empty);
    assert!(
        err.contains(&format!("no reports in {}", empty.display())),
        "{err}"
    );
    // JSON of other schemas is not a report.
    std::fs::write(empty.join("reports/other.json"), r#"{"schema": "x/1"}"#).unwrap();
    assert!(fails(&truth, &empty).contains("no reports in"));
}

#[test]
fn evaluate_warns_of_an_unknown_nodule_type_and_names_a_bad_csv_line() {
    let dir = scratch("evaluate-truth-lenient");
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let report = serde_json::json!({"schema": "pulmo.report/1", "series_instance_uid": "1.1",
        "findings": [{"center_patient_mm": [0.5, 0, 0], "diameter_mm": 7.0, "score": 0.9}]});
    std::fs::write(reports.join("1.1.json"), report.to_string()).unwrap();
    let truth = dir.join("truth.json");
    let nodule = serde_json::json!({"center_patient_mm": [0, 0, 0], "diameter_mm": 7.0,
        "type": "ground_glass"});
    let cases = serde_json::json!({"cases": [{"series_instance_uid": "1.1", "nodules": [nodule]}]});
    std::fs::write(&truth, cases.to_string()).unwrap();

    let out = succeeds(
        pulmo()
            .args(["evaluate", "--json", "--truth"])
            .arg(&truth)
            .arg("--reports")
            .arg(&reports),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = format!("{}: cases[0].nodules[0].type", truth.display());
    assert!(stderr.contains(&warning), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["detected_any_score"], 1, "{result}");

    let csv = dir.join("annotations.csv");
    std::fs::write(
        &csv,
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n1.1,0,0,0,7\n1.1,0,x,0,7\n",
    )
    .unwrap();
    let err = fails(&csv, &reports);
    assert!(err.contains(&format!("{} line 3", csv.display())), "{err}");
}

#[test]
fn evaluate_help_tells_of_the_csv_and_the_reports_folder() {
    let out = succeeds(pulmo().args(["evaluate", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for phrase in [
        "annotations.csv",
        "seriesuid,coordX,coordY,coordZ,diameter_mm",
        "reports/",
    ] {
        assert!(help.contains(phrase), "{phrase}: {help}");
    }
}

//! `pulmo batch` and `pulmo evaluate` on a small archive: the committed phantom series, a
//! copy of it under new UIDs, a corrupt study, a non-CT study and a file that is not DICOM.
//!
//! The model is `models/threshold-test` (deterministic, fast), so these tests check the
//! plumbing — rows, resume, tables against reports, pseudonyms, agreement with
//! `pulmo evaluate` — not detection quality.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::{pulmo, python, repo, scratch, Scratch};
use serde_json::Value;

/// Copies the sample series with every UID suffixed, optionally as a broken or MR study.
const REWRITE: &str = r#"
import pathlib, sys, pydicom
src, dst, suffix, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
dst.mkdir(parents=True, exist_ok=True)
paths = sorted(src.glob("*.dcm"))
if mode != "copy":
    paths = paths[:12]
for p in paths:
    ds = pydicom.dcmread(p)
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        uid = getattr(ds, key)
        setattr(ds, key, uid[: 64 - len(suffix)] + suffix)  # UIDs stay within 64 characters
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if mode == "mr":
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    if mode == "corrupt":
        # Rows that do not match the pixel data: headers read, pixels cannot be decoded.
        ds.Rows = 300
    ds.save_as(dst / p.name)
"#;

/// The archive and the output of a first, complete run over it (`evaluate_truth` scores it
/// too).
pub(crate) struct Fixture {
    archive: PathBuf,
    /// The output folder of the first run.
    pub(crate) first: PathBuf,
    first_code: Option<i32>,
    first_stdout: String,
    /// The truth of the archive's two good series, `pulmo.truth/1`.
    pub(crate) truth: PathBuf,
    /// Holds the folder of all the above for the whole test binary.
    _dir: Scratch,
}

fn rewrite(dst: &Path, suffix: &str, mode: &str) {
    crate::common::succeeds(
        python()
            .arg("-c")
            .arg(REWRITE)
            .arg(repo("sample-dicom/phantom-4242"))
            .arg(dst)
            .args([suffix, mode]),
    );
}

pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch("batch");
        let archive = dir.join("archive");
        copy_dir(
            &repo("sample-dicom/phantom-4242"),
            &archive.join("a-sample"),
        );
        rewrite(&archive.join("b-copy/series"), ".1", "copy");
        rewrite(&archive.join("c-corrupt"), ".2", "corrupt");
        rewrite(&archive.join("d-mr"), ".3", "mr");
        std::fs::write(archive.join("notes.txt"), "not DICOM").unwrap();
        let truth = dir.join("truth.json");
        std::fs::write(&truth, two_case_truth().to_string()).unwrap();
        let first = dir.join("first");
        let (first_code, first_stdout, _) = batch(&archive, &first, &[]);
        Fixture {
            archive,
            first,
            first_code,
            first_stdout,
            truth,
            _dir: dir,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            copy_dir(&path, &to.join(path.file_name().unwrap()));
        } else {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// The sample's truth, once for the sample and once for its copy under new UIDs.
fn two_case_truth() -> Value {
    let text = std::fs::read_to_string(repo("sample-dicom/truth.json")).unwrap();
    let mut truth: Value = serde_json::from_str(&text).unwrap();
    let mut copy = truth["cases"][0].clone();
    for key in ["study_instance_uid", "series_instance_uid"] {
        copy[key] = Value::String(format!("{}.1", copy[key].as_str().unwrap()));
    }
    truth["cases"].as_array_mut().unwrap().push(copy);
    truth
}

fn batch(archive: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let output = pulmo()
        .arg("batch")
        .args(["--device", "cpu", "--jobs", "2", "--model"])
        .arg(repo("models/threshold-test"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(archive)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader.deserialize().map(|row| row.unwrap()).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Reports in a folder, keyed by series UID.
fn reports(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let report = read_json(&entry.unwrap().path());
        let uid = report["series_instance_uid"].as_str().unwrap().to_owned();
        out.insert(uid, report);
    }
    out
}

fn series_uid(suffix: &str) -> String {
    let truth = two_case_truth();
    format!(
        "{}{suffix}",
        truth["cases"][0]["series_instance_uid"].as_str().unwrap()
    )
}

fn status_by_series(rows: &[HashMap<String, String>]) -> HashMap<String, (String, String)> {
    rows.iter()
        .map(|r| {
            let key = r["series_instance_uid"].clone();
            (key, (r["status"].clone(), r["resumed"].clone()))
        })
        .collect()
}

#[test]
fn every_series_and_file_is_a_row_and_a_failure_fails_the_run() {
    let f = fixture();
    assert_eq!(f.first_code, Some(1), "{}", f.first_stdout);
    let rows = read_csv(&f.first.join("series.csv"));
    let status = status_by_series(&rows);
    assert_eq!(status[&series_uid("")].0, "analysed");
    assert_eq!(status[&series_uid(".1")].0, "analysed");
    let corrupt = rows
        .iter()
        .find(|r| r["series_instance_uid"] == series_uid(".2"));
    let corrupt = corrupt.expect("the corrupt study has a row");
    assert_eq!(corrupt["status"], "failed");
    assert!(!corrupt["reason"].is_empty());
    assert_eq!(status[&series_uid(".3")].0, "skipped");
    let not_dicom = rows.iter().find(|r| r["reason"].contains("notes.txt"));
    assert_eq!(
        not_dicom.expect("the text file has a row")["status"],
        "skipped"
    );
    assert!(f.first_stdout.contains("1 failed"), "{}", f.first_stdout);
}

#[test]
fn tables_read_back_equal_the_json_reports() {
    let f = fixture();
    let reports = reports(&f.first.join("reports"));
    assert_eq!(reports.len(), 2);
    let series = read_csv(&f.first.join("series.csv"));
    for (uid, report) in &reports {
        let row = series
            .iter()
            .find(|r| &r["series_instance_uid"] == uid)
            .unwrap();
        assert_eq!(
            row["study_instance_uid"],
            report["study_instance_uid"].as_str().unwrap()
        );
        let n = report["findings"].as_array().unwrap().len();
        assert_eq!(row["findings"], n.to_string());
        let operating = report["operating_score"].as_f64().unwrap();
        let calls = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["score"].as_f64().unwrap() >= operating)
            .count();
        assert_eq!(row["calls"], calls.to_string());
        assert_eq!(row["lung_rads"], report["lung_rads"].as_str().unwrap());
        assert_eq!(
            row["model_sha256"],
            report["model"]["sha256"].as_str().unwrap()
        );
        let score: f64 = row["study_score"].parse().unwrap();
        assert_eq!(score, report["study_score"].as_f64().unwrap());
    }
    let findings = read_csv(&f.first.join("findings.csv"));
    let total: usize = reports
        .values()
        .map(|r| r["findings"].as_array().unwrap().len())
        .sum();
    assert_eq!(findings.len(), total);
    assert!(total > 0, "the threshold model marks soft tissue");
    for row in &findings {
        let report = &reports[&row["series_instance_uid"]];
        let id: usize = row["finding_id"].parse().unwrap();
        let finding = &report["findings"][id - 1];
        assert_eq!(
            row["sop_instance_uid"],
            finding["sop_instance_uid"].as_str().unwrap()
        );
        assert_eq!(row["type"], finding["type"].as_str().unwrap());
        let operating = report["operating_score"].as_f64().unwrap();
        let call = finding["score"].as_f64().unwrap() >= operating;
        assert_eq!(row["call"], call.to_string());
        assert_eq!(row["lung_rads"], finding["lung_rads"].as_str().unwrap());
        assert_eq!(row["laterality"], finding["laterality"].as_str().unwrap());
        for (column, key) in [("x_mm", 0), ("y_mm", 1), ("z_mm", 2)] {
            let value: f64 = row[column].parse().unwrap();
            assert_eq!(value, finding["center_patient_mm"][key].as_f64().unwrap());
        }
        for key in ["diameter_mm", "volume_mm3", "mean_hu", "score"] {
            let value: f64 = row[key].parse().unwrap();
            assert_eq!(value, finding[key].as_f64().unwrap(), "{key}");
        }
        assert_eq!(row["slice"], finding["center_voxel"][2].to_string());
    }
}

#[test]
fn a_rerun_recomputes_only_the_missing_report() {
    let f = fixture();
    let out = scratch("batch-resume");
    copy_dir(&f.first, &out);
    let missing = series_uid(".1");
    std::fs::remove_file(out.join(format!("reports/{missing}.json"))).unwrap();
    // What a killed run leaves: a temporary that never reached its rename.
    std::fs::write(out.join(format!("reports/.{missing}.json.tmp")), "{").unwrap();
    let (_, stdout, stderr) = batch(&f.archive, &out, &[]);
    assert!(stdout.contains("1 resumed"), "{stdout}{stderr}");
    let status = status_by_series(&read_csv(&out.join("series.csv")));
    assert_eq!(status[&series_uid("")], ("analysed".into(), "true".into()));
    assert_eq!(status[&missing], ("analysed".into(), "false".into()));
    let leftovers: Vec<_> = std::fs::read_dir(out.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(reports(&out.join("reports")).len(), 2);
}

#[test]
fn deidentified_outputs_carry_consistent_pseudonyms_and_no_original_uids() {
    let f = fixture();
    let out = scratch("batch-deid");
    copy_dir(&f.first, &out);
    let args = [
        "--deidentify",
        "--salt",
        "s3cret",
        "--format",
        "jsonl",
        "--quiet",
    ];
    let (_, stdout, stderr) = batch(&f.archive, &out, &args);
    assert!(stdout.contains("2 resumed"), "{stdout}{stderr}");
    let shared = out.join("deidentified");
    let originals = [series_uid(""), series_uid(".1"), series_uid(".2")];
    let mut texts = vec![];
    for name in ["series.jsonl", "findings.jsonl"] {
        texts.push(std::fs::read_to_string(shared.join(name)).unwrap());
    }
    for report in reports(&shared.join("reports")).values() {
        texts.push(report.to_string());
    }
    for text in &texts {
        for uid in &originals {
            assert!(!text.contains(uid.as_str()), "{uid} leaked");
        }
        assert!(!text.contains("PHANTOM"), "patient name leaked");
    }
    let series: Vec<Value> = texts[0]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let findings: Vec<Value> = texts[1]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pseudonyms = reports(&shared.join("reports"));
    assert_eq!(pseudonyms.len(), 2);
    for row in &findings {
        let uid = row["series_instance_uid"].as_str().unwrap();
        assert!(
            uid.starts_with("2.25.") && pseudonyms.contains_key(uid),
            "{uid}"
        );
        assert!(series.iter().any(|s| s["series_instance_uid"] == uid));
    }
}

/// Runs `pulmo evaluate --json` with `extra` arguments.
pub(crate) fn evaluation(truth: &Path, reports: &Path, extra: &[&str]) -> Value {
    let out = crate::common::succeeds(
        pulmo()
            .args(["evaluate", "--json", "--truth"])
            .arg(truth)
            .arg("--reports")
            .arg(reports)
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_same_numbers(ours: &Value, theirs: &Value) {
    let theirs = theirs.as_object().unwrap();
    assert!(theirs.len() >= 9, "{theirs:?}");
    for (key, want) in theirs {
        let got = &ours[key];
        match (got, want) {
            (Value::Object(g), Value::Object(w)) => {
                assert_eq!(g.len(), w.len(), "{key}");
                for (rate, w) in w {
                    let (g, w) = (g[rate].as_f64().unwrap(), w.as_f64().unwrap());
                    assert!((g - w).abs() < 1e-12, "{key}[{rate}]: {g} vs {w}");
                }
            }
            (Value::Number(g), Value::Number(w)) => {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!((g - w).abs() < 1e-12, "{key}: {g} vs {w}");
            }
            _ => assert_eq!(got, want, "{key}"),
        }
    }
}

#[test]
fn evaluate_scores_batch_reports() {
    let f = fixture();
    let ours = evaluation(&f.truth, &f.first.join("reports"), &[]);
    assert_eq!(ours["scans"], 2);
    assert_eq!(ours["nodules"], 6);
    let cpm = ours["cpm"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cpm), "{cpm}");
    // The reports name the model's operating point, so its calls are counted.
    let point = &ours["operating_point"];
    assert_eq!(point["scans"], 2);
    assert_eq!(point["nodules"], 6);
}

/// The retired Python scorer's own self-test cases, as files, plus a scan without a report:
/// `pulmo evaluate` must give the numbers that scorer gave (tests/data/evaluate-hand-made.json,
/// its last output on these files), and count the calls at two operating points as it did.
#[test]
fn evaluate_gives_the_retired_python_scorers_numbers_on_hand_made_cases() {
    let dir = scratch("evaluate-hand-made");
    let nodule = |c: [f64; 3], d: f64, kind: &str| serde_json::json!({"center_patient_mm": c, "diameter_mm": d, "type": kind});
    let truth = serde_json::json!({"schema": "pulmo.truth/1", "cases": [
        {"series_instance_uid": "1.1", "nodules": [
            nodule([0.0, 0.0, 0.0], 10.0, "solid"), nodule([50.0, 0.0, 0.0], 4.0, "solid"),
            nodule([0.0, 80.0, 0.0], 2.0, "solid"), nodule([0.0, -60.0, 0.0], 22.0, "ground-glass")]},
        {"series_instance_uid": "1.2", "nodules": [nodule([10.0, 10.0, 10.0], 8.0, "part-solid")]},
        {"series_instance_uid": "1.3", "nodules": []},
        {"series_instance_uid": "1.4", "nodules": [nodule([5.0, 5.0, 5.0], 6.0, "solid")]},
    ]});
    std::fs::write(dir.join("truth.json"), truth.to_string()).unwrap();
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let finding = |c: [f64; 3], d: f64, score: f64| serde_json::json!({"center_patient_mm": c, "diameter_mm": d, "score": score, "lung_rads": "2"});
    let report = |uid: &str, findings: Vec<Value>| {
        let value = serde_json::json!({"schema": "pulmo.report/1", "series_instance_uid": uid,
            "lung_rads": "2", "findings": findings});
        std::fs::write(reports.join(format!("{uid}.json")), value.to_string()).unwrap();
    };
    report(
        "1.1",
        vec![
            finding([4.9, 0.0, 0.0], 9.0, 0.9),
            finding([0.0, 0.0, 1.0], 11.0, 0.5),
            finding([0.0, 80.5, 0.0], 2.0, 0.99),
            finding([52.5, 0.0, 0.0], 4.0, 0.3),
            finding([0.0, -55.0, 0.0], 20.0, 0.6),
        ],
    );
    report(
        "1.2",
        vec![
            finding([10.0, 10.0, 13.9], 8.5, 0.8),
            finding([100.0, 0.0, 0.0], 3.0, 0.7),
        ],
    );
    report(
        "1.3",
        vec![
            finding([1.0, 2.0, 3.0], 5.0, 0.95),
            finding([9.0, 2.0, 3.0], 5.0, 0.4),
        ],
    );
    report("9.9", vec![finding([0.0, 0.0, 0.0], 5.0, 0.99)]);
    let ours = evaluation(
        &dir.join("truth.json"),
        &reports,
        &["--operating", "0.85", "0.5"],
    );
    let theirs: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/data/evaluate-hand-made.json")).unwrap(),
    )
    .unwrap();
    assert_same_numbers(&ours, &theirs);
    assert_eq!(ours["false_positives_total"], 4);
    // The Python scorer's `--operating 0.85 0.5`: 1 and 3 of 5 nodules called, 0.25 and
    // 0.50 false calls per scan, the category as the true findings' in 2 and 3 of 4 scans
    // (1 higher, 1 lower; 1 higher, 0 lower).
    let points = ours["operating_points"].as_array().unwrap();
    let summary: Vec<(u64, f64, u64, u64, u64)> = points
        .iter()
        .map(|p| {
            (
                p["nodules_called"].as_u64().unwrap(),
                p["false_calls_per_scan"].as_f64().unwrap(),
                p["category_as_true_findings"].as_u64().unwrap(),
                p["category_higher"].as_u64().unwrap(),
                p["category_lower"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(1, 0.25, 2, 1, 1), (3, 0.5, 3, 1, 0)]);
    assert_eq!(points[0]["nodules"], 5);
    // No anatomy in this truth: every false call lies in an unknown place.
    assert_eq!(points[1]["false_calls_by_location"]["unknown"], 2);
    assert!(
        ours.get("operating_point").is_none(),
        "these reports name no operating point"
    );
}

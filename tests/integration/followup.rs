//! Follow-up: a phantom patient scanned twice (`scripts/model/phantom_followup.py`: the
//! patient repositioned and breathing differently, nodules grown, stable, new and
//! resolved), analysed with `pulmo analyze CURRENT --prior PRIOR` and with `pulmo batch`
//! over a folder of both; the comparison is checked against the generator's truth.
//!
//! The model is `models/threshold-test` (deterministic, fast): it calls soft tissue in the
//! lungs, so these tests check registration, matching and the report's plumbing, not
//! detection quality.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{pulmo, python, repo, scratch, succeeds, Scratch};

/// The generated pair: `dir/SEED/{prior,current}` and `dir/truth.json`.
pub(crate) struct Pair {
    dir: Scratch,
    seed: u32,
}

impl Pair {
    pub(crate) fn study(&self, visit: &str) -> PathBuf {
        self.dir.join(self.seed.to_string()).join(visit)
    }

    pub(crate) fn truth(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("truth.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

pub(crate) fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = scratch("followup");
        // Free-lying solid nodules: the threshold model cannot tell a nodule from a vessel
        // or the chest wall it touches, nor see ground glass.
        let seed = 4302;
        let args = ["--matrix", "256", "--slices", "120", "--nodules", "6"];
        succeeds(
            python()
                .arg(repo("scripts/model/phantom_followup.py"))
                .args(["--seed", &seed.to_string()])
                .args(args)
                .args(["--free-only", "--solid-only", "--out"])
                .arg(&*dir),
        );
        Pair { dir, seed }
    })
}

fn read_report(dir: &Path, series: &str) -> Value {
    let path = dir.join(format!("{series}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn distance(a: &Value, b: &Value) -> f64 {
    (0..3)
        .map(|i| (a[i].as_f64().unwrap() - b[i].as_f64().unwrap()).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The finding of `report` nearest to `centre`, if one lies within 5 mm.
fn nearest<'a>(report: &'a Value, centre: &Value) -> Option<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (distance(&f["center_patient_mm"], centre), f))
        .filter(|(d, _)| *d < 5.0)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, f)| f)
}

/// Checks `current` (compared with `prior`) against the truth: the registration holds, every
/// truth nodule found in both scans is paired with its own prior, with the true change class,
/// and the resolved nodule found in the prior is listed as resolved.
pub(crate) fn check_against_truth(current: &Value, prior: &Value, truth: &Value) {
    let comparison = &current["comparison"];
    assert_eq!(comparison["registration"]["status"], "ok", "{comparison}");
    let residual = comparison["registration"]["residual_mm"].as_f64().unwrap();
    assert!(residual < 4.0, "residual {residual} mm");
    assert_eq!(comparison["interval_days"], 365);
    assert_eq!(
        comparison["prior_series_instance_uid"],
        prior["series_instance_uid"]
    );
    let cases = truth["cases"].as_array().unwrap();
    let followup = &truth["followups"][0];
    let prior_case = &cases[0];
    let current_case = &cases[1];
    let mut checked = 0;
    for link in followup["nodules"].as_array().unwrap() {
        let id = link["id"].as_u64().unwrap() as usize;
        let nodule = &current_case["nodules"][id - 1];
        let Some(found) = nearest(current, &nodule["center_patient_mm"]) else {
            continue;
        };
        let want_prior = link["prior_id"]
            .as_u64()
            .map(|p| &prior_case["nodules"][p as usize - 1]);
        let found_prior = want_prior.and_then(|p| nearest(prior, &p["center_patient_mm"]));
        match found_prior {
            None if want_prior.is_some() => continue, // not found in the prior scan
            None => assert_eq!(found["change"], "new", "{found}"),
            Some(before) => {
                assert_eq!(
                    found["prior"]["finding_id"], before["id"],
                    "truth nodule {id} paired with the wrong prior finding: {found}"
                );
                assert_eq!(
                    found["change"], link["change"],
                    "truth nodule {id}: {found}"
                );
                assert_eq!(
                    found["tracking_uid"], before["tracking_uid"],
                    "a matched nodule keeps its Tracking UID"
                );
                if link["change"] == "growing" {
                    assert!(found["volume_doubling_days"].as_f64().unwrap() > 0.0);
                }
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} truth nodules were found in both scans"
    );
    for id in followup["resolved"].as_array().unwrap() {
        let nodule = &prior_case["nodules"][id.as_u64().unwrap() as usize - 1];
        if let Some(before) = nearest(prior, &nodule["center_patient_mm"]) {
            let listed = current["resolved"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["finding_id"] == before["id"]);
            let is_call = before["score"].as_f64() >= prior["operating_score"].as_f64();
            assert_eq!(listed, is_call, "resolved prior finding {before}");
        }
    }
}

#[test]
fn analyze_with_prior_pairs_the_nodules_of_a_repositioned_patient() {
    let pair = pair();
    let out = scratch("followup-analyze");
    let output = succeeds(
        pulmo()
            .arg("analyze")
            .args(["--device", "cpu", "--model"])
            .arg(repo("models/threshold-test"))
            .args(["--no-images", "--no-capture", "--out"])
            .arg(&*out)
            .arg(pair.study("current"))
            .arg("--prior")
            .arg(pair.study("prior")),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("compared with prior series"), "{stdout}");
    let truth = pair.truth();
    let current = read_report(
        &out,
        truth["cases"][1]["series_instance_uid"].as_str().unwrap(),
    );
    // Only the current study's results are written; the prior is analysed alongside.
    let prior_uid = truth["cases"][0]["series_instance_uid"].as_str().unwrap();
    assert!(!out.join(format!("{prior_uid}.json")).exists());
    let prior_out = scratch("followup-prior");
    succeeds(
        pulmo()
            .arg("analyze")
            .args(["--device", "cpu", "--model"])
            .arg(repo("models/threshold-test"))
            .args([
                "--no-sr",
                "--no-seg",
                "--no-images",
                "--no-capture",
                "--out",
            ])
            .arg(&*prior_out)
            .arg(pair.study("prior")),
    );
    let prior = read_report(&prior_out, prior_uid);
    check_against_truth(&current, &prior, &truth);
    assert!(out
        .join(format!(
            "{}.sr.dcm",
            current["series_instance_uid"].as_str().unwrap()
        ))
        .exists());
}

#[test]
fn batch_compares_each_patients_study_with_the_one_before() {
    let pair = pair();
    let out = scratch("followup-batch");
    succeeds(
        pulmo()
            .arg("batch")
            .args(["--device", "cpu", "--quiet", "--model"])
            .arg(repo("models/threshold-test"))
            .arg("--out")
            .arg(&*out)
            .arg(pair.dir.join(pair.seed.to_string())),
    );
    let truth = pair.truth();
    let reports = out.join("reports");
    let prior = read_report(
        &reports,
        truth["cases"][0]["series_instance_uid"].as_str().unwrap(),
    );
    let current = read_report(
        &reports,
        truth["cases"][1]["series_instance_uid"].as_str().unwrap(),
    );
    assert_eq!(
        prior["comparison"],
        Value::Null,
        "the earlier study has no prior"
    );
    check_against_truth(&current, &prior, &truth);
}

#[test]
fn a_prior_that_is_not_one_study_is_refused_with_its_path() {
    let out = scratch("followup-refused");
    let output = pulmo()
        .arg("analyze")
        .args(["--device", "cpu", "--model"])
        .arg(repo("models/threshold-test"))
        .arg("--out")
        .arg(&*out)
        .arg(repo("sample-dicom/phantom-4242"))
        .arg("--prior")
        .arg(&*out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--prior") && stderr.contains("no DICOM study"),
        "{stderr}"
    );
}

#[test]
fn serve_compares_a_patients_new_study_with_the_prior_it_analysed() {
    use crate::common::server::{dicom_parts, multipart, report, stow, Server};

    let pair = pair();
    let truth = pair.truth();
    let data = scratch("followup-serve");
    let server = Server::start(&data, 0.3, &[]);
    let send = |visit: &str| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(pair.study(visit))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let answer = stow(
            &server,
            "/dicomweb/studies",
            multipart(&dicom_parts(&files)),
        );
        assert!(answer.status().is_success(), "{visit}: {}", answer.status());
    };
    let study = |case: usize| truth["cases"][case]["study_instance_uid"].as_str().unwrap();

    // The prior arrives first, as a PACS forwards it; it has no prior of its own.
    send("prior");
    let prior = report(&server, study(0));
    assert_eq!(prior["comparison"], Value::Null, "{}", prior["comparison"]);
    // A year later the patient's next scan arrives: pulmo finds the prior in its own store.
    send("current");
    let current = report(&server, study(1));
    assert_eq!(
        current["comparison"]["prior_study_instance_uid"],
        study(0),
        "{}",
        current["comparison"]
    );
    check_against_truth(&current, &prior, &truth);
}

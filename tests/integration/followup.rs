//! Follow-up: a phantom patient scanned twice (`scripts/model/phantom_followup.py`: the
//! patient repositioned and breathing differently, nodules grown, stable, new and
//! resolved), analysed with `pulmo analyze CURRENT --prior PRIOR` and with `pulmo batch`
//! over a folder of both; the comparison is checked against the generator's truth.
//!
//! The model is `models/threshold-test` (deterministic, fast): it calls soft tissue in the
//! lungs, so these tests check registration, matching and the report's plumbing, not
//! detection quality.

use std::path::{Path, PathBuf};
use std::process::Command;
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

/// `pulmo analyze CURRENT --prior PRIOR` on the pair, run once: its output folder, its
/// standard output and the current study's report.
struct Analyzed {
    out: Scratch,
    stdout: String,
    current: Value,
}

fn analyzed() -> &'static Analyzed {
    static ANALYZED: OnceLock<Analyzed> = OnceLock::new();
    ANALYZED.get_or_init(|| {
        let pair = pair();
        let out = scratch("followup-analyze");
        let output = succeeds(
            pulmo()
                .arg("analyze")
                .args(["--device", "cpu", "--model"])
                .arg(repo("models/threshold-test"))
                .args(["--no-capture", "--out"])
                .arg(&*out)
                .arg(pair.study("current"))
                .arg("--prior")
                .arg(pair.study("prior")),
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let truth = pair.truth();
        let current = read_report(
            &out,
            truth["cases"][1]["series_instance_uid"].as_str().unwrap(),
        );
        Analyzed {
            out,
            stdout,
            current,
        }
    })
}

#[test]
fn analyze_with_prior_pairs_the_nodules_of_a_repositioned_patient() {
    let pair = pair();
    let Analyzed {
        out,
        stdout,
        current,
    } = analyzed();
    assert!(stdout.contains("compared with prior series"), "{stdout}");
    let truth = pair.truth();
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
    check_against_truth(current, &prior, &truth);

    // Each call's key image: a call matched to a prior finding shows it beside its current
    // self (twice as wide); a new one stands alone.
    let series = truth["cases"][1]["series_instance_uid"].as_str().unwrap();
    let operating = current["operating_score"].as_f64().unwrap_or(0.0);
    let calls: Vec<&Value> = current["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["score"].as_f64().unwrap() >= operating)
        .collect();
    assert!(calls.iter().any(|f| f["prior"].is_object()), "{current}");
    for f in calls {
        let path = out.join(format!("{series}.finding-{}.png", f["id"]));
        let (width, _) = image::image_dimensions(&path).unwrap();
        let expected = if f["prior"].is_object() { 768 } else { 384 };
        assert_eq!(width, expected, "{} ({})", path.display(), f["change"]);
    }
}

/// Runs a Debian tool (dcmtk, dicom3tools), failing with a clear message when it is missing.
fn tool(name: &str, args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(name).args(args).output().unwrap_or_else(|err| {
        panic!("could not run {name} ({err}): install dcmtk and dicom3tools (scripts/setup/setup.sh --test)")
    });
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The follow-up SR, read by dcmtk's `dsrdump` and checked by dicom3tools' `dciodvfy`:
/// the prior study, each call's change class and growth, and the resolved priors are there
/// in their codes, and the object has no errors.
#[test]
fn the_sr_carries_the_comparison_with_the_prior() {
    let Analyzed { out, current, .. } = analyzed();
    let sr = out.join(format!(
        "{}.sr.dcm",
        current["series_instance_uid"].as_str().unwrap()
    ));
    let dciodvfy = tool("dciodvfy", &[sr.as_os_str()]);
    let errors: Vec<&str> = dciodvfy
        .lines()
        .filter(|l| l.starts_with("Error"))
        .collect();
    assert!(errors.is_empty(), "dciodvfy errors in the SR:\n{dciodvfy}");
    // +Pl: whole values; +Pc: every code as (value,scheme,"meaning").
    let dump = tool("dsrdump", &["+Pl".as_ref(), "+Pc".as_ref(), sr.as_os_str()]);
    assert!(!dump.contains("Error"), "{dump}");
    let has = |what: &str| assert!(dump.contains(what), "missing {what} in\n{dump}");
    let comparison = &current["comparison"];
    has("(C0034375,UMLS,\"Qualitative Evaluations\")");
    has("(122140,DCM,\"Comparison with Prior Study Done\")=(373066001,SCT,\"Yes\")");
    has(&format!(
        "(110180,DCM,\"Study Instance UID\")=\"{}\"",
        comparison["prior_study_instance_uid"].as_str().unwrap()
    ));
    has(&format!(
        "(112002,DCM,\"Series Instance UID\")=\"{}\"",
        comparison["prior_series_instance_uid"].as_str().unwrap()
    ));
    let calls: Vec<&Value> = current["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["score"].as_f64() >= current["operating_score"].as_f64())
        .collect();
    let code = |change: &Value| match change.as_str().unwrap() {
        "new" => "(129721008,SCT,\"New finding\")",
        "growing" => "(15454001,SCT,\"Increase in size\")",
        "stable" => "(129723006,SCT,\"No significant changes in the finding\")",
        "shrinking" => "(19776001,SCT,\"Decrease in size\")",
        other => panic!("change {other}"),
    };
    let changes = "(change,99PULMO,\"Change since prior study\")=";
    let resolved = current["resolved"].as_array().unwrap();
    assert_eq!(
        dump.matches(changes).count(),
        calls.len() + resolved.len(),
        "{dump}"
    );
    let gone = format!("{changes}(resolved,99PULMO,\"Resolved\")");
    assert_eq!(dump.matches(&gone).count(), resolved.len(), "{dump}");
    for f in &calls {
        has(&format!("{changes}{}", code(&f["change"])));
        if let Some(prior) = f["prior"].as_object() {
            has(&format!(
                "(121069,DCM,\"Previous Finding\")=\"nodule-{}\"",
                prior["finding_id"]
            ));
        }
    }
    let growing = calls.iter().filter(|f| f["change"] == "growing").count();
    assert!(
        growing >= 1,
        "the pair has a growing nodule the model calls"
    );
    let doubling = "(vdt,99PULMO,\"Volume doubling time\")";
    assert_eq!(
        dump.matches(doubling).count(),
        calls
            .iter()
            .filter(|f| f["volume_doubling_days"].is_number())
            .count(),
        "{dump}"
    );
    has("(442714003,SCT,\"Difference in size\")");
    for r in resolved {
        has(&format!(
            "(121069,DCM,\"Previous Finding\")=\"nodule-{}\"",
            r["finding_id"]
        ));
    }
}

/// highdicom reads the follow-up SR as a TID 1500 report: each group's change class is a
/// qualitative evaluation, its growth measurements equal the JSON report's, and it keeps
/// the Tracking UID (`scripts/testdata/check_dicom_results.py`, as for the sample).
#[test]
fn highdicom_reads_the_comparison_of_each_call() {
    let Analyzed { out, current, .. } = analyzed();
    let uid = current["series_instance_uid"].as_str().unwrap();
    let output = python()
        .arg(repo("scripts/testdata/check_dicom_results.py"))
        .arg(out.join(format!("{uid}.json")))
        .arg(out.join(format!("{uid}.sr.dcm")))
        .arg(out.join(format!("{uid}.seg.dcm")))
        .arg(pair().study("current"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
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

    // The key images (Secondary Capture, one per call, instance number = finding id) of the
    // matched calls show the prior beside the current crop: twice as wide. The prior's view
    // came from its snapshot in the store.
    let (_, series) = server.get_json(&format!("/dicomweb/studies/{}/series", study(1)));
    let key_images = series
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["00080060"]["Value"][0] == "OT")
        .unwrap_or_else(|| panic!("no key image series: {series}"));
    let uid = key_images["0020000E"]["Value"][0].as_str().unwrap();
    let (_, metadata) = server.get_json(&format!(
        "/dicomweb/studies/{}/series/{uid}/metadata",
        study(1)
    ));
    let operating = current["operating_score"].as_f64().unwrap_or(0.0);
    let mut matched_calls = 0;
    for f in current["findings"].as_array().unwrap() {
        if f["score"].as_f64().unwrap() < operating {
            continue;
        }
        let image = metadata
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["00200013"]["Value"][0] == f["id"])
            .unwrap_or_else(|| panic!("no key image of finding {}", f["id"]));
        let columns = &image["00280011"]["Value"][0];
        let wide = f["prior"].is_object();
        matched_calls += usize::from(wide);
        assert_eq!(columns, if wide { 768 } else { 384 }, "finding {}", f["id"]);
    }
    assert!(matched_calls > 0, "{current}");

    // The review page shows each matched nodule on the prior's slice beside the current one
    // (headless Chromium; the prior's finding, its slice and an outline), and the change of
    // every finding in the table.
    let shots = repo("target/test-artifacts/followup");
    let output = python()
        .arg(repo("scripts/testdata/review_prior.py"))
        .args([&server.base, study(1)])
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    let findings = current["findings"].as_array().unwrap();
    // A finding of `report` by its id, given as a number (reports) or as text (the page).
    let by_id = |report: &Value, id: &Value| -> Value {
        let id: u64 = id
            .as_u64()
            .or_else(|| id.as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("not a finding id: {id}"));
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no finding {id}"))
    };
    let ids = seen["ids"].as_array().unwrap();
    assert_eq!(ids.len(), findings.len(), "{seen}");
    for (id, change) in ids.iter().zip(seen["changes"].as_array().unwrap()) {
        let finding = by_id(&current, id);
        let expected = finding["change"].as_str().unwrap_or("—");
        assert!(
            change.as_str().unwrap().starts_with(expected),
            "finding {id}: {change} for {expected}"
        );
    }
    let matched = seen["matched"].as_array().unwrap();
    let with_prior = findings.iter().filter(|f| f["prior"].is_object()).count();
    assert!(with_prior > 0, "the pair has nodules in both scans");
    assert_eq!(matched.len(), with_prior, "{seen}");
    for shown in matched {
        let finding = by_id(&current, &shown["id"]);
        let was = by_id(&prior, &finding["prior"]["finding_id"]);
        assert_eq!(shown["prior_sop"], was["sop_instance_uid"], "{shown}");
        let caption = shown["caption"].as_str().unwrap();
        let size = format!("{:.1} mm", was["diameter_mm"].as_f64().unwrap());
        assert!(caption.contains(&size), "{caption}: {size}");
        let drawn = &shown["drawn"];
        assert!(drawn[0].as_u64() > Some(100), "{drawn}");
        assert!(
            drawn[2].as_u64() > Some(1000),
            "the prior slice is drawn: {drawn}"
        );
    }
    if let Some(resolved) = current["resolved"].as_array().filter(|r| !r.is_empty()) {
        let line = seen["resolved"].as_str().unwrap();
        for gone in resolved {
            assert!(
                line.contains(&format!("finding {}", gone["finding_id"])),
                "{line}"
            );
        }
    }
    assert!(shots.join("review-prior.png").is_file());
}

//! `scripts/eval/evaluate`, the held-out evaluation the model card's figures come from: it runs the
//! real `pulmo analyze` over a phantom set and scores the reports with `pulmo evaluate`.
//! Here on a one-series set made of the committed sample (so nothing is generated), with the
//! shipped model: what the script promises about its reports folder, and that a run that
//! analyses nothing fails instead of printing the FROC of an empty set. Detection quality
//! itself is the model card's business, not this test's.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{repo, scratch, succeeds};

/// The sample as a set `scripts/eval/evaluate --seed 4242 --cases 1 --jobs 1` finds ready.
fn sample_set(root: &Path) -> std::path::PathBuf {
    let set = root.join("set");
    let part = set.join("part0-4242-1");
    let series = part.join("4242");
    std::fs::create_dir_all(&series).unwrap();
    for entry in std::fs::read_dir(repo("sample-dicom/phantom-4242")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), series.join(entry.file_name())).unwrap();
    }
    std::fs::copy(repo("sample-dicom/truth.json"), part.join("truth.json")).unwrap();
    set
}

/// `scripts/eval/evaluate` on `set` with the pulmo under test and its own temp folder.
fn evaluate(set: &Path, tmp: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo("scripts/eval/evaluate"))
        .arg("--set")
        .arg(set)
        .args(["--seed", "4242", "--cases", "1", "--jobs", "1"])
        .args(extra)
        .env("PULMO_BIN", env!("CARGO_BIN_EXE_pulmo"))
        .env("TMPDIR", tmp)
        .env("PULMO_LOG", "warn");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cpm_line(output: &Output) -> String {
    let stdout = text(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("CPM "));
    line.unwrap_or_else(|| panic!("no CPM line in {stdout}"))
        .to_string()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn evaluate_scores_pulmos_reports_and_keeps_them_only_when_asked() {
    let root = scratch("evaluate-script");
    let set = sample_set(&root);
    let tmp = root.join("tmp");
    let kept = root.join("reports");
    let summary = root.join("summary.json");
    std::fs::create_dir_all(&tmp).unwrap();

    let first = succeeds(evaluate(&set, &tmp, &[]).args([
        "--reports",
        kept.to_str().unwrap(),
        "--json",
        summary.to_str().unwrap(),
    ]));
    assert!(
        !text(&first.stderr).contains("generating"),
        "the set was already there: {}",
        text(&first.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["scans"], 1, "{json}");
    assert_eq!(json["nodules"], 3, "the sample's three nodules: {json}");
    let cpm = json["cpm"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cpm), "{json}");

    // --reports: pulmo's own report of the sample's series stays there.
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo("sample-dicom/truth.json")).unwrap()).unwrap();
    let uid = truth["cases"][0]["series_instance_uid"].as_str().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kept.join(format!("{uid}.json"))).unwrap()).unwrap();
    assert_eq!(report["schema"], "pulmo.report/1");
    assert!(leftovers(&tmp).is_empty(), "{:?}", leftovers(&tmp));

    // Without --reports the temporary folder is gone afterwards, and the scores are the same.
    let second = succeeds(&mut evaluate(&set, &tmp, &[]));
    assert!(
        text(&second.stderr).contains(tmp.to_str().unwrap()),
        "reports under TMPDIR: {}",
        text(&second.stderr)
    );
    assert!(leftovers(&tmp).is_empty(), "{:?}", leftovers(&tmp));
    assert_eq!(cpm_line(&second), cpm_line(&first));
}

#[test]
fn evaluate_fails_when_pulmo_analyses_nothing() {
    let root = scratch("evaluate-script-bad");
    let set = sample_set(&root);
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    // Not a bundle at all: refused before anything runs.
    let missing = root.join("no-such-model");
    let out = evaluate(&set, &tmp, &["--model", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("manifest.toml"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("CPM"), "{}", text(&out.stdout));

    // A bundle whose network does not match its manifest: pulmo refuses every series, and the
    // evaluation says so instead of scoring a set with no findings.
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(
        repo("models/pulmo-nodule-v1/manifest.toml"),
        broken.join("manifest.toml"),
    )
    .unwrap();
    std::fs::write(broken.join("model.pt"), b"not a TorchScript file").unwrap();
    let out = evaluate(&set, &tmp, &["--model", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("analysed none of the 1 series"), "{err}");
    assert!(!text(&out.stdout).contains("CPM"), "{}", text(&out.stdout));
    assert!(leftovers(&tmp).is_empty(), "{:?}", leftovers(&tmp));

    // An unknown option is named.
    let out = evaluate(&set, &tmp, &["--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--bogus"),
        "{}",
        text(&out.stderr)
    );
}

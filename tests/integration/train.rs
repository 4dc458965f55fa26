//! `scripts/model/train`, the recipe that made the shipped bundle (docs/model-card.md), runs end to
//! end at a tiny time scale: seven stages of scripts/model/train.py, each continuing from the last
//! one's checkpoint, the candidate classifier between stages 5 and 6, an export after every
//! stage, resumption of a stopped run, and a final bundle that pulmo loads and runs.

use std::path::Path;
use std::process::Command;

use crate::common::{pulmo, python, repo, scratch, succeeds};

fn train(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo("scripts/model/train"))
        .args(["--out", out.to_str().unwrap()])
        .args(["--time-scale", "0.001", "--val-cases", "1", "--no-bf16"])
        .args(extra);
    cmd
}

fn manifest(out: &Path, stage: u32) -> toml::Table {
    let path = out.join(format!("stage{stage}/pulmo-nodule-v1/manifest.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap()
}

fn training_log(out: &Path, stage: u32) -> serde_json::Value {
    let path = out.join(format!("stage{stage}/pulmo-nodule-v1/training-log.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn the_training_recipe_runs_every_stage_resumes_and_its_bundle_runs_in_pulmo() {
    let out = scratch("train");
    // Stages 1-5 from nothing.
    succeeds(&mut train(&out, &["--stop-after", "5"]));
    for (stage, version) in [
        (1, "1.0.0"),
        (2, "1.1.0"),
        (3, "1.2.0"),
        (4, "1.3.0"),
        (5, "1.5.0"),
    ] {
        assert_eq!(manifest(&out, stage)["version"].as_str(), Some(version));
        let log = training_log(&out, stage);
        assert!(log["steps"].as_u64().unwrap() >= 1, "stage {stage} trained");
        let init = log["hyper_parameters"]["init"].as_str().unwrap();
        if stage == 1 {
            assert_eq!(init, "None", "stage 1 starts from nothing");
        } else {
            let previous = format!("stage{}/pulmo-nodule-v1/checkpoint.pth", stage - 1);
            assert!(
                init.ends_with(&previous),
                "stage {stage} continues from {init}"
            );
        }
    }
    assert_eq!(
        training_log(&out, 2)["hyper_parameters"]["lr"].as_f64(),
        Some(2e-3),
        "stage 2 has the recorded learning rate"
    );
    assert_eq!(
        manifest(&out, 5)["input"]["extra_spacings_mm"],
        toml::Value::Array(vec![toml::Value::Array(vec![toml::Value::Float(1.0); 3])]),
        "stage 5 runs as 1.5.0, with a second pass at 1.0 mm, for the classifier's candidates"
    );
    assert!(!out.join("stage6").exists(), "--stop-after 5 stops there");

    // Seconds of training find no candidates, and a classifier needs false ones to learn
    // from: stage 5 gets the shipped weights, then the stopped run resumes.
    std::fs::copy(
        repo("models/pulmo-nodule-v1/checkpoint.pth"),
        out.join("stage5/pulmo-nodule-v1/checkpoint.pth"),
    )
    .unwrap();
    let resumed = succeeds(&mut train(&out, &["--fpr-cases", "1"]));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    for stage in 1..=5 {
        assert!(
            stderr.contains(&format!("stage {stage} already trained")),
            "stage {stage} is not trained again:\n{stderr}"
        );
    }
    let last = out.join("stage7/pulmo-nodule-v1");
    let m = manifest(&out, 7);
    assert_eq!(m["version"].as_str(), Some("1.9.0"));
    assert_eq!(m["classifier"]["weight"].as_float(), Some(0.25));
    assert_eq!(m["thresholds"]["operating_score"].as_float(), Some(0.93));
    assert!(
        last.join("classifier.pt").is_file(),
        "the classifier travels to stage 7"
    );
    let log = training_log(&out, 7);
    assert_eq!(
        log["hyper_parameters"]["spacing_range"],
        serde_json::json!([0.68, 1.15])
    );

    let reports = scratch("train-reports");
    let analysed = succeeds(pulmo().args([
        "analyze",
        repo("sample-dicom").to_str().unwrap(),
        "--model",
        last.to_str().unwrap(),
        "--no-capture",
        "--out",
        reports.to_str().unwrap(),
    ]));
    let summary = String::from_utf8_lossy(&analysed.stdout);
    assert!(summary.contains("1 series analysed, 0 failed"), "{summary}");
}

#[test]
fn a_stage_out_of_range_is_refused_by_name() {
    let out = scratch("train-bad");
    let output = train(&out, &["--stop-after", "9"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--stop-after"), "{stderr}");
    assert!(!out.join("stage1").exists(), "nothing was trained");
}

#[test]
fn p_border_centres_the_negative_patches_at_the_lungs_surface_of_varied_chests() {
    // Stage 18's option: with --p-pos 0 --p-border 1 every patch is a negative centred within
    // 12 mm of the lung's surface; training-log.json counts where each patch was centred.
    let out = scratch("train-border");
    succeeds(
        python()
            .arg(repo("scripts/model/train.py"))
            .args([
                "--minutes",
                "0.01",
                "--val-cases",
                "1",
                "--batch",
                "2",
                "--threads",
                "1",
                "--device",
                "cpu",
                "--p-pos",
                "0",
                "--p-border",
                "1",
                "--varied-anatomy",
                "1",
                "--families",
                "train",
                "--out",
            ])
            .arg(&*out),
    );
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training-log.json")).unwrap()).unwrap();
    let data = &log["data"];
    let seen = data["patches_seen"].as_u64().unwrap();
    assert!(seen >= 2, "{data}");
    assert_eq!(
        data["patch_centres"]["border"].as_u64(),
        Some(seen),
        "{data}"
    );
    assert_eq!(data["patch_centres"]["lung"].as_u64(), Some(0), "{data}");
    assert!(
        data["varied_anatomy_cases"].as_u64().unwrap() >= 2,
        "every chest drawn varied: {data}"
    );
    assert_eq!(log["hyper_parameters"]["p_border"].as_f64(), Some(1.0));
}

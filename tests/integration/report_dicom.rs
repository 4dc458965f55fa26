//! DICOM SR, SEG, key images and their Secondary Captures from `pulmo analyze --out`, checked by tools nobody here
//! wrote: dicom3tools' `dciodvfy` (no errors allowed), dcmtk's `dsrdump` and `dcmdump`,
//! and highdicom/pydicom (`scripts/testdata/check_dicom_results.py`), which reads the SR's
//! measurement groups and the SEG's frames back against the JSON report and the source.
//!
//! The tools come from Debian packages (`scripts/setup/apt-packages.txt`, installed by
//! `scripts/setup/setup.sh --test`); a missing tool fails the test with that message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::{pulmo, python, repo, scratch, Scratch};
use serde_json::Value;

/// What one `pulmo analyze --out` run on the sample series wrote (run once per binary).
struct Run {
    dir: Scratch,
    uid: String,
    report: Value,
}

impl Run {
    fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.uid))
    }

    /// The findings at or above the report's operating point: what the DICOM results carry.
    fn calls(&self) -> Vec<&Value> {
        let operating = self.report["operating_score"].as_f64().unwrap();
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["score"].as_f64().unwrap() >= operating)
            .collect()
    }
}

fn sample_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("report-dicom");
        crate::common::succeeds(
            pulmo()
                .arg("analyze")
                .args(["--device", "cpu", "--model"])
                .arg(repo("models/threshold-test"))
                .arg("--out")
                .arg(&dir)
                .arg(repo("sample-dicom")),
        );
        let json = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .expect("a JSON report was written");
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let uid = report["series_instance_uid"].as_str().unwrap().to_owned();
        assert!(
            report["findings"].as_array().unwrap().len() >= 2,
            "the test model should find several nodules on the sample"
        );
        Run { dir, uid, report }
    })
}

/// Runs a Debian tool, failing with a clear message when it is not installed.
fn tool(name: &str, args: &[&Path]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|err| {
        panic!("could not run {name} ({err}): install dcmtk and dicom3tools (scripts/setup/setup.sh --test)")
    })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// dciodvfy's findings, with errors separated from warnings.
fn dciodvfy(path: &Path) -> (Vec<String>, String) {
    let all = text(&tool("dciodvfy", &[path]));
    let errors = all
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_owned)
        .collect();
    (errors, all)
}

#[test]
fn dciodvfy_finds_no_errors_in_the_sr() {
    let run = sample_run();
    let (errors, all) = dciodvfy(&run.path("sr.dcm"));
    assert!(errors.is_empty(), "dciodvfy errors in the SR:\n{all}");
}

#[test]
fn dciodvfy_finds_no_errors_in_the_seg() {
    let run = sample_run();
    let (errors, all) = dciodvfy(&run.path("seg.dcm"));
    assert!(errors.is_empty(), "dciodvfy errors in the SEG:\n{all}");
}

#[test]
fn dciodvfy_finds_no_errors_in_the_secondary_captures() {
    let run = sample_run();
    for f in run.calls() {
        let (errors, all) = dciodvfy(&run.path(&format!("finding-{}.sc.dcm", f["id"])));
        assert!(
            errors.is_empty(),
            "dciodvfy errors in a Secondary Capture:\n{all}"
        );
    }
}

#[test]
fn dsrdump_reads_the_sr_as_a_tid_1500_report_with_every_call() {
    let run = sample_run();
    // +Pl: whole values (the Tracking Identifiers are longer than dsrdump's default cut).
    let output = tool("dsrdump", &[Path::new("+Pl"), &run.path("sr.dcm")]);
    let dump = text(&output);
    assert!(output.status.success(), "{dump}");
    assert!(!dump.contains("Error"), "{dump}");
    assert!(dump.contains("Imaging Measurement Report"), "{dump}");
    assert!(dump.contains("Comprehensive 3D SR"), "{dump}");
    let findings = run.calls();
    assert_eq!(
        dump.matches("Measurement Group").count(),
        findings.len(),
        "{dump}"
    );
    for f in findings {
        let id = format!("\"Cornerstone3DTools@^0.1.0:CircleROI:nodule-{}\"", f["id"]);
        assert!(dump.contains(&id), "{dump}");
    }
}

#[test]
fn dcmdump_reads_the_seg() {
    let run = sample_run();
    let output = tool("dcmdump", &[&run.path("seg.dcm")]);
    let dump = text(&output);
    assert!(output.status.success(), "{dump}");
    assert!(!dump.contains("E: "), "{dump}");
    assert!(dump.contains("SegmentationStorage"), "{dump}");
}

#[test]
fn highdicom_reads_the_same_numbers_and_the_seg_frames_sit_on_their_source_slices() {
    let run = sample_run();
    let output = python()
        .arg(repo("scripts/testdata/check_dicom_results.py"))
        .arg(run.path("json"))
        .arg(run.path("sr.dcm"))
        .arg(run.path("seg.dcm"))
        .arg(repo("sample-dicom"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn a_key_image_is_written_per_call() {
    let run = sample_run();
    for f in run.calls() {
        let path = run.path(&format!("finding-{}.png", f["id"]));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    }
}

#[test]
fn no_flags_keep_dicom_results_and_images_out() {
    let dir = scratch("report-dicom-none");
    crate::common::succeeds(
        pulmo()
            .arg("analyze")
            .args([
                "--device",
                "cpu",
                "--no-sr",
                "--no-seg",
                "--no-images",
                "--no-capture",
                "--model",
            ])
            .arg(repo("models/threshold-test"))
            .arg("--out")
            .arg(&dir)
            .arg(repo("sample-dicom")),
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".json"), "{names:?}");
}

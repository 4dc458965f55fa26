//! The phantom generator (`scripts/phantom.py`, run with the project's Python) is
//! deterministic: the command `sample-dicom/README.md` gives rewrites the committed sample
//! byte for byte, truth included. Every held-out figure in docs/model-card.md rests on that.

mod common;

use std::path::{Path, PathBuf};

use common::{python, repo, scratch, succeeds};

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

#[test]
fn the_generator_rewrites_the_committed_sample_byte_for_byte() {
    let out = scratch("phantom-sample");
    // The command of sample-dicom/README.md, into a scratch folder.
    succeeds(python().current_dir(repo("")).args([
        "scripts/phantom.py",
        "--seed",
        "4242",
        "--out",
        out.to_str().unwrap(),
        "--matrix",
        "256",
        "--pixel-spacing",
        "1.2",
        "--slice-spacing",
        "2.5",
        "--nodules",
        "3",
        "--syntax",
        "rle",
    ]));
    let committed = repo("sample-dicom/phantom-4242");
    let written = out.join("4242");
    let names = files(&committed);
    assert_eq!(names.len(), 108, "the committed sample has 108 slices");
    assert_eq!(files(&written), names, "the same file names");
    for name in &names {
        let (a, b) = (
            std::fs::read(committed.join(name)).unwrap(),
            std::fs::read(written.join(name)).unwrap(),
        );
        assert!(a == b, "{} differs from the committed file", name.display());
    }
    let truth = std::fs::read(out.join("truth.json")).unwrap();
    assert!(
        truth == std::fs::read(repo("sample-dicom/truth.json")).unwrap(),
        "truth.json differs from the committed one"
    );
}

#[test]
fn a_diameter_range_changes_the_nodule_sizes_not_the_scan() {
    let (small, plain) = (scratch("phantom-small"), scratch("phantom-plain"));
    let truth = |dir: &Path, extra: &[&str]| -> serde_json::Value {
        let mut cmd = python();
        cmd.current_dir(repo("")).args([
            "scripts/phantom.py",
            "--seed",
            "4242",
            "--cases",
            "2",
            "--nodules",
            "5",
            "--truth-only",
            "--out",
            dir.to_str().unwrap(),
        ]);
        succeeds(cmd.args(extra));
        serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap()
    };
    let (a, b) = (
        truth(&small, &["--diameter-range", "3", "4"]),
        truth(&plain, &[]),
    );
    let (a, b) = (
        a["cases"].as_array().unwrap(),
        b["cases"].as_array().unwrap(),
    );
    for (ca, cb) in a.iter().zip(b) {
        for key in ["series_instance_uid", "geometry"] {
            assert_eq!(
                ca[key], cb[key],
                "{key} must not depend on the nodules' sizes"
            );
        }
        let nodules = ca["nodules"].as_array().unwrap();
        assert!(!nodules.is_empty());
        for n in nodules {
            let d = n["diameter_mm"].as_f64().unwrap();
            // Nominal 3-4 mm; lobes and ellipsoids move the measured equivalent diameter.
            assert!((2.5..=4.6).contains(&d), "diameter {d} mm outside 3-4 mm");
        }
    }
    let largest = b
        .iter()
        .flat_map(|c| c["nodules"].as_array().unwrap())
        .map(|n| n["diameter_mm"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        largest > 6.0,
        "the default range reaches larger nodules: {largest}"
    );

    let bad = python()
        .current_dir(repo(""))
        .args(["scripts/phantom.py", "--seed", "1", "--truth-only"])
        .args([
            "--out",
            small.to_str().unwrap(),
            "--diameter-range",
            "5",
            "3",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--diameter-range"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

//! The phantom generator (`scripts/model/phantom.py`, run with the project's Python) is
//! deterministic: the command `sample-dicom/README.md` gives rewrites the committed sample
//! byte for byte, truth included. Every held-out figure in docs/model-card.md rests on that.

use std::path::{Path, PathBuf};

use crate::common::{python, repo, scratch, succeeds};

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

/// The command of sample-dicom/README.md, into `out`, with `extra` options.
fn write_sample(out: &Path, extra: &[&str]) {
    succeeds(
        python()
            .current_dir(repo(""))
            .args(["scripts/model/phantom.py", "--seed", "4242", "--out"])
            .arg(out)
            .args([
                "--matrix",
                "256",
                "--pixel-spacing",
                "1.2",
                "--slice-spacing",
                "2.5",
            ])
            .args(["--nodules", "3", "--syntax", "rle"])
            .args(extra),
    );
}

/// `phantom.py` with a bad `option` value must fail and name the option.
fn refuses(option: &str, values: &[&str], out: &Path) {
    let bad = python()
        .current_dir(repo(""))
        .args([
            "scripts/model/phantom.py",
            "--seed",
            "1",
            "--truth-only",
            "--out",
        ])
        .arg(out)
        .arg(option)
        .args(values)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "{option} {values:?} was accepted");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(option),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn the_generator_rewrites_the_committed_sample_byte_for_byte() {
    let out = scratch("phantom-sample");
    write_sample(&out, &[]);
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
            "scripts/model/phantom.py",
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

    refuses("--diameter-range", &["5", "3"], &small);
}

/// Per nodule of the sample's truth (the first argument) and per series folder given after
/// it: its type, the median HU of the 3x3 pixels at its centre, the lowest HU within half its
/// radius of its centre, and how far (mm) the centroid of its dense voxels (over -300 HU,
/// within its radius + 1 mm) lies from its centre (-1 if it has none).
const NODULE_MEASURES: &str = r#"
import json, pathlib, sys
import numpy as np
sys.path.insert(0, "scripts/model")
from fpr_series import to_grid
from predict_reference import load_series
nodules = json.load(open(sys.argv[1]))["cases"][0]["nodules"]
out = []
for folder in sys.argv[2:]:
    vol, geo = load_series(pathlib.Path(folder))
    sp = np.asarray(geo["spacing"], float)
    row = []
    for n in nodules:
        c = np.asarray(to_grid(n["center_patient_mm"], geo, geo["spacing"]))
        k, j, i = np.round(c).astype(int)
        centre = float(np.median(vol[k, j - 1:j + 2, i - 1:i + 2]))
        r = n["diameter_mm"] / 2
        lo = np.maximum(np.floor(c - (r + 2) / sp).astype(int), 0)
        hi = np.ceil(c + (r + 2) / sp).astype(int) + 1
        sub = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        mm = (np.indices(sub.shape).reshape(3, -1).T + lo - c) * sp
        d, v = np.linalg.norm(mm, axis=1), sub.reshape(-1)
        dense = (d <= r + 1) & (v > -300)
        off = float(np.linalg.norm(mm[dense].mean(0))) if dense.any() else -1.0
        row.append([n["type"], centre, float(v[d <= r / 2].min()), off])
    out.append(row)
print(json.dumps(out))
"#;

/// One nodule's row of NODULE_MEASURES.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Nodule {
    kind: String,
    centre_hu: f64,
    inner_min_hu: f64,
    dense_offset_mm: f64,
}

/// NODULE_MEASURES on the committed sample and then on each of `folders`.
fn measure(folders: &[&Path]) -> Vec<Vec<Nodule>> {
    let mut cmd = python();
    cmd.current_dir(repo("")).args([
        "-c",
        NODULE_MEASURES,
        repo("sample-dicom/truth.json").to_str().unwrap(),
        repo("sample-dicom/phantom-4242").to_str().unwrap(),
    ]);
    for f in folders {
        cmd.arg(f.join("4242"));
    }
    serde_json::from_slice(&succeeds(&mut cmd).stdout).unwrap()
}
#[test]
fn a_solid_hu_range_makes_the_solid_nodules_denser_and_nothing_else() {
    let out = scratch("phantom-dense");
    // The sample's command with denser solid nodules.
    write_sample(&out, &["--solid-hu", "300", "400"]);
    assert!(
        std::fs::read(out.join("truth.json")).unwrap()
            == std::fs::read(repo("sample-dicom/truth.json")).unwrap(),
        "the truth (and so every nodule's place, size and type) is the sample's"
    );
    let rows = measure(&[&out]);
    let solid = |row: &Vec<Nodule>| -> Vec<f64> {
        row.iter()
            .filter(|n| n.kind == "solid")
            .map(|n| n.centre_hu)
            .collect()
    };
    let (plain, dense) = (solid(&rows[0]), solid(&rows[1]));
    assert_eq!(plain.len(), 2, "the sample has two solid nodules: {rows:?}");
    for (p, d) in plain.iter().zip(&dense) {
        assert!(*p < 120.0, "drawn 0-60 HU, measured {p}");
        assert!(*d > 220.0, "moved onto 300-400 HU, measured {d}");
    }

    refuses("--solid-hu", &["400", "100"], &out);
}

#[test]
fn cavities_eccentric_cores_and_ground_glass_density_change_the_nodules_not_the_truth() {
    let cav = scratch("phantom-cavitate");
    let ecc = scratch("phantom-eccentric");
    let ggo = scratch("phantom-faint-ggo");
    write_sample(&cav, &["--cavitate", "1"]);
    write_sample(&ecc, &["--eccentric-cores", "1"]);
    write_sample(&ggo, &["--ggo-hu", "-800", "-700"]);
    for out in [&cav, &ecc, &ggo] {
        assert!(
            std::fs::read(out.join("truth.json")).unwrap()
                == std::fs::read(repo("sample-dicom/truth.json")).unwrap(),
            "{}: the truth (outline, size, type) is the sample's",
            out.display()
        );
    }
    let rows = measure(&[&cav, &ecc, &ggo]);
    let (plain, cavitated, eccentric, faint) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    let kinds: Vec<&str> = plain.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["part-solid", "solid", "solid"], "{rows:?}");
    // The two solid nodules (12.8 and 29.7 mm) get an air-filled cavity; the part-solid one
    // is untouched.
    for i in [1, 2] {
        assert!(plain[i].inner_min_hu > -200.0, "solid as drawn: {rows:?}");
        assert!(
            cavitated[i].inner_min_hu < -600.0,
            "a cavity inside: {rows:?}"
        );
    }
    assert_eq!(cavitated[0], plain[0], "{rows:?}");
    // The part-solid nodule's core moves off centre; the solid ones are untouched.
    assert!(
        eccentric[0].dense_offset_mm > plain[0].dense_offset_mm + 0.8,
        "the dense core's centroid moves away from the centre: {rows:?}"
    );
    assert_eq!(&eccentric[1..], &plain[1..], "{rows:?}");
    // The part-solid nodule's ground-glass halo (drawn -650 to -450 HU) gets fainter; the
    // solid ones are untouched.
    assert!(
        faint[0].inner_min_hu < plain[0].inner_min_hu - 150.0,
        "the halo moves onto -800 to -700 HU: {rows:?}"
    );
    assert_eq!(&faint[1..], &plain[1..], "{rows:?}");

    refuses("--cavitate", &["1.5"], &cav);
    refuses("--eccentric-cores", &["-0.1"], &ecc);
    refuses("--ggo-hu", &["-400", "-700"], &ggo);
}

//! What a user gets from the sample does not change when the code is reorganised: `pulmo
//! analyze sample-dicom --out DIR` writes the same report and the same DICOM results, element
//! by element, as the build that made `tests/data/sample-outputs.txt` (71547c4, the last one
//! before the workspace). It runs the deterministic test model `models/threshold-test` in
//! float32, whose arithmetic is exact on any CPU, so the whole path from DICOM to SR, SEG
//! and key images is compared to the byte everywhere; the shipped model's outputs on the
//! sample were compared the same way on the machine of docs/benchmarks.md (bfloat16 there,
//! which another CPU may not have).
//!
//! What legitimately differs from run to run is masked: timings, the git revision, UIDs that
//! pulmo makes fresh for each object (`2.25.` + a random UUID) and the creation dates and
//! times. Everything else (every finding's numbers, every SR content item, SEG frames and
//! their bytes, key image pixels) must match to the byte.
//!
//! To record the outputs of a build as the new reference (after a deliberate change, said in
//! its commit): `PULMO_SAMPLE_OUTPUTS_RECORD=DIR cargo test --release sample_outputs`, where
//! DIR holds that build's `pulmo analyze --device cpu --precision float32 --model
//! models/threshold-test --out DIR sample-dicom`.

use std::fmt::Write;
use std::path::Path;

use dicom_core::header::Header;
use dicom_core::value::Value as DicomValue;
use dicom_core::VR;
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};

use crate::common::{pulmo, repo, scratch, succeeds};

const REFERENCE: &str = "tests/data/sample-outputs.txt";

#[test]
fn the_samples_report_and_dicom_results_are_what_they_were() {
    if let Ok(dir) = std::env::var("PULMO_SAMPLE_OUTPUTS_RECORD") {
        std::fs::write(repo(REFERENCE), describe(Path::new(&dir))).unwrap();
    }
    let out = scratch("sample-outputs");
    succeeds(
        pulmo()
            .args([
                "analyze",
                "--device",
                "cpu",
                "--precision",
                "float32",
                "--model",
            ])
            .arg(repo("models/threshold-test"))
            .arg("--out")
            .arg(&*out)
            .arg(repo("sample-dicom")),
    );
    let want = std::fs::read_to_string(repo(REFERENCE)).unwrap();
    let got = describe(&out);
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "the sample's outputs changed at line {}:\n got: {}\nwant: {}",
            first + 1,
            got.lines().nth(first).unwrap_or("<end>"),
            want.lines().nth(first).unwrap_or("<end>")
        );
    }
}

/// Every file of an `--out` folder, in name order (fresh UIDs in names masked): the JSON
/// report with timings and the git revision masked, DICOM objects element by element, other
/// files by their sha256.
fn describe(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let path = dir.join(&name);
        writeln!(out, "== {}", mask_uids(&name)).unwrap();
        if name.ends_with(".json") {
            out.push_str(&report(&path));
        } else if name.ends_with(".dcm") {
            let object = dicom_object::open_file(&path).unwrap();
            dump(&object, 0, &mut out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            writeln!(out, "sha256 {:x}", Sha256::digest(bytes)).unwrap();
        }
    }
    out
}

fn report(path: &Path) -> String {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for ms in value["timing_ms"].as_object_mut().unwrap().values_mut() {
        *ms = "<ms>".into();
    }
    value["pulmo"]["git"] = "<git>".into();
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

fn dump(object: &InMemDicomObject, depth: usize, out: &mut String) {
    for element in object.iter() {
        let indent = "  ".repeat(depth);
        let (tag, vr) = (element.tag(), element.vr());
        match element.value() {
            DicomValue::Sequence(items) => {
                writeln!(out, "{indent}{tag} SQ {} item(s)", items.items().len()).unwrap();
                for item in items.items() {
                    dump(item, depth + 1, out);
                }
            }
            DicomValue::PixelSequence(seq) => {
                let mut hash = Sha256::new();
                seq.fragments().iter().for_each(|f| hash.update(f));
                writeln!(out, "{indent}{tag} fragments sha256 {:x}", hash.finalize()).unwrap();
            }
            DicomValue::Primitive(value) => {
                let text = match vr {
                    VR::OB | VR::OW | VR::OF | VR::UN => {
                        format!("sha256 {:x}", Sha256::digest(value.to_bytes()))
                    }
                    VR::DA | VR::TM | VR::DT => "<when>".to_owned(),
                    _ => mask_uids(&value.to_str()),
                };
                writeln!(out, "{indent}{tag} {vr:?} {text}").unwrap();
            }
        }
    }
}

/// Replaces the UIDs pulmo makes fresh for each run (`2.25.` + 128-bit decimal).
fn mask_uids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("2.25.") {
        out.push_str(&rest[..at]);
        let digits = rest[at + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        out.push_str("<uid>");
        rest = &rest[at + 5 + digits..];
    }
    out.push_str(rest);
    out
}

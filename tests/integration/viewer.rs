//! The OHIF viewer pulmo serves at `/viewer/`, in a real browser: npm's `@ohif/app` (installed
//! by `scripts/setup/viewer.sh`) driven in Debian's headless chromium by PyPI's playwright
//! (`tests/viewer/ohif_check.py`), on the sample study sent over STOW-RS and analysed by a
//! real `pulmo serve` with tokens. Screenshots are kept in `target/test-artifacts/viewer/`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::server::*;
use crate::common::{python, repo, scratch};

#[test]
fn ohif_shows_the_ct_and_pulmos_sr_and_seg_with_every_dicomweb_request_answered() {
    let data = scratch("viewer");
    let (sender, sender_entry) = token("pacs", "send");
    let (reader, reader_entry) = token("viewer", "read");
    let tokens = data.join("tokens.toml");
    std::fs::write(&tokens, format!("{sender_entry}\n{reader_entry}")).unwrap();
    let viewer = repo("viewer/ohif");
    let server = Server::start(
        &data,
        0.3,
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--viewer-dir",
            viewer.to_str().unwrap(),
        ],
    );
    let (files, study) = sample();
    let response = client()
        .post(server.url("/dicomweb/studies"))
        .bearer_auth(&sender)
        .header("content-type", CONTENT_TYPE)
        .body(multipart(&dicom_parts(&files)))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report = report_as(&server, &study, &reader);
    let first = &report["findings"][0];
    assert!(first.is_object(), "the sample has findings: {report}");

    // The viewer's files need no token; its DICOMweb requests do.
    let page = client().get(server.url("/viewer/")).send().unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page
        .text()
        .unwrap()
        .contains("window.PUBLIC_URL=\"/viewer/\""));
    let config = client()
        .get(server.url("/viewer/app-config.js"))
        .send()
        .unwrap();
    assert!(config.text().unwrap().contains("'/dicomweb'"));
    let refused = client()
        .get(server.url(&format!("/dicomweb/studies/{study}/series")))
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let shots = repo("target/test-artifacts/viewer");
    let output = python()
        .arg(repo("tests/viewer/ohif_check.py"))
        .args([
            "--base",
            &server.base,
            "--study",
            &study,
            "--token",
            &reader,
        ])
        .arg("--out")
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert!(seen["error"].is_null(), "{seen:#}");

    // The study browser lists the CT and pulmo's SR and SEG.
    let series: Vec<&str> = seen["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (modality, description) in [
        ("CT", ""),
        ("SR", "pulmo nodule measurements"),
        ("SEG", "pulmo nodule segmentation"),
    ] {
        assert!(
            series
                .iter()
                .any(|s| s.starts_with(&format!("{modality}\n")) && s.contains(description)),
            "{modality} {description} not listed: {series:?}"
        );
    }
    // The SR's first measurement, drawn with its values, as the report has them.
    let viewport = seen["sr_viewport"].as_str().unwrap();
    let diameter = first["diameter_mm"].as_f64().unwrap();
    let volume = first["volume_mm3"].as_f64().unwrap();
    assert!(
        viewport.contains(&format!("Diameter: {diameter:.2} mm")),
        "{viewport}"
    );
    assert!(
        viewport.contains(&format!("Volume: {volume:.2} mm3")),
        "{viewport}"
    );
    assert_eq!(seen["sr_loadable"], true, "{seen:#}");
    // Tracked, every finding of the SR is a row of OHIF's measurement panel, labelled and on
    // its slice, and the last row's click shows its slice.
    let findings = report["findings"].as_array().unwrap();
    let rows: Vec<&str> = seen["measurement_rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no measurement panel: {seen:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(rows.len(), findings.len(), "{rows:?}");
    for (row, finding) in rows.iter().zip(findings) {
        let label = format!(
            "nodule-{}, {:.1} mm",
            finding["id"],
            finding["diameter_mm"].as_f64().unwrap()
        );
        let slice = format!("I: {}", finding["instance_number"]);
        assert!(
            row.contains(&label) && row.contains(&slice),
            "{row:?}: {label}, {slice}"
        );
    }
    if let Some(last) = findings.last().filter(|_| findings.len() > 1) {
        let shown = seen["viewport_after_last_row"].as_str().unwrap_or_default();
        let slice = format!("I:{} (", last["instance_number"]);
        assert!(
            shown.replace(' ', "").contains(&slice.replace(' ', "")),
            "{shown:?}: {slice}"
        );
    }
    // The SEG's segments, one per called finding, in the segmentation panel.
    let panel = seen["segmentation_panel"].as_str().unwrap();
    let calls = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["score"].as_f64() >= report["operating_score"].as_f64())
        .count();
    assert!(calls > 0, "{report}");
    for n in 1..=calls {
        assert!(panel.contains(&format!("nodule-{n}")), "{panel}");
    }
    // Every DICOMweb request the page made was answered.
    assert_eq!(seen["dicomweb_failed"], Value::Array(vec![]), "{seen:#}");
    assert!(seen["dicomweb_ok"].as_u64().unwrap() > 100, "{seen:#}");
    assert_eq!(seen["page_errors"], Value::Array(vec![]), "{seen:#}");
    for shot in [
        "viewer-study",
        "viewer-sr",
        "viewer-measurements",
        "viewer-seg",
    ] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}");
    }
}

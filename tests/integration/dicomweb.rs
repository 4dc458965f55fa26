//! pulmo as a DICOMweb data source for viewers: a real `pulmo serve` with tokens, the
//! sample study sent over STOW-RS and analysed, then QIDO-RS filters, WADO-RS retrieval
//! (compared byte for byte with the files sent), metadata whose bulk data URIs resolve,
//! frames, rendered images, retention's purge, and PyPI's `dicomweb-client` as a peer.

use std::collections::BTreeSet;
use std::path::PathBuf;

use dicom_dictionary_std::tags;
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::server::*;
use crate::common::{python, repo, scratch, Scratch};

/// A server with a sender and a reader token, the sample study sent and analysed.
struct Fixture {
    server: Server,
    reader: String,
    sender: String,
    study: String,
    files: Vec<PathBuf>,
    _data: Scratch,
}

impl Fixture {
    fn start(extra: &[&str]) -> Fixture {
        let data = scratch("dicomweb");
        let (sender, sender_entry) = token("pacs", "send");
        let (reader, reader_entry) = token("viewer", "read");
        let tokens = data.join("tokens.toml");
        std::fs::write(&tokens, format!("{sender_entry}\n{reader_entry}")).unwrap();
        let mut args = vec!["--tokens", tokens.to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = Server::start(&data, 0.3, &args);
        let (files, study) = sample();
        let response = client()
            .post(server.url("/dicomweb/studies"))
            .bearer_auth(&sender)
            .header("content-type", CONTENT_TYPE)
            .body(multipart(&dicom_parts(&files)))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let fixture = Fixture {
            server,
            reader,
            sender,
            study,
            files,
            _data: data,
        };
        wait_for("the analysis", || {
            let status = fixture.json(&format!("/api/v1/studies/{}", fixture.study));
            (status["jobs"][0]["state"] == "done").then_some(())
        });
        fixture
    }

    fn get(&self, path: &str, accept: Option<&str>) -> Response {
        let mut request = client()
            .get(self.server.url(path))
            .bearer_auth(&self.reader);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send().unwrap()
    }

    /// A DICOM JSON answer, which must be 200.
    fn json(&self, path: &str) -> Value {
        let response = self.get(path, None);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().unwrap()
    }

    /// How many items a search answers.
    fn count(&self, path: &str) -> usize {
        self.json(path).as_array().unwrap().len()
    }

    /// The source CT series, from the files.
    fn ct_series(&self) -> String {
        attribute(&self.files[0], tags::SERIES_INSTANCE_UID)
    }
}

/// The parts of a `multipart/related` answer, and their content types.
fn parts(response: Response) -> Vec<(String, Vec<u8>)> {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("multipart/related"),
        "{content_type}"
    );
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let mut body = b"\r\n".to_vec();
    body.extend_from_slice(&response.bytes().unwrap());
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut found = Vec::new();
    let mut rest = &body[..];
    while let Some(at) = find(rest, &delimiter) {
        let part = &rest[..at];
        rest = &rest[at + delimiter.len()..];
        if part.is_empty() {
            continue;
        }
        let head_end = find(part, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&part[..head_end]).to_lowercase();
        let media = head
            .lines()
            .find_map(|l| l.trim().strip_prefix("content-type:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        found.push((media, part[head_end + 4..].to_vec()));
    }
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn uids(items: &Value, tag: &str) -> BTreeSet<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[tag]["Value"][0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn viewers_search_retrieve_and_render_the_source_and_the_results() {
    let f = Fixture::start(&[]);
    let study = f.study.clone();
    searches_match_each_filter(&f);
    let ct = f.ct_series();
    let series = f.json(&format!("/dicomweb/studies/{study}/series"));
    let modalities: BTreeSet<String> = uids(&series, "00080060");
    assert!(
        modalities.contains("CT") && modalities.contains("SR"),
        "{modalities:?}"
    );
    assert!(modalities.contains("SEG"), "{modalities:?}");

    // The series retrieved is the files sent, byte for byte.
    let sent: BTreeSet<Vec<u8>> = f.files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let retrieved = parts(f.get(&format!("/dicomweb/studies/{study}/series/{ct}"), None));
    assert!(retrieved
        .iter()
        .all(|(media, _)| media == "application/dicom"));
    let retrieved: BTreeSet<Vec<u8>> = retrieved.into_iter().map(|(_, b)| b).collect();
    assert_eq!(retrieved, sent);
    let whole = parts(f.get(&format!("/dicomweb/studies/{study}"), None));
    assert_eq!(whole.len() as u64, f.files.len() as u64 + results(&f));

    let file = &f.files[3];
    let sop = attribute(file, tags::SOP_INSTANCE_UID);
    let instance = format!("/dicomweb/studies/{study}/series/{ct}/instances/{sop}");
    metadata_names_bulk_data_that_resolve(&f, &instance, &sop);
    frames_are_the_stored_fragments_or_uncompressed(&f, &instance, file);
    rendered_images_are_png_or_jpeg_of_the_frame(&f, &instance);

    // Reading needs the read role; the sender's token has only `send`.
    let refused = client()
        .get(f.server.url(&instance))
        .bearer_auth(&f.sender)
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let missing = f.get(
        &format!("/dicomweb/studies/{study}/series/{ct}/instances/1.2.3"),
        None,
    );
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

fn searches_match_each_filter(f: &Fixture) {
    let study = &f.study;
    let ct = f.ct_series();
    let studies = |query: &str| f.count(&format!("/dicomweb/studies?{query}"));
    assert_eq!(studies(""), 1);
    for (query, expected) in [
        ("PatientID=PHANTOM-4242", 1),
        ("PatientID=phantom-4242", 0),
        ("PatientID=PHANTOM*", 1),
        ("PatientName=phantom*", 1),
        ("PatientName=PH%3FNTOM%5E4242", 1),
        ("PatientName=DOE*", 0),
        ("StudyDate=20260101", 1),
        ("StudyDate=20250101-20261231", 1),
        ("StudyDate=20260102-", 0),
        ("StudyDate=-20260101", 1),
        ("StudyDate=-20251231", 0),
        ("AccessionNumber=PH4242", 1),
        ("AccessionNumber=OTHER", 0),
        ("ModalitiesInStudy=SR", 1),
        ("ModalitiesInStudy=MR", 0),
        ("00100020=PHANTOM-4242", 1),
        ("limit=1&offset=1", 0),
    ] {
        assert_eq!(studies(query), expected, "{query}");
    }
    assert_eq!(studies(&format!("StudyInstanceUID=1.2.3,{study}")), 1);
    let item = &f.json("/dicomweb/studies")[0];
    assert_eq!(item["00100010"]["Value"][0]["Alphabetic"], "PHANTOM^4242");
    assert_eq!(
        item["00201208"]["Value"][0],
        f.files.len() as u64 + results(f)
    );

    let series = |query: &str| f.json(&format!("/dicomweb/studies/{study}/series?{query}"));
    assert_eq!(
        uids(&series("Modality=CT"), "0020000E"),
        [ct.clone()].into()
    );
    assert_eq!(
        series(&format!("SeriesInstanceUID={ct}"))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(series("").as_array().unwrap()[0].get("00100020").is_none());
    assert!(series("includefield=PatientID").as_array().unwrap()[0]
        .get("00100020")
        .is_some());
    assert!(series("includefield=all").as_array().unwrap()[0]
        .get("00080020")
        .is_some());
    assert_eq!(f.count("/dicomweb/series?Modality=SEG"), 1);

    let instances = |query: &str| {
        f.count(&format!(
            "/dicomweb/studies/{study}/series/{ct}/instances?{query}"
        ))
    };
    assert_eq!(instances(""), f.files.len());
    assert_eq!(instances("limit=10&offset=100"), f.files.len() - 100);
    let sop = attribute(&f.files[0], tags::SOP_INSTANCE_UID);
    assert_eq!(instances(&format!("SOPInstanceUID={sop}")), 1);
    assert_eq!(instances("InstanceNumber=2"), 1);
    assert_eq!(
        f.count(&format!("/dicomweb/instances?SOPInstanceUID={sop}")),
        1
    );
    let study_instances = f.count(&format!("/dicomweb/studies/{study}/instances?Modality=CT"));
    assert_eq!(study_instances, f.files.len());

    // Unknown keys and malformed values are refused, without echoing what was sent.
    let long = "X".repeat(5000);
    for query in [
        format!("{long}=1"),
        "StudyDate=2020".to_owned(),
        "limit=-1".to_owned(),
    ] {
        let response = f.get(&format!("/dicomweb/studies?{query}"), None);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:.40}");
        assert!(response.text().unwrap().len() < 300);
    }
    let refused = f.get("/dicomweb/studies", Some("image/png"));
    assert_eq!(refused.status(), StatusCode::NOT_ACCEPTABLE);
}

/// How many result instances the study has.
fn results(f: &Fixture) -> u64 {
    let series = f.json(&format!("/dicomweb/studies/{}/series", f.study));
    series
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["00080060"]["Value"][0] != "CT")
        .map(|s| s["00201209"]["Value"][0].as_u64().unwrap())
        .sum()
}

fn metadata_names_bulk_data_that_resolve(f: &Fixture, instance: &str, sop: &str) {
    let metadata = f.json(&format!("{instance}/metadata"));
    let data_set = &metadata[0];
    assert_eq!(data_set["00080018"]["Value"][0], sop);
    assert_eq!(
        data_set["00100010"]["Value"][0]["Alphabetic"],
        "PHANTOM^4242"
    );
    assert_eq!(data_set["00280010"]["Value"][0], 256);
    let uri = data_set["7FE00010"]["BulkDataURI"].as_str().unwrap();
    let path = uri.strip_prefix(&f.server.base).unwrap();
    let fragments = parts(f.get(path, None));
    assert!(!fragments.is_empty() && fragments.iter().all(|(_, b)| !b.is_empty()));
    let series_metadata = f.json(&format!(
        "{}/metadata",
        instance.split("/instances/").next().unwrap()
    ));
    assert_eq!(series_metadata.as_array().unwrap().len(), f.files.len());
}

fn frames_are_the_stored_fragments_or_uncompressed(
    f: &Fixture,
    instance: &str,
    file: &std::path::Path,
) {
    let object = dicom_object::open_file(file).unwrap();
    let pixels = object.element(tags::PIXEL_DATA).unwrap();
    let stored: Vec<u8> = pixels.fragments().unwrap().concat();
    let rle = r#"multipart/related; type="image/dicom-rle"; transfer-syntax=1.2.840.10008.1.2.5"#;
    let compressed = parts(f.get(&format!("{instance}/frames/1"), Some(rle)));
    assert_eq!(compressed.len(), 1);
    assert_eq!(compressed[0].0, "image/dicom-rle");
    assert_eq!(compressed[0].1, stored);
    let uncompressed = parts(f.get(&format!("{instance}/frames/1"), None));
    assert_eq!(uncompressed[0].0, "application/octet-stream");
    assert_eq!(uncompressed[0].1.len(), 256 * 256 * 2);
    // The same samples as pulmo-dicom decodes (its own RLE decoder), through the rescale.
    let (_, header) = pulmo_dicom::ingest::read_file_header("sample", file).unwrap();
    let hu = pulmo_dicom::volume::decode_frame(&header, 0).unwrap();
    let lut = &header.frames[0];
    for (n, sample) in uncompressed[0].1.chunks(2).enumerate().step_by(997) {
        let stored = i16::from_le_bytes([sample[0], sample[1]]) as f64;
        let expected = stored * lut.rescale_slope + lut.rescale_intercept;
        assert!(
            (hu.as_slice().unwrap()[n] as f64 - expected).abs() < 1e-3,
            "pixel {n}"
        );
    }
    assert_eq!(
        f.get(&format!("{instance}/frames/2"), None).status(),
        StatusCode::NOT_FOUND
    );
    let refused = f.get(&format!("{instance}/frames/1"), Some("image/png"));
    assert_eq!(refused.status(), StatusCode::NOT_ACCEPTABLE);
}

fn rendered_images_are_png_or_jpeg_of_the_frame(f: &Fixture, instance: &str) {
    for (path, accept, format) in [
        (
            format!("{instance}/rendered"),
            None,
            image::ImageFormat::Png,
        ),
        (
            format!("{instance}/rendered?window=40,400"),
            Some("image/jpeg"),
            image::ImageFormat::Jpeg,
        ),
        (
            format!("{instance}/frames/1/rendered"),
            Some("image/png"),
            image::ImageFormat::Png,
        ),
    ] {
        let response = f.get(&path, accept);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = response.bytes().unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), format, "{path}");
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (256, 256), "{path}");
    }
    let bad = f.get(&format!("{instance}/rendered?window=1,x"), None);
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn retention_purges_the_source_but_keeps_the_results() {
    // 0.00002 days is 1.7 s: the sample is purged soon after its analysis.
    let f = Fixture::start(&["--retain-days", "0.00002"]);
    let study = &f.study;
    let ct = f.ct_series();
    let sop = attribute(&f.files[0], tags::SOP_INSTANCE_UID);
    let instance = format!("/dicomweb/studies/{study}/series/{ct}/instances/{sop}");
    wait_for("the purge", || {
        (f.get(&instance, None).status() == StatusCode::NOT_FOUND).then_some(())
    });
    let series = f.json(&format!("/dicomweb/studies/{study}/series"));
    assert!(!uids(&series, "0020000E").contains(&ct));
    assert!(uids(&series, "00080060").contains("SR"));
    assert_eq!(f.count("/dicomweb/studies?PatientID=PHANTOM-4242"), 1);
    let missing = f.get(
        &format!("/dicomweb/studies/{study}/series/{ct}/instances"),
        None,
    );
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let audit = rusqlite::Connection::open(f._data.join("pulmo.sqlite")).unwrap();
    let purges: u32 = audit
        .query_row(
            "SELECT count(*) FROM audit WHERE caller = 'retention' AND action LIKE 'purge series%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(purges, 1);
}

#[test]
fn dicomweb_client_from_pypi_searches_and_retrieves() {
    let f = Fixture::start(&[]);
    let script = repo("tests/dicomweb/dicomweb_client_check.py");
    let output = python()
        .arg(script)
        .args([&format!("{}/dicomweb", f.server.base), &f.reader, &f.study])
        .arg(f.files[0].parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "dicomweb-client (requirements.txt):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("dicomweb-client: ok"), "{stdout}");
}

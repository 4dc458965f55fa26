//! `pulmo serve` over real HTTP on loopback: STOW-RS uploads become reports, bad uploads
//! get their status and reason, and nothing acknowledged is lost across `kill -9`.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::common::server::*;
use crate::common::{fixture, python, scratch};
use dicom_dictionary_std::tags;
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::Value;

#[test]
fn a_series_uploaded_in_chunked_parts_comes_back_as_a_report_and_dicom_results() {
    let data = scratch("serve-roundtrip");
    let server = Server::start(&data, 0.5, &[]);
    let (files, study) = sample();
    for chunk in files.chunks(40) {
        let response = stow(&server, "/dicomweb/studies", multipart(&dicom_parts(chunk)));
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/dicom+json");
        let body: Value = response.json().unwrap();
        let stored = items(&body, "00081199");
        assert_eq!(stored.len(), chunk.len(), "{body}");
        let sop = attribute(&chunk[0], tags::SOP_INSTANCE_UID);
        assert_eq!(stored[0]["00081155"]["Value"][0], sop.as_str());
        assert!(body.get("00081198").is_none(), "{body}");
    }
    let report = report(&server, &study);
    assert_eq!(report["study_instance_uid"], study.as_str());
    assert_eq!(report["model"]["id"], "threshold-test");
    assert!(
        !report["findings"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["instances"], files.len());
    let job = &status["jobs"][0];
    assert_eq!(
        (job["state"].as_str(), job["lane"].as_str()),
        (Some("done"), Some("routine"))
    );
    assert_eq!(job["instances"], files.len());
    let (_, job_again) = server.get_json(&format!("/api/v1/jobs/{}", job["id"]));
    assert_eq!(job_again["id"], job["id"]);

    // QIDO-RS lists the study; WADO-RS hands back an SR of this study.
    let (_, studies) = server.get_json("/dicomweb/studies");
    let listed: Vec<&str> = studies
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["0020000D"]["Value"][0].as_str())
        .collect();
    assert_eq!(listed, [study.as_str()]);
    let (_, series) = server.get_json(&format!("/dicomweb/studies/{study}/series"));
    let sr = series
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["00080060"]["Value"][0] == "SR")
        .expect("an SR series");
    let sr_series = sr["0020000E"]["Value"][0].as_str().unwrap();
    let (_, instances) = server.get_json(&format!(
        "/dicomweb/studies/{study}/series/{sr_series}/instances"
    ));
    let sop = instances[0]["00080018"]["Value"][0].as_str().unwrap();
    let url = server.url(&format!(
        "/dicomweb/studies/{study}/series/{sr_series}/instances/{sop}"
    ));
    let bare = client()
        .get(&url)
        .header("accept", "application/dicom")
        .send()
        .unwrap();
    assert_eq!(bare.headers()["content-type"], "application/dicom");
    let file = data.join("retrieved-sr.dcm");
    std::fs::write(&file, bare.bytes().unwrap()).unwrap();
    assert_eq!(attribute(&file, tags::STUDY_INSTANCE_UID), study);
    assert_eq!(attribute(&file, tags::MODALITY), "SR");
    let multipart = client().get(&url).send().unwrap();
    let content_type = multipart.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("multipart/related; type=\"application/dicom\""));
    let missing = client().get(url.replace(sop, "1.2.3")).send().unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Sending the same instances again stores nothing new and starts no analysis.
    let again = stow(&server, "/dicomweb/studies", multipart_of(&files[..3]));
    assert_eq!(again.status(), StatusCode::OK);
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["instances"], files.len());
    assert_eq!(status["receiving"], Value::Array(vec![]));
    assert_eq!(status["jobs"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(data);
}

fn multipart_of(files: &[PathBuf]) -> Vec<u8> {
    multipart(&dicom_parts(files))
}

/// The one refused instance of a 409 answer: its failure code and comment.
fn refusal(response: Response) -> (StatusCode, u64, String) {
    let status = response.status();
    let body: Value = response.json().unwrap();
    let failed = items(&body, "00081198");
    assert_eq!(failed.len(), 1, "{body}");
    let code = failed[0]["00081197"]["Value"][0].as_u64().unwrap();
    let comment = failed[0]["00000902"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    (status, code, comment)
}

#[test]
fn bad_uploads_get_their_status_and_reason_while_the_server_stays_up() {
    let data = scratch("serve-bad");
    let server = Server::start(&data, 60.0, &["--max-instance-mib", "1"]);
    let ct = fixture("single/CT_small.dcm");

    let form = client()
        .post(server.url("/dicomweb/studies"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let garbage = client()
        .post(server.url("/dicomweb/studies"))
        .header("content-type", CONTENT_TYPE)
        .body(format!(
            "--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nDICM"
        ))
        .send()
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    assert!(garbage.text().unwrap().contains("malformed multipart"));

    let text = stow(
        &server,
        "/dicomweb/studies",
        multipart(&[("application/dicom", b"hello".to_vec())]),
    );
    let (status, code, comment) = refusal(text);
    assert_eq!((status, code), (StatusCode::CONFLICT, 0xC000));
    assert!(comment.contains("part 1"), "{comment}");

    let plain = stow(
        &server,
        "/dicomweb/studies",
        multipart(&[("text/plain", b"hello".to_vec())]),
    );
    let (status, code, comment) = refusal(plain);
    assert_eq!((status, code), (StatusCode::CONFLICT, 0xC000));
    assert!(comment.contains("not application/dicom"), "{comment}");

    let mr = stow(
        &server,
        "/dicomweb/studies",
        multipart_of(&[fixture("single/MR_small_implicit.dcm")]),
    );
    let (status, code, comment) = refusal(mr);
    assert_eq!((status, code), (StatusCode::CONFLICT, 0x0122));
    assert!(comment.contains("not a CT image"), "{comment}");

    let elsewhere = stow(
        &server,
        "/dicomweb/studies/1.2.3.4",
        multipart_of(std::slice::from_ref(&ct)),
    );
    let (status, code, comment) = refusal(elsewhere);
    assert_eq!((status, code), (StatusCode::CONFLICT, 0xA900));
    assert!(comment.contains("sent to study 1.2.3.4"), "{comment}");

    let mut parts = dicom_parts(std::slice::from_ref(&ct));
    parts.push(("application/dicom", b"not dicom".to_vec()));
    let mixed = stow(&server, "/dicomweb/studies", multipart(&parts));
    assert_eq!(mixed.status(), StatusCode::ACCEPTED);

    let huge = post_raw(
        &server,
        "/dicomweb/studies",
        multipart(&[("application/dicom", vec![0; 2 << 20])]),
    );
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");

    truncated_upload(&server, &std::fs::read(&ct).unwrap());

    let health = client().get(server.url("/healthz")).send().unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Only the one CT instance was stored, and no part was left behind.
    let study = attribute(&ct, tags::STUDY_INSTANCE_UID);
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["instances"], 1);
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(data);
}

/// A client that promises more than it sends and hangs up mid-part.
fn truncated_upload(server: &Server, instance: &[u8]) {
    let address = server.base.strip_prefix("http://").unwrap();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    let head = format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n");
    let request = format!(
        "POST /dicomweb/studies HTTP/1.1\r\nHost: {address}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n{head}",
        head.len() + instance.len() + 100,
    );
    socket.write_all(request.as_bytes()).unwrap();
    socket.write_all(&instance[..instance.len() / 2]).unwrap();
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
}

#[test]
fn a_kill_between_upload_and_analysis_loses_nothing_and_the_report_still_comes() {
    let data = scratch("serve-restart");
    let (files, study) = sample();
    let server = Server::start(&data, 3600.0, &[]);
    let response = stow(&server, "/dicomweb/studies", multipart_of(&files));
    assert_eq!(response.status(), StatusCode::OK);
    server.kill();

    let server = Server::start(&data, 0.2, &[]);
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["instances"], files.len());
    let report = report(&server, &study);
    assert_eq!(report["series"]["slices"], files.len());
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn a_kill_during_analysis_queues_the_job_again_and_sigterm_lets_it_finish() {
    let data = scratch("serve-running");
    let (files, study) = sample();
    let server = Server::start(&data, 3600.0, &[]);
    assert_eq!(
        stow(&server, "/dicomweb/studies", multipart_of(&files)).status(),
        StatusCode::OK
    );
    let analyze = client()
        .post(server.url(&format!("/api/v1/studies/{study}/analyze?priority=stat")))
        .send()
        .unwrap();
    assert_eq!(analyze.status(), StatusCode::ACCEPTED);
    let queued: Value = analyze.json().unwrap();
    let id = queued["jobs"][0].as_i64().unwrap();
    let job_path = format!("/api/v1/jobs/{id}");
    let first = wait_for("the job to start", || {
        let (_, job) = server.get_json(&job_path);
        (job["state"] != "queued").then_some(job)
    });
    server.kill();

    // Restarted, a job cut off while running is started afresh (or was already done);
    // SIGTERM then waits for it to finish.
    let server = Server::start(&data, 3600.0, &[]);
    let (_, job) = server.get_json(&job_path);
    assert_eq!(job["lane"], "stat");
    if first["state"] == "running" && job["state"] == "running" {
        assert_ne!(job["started_at"], first["started_at"], "{job}");
    }
    wait_for("the job to start again", || {
        let (_, job) = server.get_json(&job_path);
        (job["state"] != "queued").then_some(())
    });
    assert!(server.terminate().success());
    let server = Server::start(&data, 3600.0, &[]);
    let (_, job) = server.get_json(&job_path);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        report(&server, &study)["study_instance_uid"],
        study.as_str()
    );
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn dicomweb_client_from_pypi_stores_a_study_and_reads_the_results_back() {
    let data = scratch("serve-dicomweb-client");
    let server = Server::start(&data, 0.5, &[]);
    let (_, study) = sample();
    let script = r#"
import glob, sys, time
import pydicom
from dicomweb_client.api import DICOMwebClient
base, study = sys.argv[1], sys.argv[2]
client = DICOMwebClient(url=base + "/dicomweb")
files = sorted(glob.glob("sample-dicom/phantom-4242/*.dcm"))
datasets = [pydicom.dcmread(f) for f in files]
for start in range(0, len(datasets), 50):
    reply = client.store_instances(datasets[start:start + 50])
    assert len(reply.ReferencedSOPSequence) == len(datasets[start:start + 50])
deadline = time.time() + 120
while True:
    studies = client.search_for_studies(search_filters={"ModalitiesInStudy": "SR"})
    if studies:
        break
    assert time.time() < deadline, "no results"
    time.sleep(0.1)
assert studies[0]["0020000D"]["Value"][0] == study
kinds = []
for series in client.search_for_series(study):
    uid = series["0020000E"]["Value"][0]
    for instance in client.search_for_instances(study, uid):
        ds = client.retrieve_instance(study, uid, instance["00080018"]["Value"][0])
        assert ds.StudyInstanceUID == study
        kinds.append(ds.Modality)
print(" ".join(sorted(set(kinds))))
"#;
    let output = python()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-c", script, &server.base, &study])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The source CT is served beside the results (until retention purges it).
    assert_eq!(stdout.trim(), "CT OT SEG SR");
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn instances_arriving_after_an_analysis_start_another_whose_results_supersede() {
    let data = scratch("serve-supersede");
    let (files, study) = sample();
    let server = Server::start(&data, 3600.0, &[]);
    let analyze = |server: &Server| -> i64 {
        let url = server.url(&format!("/api/v1/studies/{study}/analyze"));
        let queued: Value = client().post(url).send().unwrap().json().unwrap();
        queued["jobs"][0].as_i64().unwrap()
    };
    let finished = |server: &Server, id: i64| -> Value {
        wait_for("the job to end", || {
            let (_, job) = server.get_json(&format!("/api/v1/jobs/{id}"));
            (job["state"] == "done").then_some(job)
        })
    };
    let (first_half, second_half) = files.split_at(60);
    assert_eq!(
        stow(&server, "/dicomweb/studies", multipart_of(first_half)).status(),
        StatusCode::OK
    );
    let first = analyze(&server);
    assert_eq!(finished(&server, first)["instances"], 60);
    assert_eq!(
        stow(&server, "/dicomweb/studies", multipart_of(second_half)).status(),
        StatusCode::OK
    );
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["receiving"].as_array().unwrap().len(), 1, "{status}");
    let second = analyze(&server);
    assert_ne!(first, second);
    assert_eq!(finished(&server, second)["instances"], files.len());
    let (_, old) = server.get_json(&format!("/api/v1/jobs/{first}"));
    assert_eq!(old["superseded_by"], second);
    let report = report(&server, &study);
    assert_eq!(report["series"]["slices"], files.len());
    // Only the newer analysis' SR is served.
    let (_, series) = server.get_json(&format!("/dicomweb/studies/{study}/series"));
    let srs = series
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["00080060"]["Value"][0] == "SR");
    assert_eq!(srs.count(), 1);
    let _ = std::fs::remove_dir_all(data);
}

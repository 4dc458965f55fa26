//! The defects an outside probe of `pulmo serve` found (issue 45, D1-D9), each
//! reproduced as the probe did it, against the real server over loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use reqwest::StatusCode;

use crate::common::server::*;
use crate::common::{pulmo, scratch};

/// A sample file with some attributes replaced, as bytes.
fn sample_with(file: &Path, elements: &[(dicom_core::Tag, VR, &str)]) -> Vec<u8> {
    let mut object = dicom_object::open_file(file).unwrap();
    for (tag, vr, value) in elements {
        object.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
    }
    let mut bytes = Vec::new();
    object.write_all(&mut bytes).unwrap();
    bytes
}

/// The status, failure reason and comment of a STOW-RS answer with one refused part.
fn refusal(response: reqwest::blocking::Response) -> (StatusCode, u64, String) {
    let status = response.status();
    let json: serde_json::Value = response.json().unwrap();
    let failed = &items(&json, "00081198")[0];
    let code = failed["00081197"]["Value"][0].as_u64().unwrap();
    let comment = failed["00000902"]["Value"][0].as_str().unwrap().to_owned();
    (status, code, comment)
}

fn address(server: &Server) -> String {
    server.base.strip_prefix("http://").unwrap().to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it
/// said and how long it took.
fn read_until_closed(socket: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// D1: an instance whose SOP Instance UID is already filed under another study is
/// refused with the reason, not acknowledged and lost.
#[test]
fn an_instance_uid_already_filed_under_another_study_is_refused() {
    let data = scratch("serve-d1");
    let server = Server::start(&data, 3600.0, &[]);
    let (files, study) = sample();
    let stored = stow(
        &server,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files[..4])),
    );
    assert_eq!(stored.status(), StatusCode::OK);

    let moved = sample_with(
        &files[0],
        &[
            (
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.9.9.1",
            ),
            (
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.9.9.1.1",
            ),
        ],
    );
    let answer = stow(
        &server,
        "/dicomweb/studies",
        multipart(&[("application/dicom", moved)]),
    );
    let (status, code, comment) = refusal(answer);
    assert_eq!((status, code), (StatusCode::CONFLICT, 0xA900));
    assert!(comment.contains("already stored in study"), "{comment}");
    assert!(comment.contains(&study), "{comment}");

    let (status, _) = server.get_json("/api/v1/studies/1.2.826.0.1.3680043.9.9.1");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, original) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(original["instances"], 4);
    let _ = std::fs::remove_dir_all(data);
}

/// D2: a part whose pixel data was cut short is refused (0xC000) while the rest of its
/// series is stored and analysed; a slice that goes bad in the spool is left out of the
/// next analysis with a warning naming the instance, not failing its series.
#[test]
fn d2_a_cut_slice_is_refused_and_its_series_analysed_without_it() {
    let data = scratch("serve-d2");
    let server = Server::start(&data, 0.5, &[]);
    let (files, study) = sample();
    let files = &files[..12];
    let mut parts = dicom_parts(files);
    let cut = parts[5].1.len() * 7 / 10;
    parts[5].1.truncate(cut);
    let answer = stow(&server, "/dicomweb/studies", multipart(&parts));
    let status = answer.status();
    let json: serde_json::Value = answer.json().unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(items(&json, "00081199").len(), 11, "{json}");
    let failed = items(&json, "00081198");
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000);
    let sop = attribute(&files[5], tags::SOP_INSTANCE_UID);
    assert_eq!(failed[0]["00081155"]["Value"][0], sop.as_str());
    let comment = failed[0]["00000902"]["Value"][0].as_str().unwrap();
    assert!(
        comment.starts_with("part 6 has unusable pixel data: a Pixel Data fragment at byte"),
        "{comment}"
    );

    let done = |after: i64| {
        wait_for("the analysis", || {
            let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
            let job = status["jobs"].as_array()?.last()?.clone();
            let finished = job["state"] == "done" || job["state"] == "failed";
            (finished && job["id"].as_i64()? > after).then_some(job)
        })
    };
    let first = done(0);
    assert_eq!(
        (&first["state"], &first["instances"]),
        (&"done".into(), &11.into()),
        "{first}"
    );
    let warnings = report(&server, &study)["warnings"].to_string();
    assert!(
        warnings.contains("gap between slices") && warnings.contains("about 1 missing"),
        "{warnings}"
    );

    // A stored slice cut short behind the server's back (a disk fault, say).
    let series = attribute(&files[0], tags::SERIES_INSTANCE_UID);
    let bad = attribute(&files[2], tags::SOP_INSTANCE_UID);
    let path = data.join(format!("spool/{study}/{series}/{bad}.dcm"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 7 / 10]).unwrap();
    let analyze = server.url(&format!("/api/v1/studies/{study}/analyze"));
    assert_eq!(
        client().post(&analyze).send().unwrap().status(),
        StatusCode::ACCEPTED
    );
    let second = done(first["id"].as_i64().unwrap());
    assert_eq!(second["state"], "done", "{second}");
    let warnings = report(&server, &study)["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "a slice was left out: could not read instance {bad}"
        )),
        "{warnings}"
    );
    assert!(!warnings.contains(&*data.to_string_lossy()), "{warnings}");
    let _ = std::fs::remove_dir_all(data);
}

/// D3 and D7: a series that failed is analysed again when a corrected instance is
/// re-sent, and the failure's reason names the instance, not a server path.
#[test]
fn a_corrected_resend_analyses_a_failed_series_again() {
    let data = scratch("serve-d3");
    let server = Server::start(&data, 0.5, &[]);
    let (files, study) = sample();
    let files = &files[..12];
    // The last slice claims the first one's position: the series cannot be assembled.
    let first = attribute(&files[0], tags::IMAGE_POSITION_PATIENT);
    let bad = sample_with(
        &files[11],
        &[(tags::IMAGE_POSITION_PATIENT, VR::DS, first.as_str())],
    );
    let mut parts = dicom_parts(&files[..11]);
    parts.push(("application/dicom", bad));
    assert_eq!(
        stow(&server, "/dicomweb/studies", multipart(&parts)).status(),
        StatusCode::OK
    );
    let failed = wait_for("the failed job", || {
        let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
        let job = status["jobs"].as_array()?.last()?.clone();
        (job["state"] == "failed").then_some(job)
    });
    let reason = failed["reason"].as_str().unwrap();
    let data_dir = data.to_string_lossy();
    assert!(!reason.contains(&*data_dir), "{reason}");
    assert!(!reason.contains("/spool/"), "{reason}");
    assert!(reason.contains("instance "), "{reason}");
    let (_, job) = server.get_json(&format!("/api/v1/jobs/{}", failed["id"]));
    assert_eq!(job["reason"], failed["reason"]);

    let corrected = stow(
        &server,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files[11..])),
    );
    assert_eq!(corrected.status(), StatusCode::OK);
    let done = wait_for("the analysis of the corrected series", || {
        let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
        let job = status["jobs"].as_array()?.last()?.clone();
        (job["state"] == "done").then_some(job)
    });
    assert_eq!(done["instances"], 12);
    let _ = std::fs::remove_dir_all(data);
}

/// D4: an upload trickling a byte a second is cut off (408) within the documented
/// timeouts, and the upload slot it held serves the next sender.
#[test]
fn a_trickling_upload_is_cut_off_and_frees_its_slot() {
    let data = scratch("serve-d4");
    let server = Server::start(
        &data,
        3600.0,
        &[
            "--max-uploads",
            "1",
            "--body-idle-timeout-secs",
            "2",
            "--min-upload-rate",
            "1024",
        ],
    );
    let address = address(&server);
    let mut slow = TcpStream::connect(&address).unwrap();
    let head = format!(
        "POST /dicomweb/studies HTTP/1.1\r\nHost: {address}\r\nContent-Type: {CONTENT_TYPE}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            if writer.write_all(b"1\r\n-\r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // While it trickles, the one slot is taken.
    std::thread::sleep(Duration::from_millis(500));
    let (files, _) = sample();
    let busy = stow(
        &server,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files[..2])),
    );
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(20));
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");
    assert!(waited < Duration::from_secs(10), "cut off after {waited:?}");
    trickle.join().unwrap();

    let next = stow(
        &server,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files[..2])),
    );
    assert_eq!(next.status(), StatusCode::OK);
    let _ = std::fs::remove_dir_all(data);
}

/// D5: connections that never send a request, send their header at 2 bytes a second,
/// or idle after an answer are closed after the header timeout; one client cannot hold
/// more than its share of connections.
#[test]
fn idle_and_slow_connections_are_closed_and_each_client_has_a_limit() {
    let data = scratch("serve-d5");
    let server = Server::start(
        &data,
        3600.0,
        &[
            "--header-timeout-secs",
            "2",
            "--max-connections-per-client",
            "3",
        ],
    );
    let address = address(&server);
    // Let the readiness probes' connections close first.
    std::thread::sleep(Duration::from_millis(500));

    let mut silent = TcpStream::connect(&address).unwrap();
    let mut slow = TcpStream::connect(&address).unwrap();
    let mut kept = TcpStream::connect(&address).unwrap();
    // The server counts each connection in its own task: let it count these three before
    // a fourth arrives (on a loaded machine the fourth could otherwise be counted first).
    std::thread::sleep(Duration::from_millis(750));
    // A fourth connection from the same address is turned away at once, with a 503.
    let mut extra = TcpStream::connect(&address).unwrap();
    let (answer, took) = read_until_closed(&mut extra, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");

    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for pair in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".chunks(2) {
            if writer.write_all(pair).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
    kept.write_all(request.as_bytes()).unwrap();

    for (name, socket) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("kept-alive", &mut kept),
    ] {
        let (answer, took) = read_until_closed(socket, Duration::from_secs(15));
        assert!(
            took < Duration::from_secs(8),
            "{name} closed after {took:?}"
        );
        if name == "kept-alive" {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        } else {
            assert!(!answer.contains("200 OK"), "{name}: {answer}");
        }
    }
    trickle.join().unwrap();
    // Their places are free again.
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let _ = std::fs::remove_dir_all(data);
}

/// D6: requests without a token cannot grow the audit log without bound: long paths are
/// cut and a flood is thinned out, with the count of what was left out.
#[test]
fn unauthenticated_floods_leave_a_bounded_audit_log() {
    let data = scratch("serve-d6");
    let tokens = data.join("tokens.toml");
    let entry = pulmo()
        .args(["token", "--name", "viewer", "--role", "read"])
        .output()
        .unwrap();
    std::fs::write(&tokens, entry.stdout).unwrap();
    let server = Server::start(&data, 3600.0, &["--tokens", tokens.to_str().unwrap()]);
    let long = server.url(&format!("/api/v1/studies/{}/report", "a".repeat(60_000)));
    let client = client();
    for _ in 0..200 {
        let status = client.get(&long).send().unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    std::thread::sleep(Duration::from_secs(1));
    let db = rusqlite::Connection::open(data.join("pulmo.sqlite")).unwrap();
    let (rows, longest): (u32, u32) = db
        .query_row(
            "SELECT count(*), max(length(action)) FROM audit WHERE caller = 'unauthenticated'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!((1..=80).contains(&rows), "{rows} records");
    assert!(longest <= 161, "an action of {longest} characters");
    let _ = std::fs::remove_dir_all(data);
}

/// D8: UIDs in paths are checked, and the 400 does not echo what was sent.
#[test]
fn path_uids_are_checked_and_not_echoed() {
    let data = scratch("serve-d8");
    let server = Server::start(&data, 3600.0, &[]);
    let long = "1".repeat(70);
    for path in [
        "/api/v1/studies/..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("/api/v1/studies/{long}/report"),
        "/dicomweb/studies/1.2.3/series/%3Cscript%3E/instances".to_owned(),
        "/api/v1/jobs/not-a-number".to_owned(),
    ] {
        let response = client().get(server.url(&path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let text = response.text().unwrap();
        for echoed in ["passwd", "..", &long, "script", "not-a-number"] {
            assert!(!text.contains(echoed), "{path}: {text}");
        }
    }
    let (status, _) = server.get_json("/api/v1/studies/1.2.3");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(data);
}

/// D9: asking for analyses is refused (503, Retry-After) once the queue holds
/// `--max-queued-jobs`, as uploads are.
#[test]
fn analyze_requests_respect_the_queue_limit() {
    let data = scratch("serve-d9");
    let server = Server::start(&data, 3600.0, &["--max-queued-jobs", "2", "--jobs", "1"]);
    let (files, _) = sample();
    // Six whole studies of one series each (a series' queued job is reused, not
    // repeated), so that each analysis takes a while.
    let studies: Vec<String> = (1..=6)
        .map(|n| format!("1.2.826.0.1.3680043.9.9.{n}"))
        .collect();
    let mut parts = Vec::new();
    for study in &studies {
        for (i, file) in files.iter().enumerate() {
            let sop = format!("{study}.1.{i}");
            let mut bytes = sample_with(
                file,
                &[
                    (tags::STUDY_INSTANCE_UID, VR::UI, study),
                    (tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study}.1")),
                    (tags::SOP_INSTANCE_UID, VR::UI, &sop),
                ],
            );
            with_meta_uid(&mut bytes, &sop);
            parts.push(("application/dicom", bytes));
        }
    }
    let stored = stow(&server, "/dicomweb/studies", multipart(&parts));
    assert_eq!(stored.status(), StatusCode::OK);
    let answers: Vec<_> = studies
        .iter()
        .map(|study| {
            let analyze = server.url(&format!("/api/v1/studies/{study}/analyze"));
            client().post(&analyze).send().unwrap()
        })
        .collect();
    let busy: Vec<_> = answers
        .iter()
        .filter(|a| a.status() == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!busy.is_empty(), "no analyze request was refused");
    assert!(busy.iter().all(|a| a.headers().contains_key("retry-after")));
    let accepted = answers.len() - busy.len();
    // One running (one worker) and two queued.
    assert!(accepted <= 3, "{accepted} analyses queued for a limit of 2");
    let _ = std::fs::remove_dir_all(data);
}

/// Sets the file meta's Media Storage SOP Instance UID of a written instance.
fn with_meta_uid(bytes: &mut Vec<u8>, sop: &str) {
    let mut object = dicom_object::from_reader(&bytes[128..]).unwrap();
    object.update_meta(|meta| meta.media_storage_sop_instance_uid = sop.to_owned());
    bytes.clear();
    object.write_all(&mut *bytes).unwrap();
}

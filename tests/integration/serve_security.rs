//! `pulmo serve` made safe to expose: bearer tokens with roles, the audit log, overload
//! answered with 503 + Retry-After, Prometheus metrics, CORS and TLS.

use std::io::Write;
use std::path::Path;

use crate::common::server::*;
use crate::common::{pulmo, python, scratch};
use reqwest::StatusCode;

#[test]
fn requests_need_a_token_with_the_right_role_and_are_audited() {
    let data = scratch("serve-tokens");
    let (sender, sender_entry) = token("pacs", "send");
    let (reader, reader_entry) = token("viewer", "read");
    let tokens = data.join("tokens.toml");
    std::fs::write(&tokens, format!("{sender_entry}\n{reader_entry}")).unwrap();
    let server = Server::start(&data, 0.3, &["--tokens", tokens.to_str().unwrap()]);
    let (files, study) = sample();
    let body = multipart(&dicom_parts(&files[..20]));
    let post = |token: Option<&str>| {
        let mut request = client()
            .post(server.url("/dicomweb/studies"))
            .header("content-type", CONTENT_TYPE)
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap()
    };
    let report_path = server.url(&format!("/api/v1/studies/{study}/report"));
    let get = |token: &str| {
        client()
            .get(&report_path)
            .bearer_auth(token)
            .send()
            .unwrap()
    };

    let anonymous = post(None);
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(anonymous.text().unwrap(), r#"{"error":"unauthorized"}"#);
    assert_eq!(
        post(Some("pulmo_not-a-token")).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(post(Some(&reader)).status(), StatusCode::FORBIDDEN);
    assert_eq!(post(Some(&sender)).status(), StatusCode::OK);
    assert_eq!(get(&sender).status(), StatusCode::FORBIDDEN);
    assert_eq!(
        client().get(&report_path).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&reader).status(), StatusCode::OK);
    for open in ["/healthz", "/readyz"] {
        assert_eq!(
            client().get(server.url(open)).send().unwrap().status(),
            StatusCode::OK
        );
    }
    for closed in ["/metrics", "/info", "/openapi.json", "/dicomweb/studies"] {
        let status = client().get(server.url(closed)).send().unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{closed}");
    }

    // The audit log names who sent and who read the study, and nothing about the patient.
    let audit = wait_for("the audit records", || {
        let db = rusqlite::Connection::open(data.join("pulmo.sqlite")).ok()?;
        let mut stmt = db
            .prepare("SELECT caller, action, status FROM audit WHERE study_uid = ?1 ORDER BY at")
            .ok()?;
        let rows: Vec<(String, String, u16)> = stmt
            .query_map([&study], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        (rows.len() >= 4).then_some(rows)
    });
    assert!(
        audit.contains(&("pacs".into(), "POST /dicomweb/studies".into(), 200)),
        "{audit:?}"
    );
    let read = (
        "viewer".into(),
        "GET /api/v1/studies/{uid}/report".into(),
        200,
    );
    assert!(audit.contains(&read), "{audit:?}");
    let refused = (
        "pacs".into(),
        "GET /api/v1/studies/{uid}/report".into(),
        403,
    );
    assert!(audit.contains(&refused), "{audit:?}");
    // Refused attempts without a known token are audited too (written off the request).
    wait_for("the refused attempts' audit records", || {
        let db = rusqlite::Connection::open(data.join("pulmo.sqlite")).ok()?;
        let sql = "SELECT count(*) FROM audit WHERE caller = 'unauthenticated' AND status = 401";
        let strangers: u32 = db.query_row(sql, [], |r| r.get(0)).ok()?;
        (strangers >= 7).then_some(())
    });
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn listening_beyond_loopback_without_tokens_is_refused() {
    let data = scratch("serve-open");
    let output = pulmo()
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --tokens"), "{stderr}");
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn overload_is_answered_503_with_retry_after_and_accepted_work_goes_on() {
    let data = scratch("serve-overload");
    let server = Server::start(&data, 0.3, &["--max-uploads", "1"]);
    let (files, study) = sample();
    // One upload holds the only slot: headers and the start of a part, then nothing.
    let address = server.base.strip_prefix("http://").unwrap();
    let mut slow = std::net::TcpStream::connect(address).unwrap();
    write!(
        slow,
        "POST /dicomweb/studies HTTP/1.1\r\nHost: {address}\r\nContent-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let opening = format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n");
    write!(slow, "{:x}\r\n{opening}\r\n", opening.len()).unwrap();
    slow.flush().unwrap();
    let refused = wait_for("the upload slot to be taken", || {
        let response = stow(
            &server,
            "/dicomweb/studies",
            multipart(&dicom_parts(&files[..2])),
        );
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    });
    assert_eq!(refused.headers()["retry-after"], "2");
    drop(slow);
    // The slot comes back; everything sent then is stored and analysed.
    wait_for("the slot to come back", || {
        let response = stow(
            &server,
            "/dicomweb/studies",
            multipart(&dicom_parts(&files)),
        );
        (response.status() == StatusCode::OK).then_some(())
    });
    assert_eq!(report(&server, &study)["series"]["slices"], files.len());
    let (_, status) = server.get_json(&format!("/api/v1/studies/{study}"));
    assert_eq!(status["instances"], files.len());

    // Metrics show the refusal, the stages and the queue; the job's counter moves just
    // after its report is filed.
    let expected = [
        r#"pulmo_failures_total{stage="receive",reason="uploads"}"#,
        r#"pulmo_stage_duration_seconds_bucket{stage="inference""#,
        r#"pulmo_stage_duration_seconds_bucket{stage="receive""#,
        r#"pulmo_queue_jobs{lane="stat"} 0"#,
        r#"pulmo_instances_stored_total{kind="new"}"#,
        "pulmo_inference_batch_size_bucket",
        r#"pulmo_jobs_total{state="done"} 1"#,
    ];
    let mut last = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !expected.iter().all(|e| last.contains(e)) {
        assert!(
            std::time::Instant::now() < deadline,
            "metrics missing in\n{last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        last = client()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
    }
    drop(server);

    // A nearly full disk refuses uploads the same way.
    let full = Server::start(&data, 0.3, &["--min-free-mib", "1000000000"]);
    let response = stow(
        &full,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files[..1])),
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "60");
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn cors_allows_only_the_configured_viewer_origin() {
    let data = scratch("serve-cors");
    let server = Server::start(&data, 0.3, &["--cors-origin", "https://viewer.example.org"]);
    let preflight = |origin: &str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/dicomweb/studies"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .unwrap()
    };
    let allowed = preflight("https://viewer.example.org");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://viewer.example.org"
    );
    let other = preflight("https://elsewhere.example.org");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn tls_serves_https_with_the_configured_certificate() {
    let data = scratch("serve-tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (data.join("cert.pem"), data.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::spawn(
        &data,
        0.3,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = server.base.rsplit(':').next().unwrap();
    assert!(server.base.starts_with("https://"), "{}", server.base);
    // Python's ssl module is the client: it checks the chain against the certificate.
    let script = "import ssl, sys, urllib.request\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        print(urllib.request.urlopen(f'https://localhost:{sys.argv[2]}/healthz', context=ctx).read().decode().strip())";
    let output = python()
        .args(["-c", script, cert.to_str().unwrap(), port])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plain = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3"))
        .args(["-c", &format!("import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=5)")])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain HTTP must not be answered");
    let _ = std::fs::remove_dir_all(data);
}

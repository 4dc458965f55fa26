//! The radiologist's review against a real `pulmo serve` (the deterministic test model on
//! the phantom study) and a real PACS (dcmtk's `storescp`): a reader signs in with a token
//! of the `review` role, accepts one finding and rejects another, the decisions survive a
//! restart, signing writes a verified SR and SEG that `dciodvfy` accepts, replaces the
//! unverified ones in QIDO-RS and is pushed by C-STORE; a token without the role, a
//! browser's change without its CSRF token, and a proxy header that is not trusted are
//! refused. The page itself is driven by headless Chromium in `review_page`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use dicom_dictionary_std::tags;
use reqwest::blocking::RequestBuilder;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::scratch;
use crate::common::server::*;

/// A port that was free a moment ago (storescp cannot take port 0).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// dcmtk's storescp as the PACS (AE `PACS`), writing what it receives into `dir`.
pub struct Pacs(Child);

impl Pacs {
    pub fn start(dir: &Path, port: u16) -> Pacs {
        let child = Command::new("storescp")
            .env("TCP_NODELAY", "1")
            .args(["-aet", "PACS", "-od"])
            .arg(dir)
            .arg(port.to_string())
            .spawn()
            .expect("storescp runs (Debian package dcmtk)");
        wait_for("storescp to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
        Pacs(child)
    }
}

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server with three tokens (`pacs` sends, `viewer` reads, `dr-reader` reviews) that
/// pushes to the PACS on `pacs_port`, with the phantom study analysed and its first push
/// done. Returns the server, the tokens, and the study.
pub struct Reviewed {
    pub server: Server,
    pub sender: String,
    pub viewer: String,
    pub reader: String,
    pub study: String,
    pub args: Vec<String>,
}

pub fn analysed(data: &Path, pacs_port: u16, extra: &[&str]) -> Reviewed {
    let (sender, sender_entry) = token("pacs", "send");
    let (viewer, viewer_entry) = token("viewer", "read");
    let (reader, reader_entry) = token("dr-reader", "review");
    let tokens = data.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("{sender_entry}\n{viewer_entry}\n{reader_entry}"),
    )
    .unwrap();
    let mut args: Vec<String> = vec![
        "--tokens".into(),
        tokens.to_str().unwrap().into(),
        "--push-dimse".into(),
        format!("PACS@127.0.0.1:{pacs_port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&data.join("data"), 0.3, &refs);
    let (files, study) = sample();
    let sent = client()
        .post(server.url("/dicomweb/studies"))
        .header("content-type", CONTENT_TYPE)
        .bearer_auth(&sender)
        .body(multipart(&dicom_parts(&files)))
        .send()
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    let reviewed = Reviewed {
        server,
        sender,
        viewer,
        reader,
        study,
        args,
    };
    reviewed.pushed();
    reviewed
}

impl Reviewed {
    pub fn get(&self, path: &str) -> Value {
        let response = client()
            .get(self.server.url(path))
            .bearer_auth(&self.viewer)
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().unwrap()
    }

    /// The study's report, once its analysis is done.
    pub fn report(&self) -> Value {
        wait_for("the report", || {
            let body = self.get(&format!("/api/v1/studies/{}/report", self.study));
            let reports = body["reports"].as_array()?;
            (!reports.is_empty() && body["pending"] == json!([])).then(|| reports[0].clone())
        })
    }

    /// Waits until the job's C-STORE push is done and returns the job.
    pub fn pushed(&self) -> Value {
        wait_for("the C-STORE push", || {
            let status = self.get(&format!("/api/v1/studies/{}", self.study));
            let job = status["jobs"].as_array()?.last()?.clone();
            (job["dimse"]["state"] == "done").then_some(job)
        })
    }
}

/// A browser's session: its cookie and CSRF token.
pub struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    pub fn sign_in(server: &Server, token: &str) -> Result<Browser, StatusCode> {
        let response = client()
            .post(server.url("/api/v1/session"))
            .json(&json!({ "token": token }))
            .send()
            .unwrap();
        if response.status() != StatusCode::OK {
            return Err(response.status());
        }
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        for part in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
            assert!(set_cookie.contains(part), "{set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let body: Value = response.json().unwrap();
        assert_eq!(body["reader"], "dr-reader");
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();
        Ok(Browser { cookie, csrf })
    }

    fn with(&self, request: RequestBuilder, csrf: bool) -> RequestBuilder {
        let request = request.header("cookie", &self.cookie);
        if csrf {
            request.header("x-csrf-token", &self.csrf)
        } else {
            request
        }
    }
}

fn put(server: &Server, study: &str, id: u32, body: &Value) -> RequestBuilder {
    client()
        .put(server.url(&format!("/api/v1/studies/{study}/findings/{id}/review")))
        .json(body)
}

/// dciodvfy's errors (lines starting `Error`) and its whole output.
pub fn dciodvfy(path: &Path) -> (Vec<String>, String) {
    let output = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy runs (Debian package dicom3tools)");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let errors = all
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_owned)
        .collect();
    (errors, all)
}

/// The files the PACS received with `modality`, read as DICOM.
pub fn received(dir: &Path, modality: &str) -> Vec<(PathBuf, dicom_object::DefaultDicomObject)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| dicom_object::open_file(&p).ok().map(|o| (p, o)))
        .filter(|(_, o)| text(o, tags::MODALITY) == modality)
        .collect()
}

pub fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default()
}

/// The findings an SR's measurement groups name: `nodule-N`, the end of each Tracking
/// Identifier (after the prefix OHIF looks for, `Cornerstone3DTools@^0.1.0:CircleROI:`).
pub fn tracked(sr: &dicom_object::InMemDicomObject) -> Vec<String> {
    fn walk(obj: &dicom_object::InMemDicomObject, found: &mut Vec<String>) {
        let Ok(content) = obj.element(tags::CONTENT_SEQUENCE) else {
            return;
        };
        for item in content.items().unwrap_or_default() {
            let name = item
                .element(tags::CONCEPT_NAME_CODE_SEQUENCE)
                .ok()
                .and_then(|e| e.items().and_then(|i| i.first().cloned()))
                .map(|c| text(&c, tags::CODE_VALUE));
            if name.as_deref() == Some("112039") {
                let id = text(item, tags::TEXT_VALUE);
                found.push(id.rsplit(':').next().unwrap_or_default().to_owned());
            }
            walk(item, found);
        }
    }
    let mut found = Vec::new();
    walk(sr, &mut found);
    found
}

/// Checks a verified SR: VERIFIED, the reader as Verifying Observer, the predecessor, and
/// exactly `ids` as its findings; and that dciodvfy finds no error in it.
pub fn check_verified_sr(path: &Path, reader: &str, predecessor: &str, ids: &[u32]) {
    let sr = dicom_object::open_file(path).unwrap();
    assert_eq!(text(&sr, tags::VERIFICATION_FLAG), "VERIFIED");
    let observer = &sr
        .element(tags::VERIFYING_OBSERVER_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    assert_eq!(text(observer, tags::VERIFYING_OBSERVER_NAME), reader);
    let before = &sr
        .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let series = &before
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let sop = &series
        .element(tags::REFERENCED_SOP_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    assert_eq!(text(sop, tags::REFERENCED_SOP_INSTANCE_UID), predecessor);
    let expected: Vec<String> = ids.iter().map(|i| format!("nodule-{i}")).collect();
    assert_eq!(tracked(&sr), expected, "only the accepted findings");
    let (errors, all) = dciodvfy(path);
    assert!(
        errors.is_empty(),
        "dciodvfy errors in the verified SR:\n{all}"
    );
}

/// The SOP Instance UIDs QIDO-RS finds in the study with `modality`.
pub fn qido(reviewed: &Reviewed, modality: &str) -> Vec<String> {
    let found = reviewed.get(&format!(
        "/dicomweb/studies/{}/instances?Modality={modality}",
        reviewed.study
    ));
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_reader_accepts_and_rejects_findings_signs_and_the_verified_sr_reaches_the_pacs() {
    let dir = scratch("review-api");
    let pacs_dir = dir.join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = free_port();
    let _pacs = Pacs::start(&pacs_dir, pacs_port);
    let reviewed = analysed(&dir, pacs_port, &[]);
    let (server, study) = (&reviewed.server, reviewed.study.clone());
    let report = reviewed.report();
    assert_eq!(report["review"]["status"], "unreviewed", "{report}");
    assert!(report["findings"][0]["review"].is_null());
    assert!(report["findings"].as_array().unwrap().len() >= 2);
    let unverified = qido(&reviewed, "SR");
    assert_eq!(unverified.len(), 1);

    // Who may not decide: a read-only token (as a bearer, and to sign in), no token, a
    // browser without its CSRF token, a proxy header that is not trusted.
    let accept = json!({ "verdict": "accepted" });
    let refused = put(server, &study, 1, &accept)
        .bearer_auth(&reviewed.viewer)
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        Browser::sign_in(server, &reviewed.viewer).err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        Browser::sign_in(server, "pulmo_nobody").err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let proxied = put(server, &study, 1, &accept)
        .header("x-remote-user", "mallory")
        .send()
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::UNAUTHORIZED);
    let browser = Browser::sign_in(server, &reviewed.reader).unwrap();
    let forged = browser
        .with(put(server, &study, 1, &accept), false)
        .send()
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let wrong = put(server, &study, 1, &accept)
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", "pulmo_guess")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN, "a wrong CSRF token");
    let bad = browser
        .with(put(server, &study, 1, &json!({ "verdict": "maybe" })), true)
        .send()
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let missing = browser
        .with(put(server, &study, 99, &accept), true)
        .send()
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The reader accepts finding 1 as ground glass, rejects finding 2 (a script could do
    // the same with the bearer token).
    let corrected = json!({ "verdict": "accepted", "type": "ground-glass", "comment": "faint" });
    let answer = browser
        .with(put(server, &study, 1, &corrected), true)
        .send()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let reject = json!({ "verdict": "rejected", "comment": "vessel" });
    let answer = put(server, &study, 2, &reject)
        .bearer_auth(&reviewed.reader)
        .send()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().unwrap();
    assert_eq!(body["review"]["status"], "in-progress");

    // The decisions survive a restart (the browser signs in again: sessions are memory).
    let Reviewed {
        server,
        sender,
        viewer,
        reader,
        args,
        ..
    } = reviewed;
    assert!(server.terminate().success());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&dir.join("data"), 0.3, &refs);
    let reviewed = Reviewed {
        server,
        sender,
        viewer,
        reader,
        study: study.clone(),
        args,
    };
    let server = &reviewed.server;
    let report = reviewed.report();
    let f1 = &report["findings"][0]["review"];
    assert_eq!(
        (f1["verdict"].as_str(), f1["reader"].as_str()),
        (Some("accepted"), Some("dr-reader"))
    );
    assert_eq!(
        (f1["type"].as_str(), f1["comment"].as_str()),
        (Some("ground-glass"), Some("faint"))
    );
    assert!(f1["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(report["findings"][1]["review"]["verdict"], "rejected");
    assert!(report["findings"][2]["review"].is_null(), "undecided");
    assert_eq!(report["review"]["status"], "in-progress");
    let stale = browser.with(
        client().post(server.url(&format!("/api/v1/studies/{study}/review/sign"))),
        true,
    );
    assert_eq!(
        stale.send().unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "sessions end with the process"
    );

    // Signing: a verified SR with finding 1 only, and a SEG of it, replace the unverified ones.
    let browser = Browser::sign_in(server, &reviewed.reader).unwrap();
    let sign = client().post(server.url(&format!("/api/v1/studies/{study}/review/sign")));
    let signed = browser.with(sign, true).send().unwrap();
    assert_eq!(signed.status(), StatusCode::OK);
    let signed: Value = signed.json().unwrap();
    assert_eq!(signed["reader"], "dr-reader");
    assert_eq!(signed["accepted"], 1);
    let report = reviewed.report();
    assert_eq!(report["review"]["status"], "signed");
    assert_eq!(report["review"]["reader"], "dr-reader");
    let verified = qido(&reviewed, "SR");
    assert_eq!(
        verified.len(),
        1,
        "the verified SR replaces the unverified one"
    );
    assert_ne!(verified, unverified);
    assert_eq!(qido(&reviewed, "SEG").len(), 1);

    // The PACS receives them by C-STORE, like the first results.
    let sr = wait_for("the verified SR at the PACS", || {
        received(&pacs_dir, "SR")
            .into_iter()
            .find(|(_, o)| text(o, tags::VERIFICATION_FLAG) == "VERIFIED")
    });
    check_verified_sr(&sr.0, "dr-reader", &unverified[0], &[1]);
    let segs = wait_for("the verified SEG at the PACS", || {
        let segs = received(&pacs_dir, "SEG");
        (segs.len() >= 2).then_some(segs)
    });
    let new_seg = segs
        .iter()
        .find(|(_, o)| text(o, tags::SOP_INSTANCE_UID) == qido(&reviewed, "SEG")[0])
        .expect("the verified SEG was pushed");
    let segments = new_seg
        .1
        .element(tags::SEGMENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .len();
    assert_eq!(segments, 1, "one segment: the accepted finding");
    let (errors, all) = dciodvfy(&new_seg.0);
    assert!(
        errors.is_empty(),
        "dciodvfy errors in the verified SEG:\n{all}"
    );

    // The audit log says who decided what, and who signed.
    let db = rusqlite::Connection::open(dir.join("data/pulmo.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT caller, action FROM audit WHERE study_uid = ?1 ORDER BY at")
        .unwrap();
    let audit: Vec<(String, String)> = stmt
        .query_map([&study], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let has = |who: &str, what: &str| audit.iter().any(|(c, a)| c == who && a.contains(what));
    assert!(has("dr-reader", "review finding 1 of series"), "{audit:?}");
    assert!(has("dr-reader", "accepted, type ground-glass"), "{audit:?}");
    assert!(has("dr-reader", "review finding 2 of series"), "{audit:?}");
    assert!(has("dr-reader", "review signed"), "{audit:?}");
    assert!(
        has("viewer", "PUT /api/v1/studies/"),
        "the refusal: {audit:?}"
    );

    // Researchers get every decision, without patient data, reader names or comments.
    for name in ["feedback.csv", "feedback.jsonl"] {
        let out = dir.join(name);
        let exported = crate::common::pulmo()
            .args(["feedback", "--data"])
            .arg(dir.join("data"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            exported.status.success(),
            "{}",
            String::from_utf8_lossy(&exported.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        for private in ["PHANTOM", "dr-reader", "vessel", "faint"] {
            assert!(!text.contains(private), "{name} holds {private:?}:\n{text}");
        }
        assert!(text.contains(&study), "{text}");
        assert!(
            text.contains("accepted") && text.contains("rejected"),
            "{text}"
        );
        if name.ends_with(".jsonl") {
            let rows: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(rows.len(), 2, "{text}");
            let first = rows.iter().find(|r| r["finding_id"] == 1).unwrap();
            assert_eq!(
                (first["verdict"].as_str(), first["reader_type"].as_str()),
                (Some("accepted"), Some("ground-glass"))
            );
            assert!(first["score"].as_f64().unwrap() > 0.0);
            assert_eq!(first["model_sha256"].as_str().unwrap().len(), 64);
        } else {
            assert_eq!(
                text.lines().count(),
                3,
                "a header and two decisions:\n{text}"
            );
        }
        // ... and score the model against them: one accepted, one rejected.
        let scored = crate::common::pulmo()
            .args(["evaluate", "--json", "--operating", "0", "--verdicts"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            scored.status.success(),
            "{}",
            String::from_utf8_lossy(&scored.stderr)
        );
        let models: Value = serde_json::from_slice(&scored.stdout).unwrap();
        let model = &models[0];
        assert_eq!(models.as_array().unwrap().len(), 1, "{models}");
        assert_eq!(
            (&model["all"]["accepted"], &model["all"]["rejected"]),
            (&json!(1), &json!(1)),
            "{model}"
        );
        assert_eq!(model["all"]["precision"], 0.5, "{model}");
        assert_eq!(model["at_or_above"]["0"], model["all"], "{model}");
        assert_eq!(model["type_corrected"], 1, "{model}");
    }
}

#[test]
fn a_trusted_proxy_names_the_reader_and_its_browser_still_needs_the_csrf_token() {
    let dir = scratch("review-proxy");
    let pacs_dir = dir.join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = free_port();
    let _pacs = Pacs::start(&pacs_dir, pacs_port);
    let reviewed = analysed(&dir, pacs_port, &["--trusted-user-header", "X-Remote-User"]);
    let (server, study) = (&reviewed.server, &reviewed.study);
    let as_proxy = |request: RequestBuilder| request.header("x-remote-user", "dr.proxy");
    let reject = json!({ "verdict": "rejected" });
    let without = as_proxy(put(server, study, 1, &reject)).send().unwrap();
    assert_eq!(
        without.status(),
        StatusCode::FORBIDDEN,
        "no session, no CSRF token"
    );
    let session = as_proxy(client().get(server.url("/api/v1/session")))
        .send()
        .unwrap();
    assert_eq!(session.status(), StatusCode::OK);
    let cookie = session.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = session.json().unwrap();
    assert_eq!(body["reader"], "dr.proxy");
    let csrf = body["csrf_token"].as_str().unwrap();
    let decided = as_proxy(put(server, study, 1, &reject))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .send()
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK);
    let report = reviewed.report();
    assert_eq!(report["findings"][0]["review"]["reader"], "dr.proxy");
    // Signing out ends the session.
    let out = client()
        .delete(server.url("/api/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .header("x-remote-user", "dr.proxy")
        .send()
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = as_proxy(put(server, study, 1, &reject))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .send()
        .unwrap();
    assert_eq!(after.status(), StatusCode::FORBIDDEN);
}

#[test]
fn review_page_in_headless_chromium_signs_in_decides_by_keyboard_and_buttons_and_signs() {
    let dir = scratch("review-page");
    let pacs_dir = dir.join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = free_port();
    let _pacs = Pacs::start(&pacs_dir, pacs_port);
    let reviewed = analysed(&dir, pacs_port, &[]);
    let unverified = qido(&reviewed, "SR");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/review");
    let output = crate::common::python()
        .arg(crate::common::repo("scripts/testdata/review_page.py"))
        .arg(&reviewed.server.base)
        .arg(&reviewed.study)
        .arg(&reviewed.reader)
        .arg(&reviewed.viewer)
        .arg(&shots)
        .output()
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the page script failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
    assert_eq!(seen["read_only_refused"], true);
    assert_eq!(
        (seen["after_j"].as_str(), seen["after_k"].as_str()),
        (Some("2"), Some("1")),
        "{seen}"
    );
    assert_ne!(
        seen["slice_after_j"], seen["slice_after_k"],
        "j/k jump to the finding's slice"
    );
    assert_eq!(seen["overflows"], false, "fits 1280 pixels");
    for shot in [
        "review-page-opened.png",
        "review-page-decided.png",
        "review-page-signed.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot}");
    }

    let report = reviewed.report();
    assert_eq!(report["review"]["status"], "signed");
    assert_eq!(report["findings"][0]["review"]["verdict"], "accepted");
    assert_eq!(report["findings"][1]["review"]["verdict"], "rejected");
    assert_eq!(report["findings"][1]["review"]["comment"], "vessel");
    let sr = wait_for("the verified SR at the PACS", || {
        received(&pacs_dir, "SR")
            .into_iter()
            .find(|(_, o)| text(o, tags::VERIFICATION_FLAG) == "VERIFIED")
    });
    check_verified_sr(&sr.0, "dr-reader", &unverified[0], &[1]);
}

//! pulmo beside a real PACS: Orthanc (Debian's `orthanc` and `orthanc-dicomweb`) routes
//! each stable CT series to `pulmo serve` over STOW-RS, and pulmo pushes its SR, SEG and
//! key images back into the same study in Orthanc. The configuration generated here is the
//! one `docs/pacs-integration.md` shows. The same round trip over DIMSE: Orthanc sends the
//! series to pulmo as a DICOM modality (C-STORE) and pulmo pushes the results back to
//! Orthanc's DICOM port. Then a PACS that only fails: the push ends dead after the
//! configured attempts while the webhook gets the report.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::scratch;
use crate::common::server::{client, sample, Server};
use crate::common::Scratch;
use serde_json::{json, Value};

const ORTHANC: &str = "Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// Forwards each stable CT series to pulmo; the results that come back (SR, SEG, OT) stay.
const ROUTE_LUA: &str = r#"
function OnStableSeries(seriesId, tags, metadata)
  if tags['Modality'] == 'CT' then
    local answer = RestApiPost('/dicom-web/servers/pulmo/stow',
                               DumpJson({ Resources = { seriesId } }, true))
    if answer == nil then
      print('pulmo route: forwarding series ' .. seriesId .. ' failed')
    end
  end
end
"#;

/// A port that was free a moment ago (Orthanc cannot take port 0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls `probe` until it gives a value; fails the test after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Orthanc's configuration: its own storage, loopback only, DICOMweb with pulmo as a
/// server, auto-routing by `lua`, series stable after 1 s.
fn orthanc_config(dir: &Path, http: u16, dicom: u16, pulmo_dicomweb: &str) -> Value {
    json!({
        "Name": "pulmo-test",
        "StorageDirectory": dir.join("storage"),
        "IndexDirectory": dir.join("index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "StableAge": 1,
        "Plugins": [DICOMWEB_PLUGIN],
        "LuaScripts": [dir.join("route.lua")],
        "DicomWeb": {
            "Enable": true,
            "Root": "/dicom-web/",
            "ChunkedTransfers": true,
            "Servers": { "pulmo": [pulmo_dicomweb] }
        }
    })
}

/// A running Orthanc, stopped (and waited for) when dropped.
struct Orthanc {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Orthanc {
    /// Starts Orthanc with its REST API on `http` and waits until it answers.
    fn start_on(dir: &Path, http: u16, pulmo_dicomweb: &str) -> Orthanc {
        let config = orthanc_config(dir, http, free_port(), pulmo_dicomweb);
        Orthanc::start_with(dir, http, &config, ROUTE_LUA)
    }

    /// Starts Orthanc with `config` (REST API on `http`) and `lua` as its `route.lua`.
    fn start_with(dir: &Path, http: u16, config: &Value, lua: &str) -> Orthanc {
        assert!(
            Path::new(DICOMWEB_PLUGIN).exists(),
            "{DICOMWEB_PLUGIN} is missing: install orthanc-dicomweb (scripts/setup/setup.sh --test)"
        );
        std::fs::write(dir.join("route.lua"), lua).unwrap();
        let config_path = dir.join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let log = dir.join("orthanc.log");
        // Orthanc's DICOM client (dcmtk) leaves Nagle on unless told.
        let child = Command::new(ORTHANC)
            .env("TCP_NODELAY", "1")
            .arg(&config_path)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("orthanc.err")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "could not start {ORTHANC}: {err}; install orthanc (scripts/setup/setup.sh --test)"
                )
            });
        let orthanc = Orthanc {
            child,
            base: format!("http://127.0.0.1:{http}"),
            log,
        };
        wait_for("Orthanc to answer", Duration::from_secs(30), || {
            orthanc.get("/system")
        });
        orthanc
    }

    fn get(&self, path: &str) -> Option<Value> {
        let response = client().get(format!("{}{path}", self.base)).send().ok()?;
        response
            .status()
            .is_success()
            .then(|| response.json().ok())?
    }

    /// Stores one file through Orthanc's REST API; returns Orthanc's answer.
    fn upload(&self, file: &Path) -> Value {
        let response = client()
            .post(format!("{}/instances", self.base))
            .header("content-type", "application/dicom")
            .body(std::fs::read(file).unwrap())
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().unwrap()
    }

    /// The modalities of a study's series, as Orthanc indexes them.
    fn modalities(&self, study: &str) -> Vec<String> {
        let series = self
            .get(&format!("/studies/{study}/series"))
            .unwrap_or_default();
        let series = series.as_array().cloned().unwrap_or_default();
        let mut found: Vec<String> = series
            .iter()
            .filter_map(|s| s["MainDicomTags"]["Modality"].as_str().map(str::to_owned))
            .collect();
        found.sort();
        found
    }

    /// Waits until the study holds SR, SEG and key images (OT) besides its CT, within
    /// `limit`, and checks that it holds nothing else.
    fn wait_for_results(&self, study: &str, limit: Duration) {
        let modalities = wait_for("SR, SEG and key images in Orthanc", limit, || {
            let found = self.modalities(study);
            // Orthanc files the pushed instances one by one: wait for all three kinds.
            let all = ["SR", "SEG", "OT"]
                .iter()
                .all(|k| found.iter().any(|m| m == k));
            all.then_some(found)
        });
        assert_eq!(modalities, ["CT", "OT", "SEG", "SR"], "{}", self.log_tail());
    }

    /// The Study Instance UID of Orthanc's study `study`.
    fn study_uid(&self, study: &str) -> String {
        self.get(&format!("/studies/{study}")).unwrap()["MainDicomTags"]["StudyInstanceUID"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM, then waits: a second Orthanc on the same storage would find it locked.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    child.wait().unwrap()
}

/// A running `pulmo serve` with the deterministic test model.
fn unix_now() -> f64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_secs_f64()
}

#[test]
fn orthanc_routes_a_ct_series_to_pulmo_and_gets_sr_and_seg_back_in_the_same_study() {
    let dir = scratch("orthanc-roundtrip");
    let orthanc_http = free_port();
    let pulmo = Server::spawn(
        &dir.join("pulmo-data"),
        1.0,
        &[
            "--push-url",
            &format!("http://127.0.0.1:{orthanc_http}/dicom-web"),
            "--push-backoff-seconds",
            "0.5",
        ],
    );
    let orthanc = Orthanc::start_on(&dir, orthanc_http, &format!("{}/dicomweb", pulmo.base));
    let files = sample().0;
    let study = upload_sample(&orthanc);
    let uploaded = Instant::now();
    let uploaded_at = unix_now();
    let limit = Duration::from_secs(120);
    orthanc.wait_for_results(&study, limit);
    let elapsed = uploaded.elapsed();

    // pulmo analysed the series once and shows its push done at the first attempt.
    let study_uid = orthanc.study_uid(&study);
    // Orthanc can show the last instance before its answer to the STOW request has reached
    // pulmo, so wait for pulmo to file the push's outcome before reading it.
    let status = wait_for("pulmo to file the push's outcome", limit, || {
        let status = pulmo.get_json(&format!("/api/v1/studies/{study_uid}")).1;
        let sending = status["jobs"][0]["push"]["state"] == "sending";
        (!sending).then_some(status)
    });
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{status}");
    assert_eq!(jobs[0]["push"]["state"], "done", "{status}");
    assert_eq!(jobs[0]["push"]["attempts"], 1, "{status}");
    assert_eq!(status["instances"], files.len());
    let since = |value: &Value| value.as_f64().map_or(f64::NAN, |t| t - uploaded_at);
    eprintln!(
        "orthanc round trip, {} CT slices: after Orthanc stored the last one, pulmo queued the \
         job at +{:.2} s, finished it at +{:.2} s, pushed at +{:.2} s; SR and SEG seen in \
         Orthanc at +{:.2} s",
        files.len(),
        since(&jobs[0]["created_at"]),
        since(&jobs[0]["finished_at"]),
        since(&jobs[0]["push"]["finished_at"]),
        elapsed.as_secs_f64()
    );
    let dead = pulmo.get_json("/api/v1/pushes?state=dead").1;
    assert_eq!(dead, json!([]));
}

/// What a peer received: each request's first line and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A peer on port 0 that answers every request with `status`.
fn peer(status: u16) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let requests = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut first, mut length) = (String::new(), 0);
            reader.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            requests
                .lock()
                .unwrap()
                .push((first.trim().to_owned(), body));
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

/// Sends the sample series to pulmo in one STOW-RS request.
fn stow_to(pulmo: &Server, files: &[PathBuf]) {
    let boundary = "pulmo-orthanc-test";
    let mut body = Vec::new();
    for file in files {
        write!(
            body,
            "--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
        )
        .unwrap();
        body.extend(std::fs::read(file).unwrap());
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let response = client()
        .post(format!("{}/dicomweb/studies", pulmo.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

#[test]
fn a_pacs_that_keeps_failing_gets_a_bounded_number_of_attempts_and_the_push_ends_dead() {
    let dir = scratch("push-dead-letter");
    let (pacs, stow_requests) = peer(503);
    let (webhook, reports) = peer(204);
    let pulmo = Server::spawn(
        &dir.join("pulmo-data"),
        1.0,
        &[
            "--push-url",
            &format!("{pacs}/dicom-web"),
            "--webhook-url",
            &format!("{webhook}/hooks/pulmo"),
            "--push-max-attempts",
            "3",
            "--push-backoff-seconds",
            "0.2",
            "--push-backoff-cap-seconds",
            "0.3",
        ],
    );
    stow_to(&pulmo, &sample().0);
    let dead = wait_for("a dead push", Duration::from_secs(120), || {
        let dead = pulmo.get_json("/api/v1/pushes?state=dead").1;
        (dead.as_array()?.len() == 1).then_some(dead)
    });
    assert_eq!(dead[0]["target"], "stow", "{dead}");
    assert_eq!(dead[0]["attempts"], 3, "{dead}");
    let error = dead[0]["last_error"].as_str().unwrap();
    assert!(error.contains("503"), "{error}");
    let job = pulmo
        .get_json(&format!("/api/v1/jobs/{}", dead[0]["job_id"]))
        .1;
    assert_eq!(job["push"]["state"], "dead", "{job}");
    assert_eq!(job["webhook"]["state"], "done", "{job}");

    let stow_requests = stow_requests.lock().unwrap();
    assert_eq!(stow_requests.len(), 3, "no attempt after the push is dead");
    assert_eq!(stow_requests[0].0, "POST /dicom-web/studies HTTP/1.1");
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].0, "POST /hooks/pulmo HTTP/1.1");
    let report: Value = serde_json::from_slice(&reports[0].1).unwrap();
    assert_eq!(report["model"]["id"], "threshold-test");
}

/// Forwards each stable CT series to the DICOM modality `pulmo` by C-STORE (Lua's
/// `SendToModality` takes an instance, so a series goes through the REST route).
const ROUTE_DIMSE_LUA: &str = r#"
function OnStableSeries(seriesId, tags, metadata)
  if tags['Modality'] == 'CT' then
    local answer = RestApiPost('/modalities/pulmo/store', seriesId)
    if answer == nil then
      print('pulmo route: sending series ' .. seriesId .. ' failed')
    end
  end
end
"#;

/// The upload of the sample series into Orthanc's REST API; returns Orthanc's study id.
fn upload_sample(orthanc: &Orthanc) -> String {
    let mut study = String::new();
    for file in &sample().0 {
        study = orthanc.upload(file)["ParentStudy"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    study
}

/// pulmo over DIMSE with Orthanc (AE `ORTHANC`) as its only peer, pushing back by C-STORE
/// to Orthanc's DICOM port; returns it and its DIMSE port.
fn pulmo_over_dimse(dir: &Scratch, orthanc_dicom: u16) -> (Server, u16) {
    let peers = dir.join("peers.toml");
    std::fs::write(
        &peers,
        "[[peer]]\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\n",
    )
    .unwrap();
    let push = format!("ORTHANC@127.0.0.1:{orthanc_dicom}");
    let mut pulmo = Server::spawn(
        &dir.join("pulmo-data"),
        1.0,
        &[
            "--dimse-listen",
            "127.0.0.1:0",
            "--dimse-peers",
            peers.to_str().unwrap(),
            "--push-dimse",
            &push,
            "--push-backoff-seconds",
            "0.5",
        ],
    );
    let line = pulmo.next_line();
    let port = line
        .strip_prefix("pulmo DIMSE listening on 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("unexpected DIMSE line {line:?}"));
    (pulmo, port)
}

#[test]
fn orthanc_forwards_a_ct_series_to_pulmo_by_c_store_and_gets_the_results_back_by_c_store() {
    let dir = scratch("orthanc-dimse");
    let (orthanc_http, orthanc_dicom) = (free_port(), free_port());
    let (pulmo, pulmo_dicom) = pulmo_over_dimse(&dir, orthanc_dicom);
    let mut config = orthanc_config(&dir, orthanc_http, orthanc_dicom, "http://127.0.0.1:9");
    config["DicomAet"] = json!("ORTHANC");
    config["DicomModalities"] = json!({ "pulmo": ["PULMO", "127.0.0.1", pulmo_dicom] });
    let orthanc = Orthanc::start_with(&dir, orthanc_http, &config, ROUTE_DIMSE_LUA);
    let study = upload_sample(&orthanc);
    let limit = Duration::from_secs(120);
    orthanc.wait_for_results(&study, limit);
    let study_uid = orthanc.study_uid(&study);
    let status = wait_for("pulmo to file the push's outcome", limit, || {
        let status = pulmo.get_json(&format!("/api/v1/studies/{study_uid}")).1;
        (status["jobs"][0]["dimse"]["state"] == "done").then_some(status)
    });
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "one analysis of the forwarded series: {status}"
    );
    assert_eq!(status["instances"], sample().0.len());
}

#[test]
fn orthanc_pulls_a_study_from_pulmo_as_a_remote_dicomweb_server_with_a_token() {
    use crate::common::server::{dicom_parts, multipart, report_as, token, CONTENT_TYPE};
    let dir = scratch("orthanc-pull");
    let (sender, sender_entry) = token("pacs", "send");
    let (reader, reader_entry) = token("orthanc", "read");
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, format!("{sender_entry}\n{reader_entry}")).unwrap();
    let pulmo = Server::start(
        &dir.join("pulmo-data"),
        0.3,
        &["--tokens", tokens.to_str().unwrap()],
    );
    let (files, study_uid) = sample();
    let response = client()
        .post(pulmo.url("/dicomweb/studies"))
        .bearer_auth(&sender)
        .header("content-type", CONTENT_TYPE)
        .body(multipart(&dicom_parts(&files)))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    report_as(&pulmo, &study_uid, &reader);

    // pulmo as one of Orthanc's DICOMweb servers, its read token as a header.
    let http = free_port();
    let mut config = orthanc_config(&dir, http, free_port(), "unused");
    config["DicomWeb"]["Servers"] = json!({ "pulmo": {
        "Url": format!("{}/dicomweb", pulmo.base),
        "HttpHeaders": { "Authorization": format!("Bearer {reader}") },
    }});
    let orthanc = Orthanc::start_with(&dir, http, &config, "");
    // Orthanc's DICOMweb client searches pulmo (QIDO-RS), then retrieves (WADO-RS).
    let found = client()
        .post(format!("{}/dicom-web/servers/pulmo/qido", orthanc.base))
        .json(&json!({ "Uri": "/studies", "Arguments": { "StudyInstanceUID": study_uid } }))
        .send()
        .unwrap();
    assert!(found.status().is_success(), "{}", orthanc.log_tail());
    let found: Value = found.json().unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    let retrieved = client()
        .post(format!("{}/dicom-web/servers/pulmo/retrieve", orthanc.base))
        .json(&json!({ "Resources": [{ "Study": study_uid }] }))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    assert!(
        retrieved.status().is_success(),
        "{}: {}",
        retrieved.status(),
        orthanc.log_tail()
    );
    let studies = orthanc.get("/studies").unwrap();
    let study = studies[0].as_str().unwrap().to_owned();
    assert_eq!(orthanc.study_uid(&study), study_uid);
    // The CT as sent, and pulmo's results, in the same study.
    assert_eq!(orthanc.modalities(&study), ["CT", "OT", "SEG", "SR"]);
    let instances = orthanc.get(&format!("/studies/{study}/instances")).unwrap();
    let held = instances.as_array().unwrap().len();
    // Every CT slice, the SR, the SEG and at least one key image.
    assert!(
        held >= files.len() + 3,
        "{held} instances for {} files",
        files.len()
    );
    // One file, bit for bit as the scanner sent it to pulmo.
    let sop =
        crate::common::server::attribute(&files[0], dicom_dictionary_std::tags::SOP_INSTANCE_UID);
    let lookup = client()
        .post(format!("{}/tools/lookup", orthanc.base))
        .body(sop)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let id = lookup[0]["ID"].as_str().unwrap();
    let stored = client()
        .get(format!("{}/instances/{id}/file", orthanc.base))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        stored[..] == std::fs::read(&files[0]).unwrap()[..],
        "Orthanc's copy differs from the file sent"
    );
}

#[test]
fn a_prior_only_the_pacs_holds_is_retrieved_over_dicomweb_and_compared_with() {
    use crate::common::server::{dicom_parts, multipart, report, stow};
    use crate::followup::{check_against_truth, pair};

    let pair = pair();
    let truth = pair.truth();
    let study = |case: usize| truth["cases"][case]["study_instance_uid"].as_str().unwrap();
    let files = |visit: &str| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(pair.study(visit))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    };
    // The PACS holds the patient's scan of a year ago; pulmo has never seen it.
    let dir = scratch("orthanc-priors");
    let http = free_port();
    let config = orthanc_config(&dir, http, free_port(), "http://127.0.0.1:9/none");
    let orthanc = Orthanc::start_with(&dir, http, &config, "");
    for file in files("prior") {
        orthanc.upload(&file);
    }
    let data = dir.join("pulmo");
    std::fs::create_dir_all(&data).unwrap();
    let pacs = format!("{}/dicom-web", orthanc.base);
    let pulmo = Server::start(&data, 0.3, &["--priors-from", &pacs]);

    // The new scan arrives: pulmo finds the prior at the PACS, retrieves and compares.
    let answer = stow(
        &pulmo,
        "/dicomweb/studies",
        multipart(&dicom_parts(&files("current"))),
    );
    assert!(answer.status().is_success(), "{}", answer.status());
    let current = report(&pulmo, study(1));
    assert_eq!(
        current["comparison"]["prior_study_instance_uid"],
        study(0),
        "{}\n{}",
        current["comparison"],
        current["warnings"]
    );
    // The retrieved prior is stored and analysed in its own right (research lane), so a
    // later follow-up finds it here; its analysis is the one the comparison used.
    let prior = report(&pulmo, study(0));
    assert_eq!(prior["comparison"], Value::Null);
    check_against_truth(&current, &prior, &truth);
    let (_, jobs) = pulmo.get_json(&format!("/api/v1/studies/{}", study(1)));
    assert_eq!(
        jobs["jobs"].as_array().map(Vec::len),
        Some(1),
        "the current study is not analysed again once its prior is: {jobs}"
    );
}

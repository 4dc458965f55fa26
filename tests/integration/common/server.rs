//! A running `pulmo serve` for tests, and the HTTP helpers they share.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use reqwest::blocking::{Body, Client, Response};
use reqwest::StatusCode;
use serde_json::Value;

use super::pulmo;

/// A running `pulmo serve` with the deterministic test model, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts a server and waits until it is ready.
    pub fn start(data: &Path, quiet_seconds: f64, extra: &[&str]) -> Server {
        let server = Server::spawn(data, quiet_seconds, extra);
        wait_for("readiness", || {
            let ready = client().get(server.url("/readyz")).send().ok()?;
            (ready.status() == StatusCode::OK).then_some(())
        });
        server
    }

    /// Starts a server and returns once it listens.
    pub fn spawn(data: &Path, quiet_seconds: f64, extra: &[&str]) -> Server {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-test");
        let mut child = pulmo()
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--device", "cpu"])
            .arg("--data")
            .arg(data)
            .arg("--model")
            .arg(model)
            .args(["--quiet-seconds", &quiet_seconds.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("pulmo serve starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("pulmo listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child,
            base,
            _stdout: stdout,
        }
    }

    /// The next line the server prints (after the HTTP address: the DIMSE one, when
    /// `--dimse-listen` was given).
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self._stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = client().get(self.url(path)).send().unwrap();
        let status = response.status();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// Stops the process the hard way, as a crash or `kill -9` would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to end by itself.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(sent.unwrap().success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> Client {
    // reqwest uses rustls without a default provider (pulmo links ring for it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Polls `probe` until it gives a value; fails the test after two minutes.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const BOUNDARY: &str = "pulmo-test-boundary-7d1f";
pub const CONTENT_TYPE: &str =
    "multipart/related; type=\"application/dicom\"; boundary=pulmo-test-boundary-7d1f";

/// A multipart/related body of `(content type, bytes)` parts.
pub fn multipart(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (content_type, bytes) in parts {
        write!(body, "--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n").unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    body
}

/// Posts a body chunked (no Content-Length), as streaming PACS clients do.
pub fn stow(server: &Server, path: &str, body: Vec<u8>) -> Response {
    let start = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    client()
        .post(server.url(path))
        .header("content-type", CONTENT_TYPE)
        .body(Body::new(std::io::Cursor::new(body)))
        .send()
        .unwrap_or_else(|err| panic!("POST {path} {start:?}: {err:?}"))
}

pub fn dicom_parts(files: &[PathBuf]) -> Vec<(&'static str, Vec<u8>)> {
    files
        .iter()
        .map(|f| ("application/dicom", std::fs::read(f).unwrap()))
        .collect()
}

/// The sample study: its files, and its Study Instance UID.
pub fn sample() -> (Vec<PathBuf>, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-dicom/phantom-4242");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    (
        files.clone(),
        attribute(&files[0], tags::STUDY_INSTANCE_UID),
    )
}

pub fn attribute(file: &Path, tag: dicom_core::Tag) -> String {
    let object = dicom_object::open_file(file).unwrap();
    let value = object.element(tag).unwrap().to_str().unwrap();
    value.trim_end_matches(['\0', ' ']).to_owned()
}

/// Sequence items of a DICOM JSON attribute.
pub fn items<'a>(json: &'a Value, tag: &str) -> &'a [Value] {
    json[tag]["Value"].as_array().map_or(&[], Vec::as_slice)
}

/// Waits for the study's report and returns it.
pub fn report(server: &Server, study: &str) -> Value {
    wait_for("the report", || {
        let (status, body) = server.get_json(&format!("/api/v1/studies/{study}/report"));
        let reports = body["reports"].as_array()?;
        (status == StatusCode::OK && !reports.is_empty() && body["pending"] == Value::Array(vec![]))
            .then(|| reports[0].clone())
    })
}

/// Waits for the study's report, asked for with the bearer `token`, and returns it.
pub fn report_as(server: &Server, study: &str, token: &str) -> Value {
    wait_for("the report", || {
        let response = client()
            .get(server.url(&format!("/api/v1/studies/{study}/report")))
            .bearer_auth(token)
            .send()
            .ok()?;
        let status = response.status();
        let body: Value = response.json().ok()?;
        let reports = body["reports"].as_array()?;
        (status == StatusCode::OK && !reports.is_empty() && body["pending"] == Value::Array(vec![]))
            .then(|| reports[0].clone())
    })
}

/// Posts a STOW-RS body over a plain socket, reading the answer while still sending: a
/// server may answer early (413) and hang up, which HTTP client libraries report as a
/// send error rather than the answer.
pub fn post_raw(server: &Server, path: &str, body: Vec<u8>) -> String {
    let address = server.base.strip_prefix("http://").unwrap().to_owned();
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    let mut writer = socket.try_clone().unwrap();
    let path = path.to_owned();
    let sender = std::thread::spawn(move || {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let mut answer = vec![0; 4096];
    let n = socket.read(&mut answer).unwrap();
    let _ = sender.join();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Makes a token with `pulmo token` and returns (token, tokens-file entry).
pub fn token(name: &str, role: &str) -> (String, String) {
    let output = pulmo()
        .args(["token", "--name", name, "--role", role])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("# ")
        .to_owned();
    assert!(token.starts_with("pulmo_"), "{text}");
    assert!(
        !text.lines().skip(2).any(|l| l.contains(&token)),
        "the file must not hold the token"
    );
    (token, text)
}

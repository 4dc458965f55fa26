//! `pulmo serve` against its own OpenAPI description, probed by a third-party client:
//! schemathesis (from `requirements-test.txt`) with every check and every phase, on a server
//! with a token and real results, so that answers with bodies (reports, jobs, DICOM JSON,
//! WADO-RS) are checked too and not only the refusals.
//!
//! A short, deterministic run; `scripts/eval/schemathesis` runs the same with more examples
//! and a seed (`PULMO_SCHEMATHESIS_EXAMPLES`, `PULMO_SCHEMATHESIS_SEED`).

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::server::*;
use crate::common::{pulmo, repo, scratch, succeeds};

/// Examples per operation and phase in the test's run: enough to reach every documented
/// answer, short enough for a loaded 2-core machine.
const EXAMPLES: u32 = 25;

#[test]
fn the_api_answers_as_its_openapi_description_says() {
    let st = repo(".venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: install the test tools (scripts/setup/setup.sh --test)",
        st.display()
    );
    let data = scratch("schemathesis");
    let tokens = data.join("tokens.toml");
    let token = tokens_file(&tokens);
    let server = Server::start(&data, 0.3, &["--tokens", tokens.to_str().unwrap()]);
    let known = seed(&server, &token);
    // The description itself needs a token; schemathesis reads it from a file.
    let document = client()
        .get(server.url("/openapi.json"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    std::fs::write(data.join("openapi.json"), document).unwrap();
    std::fs::write(data.join("schemathesis.toml"), known.config()).unwrap();
    let run = Run {
        st,
        dir: &data,
        base: &server.base,
        token: &token,
    };
    // `analyze` and signing a review supersede the results whose UIDs the config names,
    // so they go last.
    run.check(&[
        "--exclude-operation-id",
        "analyze",
        "--exclude-operation-id",
        "sign",
    ]);
    run.check(&[
        "--include-operation-id",
        "analyze",
        "--include-operation-id",
        "sign",
    ]);
}

/// One schemathesis run against the server, from `dir` (description, config, tokens).
struct Run<'a> {
    st: PathBuf,
    dir: &'a Path,
    base: &'a str,
    token: &'a str,
}

impl Run<'_> {
    /// Runs every check on the operations `filter` selects; fails the test on any failure.
    fn check(&self, filter: &[&str]) {
        let examples = setting("PULMO_SCHEMATHESIS_EXAMPLES").unwrap_or(EXAMPLES);
        // The test is deterministic; a longer run by hand may pick a seed.
        let randomness = match setting("PULMO_SCHEMATHESIS_SEED") {
            Some(seed) => vec!["--seed".to_owned(), seed.to_string()],
            None => vec!["--generation-deterministic".to_owned()],
        };
        let output = Command::new(&self.st)
            .args(["--config-file", "schemathesis.toml", "run", "openapi.json"])
            .args(["--url", self.base])
            .args(filter)
            .args(["--checks", "all", "--max-examples", &examples.to_string()])
            .args(randomness)
            .args(["--suppress-health-check", "too_slow"])
            .args(["--request-timeout", "60", "--no-color"])
            .env("PULMO_TOKEN", self.token)
            .env(
                "SCHEMATHESIS_HOOKS",
                repo("scripts/eval/schemathesis_hooks.py"),
            )
            .current_dir(self.dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{stdout}");
        assert!(
            output.status.success(),
            "schemathesis {filter:?} ({}): answers that do not match /openapi.json, or a \
             failed run:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Writes a tokens file with one token that may send and read, and returns the token.
fn tokens_file(path: &Path) -> String {
    let output = succeeds(pulmo().args([
        "token",
        "--name",
        "schemathesis",
        "--role",
        "send",
        "--role",
        "read",
        "--role",
        "review",
    ]));
    let text = String::from_utf8(output.stdout).unwrap();
    std::fs::write(path, &text).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("# pulmo_"))
        .unwrap_or_else(|| panic!("no token in {text:?}"));
    format!("pulmo_{token}")
}

/// The operations on one instance, whose UIDs are drawn from the known ones more often.
const INSTANCE_OPERATIONS: [&str; 6] = [
    "retrieve_instance",
    "instance_metadata",
    "bulk_data",
    "retrieve_frames",
    "render_instance",
    "render_frame",
];

/// Identifiers that exist on the server, for schemathesis to use as well as its own.
struct Known {
    study: String,
    series: String,
    instance: String,
    job: i64,
}

impl Known {
    /// A schemathesis config: any warning fails the run (such as an operation that only
    /// ever answered 404, so its answers were never checked), the token for the `bearer` scheme (from `PULMO_TOKEN`, so that
    /// schemathesis can also leave it out and expect 401), and each path parameter drawn
    /// from these half of the time (nine times in ten for the WADO-RS operations on one
    /// instance, whose three UIDs must all match; frame 1 and Pixel Data likewise).
    fn config(&self) -> String {
        let Known {
            study,
            series,
            instance,
            job,
        } = self;
        let known = |probability: f64| {
            ["study", "series", "instance"]
                .map(|name| {
                    format!("\"path.{name}\" = {{ dictionary = \"{name}\", probability = {probability} }}\n")
                })
                .concat()
        };
        format!(
            "warnings.fail-on = true\n\n\
             [auth.openapi.bearer]\n\
             bearer = \"${{PULMO_TOKEN}}\"\n\n\
             [dictionaries]\n\
             study = {{ values = [\"{study}\"] }}\n\
             series = {{ values = [\"{series}\"] }}\n\
             instance = {{ values = [\"{instance}\"] }}\n\
             job = {{ values = [{job}] }}\n\
             frames = {{ values = [\"1\"] }}\n\
             bulk = {{ values = [\"7FE00010\"] }}\n\n\
             [parameters]\n\
             {}\
             \"path.id\" = {{ dictionary = \"job\", probability = 0.5 }}\n\
             \"path.frames\" = {{ dictionary = \"frames\", probability = 0.9 }}\n\
             \"path.path\" = {{ dictionary = \"bulk\", probability = 0.9 }}\n\
             {}",
            known(0.5),
            INSTANCE_OPERATIONS
                .map(|id| format!(
                    "\n[[operations]]\ninclude-operation-id = \"{id}\"\n[operations.parameters]\n{}",
                    known(0.9)
                ))
                .concat()
        )
    }
}

/// Sends the sample study, waits for its report, and returns its CT series and an
/// instance of it (frames and rendered images need an image).
fn seed(server: &Server, token: &str) -> Known {
    let (files, study) = sample();
    let response = client()
        .post(server.url("/dicomweb/studies"))
        .bearer_auth(token)
        .header("content-type", CONTENT_TYPE)
        .body(multipart(&dicom_parts(&files)))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let get = |path: &str| -> Value {
        let response = client()
            .get(server.url(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().unwrap()
    };
    let job = wait_for("the report", || {
        let status = get(&format!("/api/v1/studies/{study}"));
        let job = &status["jobs"][0];
        (job["state"] == "done").then(|| job["id"].as_i64().unwrap())
    });
    let series = get(&format!("/dicomweb/studies/{study}/series?Modality=CT"));
    let series = first_uid(&series, "0020000E");
    let instances = get(&format!(
        "/dicomweb/studies/{study}/series/{series}/instances"
    ));
    let instance = first_uid(&instances, "00080018");
    Known {
        study,
        series,
        instance,
        job,
    }
}

fn first_uid(datasets: &Value, tag: &str) -> String {
    datasets[0][tag]["Value"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no {tag} in {datasets}"))
        .to_owned()
}

/// A number from the environment, for longer runs by hand.
fn setting(name: &str) -> Option<u32> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value:?}")))
}

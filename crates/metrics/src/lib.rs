//! Metrics: every metric pulmo exports, in one place, with one prefix (`pulmo_`) and base
//! units (seconds, bytes). Stages call the functions here; `/metrics` renders them in the
//! Prometheus text format. Without an installed recorder (the CLI) every call is a no-op.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    install_for(None)
}

/// Installs the recorder once, every metric labelled `node` with `node` when given (one
/// of several nodes sharing a job store); the first call decides.
pub fn install_for(node: Option<&str>) -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ];
        let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
        let builder = match node {
            Some(node) => PrometheusBuilder::new().add_global_label("node", node),
            None => PrometheusBuilder::new(),
        };
        builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &batch))
            .expect("bucket lists are not empty. This is a bug.")
            .install_recorder()
            .expect("only this function installs a recorder, once. This is a bug.")
    })
}

const BATCH_SIZE: &str = "pulmo_inference_batch_size";

/// How long one stage took for one series or request: `receive`, `decode`, `preprocess`,
/// `inference`, `postprocess`, `encode`, `push`, `total`.
pub fn stage(stage: &'static str, seconds: f64) {
    histogram!("pulmo_stage_duration_seconds", "stage" => stage).record(seconds);
}

/// The number of tiles in one network call.
pub fn batch_size(tiles: usize) {
    histogram!(BATCH_SIZE).record(tiles as f64);
}

/// How long claiming a job from the store took (whether or not one was there).
pub fn claim(seconds: f64) {
    histogram!("pulmo_store_claim_seconds").record(seconds);
}

/// Jobs whose node's lease ran out, taken back into the queue by this node.
pub fn jobs_taken_over(jobs: u64) {
    counter!("pulmo_jobs_taken_over_total").increment(jobs);
}

/// Jobs waiting in one lane now.
pub fn queue_depth(lane: &'static str, jobs: u32) {
    gauge!("pulmo_queue_jobs", "lane" => lane).set(f64::from(jobs));
}

/// Instances stored (`new` false: a re-send of a known instance).
pub fn instance_stored(new: bool, bytes: u64) {
    let kind = if new { "new" } else { "resent" };
    counter!("pulmo_instances_stored_total", "kind" => kind).increment(1);
    counter!("pulmo_received_bytes_total").increment(bytes);
}

/// Something refused or failed, by a short stable reason (`0xC000`, `job`, `overload`...).
pub fn failure(stage: &'static str, reason: &'static str) {
    counter!("pulmo_failures_total", "stage" => stage, "reason" => reason).increment(1);
}

/// A job ended in `state` (`done`, `skipped`, `failed`).
pub fn job_ended(state: &'static str) {
    counter!("pulmo_jobs_total", "state" => state).increment(1);
}

/// An HTTP request answered.
pub fn http_request(method: &str, route: &str, status: u16, seconds: f64) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!("pulmo_http_requests_total", &labels).increment(1);
    histogram!("pulmo_http_request_duration_seconds", &labels[..2]).record(seconds);
}

/// Free space left for the data directory.
pub fn free_bytes(bytes: u64) {
    gauge!("pulmo_data_free_bytes").set(bytes as f64);
}

/// Pushes to the PACS and webhook by state now, and attempts beyond the first so far.
pub fn pushes(by_state: &[(&'static str, u64)], retries: u64) {
    for (state, count) in by_state {
        gauge!("pulmo_pushes", "state" => *state).set(*count as f64);
    }
    counter!("pulmo_push_retries_total").absolute(retries);
}

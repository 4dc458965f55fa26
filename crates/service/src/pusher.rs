//! The pusher: one async task that takes due pushes from the index and sends them, the
//! results of a job as one STOW-RS request to the PACS or by C-STORE over one association
//! to its Storage SCP, or its JSON report to a webhook.
//!
//! Files are read and bodies built off the async workers; the HTTP request itself is
//! async, a C-STORE association (dicom-ul's blocking SCU) runs off the async workers too.
//! Logs name the job, the push and the study's UID, never a URL (it may hold a password)
//! or anything the destination answered beyond its status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, StatusCode};
use tokio_util::sync::CancellationToken;

use super::push::{Auth, Destination, Failure, Push, PushState, Target};
use super::{now, store, Service};
use pulmo_core::pipeline::error_chain;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("job {0} is gone from the index")]
    NoJob(i64),
    #[error("job {0} has no result objects to push")]
    NothingToPush(i64),
    #[error("no destination is configured for {0:?} pushes")]
    NoDestination(Target),
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("the request failed")]
    Request(#[source] reqwest::Error),
    #[error("the destination answered {status}")]
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("the destination stored only some of the instances (202)")]
    Partial,
    #[error(transparent)]
    Dimse(#[from] pulmo_dimse::scu::Error),
    #[error("the C-STORE association panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

impl Error {
    /// What the index records about the failure, and whether a retry can help.
    fn failure(&self) -> Failure {
        let (permanent, retry_after) = match self {
            Error::Store(_) | Error::Request(_) | Error::Partial => (false, None),
            Error::Status {
                status,
                retry_after,
            } => (!retryable(*status), *retry_after),
            Error::Dimse(err) => (err.is_permanent(), None),
            Error::Panicked(_) => (false, None),
            _ => (true, None),
        };
        Failure {
            error: error_chain(self),
            permanent,
            retry_after,
        }
    }
}

/// Timeouts, overload and server faults may pass; other refusals will not.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The HTTP client pushes go out with: rustls with the ring provider (HTTPS without
/// OpenSSL), the platform's root certificates.
fn client() -> Result<Client, Error> {
    // Another part of the process may have installed a provider already; either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .user_agent(concat!("pulmo/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::Client)
}

/// Sends due pushes until `stop`. An attempt cut off by `stop` is due again at the next start.
pub(super) async fn run(service: Arc<Service>, stop: CancellationToken) {
    let client = match client() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "pushing results is off");
            return;
        }
    };
    loop {
        let claimed = blocking(&service, |s| s.store.pushes().claim()).await;
        if let Some(push) = claimed.flatten() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = attempt(&service, &client, push) => continue,
            }
        }
        let wait = next_wait(&service).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = service.push_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long to sleep before looking again: until the next push is due, at most 5 s.
async fn next_wait(service: &Arc<Service>) -> Duration {
    let due = blocking(service, |s| s.store.pushes().next_due())
        .await
        .flatten();
    let seconds = due.map_or(5.0, |due| (due - now()).clamp(0.01, 5.0));
    Duration::from_secs_f64(seconds)
}

/// Runs an index call off the async workers; `None` (logged) when it failed.
async fn blocking<T: Send + 'static>(
    service: &Arc<Service>,
    call: impl FnOnce(&Service) -> store::Result<T> + Send + 'static,
) -> Option<T> {
    let service = service.clone();
    match tokio::task::spawn_blocking(move || call(&service)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::error!(error = %error_chain(&err), "the push queue failed");
            None
        }
        Err(err) => {
            tracing::error!(error = %err, "a push queue call panicked");
            None
        }
    }
}

/// One attempt at one push, recorded in the index and logged (with the job and push ids:
/// they hold at every log level, where a span would not).
async fn attempt(service: &Arc<Service>, client: &Client, push: Push) {
    let (id, job, target, attempt) = (push.id, push.job_id, push.target.as_str(), push.attempts);
    let started = std::time::Instant::now();
    let sent = send(service, client, &push).await;
    pulmo_metrics::stage("push", started.elapsed().as_secs_f64());
    match sent {
        Ok(study) => {
            tracing::info!(push = id, job, target, attempt, %study, "results pushed");
            blocking(service, move |s| s.store.pushes().done(push.id)).await;
        }
        Err(err) => {
            let failure = err.failure();
            let config = service.config.push.clone();
            let recorded = blocking(service, move |s| {
                s.store.pushes().failed(&push, &failure, &config)
            })
            .await;
            let state = recorded.map_or("unrecorded", PushState::as_str);
            pulmo_metrics::failure("push", target);
            let error = error_chain(&err);
            tracing::warn!(push = id, job, target, attempt, %error, state, "push failed");
        }
    }
}

/// What one push sends.
struct Request {
    study: String,
    content_type: String,
    body: Vec<u8>,
}

/// Builds the request from the job's files and sends it; returns the study's UID.
async fn send(service: &Arc<Service>, client: &Client, push: &Push) -> Result<String, Error> {
    if push.target == Target::Dimse {
        return send_dimse(service, push.job_id).await;
    }
    let destination = service
        .config
        .push
        .destination(push.target)
        .ok_or(Error::NoDestination(push.target))?
        .clone();
    let (job, target) = (push.job_id, push.target);
    let request = tokio::task::spawn_blocking({
        let service = service.clone();
        move || build(&service, job, target)
    })
    .await
    .map_err(|err| Error::Read {
        path: PathBuf::from(format!("results/{job}")),
        source: std::io::Error::other(err.to_string()),
    })??;
    let url = match target {
        Target::Webhook => destination.url.clone(),
        _ => format!("{}/studies", destination.url.trim_end_matches('/')),
    };
    let builder = client
        .post(url)
        .timeout(service.config.push.timeout)
        .header(CONTENT_TYPE, &request.content_type)
        .header(ACCEPT, "application/dicom+json, application/json")
        .header("X-Pulmo-Job", job);
    let response = authenticated(builder, &destination)
        .body(request.body)
        .send()
        .await
        .map_err(|err| Error::Request(err.without_url()))?;
    check(target, response.status(), response.headers())?;
    Ok(request.study)
}

/// Sends the job's result files by C-STORE; returns the study's UID.
async fn send_dimse(service: &Arc<Service>, job_id: i64) -> Result<String, Error> {
    let peer = service
        .config
        .push
        .dimse
        .clone()
        .ok_or(Error::NoDestination(Target::Dimse))?;
    let options = pulmo_dimse::scu::Options {
        calling_ae_title: peer.calling_ae_title.clone(),
        timeout: service.config.push.timeout,
    };
    let service = service.clone();
    tokio::task::spawn_blocking(move || {
        let job = service
            .store
            .jobs()
            .get(job_id)?
            .ok_or(Error::NoJob(job_id))?;
        let paths = service.store.results().paths_of_job(job_id)?;
        if paths.is_empty() {
            return Err(Error::NothingToPush(job_id));
        }
        pulmo_dimse::scu::store(&peer.destination, &options, &paths)?;
        Ok(job.study_instance_uid)
    })
    .await
    .map_err(Error::Panicked)?
}

fn authenticated(builder: RequestBuilder, destination: &Destination) -> RequestBuilder {
    match &destination.auth {
        Auth::None => builder,
        Auth::Basic { user, password } => builder.basic_auth(user, Some(password)),
        Auth::Bearer(token) => builder.bearer_auth(token),
    }
}

/// A STOW-RS answer must be 200 (every instance stored); a webhook's any 2xx.
fn check(
    target: Target,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Result<(), Error> {
    match (target, status) {
        (Target::Stow, StatusCode::ACCEPTED) => Err(Error::Partial),
        (_, status) if status.is_success() => Ok(()),
        (_, status) => {
            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(Error::Status {
                status,
                retry_after,
            })
        }
    }
}

/// Reads what a push sends: every result object of the job as one multipart/related
/// body, or the job's JSON report.
fn build(service: &Service, job_id: i64, target: Target) -> Result<Request, Error> {
    let job = service
        .store
        .jobs()
        .get(job_id)?
        .ok_or(Error::NoJob(job_id))?;
    let read = |path: PathBuf| std::fs::read(&path).map_err(|source| Error::Read { path, source });
    let study = job.study_instance_uid;
    match target {
        Target::Webhook => {
            let path = job.report_path.ok_or(Error::NothingToPush(job_id))?;
            Ok(Request {
                study,
                content_type: "application/json".to_owned(),
                body: read(path)?,
            })
        }
        Target::Stow | Target::Dimse => {
            let paths = service.store.results().paths_of_job(job_id)?;
            if paths.is_empty() {
                return Err(Error::NothingToPush(job_id));
            }
            let parts = paths.into_iter().map(read).collect::<Result<Vec<_>, _>>()?;
            let (content_type, body) = multipart(&parts);
            Ok(Request {
                study,
                content_type,
                body,
            })
        }
    }
}

/// A `multipart/related; type="application/dicom"` body of DICOM files (PS3.18 10.5).
fn multipart(parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = format!("pulmo-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 96).sum());
    for part in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    (content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InstanceRow;
    use crate::{Lane, PushConfig, ServiceConfig};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// A destination on port 0 that answers each request with the next status of
    /// `statuses` (the last one repeats) and records when each request arrived.
    fn destination(statuses: &'static [u16]) -> (String, Arc<std::sync::Mutex<Vec<Instant>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/dicom-web", listener.local_addr().unwrap());
        let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
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
                reader.read_exact(&mut vec![0; length]).unwrap();
                seen.lock().unwrap().push(Instant::now());
                let status = statuses[n.min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        (url, arrivals)
    }

    /// A service whose index has one finished job with one result file, pushed to `url`.
    fn service_with_a_result(dir: &std::path::Path, url: String) -> Arc<Service> {
        let mut config = ServiceConfig::new(dir);
        config.push = PushConfig {
            stow: Some(Destination {
                url,
                auth: Auth::None,
            }),
            max_attempts: 4,
            backoff: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(250),
            ..PushConfig::default()
        };
        let service = Service::open(config).unwrap();
        let row = InstanceRow {
            sop_instance_uid: "1.1".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            path: dir.join("ct.dcm"),
            bytes: 10,
            attributes: None,
        };
        let store = &service.store;
        store.instances().put(&row, Lane::Routine).unwrap();
        store.jobs().queue_quiet(now() + 1.0).unwrap();
        let job = store.jobs().claim().unwrap().unwrap();
        let sr = dir.join("sr.dcm");
        std::fs::write(&sr, b"DICM").unwrap();
        let result = store::ResultRow {
            sop_instance_uid: "5.1".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.34".into(),
            modality: "SR".into(),
            study_uid: "1.2".into(),
            series_uid: "5".into(),
            job_id: job.id,
            path: sr,
            attributes: None,
        };
        store
            .jobs()
            .complete(&job, &dir.join("r.json"), 0, 1, &[result], &[Target::Stow])
            .unwrap();
        Arc::new(service)
    }

    /// Runs the pusher until the job's push reaches `state`; returns the push.
    async fn push_until(service: &Arc<Service>, state: PushState) -> Push {
        let stop = CancellationToken::new();
        let pusher = tokio::spawn(run(service.clone(), stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(20);
        let push = loop {
            let push = service.store.pushes().list(None, 1).unwrap().remove(0);
            if push.state == state {
                break push;
            }
            assert!(Instant::now() < deadline, "push stuck at {push:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        stop.cancel();
        pusher.await.unwrap();
        push
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_retried_with_growing_waits_until_the_push_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let (url, arrivals) = destination(&[500, 503]);
        let service = service_with_a_result(dir.path(), url);
        let push = push_until(&service, PushState::Dead).await;
        assert_eq!(push.attempts, 4);
        assert_eq!(
            push.last_error.as_deref(),
            Some("the destination answered 503 Service Unavailable")
        );
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 4, "no attempt after the push is dead");
        let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
        // 100 ms, then 200 ms, then capped at 250 ms.
        for (gap, least) in gaps.iter().zip([100, 200, 250]) {
            assert!(*gap >= Duration::from_millis(least), "gaps {gaps:?}");
        }
        assert_eq!(service.store.pushes().counts().unwrap().retries, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_is_done_once_the_destination_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (url, arrivals) = destination(&[503, 200]);
        let service = service_with_a_result(dir.path(), url);
        let push = push_until(&service, PushState::Done).await;
        assert_eq!(push.attempts, 2);
        assert_eq!(arrivals.lock().unwrap().len(), 2);
    }

    #[test]
    fn refusals_are_permanent_and_overload_is_not() {
        let status = |status, retry_after| Error::Status {
            status,
            retry_after,
        };
        assert!(status(StatusCode::BAD_REQUEST, None).failure().permanent);
        assert!(status(StatusCode::UNAUTHORIZED, None).failure().permanent);
        let busy = status(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(7)),
        );
        assert!(!busy.failure().permanent);
        assert_eq!(busy.failure().retry_after, Some(Duration::from_secs(7)));
        assert!(!Error::Partial.failure().permanent);
        assert!(Error::NothingToPush(1).failure().permanent);
    }

    #[test]
    fn the_multipart_body_holds_each_part_between_boundaries() {
        let (content_type, body) = multipart(&[b"DICM1".to_vec(), b"DICM2".to_vec()]);
        let boundary = content_type.rsplit("boundary=").next().unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains("application/dicom\r\n\r\nDICM2\r\n"));
    }
}

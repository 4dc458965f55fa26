//! STOW-RS (PS3.18 10.5): `multipart/related; type="application/dicom"` in, part by part
//! to disk, each part admitted by the service, and a DICOM JSON answer listing every
//! stored and every refused instance. The content type and the multipart framing are
//! `pulmo_dicomweb`'s; this module paces the body, writes the parts and answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use pulmo_dicomweb::{ContentTypeError, DicomPart, Part, Parts, ReadError};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use tokio::io::AsyncWriteExt;

use super::auth::Caller;
use super::dicom_json::{tag, Dataset};
use super::error::ErrorBody;
use super::params::{Query, Uid, Uids};
use super::{ApiError, AppState, StoredStudies};
use crate::service::{Accepted, Lane, Refusal, Refused};

/// Query parameters of STOW-RS.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
// In the query, so an absent value is left out, never sent as null.
#[into_params(parameter_in = Query)]
pub struct StowQuery {
    /// Priority lane of the analyses this upload starts (default: the sender's lane, else
    /// `routine`; also taken from the `X-Pulmo-Priority` header).
    pub priority: Option<Lane>,
}

/// The header that may name the lane instead of the query, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct PriorityHeader {
    /// Priority lane, when the query names none.
    #[param(rename = "X-Pulmo-Priority", value_type = Lane, required = false)]
    x_pulmo_priority: Option<Lane>,
}

/// The answers of STOW-RS (PS3.18 10.5.3), for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum StowAnswers {
    /// Every instance stored: Referenced SOP Sequence
    #[response(status = 200, content_type = "application/dicom+json")]
    Stored(Dataset),
    /// Some instances stored, some refused: Referenced and Failed SOP Sequences
    #[response(status = 202, content_type = "application/dicom+json")]
    Partly(Dataset),
    /// No instance stored: Failed SOP Sequence, each with its Failure Reason
    #[response(status = 409, content_type = "application/dicom+json")]
    NoneStored(Dataset),
    /// Malformed multipart body, no boundary, or an unknown priority
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// An instance or the request is larger than allowed
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body stalled: a pause longer than the idle timeout, or slower than the minimum rate
    #[response(status = 408)]
    Stalled(ErrorBody),
    /// Not multipart/related; type="application/dicom"
    #[response(status = 415)]
    WrongType(ErrorBody),
    /// Too many uploads, a full disk or a full queue
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait before sending again")))]
    Busy(ErrorBody),
}

/// A STOW-RS body, for the OpenAPI document: `multipart/related` parts of
/// `application/dicom`, one instance each, with the boundary in the Content-Type.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct StowBody(Vec<u8>);

/// Stores instances of any study.
#[utoipa::path(
    post, path = "/dicomweb/studies", tag = "dicomweb",
    params(StowQuery, PriorityHeader),
    request_body(content = StowBody, content_type = "multipart/related; type=\"application/dicom\""),
    responses(StowAnswers)
)]
pub async fn store_any(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<StowQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = Request {
        study: None,
        query,
        caller: caller.map(|Extension(c)| c),
    };
    store(state, request, headers, body).await
}

/// Stores instances of one study; an instance of another study is refused.
#[utoipa::path(
    post, path = "/dicomweb/studies/{study}", tag = "dicomweb",
    params(("study" = Uid, Path, description = "Study Instance UID"), StowQuery, PriorityHeader),
    request_body(content = StowBody, content_type = "multipart/related; type=\"application/dicom\""),
    responses(StowAnswers)
)]
pub async fn store_study(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    uids: Uids<1>,
    Query(query): Query<StowQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let [study] = uids.0;
    let request = Request {
        study: Some(study),
        query,
        caller: caller.map(|Extension(c)| c),
    };
    store(state, request, headers, body).await
}

/// What a STOW-RS request says besides its body.
struct Request {
    study: Option<String>,
    query: StowQuery,
    caller: Option<Caller>,
}

async fn store(
    state: AppState,
    request: Request,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let boundary = boundary(&headers)?;
    let lane = lane(&request, &headers)?;
    let permit = state.uploads.clone().try_acquire_owned().map_err(|_| {
        crate::metrics::failure("receive", "uploads");
        ApiError::Busy {
            reason: "too many uploads at once".to_owned(),
            retry_after: 2,
        }
    });
    let admitted = match permit {
        Ok(permit) => admission(&state).await.map(|()| permit),
        Err(busy) => Err(busy),
    };
    let _permit = match admitted {
        Ok(permit) => permit,
        Err(refused) => {
            super::drain(body).await;
            return Err(refused);
        }
    };
    let study = request.study;
    let limits = pulmo_dicomweb::Limits {
        max_request_bytes: state.limits.max_request_bytes,
        max_instance_bytes: state.limits.max_instance_bytes,
    };
    let (stream, reader, stalled) = forward(body, state.limits.timeouts);
    let parts = Parts::new(stream, boundary, limits);
    let received = receive_all(&state, study.as_deref(), lane, parts).await;
    let outcome = match received {
        Ok(outcome) => outcome,
        Err(refused) => {
            // Stop reading a body that is refused; the connection closes. A stalled body
            // is answered 408 with why.
            reader.abort();
            if let Some(why) = stalled.get() {
                crate::metrics::failure("receive", "stalled");
                tracing::info!(reason = %why, "upload cut off");
                return Err(ApiError::Timeout(why.clone()));
            }
            return Err(refused);
        }
    };
    // Read what follows the closing boundary before answering: a client still sending it
    // when the connection closes would see a broken pipe instead of the answer.
    let _ = reader.await;
    outcome.log(study.as_deref());
    crate::metrics::stage("receive", started.elapsed().as_secs_f64());
    let mut studies: Vec<String> = outcome
        .stored
        .iter()
        .map(|a| a.study_instance_uid.clone())
        .collect();
    studies.sort();
    studies.dedup();
    let mut response = outcome.into_response();
    response.extensions_mut().insert(StoredStudies(studies));
    Ok(response)
}

/// Refuses new uploads while the disk is nearly full or the queue is long: 503, and what
/// was already accepted is unaffected.
async fn admission(state: &AppState) -> Result<(), ApiError> {
    let limits = state.limits;
    let room = crate::transport::room(
        &state.service,
        limits.min_free_bytes,
        limits.max_queued_jobs,
    )
    .await?;
    room.map_err(|full| ApiError::Busy {
        reason: full.reason().to_owned(),
        retry_after: match full {
            crate::transport::Full::Disk { .. } => 60,
            crate::transport::Full::Queue => 30,
        },
    })
}

/// Feeds the request body to the multipart parser through a small channel, and once the
/// parser has stopped, reads (at most 1 MiB of) the rest and drops it.
///
/// A body that pauses longer than `timeouts.body_idle`, or arrives slower than
/// `timeouts.min_body_rate` on average, is cut off: the parser sees a read error and the
/// reader answers why.
fn forward(
    body: Body,
    timeouts: super::Timeouts,
) -> (
    impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
    Arc<OnceLock<String>>,
) {
    const MAX_EPILOGUE: usize = 1 << 20;
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let stalled = Arc::new(OnceLock::new());
    let why = stalled.clone();
    let reader = tokio::spawn(async move {
        let mut body = body.into_data_stream();
        let mut pace = Pace::new(timeouts);
        let mut drained = 0;
        loop {
            let chunk = match pace.next(&mut body).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return,
                Err(stalled) => {
                    let err = std::io::Error::new(std::io::ErrorKind::TimedOut, stalled.clone());
                    let _ = why.set(stalled);
                    let _ = sender.send(Err(err)).await;
                    return;
                }
            };
            let chunk = chunk.map_err(std::io::Error::other);
            if sender.is_closed() {
                drained += chunk.map_or(MAX_EPILOGUE, |c| c.len());
                if drained >= MAX_EPILOGUE {
                    return;
                }
            } else if sender.send(chunk).await.is_err() {
                continue;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (stream, reader, stalled)
}

/// How fast a body must come: no pause longer than the idle timeout, and on average at
/// least the minimum rate once the first idle timeout's grace has passed.
struct Pace {
    timeouts: super::Timeouts,
    started: tokio::time::Instant,
    received: u64,
}

impl Pace {
    fn new(timeouts: super::Timeouts) -> Pace {
        Pace {
            timeouts,
            started: tokio::time::Instant::now(),
            received: 0,
        }
    }

    /// The latest moment the next bytes may arrive.
    fn deadline(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let idle = now + self.timeouts.body_idle;
        let rate = self.timeouts.min_body_rate.max(1) as f64;
        let earned = std::time::Duration::from_secs_f64(self.received as f64 / rate);
        idle.min(self.started + self.timeouts.body_idle + earned)
    }

    /// The next chunk, `None` at the end, or why the body was cut off.
    async fn next<S, T, E>(&mut self, body: &mut S) -> Result<Option<Result<T, E>>, String>
    where
        S: futures_util::Stream<Item = Result<T, E>> + Unpin,
        T: AsRef<[u8]>,
    {
        match tokio::time::timeout_at(self.deadline(), body.next()).await {
            Ok(chunk) => {
                if let Some(Ok(bytes)) = &chunk {
                    self.received += bytes.as_ref().len() as u64;
                }
                Ok(chunk)
            }
            Err(_) => Err(self.stalled()),
        }
    }

    fn stalled(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        format!(
            "the upload stalled: {} bytes in {elapsed:.0} s (at least {} bytes/s, and no pause over {} s, are needed)",
            self.received,
            self.timeouts.min_body_rate,
            self.timeouts.body_idle.as_secs()
        )
    }
}

/// Receives, writes and admits every part.
async fn receive_all(
    state: &AppState,
    study: Option<&str>,
    lane: Lane,
    mut parts: Parts,
) -> Result<Outcome, ApiError> {
    let mut outcome = Outcome::default();
    let mut part = 0;
    while let Some(next) = parts.next().await.map_err(read_error)? {
        part += 1;
        let name = format!("part {part}");
        let dicom = match next {
            Part::Dicom(dicom) => dicom,
            Part::Other { content_type } => {
                let found = content_type.unwrap_or_else(|| "none".to_owned());
                crate::metrics::failure("receive", Refusal::CannotUnderstand.label());
                outcome.refused.push(Refused {
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    refusal: Refusal::CannotUnderstand,
                    reason: format!("{name}: content type {found}, not application/dicom"),
                });
                continue;
            }
        };
        let tmp = state.service.temporary_path();
        receive(dicom, &tmp).await?;
        let service = state.service.clone();
        let study = study.map(str::to_owned);
        let admitted =
            tokio::task::spawn_blocking(move || service.admit(&tmp, &name, study.as_deref(), lane))
                .await?;
        match admitted {
            Ok(accepted) => {
                crate::metrics::instance_stored(accepted.new, accepted.bytes);
                outcome.stored.push(accepted);
            }
            Err(refused) => {
                crate::metrics::failure("receive", refused.refusal.label());
                outcome.refused.push(refused);
            }
        }
    }
    if part == 0 {
        return Err(ApiError::BadRequest("the body holds no parts".to_owned()));
    }
    Ok(outcome)
}

/// Writes one part to `tmp` and syncs it; removes it when the body breaks off.
async fn receive(mut part: DicomPart, tmp: &std::path::Path) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    let written = async {
        while let Some(chunk) = part.chunk().await.map_err(read_error)? {
            file.write_all(&chunk)
                .await
                .map_err(|err| ApiError::internal(&err))?;
        }
        file.sync_all()
            .await
            .map_err(|err| ApiError::internal(&err))
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(tmp).await;
    }
    written
}

/// The boundary of a `multipart/related; type="application/dicom"` body.
fn boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    pulmo_dicomweb::boundary(content_type).map_err(|err| match err {
        ContentTypeError::Unsupported(_) => ApiError::UnsupportedMediaType(err.to_string()),
        ContentTypeError::NoBoundary => ApiError::BadRequest(err.to_string()),
    })
}

/// The request's lane: its query, its header, its sender's default, then `routine`.
fn lane(request: &Request, headers: &HeaderMap) -> Result<Lane, ApiError> {
    if let Some(lane) = request.query.priority {
        return Ok(lane);
    }
    match headers.get("x-pulmo-priority").map(|v| v.to_str()) {
        None => Ok(request
            .caller
            .as_ref()
            .and_then(|c| c.lane)
            .unwrap_or_default()),
        Some(Ok(text)) => text.parse().map_err(ApiError::BadRequest),
        Some(Err(_)) => Err(ApiError::BadRequest(
            "X-Pulmo-Priority is not text".to_owned(),
        )),
    }
}

fn read_error(err: ReadError) -> ApiError {
    match err {
        ReadError::RequestTooLarge { .. } | ReadError::InstanceTooLarge { .. } => {
            ApiError::TooLarge(err.to_string())
        }
        ReadError::Malformed(source) => {
            ApiError::BadRequest(format!("malformed multipart body: {source}"))
        }
    }
}

/// What one request stored and refused.
#[derive(Debug, Default)]
struct Outcome {
    stored: Vec<Accepted>,
    refused: Vec<Refused>,
}

impl Outcome {
    fn log(&self, study: Option<&str>) {
        for refused in &self.refused {
            tracing::info!(
                sop_instance = refused.sop_instance_uid.as_deref().unwrap_or("-"),
                code = refused.refusal.code(),
                reason = %refused.reason,
                "instance refused"
            );
        }
        tracing::info!(
            study = study.unwrap_or("-"),
            stored = self.stored.len(),
            new = self.stored.iter().filter(|a| a.new).count(),
            refused = self.refused.len(),
            "STOW-RS request"
        );
    }

    /// 200 every instance stored, 202 some, 409 none (PS3.18 10.5.3).
    fn status(&self) -> StatusCode {
        match (self.stored.is_empty(), self.refused.is_empty()) {
            (_, true) => StatusCode::OK,
            (false, false) => StatusCode::ACCEPTED,
            (true, false) => StatusCode::CONFLICT,
        }
    }

    fn into_response(self) -> Response {
        let status = self.status();
        let stored = self.stored.iter().map(|a| {
            Dataset::new()
                .text(tag::REFERENCED_SOP_CLASS_UID, "UI", &a.sop_class_uid)
                .text(tag::REFERENCED_SOP_INSTANCE_UID, "UI", &a.sop_instance_uid)
        });
        let refused = self.refused.iter().map(|r| {
            let mut item = Dataset::new();
            if let Some(class) = &r.sop_class_uid {
                item = item.text(tag::REFERENCED_SOP_CLASS_UID, "UI", class);
            }
            if let Some(uid) = &r.sop_instance_uid {
                item = item.text(tag::REFERENCED_SOP_INSTANCE_UID, "UI", uid);
            }
            item.number(tag::FAILURE_REASON, "US", r.refusal.code().into())
                .text(tag::ERROR_COMMENT, "LO", &r.reason)
        });
        let mut body = Dataset::new().sequence(tag::REFERENCED_SOP_SEQUENCE, stored.collect());
        if !self.refused.is_empty() {
            body = body.sequence(tag::FAILED_SOP_SEQUENCE, refused.collect());
        }
        let json = serde_json::to_vec(&body.into_value()).expect("JSON values always serialise");
        (
            status,
            [(header::CONTENT_TYPE, "application/dicom+json")],
            json,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        h
    }

    /// Which content types are taken is `pulmo_dicomweb`'s test; here, how its answers
    /// become the API's: a boundary, 415 for another type, 400 for a missing boundary.
    #[test]
    fn content_type_answers_become_api_answers() {
        let ok = boundary(&headers(
            "multipart/related; type=\"application/dicom\"; boundary=abc",
        ));
        assert_eq!(ok.unwrap(), "abc");
        assert!(matches!(
            boundary(&headers("multipart/form-data; boundary=abc")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            boundary(&headers("multipart/related; type=\"application/dicom\"")),
            Err(ApiError::BadRequest(_))
        ));
    }
}

//! pulmo's own API: jobs, study status, reports, analysing now; health and identity.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::params::{JobId, Query, Uid, Uids};
use super::{ApiError, AppState};
use crate::report::{BuildInfo, ModelInfo};
use crate::service::{Job, JobState, Lane, StudyStatus};

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "api",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Job),
              (status = 400, description = "The id is not a number", body = ErrorBody),
              (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn job(State(state): State<AppState>, JobId(id): JobId) -> Result<Json<Job>, ApiError> {
    let job = state.service.job(id).await?;
    job.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// The status of each series of a study.
#[utoipa::path(get, path = "/api/v1/studies/{study}", tag = "api",
    params(("study" = Uid, Path, description = "Study Instance UID")),
    responses((status = 200, body = StudyStatus),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "Nothing received for this study", body = ErrorBody)))]
pub async fn study(
    State(state): State<AppState>,
    uids: Uids<1>,
) -> Result<Json<StudyStatus>, ApiError> {
    let [study] = uids.0;
    let status = state.service.study_status(&study).await?;
    status
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("nothing received for study {study}")))
}

/// The current reports of a study.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StudyReports {
    pub study_instance_uid: String,
    /// One `pulmo.report/1` per analysed series (see docs/report-schema.md).
    #[schema(value_type = Vec<Object>)]
    pub reports: Vec<serde_json::Value>,
    /// Series whose analysis is still to come (receiving, queued or running).
    pub pending: Vec<String>,
    /// The reader's review of the study: `status` (`unreviewed`, `in-progress`, `signed`),
    /// `reader`, `signed_at`; null when no report was analysed.
    #[schema(value_type = Option<Object>)]
    pub review: Option<serde_json::Value>,
}

/// The JSON reports of a study: the newest finished analysis of each series.
#[utoipa::path(get, path = "/api/v1/studies/{study}/report", tag = "api",
    params(("study" = Uid, Path, description = "Study Instance UID")),
    responses((status = 200, body = StudyReports),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "Nothing received for this study", body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    uids: Uids<1>,
) -> Result<Json<StudyReports>, ApiError> {
    let [study] = uids.0;
    let Json(status) = self::study(State(state.clone()), Uids([study])).await?;
    let mut reports = Vec::new();
    let mut pending: Vec<String> = status.receiving.clone();
    let current = status
        .jobs
        .iter()
        .filter(|j| j.state == JobState::Done && j.superseded_by.is_none());
    for job in current {
        let path = job.report_path.clone().ok_or_else(|| {
            ApiError::Internal(format!("job {} is done without a report path", job.id))
        })?;
        let text = tokio::fs::read(&path)
            .await
            .map_err(|err| ApiError::internal(&err))?;
        let value = serde_json::from_slice(&text).map_err(|err| ApiError::internal(&err))?;
        reports.push(value);
    }
    let review = state.service.review(&status.study_instance_uid).await?;
    if let Some(review) = &review {
        for report in &mut reports {
            super::review::annotate(report, review);
        }
    }
    for job in &status.jobs {
        let waiting = matches!(job.state, JobState::Queued | JobState::Running);
        if waiting && !pending.contains(&job.series_instance_uid) {
            pending.push(job.series_instance_uid.clone());
        }
    }
    Ok(Json(StudyReports {
        study_instance_uid: status.study_instance_uid,
        reports,
        pending,
        review: review.and_then(|r| serde_json::to_value(r.review).ok()),
    }))
}

/// Query parameters of `analyze`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
// In the query, so an absent value is left out, never sent as null.
#[into_params(parameter_in = Query)]
pub struct AnalyzeQuery {
    /// Priority lane (default: the lane the instances were sent with).
    pub priority: Option<Lane>,
}

/// The jobs an `analyze` request queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queued {
    pub jobs: Vec<i64>,
}

/// Analyses every series of a study now, without waiting for the quiet time.
#[utoipa::path(post, path = "/api/v1/studies/{study}/analyze", tag = "api",
    params(("study" = Uid, Path, description = "Study Instance UID"), AnalyzeQuery),
    responses((status = 202, body = Queued),
              (status = 400, description = "The UID is not a DICOM UID, or the priority is not a lane", body = ErrorBody),
              (status = 404, description = "Nothing received for this study", body = ErrorBody),
              (status = 503, description = "The analysis queue is full", body = ErrorBody,
               headers(("Retry-After" = u32, description = "Seconds to wait before asking again")))))]
pub async fn analyze(
    State(state): State<AppState>,
    uids: Uids<1>,
    Query(query): Query<AnalyzeQuery>,
) -> Result<Response, ApiError> {
    let [study] = uids.0;
    super::queue_has_room(&state).await?;
    let jobs = state.service.analyze_now(&study, query.priority).await?;
    if jobs.is_empty() {
        return Err(ApiError::NotFound(format!(
            "nothing received for study {study}"
        )));
    }
    tracing::info!(%study, jobs = ?jobs, "analysis requested");
    Ok((StatusCode::ACCEPTED, Json(Queued { jobs })).into_response())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the model is loaded and warmed up and the job store answers, so uploads will be analysed.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = String, content_type = "text/plain"),
              (status = 503, description = "The model is still loading, or the job store is unreachable", body = ErrorBody,
               headers(("Retry-After" = u32, description = "Seconds to wait before asking again")))))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.service.analyzer().is_none() {
        return Err(ApiError::NotReady);
    }
    let unreachable = || ApiError::Busy {
        reason: "the job store is unreachable".into(),
        retry_after: 5,
    };
    let ping = tokio::time::timeout(Duration::from_secs(2), state.service.store_reachable());
    match ping.await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(err)) => {
            tracing::warn!(error = %crate::pipeline::error_chain(&err), "not ready: the job store failed");
            Err(unreachable())
        }
        Err(_) => {
            tracing::warn!("not ready: the job store did not answer within 2 s");
            Err(unreachable())
        }
    }
}

/// What this server is: its build, libtorch, and the model every report names.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Info {
    #[schema(value_type = Object)]
    pub pulmo: BuildInfo,
    /// `None` while the model is loading.
    #[schema(value_type = Option<Object>)]
    pub model: Option<ModelInfo>,
    /// Where inference runs, once loaded.
    pub device: Option<String>,
    /// The network's number format (`float32`, `bfloat16`, `float16`), once loaded.
    pub precision: Option<String>,
    pub ready: bool,
}

/// Build, libtorch and model identity.
#[utoipa::path(get, path = "/info", tag = "operations", responses((status = 200, body = Info)))]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    let analyzer = state.service.analyzer();
    Json(Info {
        pulmo: BuildInfo::current(crate::build_info::LIBTORCH_VERSION),
        model: analyzer.map(|a| a.model_info()),
        device: analyzer.map(|a| a.backend().device.clone()),
        precision: analyzer.map(|a| a.backend().precision.name().to_owned()),
        ready: analyzer.is_some(),
    })
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    if let Ok(counts) = state.service.push_counts().await {
        let by_state: Vec<_> = counts
            .by_state
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        crate::metrics::pushes(&by_state, counts.retries);
    }
    if let Ok(depth) = state.service.queue_depth().await {
        for lane in [Lane::Stat, Lane::Routine, Lane::Research] {
            let jobs = depth
                .iter()
                .find(|(l, _)| *l == lane)
                .map_or(0, |(_, n)| *n);
            crate::metrics::queue_depth(lane.as_str(), jobs);
        }
    }
    if let Ok(free) = fs4::available_space(state.service.config().shared_dir()) {
        crate::metrics::free_bytes(free);
    }
    let text = crate::metrics::install().render();
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    Ok((content_type, text).into_response())
}

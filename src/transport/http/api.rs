//! pulmo's own API: jobs, study status, reports, analysing now; health and identity.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::report::{BuildInfo, ModelInfo};
use crate::service::{Job, JobState, Lane};

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "api",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, description = "No such job")))]
pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Job>, ApiError> {
    let service = state.service.clone();
    let job = tokio::task::spawn_blocking(move || service.store().job(id)).await??;
    job.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// Where a study stands: instances stored, series still arriving, and every job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StudyStatus {
    pub study_instance_uid: String,
    /// Instances stored for this study.
    pub instances: u32,
    /// Series with instances that arrived after their last job was queued: waiting for
    /// the quiet time to pass.
    pub receiving: Vec<String>,
    /// Every job of the study, oldest first (superseded ones included).
    pub jobs: Vec<Job>,
}

/// The status of each series of a study.
#[utoipa::path(get, path = "/api/v1/studies/{study}", tag = "api",
    params(("study" = String, Path, description = "Study Instance UID")),
    responses((status = 200, body = StudyStatus), (status = 404, description = "Nothing received for this study")))]
pub async fn study(
    State(state): State<AppState>,
    Path(study): Path<String>,
) -> Result<Json<StudyStatus>, ApiError> {
    let service = state.service.clone();
    let uid = study.clone();
    let status = tokio::task::spawn_blocking(move || -> Result<_, crate::service::store::Error> {
        let store = service.store();
        Ok(StudyStatus {
            instances: store.study_instances(&uid)?,
            receiving: store.receiving_series(&uid)?,
            jobs: store.study_jobs(&uid)?,
            study_instance_uid: uid,
        })
    })
    .await??;
    if status.instances == 0 {
        return Err(ApiError::NotFound(format!(
            "nothing received for study {study}"
        )));
    }
    Ok(Json(status))
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
}

/// The JSON reports of a study: the newest finished analysis of each series.
#[utoipa::path(get, path = "/api/v1/studies/{study}/report", tag = "api",
    params(("study" = String, Path, description = "Study Instance UID")),
    responses((status = 200, body = StudyReports), (status = 404, description = "Nothing received for this study")))]
pub async fn report(
    State(state): State<AppState>,
    Path(study): Path<String>,
) -> Result<Json<StudyReports>, ApiError> {
    let Json(status) = self::study(State(state), Path(study)).await?;
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
    }))
}

/// Query parameters of `analyze`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
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
    params(("study" = String, Path, description = "Study Instance UID"), AnalyzeQuery),
    responses((status = 202, body = Queued), (status = 404, description = "Nothing received for this study")))]
pub async fn analyze(
    State(state): State<AppState>,
    Path(study): Path<String>,
    Query(query): Query<AnalyzeQuery>,
) -> Result<Response, ApiError> {
    let service = state.service.clone();
    let uid = study.clone();
    let jobs =
        tokio::task::spawn_blocking(move || service.analyze_now(&uid, query.priority)).await?;
    let jobs = jobs.map_err(|err| ApiError::internal(&err))?;
    if jobs.is_empty() {
        return Err(ApiError::NotFound(format!(
            "nothing received for study {study}"
        )));
    }
    tracing::info!(%study, jobs = ?jobs, "analysis requested");
    Ok((StatusCode::ACCEPTED, Json(Queued { jobs })).into_response())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the model is loaded and warmed up, so uploads will be analysed.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "The model is still loading")))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.service.analyzer() {
        Some(_) => Ok("ready\n"),
        None => Err(ApiError::NotReady),
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
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let service = state.service.clone();
    let (depth, pushes) = tokio::task::spawn_blocking(move || {
        (service.store().queue_depth(), service.store().push_counts())
    })
    .await?;
    if let Ok(counts) = pushes {
        let by_state: Vec<_> = counts
            .by_state
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        crate::metrics::pushes(&by_state, counts.retries);
    }
    if let Ok(depth) = depth {
        for lane in [Lane::Stat, Lane::Routine, Lane::Research] {
            let jobs = depth
                .iter()
                .find(|(l, _)| *l == lane)
                .map_or(0, |(_, n)| *n);
            crate::metrics::queue_depth(lane.as_str(), jobs);
        }
    }
    if let Ok(free) = fs4::available_space(&state.service.config().data_dir) {
        crate::metrics::free_bytes(free);
    }
    let text = crate::metrics::install().render();
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    Ok((content_type, text).into_response())
}

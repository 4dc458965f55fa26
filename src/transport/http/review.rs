//! The radiologist's side: the review API (a study's findings with their decisions, one
//! decision, signing) and the review page a PACS worklist opens at `/review/{study}`.
//! The page's HTML, JS and CSS are compiled into the binary; it loads nothing from
//! elsewhere, and its images come from WADO-RS rendered.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::error::ErrorBody;
use super::params::{Query, Uid, Uids};
use super::{ApiError, AppState};
use crate::findings::NoduleType;
use crate::report::review::Verdict;
use crate::service::review::{self, Decide, Signed, StudyReview};

/// A study's review: the summary and each analysed series' report, every finding with
/// its `review` (null when undecided).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewBody {
    pub study_instance_uid: String,
    /// `status` (`unreviewed`, `in-progress`, `signed`), `reader`, `signed_at`.
    #[schema(value_type = Object)]
    pub review: Value,
    /// One `pulmo.report/1` per analysed series, with the review fields.
    #[schema(value_type = Vec<Object>)]
    pub reports: Vec<Value>,
}

impl ReviewBody {
    fn of(review: &StudyReview) -> ReviewBody {
        let reports = review
            .series
            .iter()
            .map(|s| {
                let mut report = serde_json::to_value(&s.report).unwrap_or(Value::Null);
                annotate(&mut report, review);
                report
            })
            .collect();
        ReviewBody {
            study_instance_uid: review.study_instance_uid.clone(),
            review: serde_json::to_value(&review.review).unwrap_or(Value::Null),
            reports,
        }
    }
}

/// Adds the review to a report of the study: `review` at the top and on each finding
/// (null when undecided). Reports of series that were not analysed are left as they are.
pub fn annotate(report: &mut Value, review: &StudyReview) {
    let series = report["series_instance_uid"].as_str().unwrap_or_default();
    let Some(one) = review
        .series
        .iter()
        .find(|s| s.report.series_instance_uid == series)
    else {
        return;
    };
    if let Some(findings) = report["findings"].as_array_mut() {
        for finding in findings {
            let id = finding["id"].as_u64().unwrap_or_default();
            let decided = one
                .report
                .findings
                .iter()
                .position(|f| u64::from(f.id) == id)
                .and_then(|n| one.reviews[n].as_ref());
            finding["review"] = serde_json::to_value(decided).unwrap_or(Value::Null);
        }
    }
    report["review"] = serde_json::to_value(&review.review).unwrap_or(Value::Null);
}

/// The findings of a study's current reports and the decisions that hold for them.
#[utoipa::path(get, path = "/api/v1/studies/{study}/review", tag = "review",
    params(("study" = Uid, Path, description = "Study Instance UID")),
    responses((status = 200, body = ReviewBody),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No analysed report of this study", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    uids: Uids<1>,
) -> Result<Json<ReviewBody>, ApiError> {
    let [study] = uids.0;
    let review = state.service.review(&study).await?;
    let review =
        review.ok_or_else(|| ApiError::NotFound(format!("no analysed report of study {study}")))?;
    Ok(Json(ReviewBody::of(&review)))
}

/// A reader's verdict, as the API spells it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum VerdictName {
    Accepted,
    Rejected,
}

/// A finding's type, as the API spells it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
pub enum TypeName {
    Solid,
    PartSolid,
    GroundGlass,
}

/// A reader's decision on one finding.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `accepted` or `rejected`.
    #[schema(value_type = VerdictName)]
    pub verdict: Verdict,
    /// The reader's type, when it corrects the model's: `solid`, `part-solid`, `ground-glass`.
    #[serde(rename = "type", default)]
    #[schema(value_type = Option<TypeName>)]
    pub corrected_type: Option<NoduleType>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Which series a finding id belongs to.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// The Series Instance UID; needed when the study has more than one analysed series.
    #[param(value_type = Option<Uid>)]
    pub series: Option<String>,
}

/// Records the reader's decision on one finding (the `id` of its report).
#[utoipa::path(put, path = "/api/v1/studies/{study}/findings/{id}/review", tag = "review",
    params(("study" = Uid, Path, description = "Study Instance UID"),
           ("id" = u32, Path, description = "The finding's id in its report"),
           SeriesQuery),
    request_body = DecisionBody,
    responses((status = 200, body = ReviewBody),
              (status = 400, description = "The body, the id or the series is not valid", body = ErrorBody),
              (status = 404, description = "No such study report or finding", body = ErrorBody)))]
pub async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, id)): Path<(String, String)>,
    Query(query): Query<SeriesQuery>,
    body: axum::body::Bytes,
) -> Result<Json<ReviewBody>, ApiError> {
    let study = uid(&study)?;
    let id: u32 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("finding id {id:?} is not a number")))?;
    let series = query.series.as_deref().filter(|s| !s.is_empty());
    let series = series.map(uid).transpose()?;
    let body: DecisionBody = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!(
            "the body is not {{\"verdict\": \"accepted\"|\"rejected\", \"type\"?, \"comment\"?}}: {err}"
        ))
    })?;
    let decide = Decide {
        verdict: body.verdict,
        corrected_type: body.corrected_type,
        comment: body.comment,
    };
    let review = state
        .service
        .decide(&study, series.as_deref(), id, decide, &caller.name)
        .await?;
    tracing::info!(%study, finding = id, reader = %caller.name, "finding reviewed");
    Ok(Json(ReviewBody::of(&review)))
}

/// Signs the study's review: a verified SR (and SEG) with the accepted findings replaces
/// the unverified ones and is pushed to the PACS.
#[utoipa::path(post, path = "/api/v1/studies/{study}/review/sign", tag = "review",
    params(("study" = Uid, Path, description = "Study Instance UID")),
    responses((status = 200, body = Signed),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No analysed report of this study", body = ErrorBody),
              (status = 409, description = "The series changed or its source instances are gone", body = ErrorBody)))]
pub async fn sign(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uids: Uids<1>,
) -> Result<Json<Signed>, ApiError> {
    let [study] = uids.0;
    let signed = state.service.sign(&study, &caller.name).await?;
    Ok(Json(signed))
}

fn uid(text: &str) -> Result<String, ApiError> {
    if crate::service::is_uid(text) {
        Ok(text.to_owned())
    } else {
        Err(ApiError::BadRequest(format!("{text:?} is not a DICOM UID")))
    }
}

impl From<review::Error> for ApiError {
    fn from(err: review::Error) -> ApiError {
        match err {
            review::Error::NotFound(why) => ApiError::NotFound(why),
            review::Error::Invalid(why) => ApiError::BadRequest(why),
            review::Error::Conflict(why) => ApiError::Conflict(why),
            other => ApiError::internal(&other),
        }
    }
}

const PAGE: &str = include_str!("review_page/index.html");
const SCRIPT: &str = include_str!("review_page/review.js");
const STYLE: &str = include_str!("review_page/review.css");

/// The review page of a study (no token needed: it holds no data, and signs in first).
pub async fn page(Path(_study): Path<String>) -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// The page's script and style.
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "review.js" => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        "review.css" => Ok(asset(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::NotFound(format!("no file {name}"))),
    }
}

fn asset(text: &'static str, media: &'static str) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    // Nothing from elsewhere, and never inside another site's frame.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

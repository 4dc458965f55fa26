//! QIDO-RS and WADO-RS over pulmo's results: the studies that have results, their
//! series and instances, and each SR, SEG or Secondary Capture as `application/dicom`.
//! The instances pulmo received are not served back; the PACS has them.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::dicom_json::{tag, Dataset};
use super::error::ErrorBody;
use super::params::{Uid, Uids};
use super::{ApiError, AppState};
use crate::service::ResultRow;

/// How many studies one QIDO-RS answer lists at most.
const MAX_STUDIES: u32 = 1000;

/// Studies that have results (QIDO-RS), newest first.
#[utoipa::path(get, path = "/dicomweb/studies", tag = "dicomweb",
    responses((status = 200, description = "DICOM JSON array of studies", body = Vec<Dataset>,
               content_type = "application/dicom+json")))]
pub async fn search_studies(State(state): State<AppState>) -> Result<Response, ApiError> {
    let studies = state.service.result_studies(MAX_STUDIES).await?;
    let items = studies.iter().map(|s| {
        Dataset::new()
            .text(tag::STUDY_INSTANCE_UID, "UI", &s.study_uid)
            .texts(tag::MODALITIES_IN_STUDY, "CS", &s.modalities)
            .number(tag::NUMBER_OF_STUDY_RELATED_SERIES, "IS", s.series.into())
            .number(
                tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
                "IS",
                s.instances.into(),
            )
            .text(
                tag::RETRIEVE_URL,
                "UR",
                &format!("/dicomweb/studies/{}", s.study_uid),
            )
    });
    Ok(dicom_json(items.map(Dataset::into_value).collect()))
}

/// The result series of a study (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series", tag = "dicomweb",
    params(("study" = Uid, Path, description = "Study Instance UID")),
    responses((status = 200, description = "DICOM JSON array of series", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No results for this study", body = ErrorBody)))]
pub async fn search_series(
    State(state): State<AppState>,
    uids: Uids<1>,
) -> Result<Response, ApiError> {
    let [study] = uids.0;
    let rows = results(&state, &study).await?;
    let mut series: Vec<(&str, &str, u64)> = Vec::new();
    for row in &rows {
        match series.last_mut() {
            Some(last) if last.0 == row.series_uid => last.2 += 1,
            _ => series.push((&row.series_uid, &row.modality, 1)),
        }
    }
    let items = series.into_iter().map(|(uid, modality, count)| {
        Dataset::new()
            .text(tag::STUDY_INSTANCE_UID, "UI", &study)
            .text(tag::SERIES_INSTANCE_UID, "UI", uid)
            .text(tag::MODALITY, "CS", modality)
            .number(tag::NUMBER_OF_SERIES_RELATED_INSTANCES, "IS", count)
            .into_value()
    });
    Ok(dicom_json(items.collect()))
}

/// The result instances of one series (QIDO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances", tag = "dicomweb",
    params(("study" = Uid, Path, description = "Study Instance UID"),
           ("series" = Uid, Path, description = "Series Instance UID")),
    responses((status = 200, description = "DICOM JSON array of instances", body = Vec<Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No results for this study", body = ErrorBody)))]
pub async fn search_instances(
    State(state): State<AppState>,
    uids: Uids<2>,
) -> Result<Response, ApiError> {
    let [study, series] = uids.0;
    let rows = results(&state, &study).await?;
    let items = rows.iter().filter(|r| r.series_uid == series).map(|r| {
        Dataset::new()
            .text(tag::STUDY_INSTANCE_UID, "UI", &study)
            .text(tag::SERIES_INSTANCE_UID, "UI", &r.series_uid)
            .text(tag::SOP_CLASS_UID, "UI", &r.sop_class_uid)
            .text(tag::SOP_INSTANCE_UID, "UI", &r.sop_instance_uid)
            .text(tag::MODALITY, "CS", &r.modality)
            .into_value()
    });
    Ok(dicom_json(items.collect()))
}

/// One result instance (WADO-RS): `multipart/related; type="application/dicom"` as the
/// standard says, or the bare Part 10 file when the client accepts only `application/dicom`.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}", tag = "dicomweb",
    params(("study" = Uid, Path, description = "Study Instance UID"),
           ("series" = Uid, Path, description = "Series Instance UID"),
           ("instance" = Uid, Path, description = "SOP Instance UID")),
    responses((status = 200, description = "The DICOM instance: one part of multipart/related, or bare when only application/dicom is accepted",
               content(("multipart/related; type=\"application/dicom\""), ("application/dicom"))),
              (status = 400, description = "A UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No such result instance", body = ErrorBody)))]
pub async fn retrieve_instance(
    State(state): State<AppState>,
    uids: Uids<3>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let [study, series, instance] = uids.0;
    let row = state.service.result(&instance).await?;
    let row = row
        .filter(|r| r.study_uid == study && r.series_uid == series)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no result instance {instance} in series {series} of study {study}"
            ))
        })?;
    let bytes = tokio::fs::read(&row.path)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    if wants_bare(&headers) {
        return Ok(([(header::CONTENT_TYPE, "application/dicom")], bytes).into_response());
    }
    let boundary = format!("pulmo-{}", uuid::Uuid::new_v4().simple());
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// True when `Accept` names `application/dicom` and no multipart type.
fn wants_bare(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/dicom") && !accept.contains("multipart/")
}

async fn results(state: &AppState, study: &str) -> Result<Vec<ResultRow>, ApiError> {
    let rows = state.service.study_results(study).await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound(format!("no results for study {study}")));
    }
    Ok(rows)
}

fn dicom_json(items: Vec<serde_json::Value>) -> Response {
    let body = serde_json::to_vec(&items).expect("JSON values always serialise");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        body,
    )
        .into_response()
}

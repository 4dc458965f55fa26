//! WADO-RS over everything pulmo serves (received source instances and results): the
//! stored files byte for byte as `multipart/related; type="application/dicom"`, their
//! metadata as DICOM JSON with bulk data URIs, those bulk data, and frames in their
//! stored encoding or uncompressed. Rendered images are in `rendered`.
//!
//! Files are read on the blocking pool, one at a time, and a retrieval streams them: a
//! study is never held in memory whole.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use dicom_object::DefaultDicomObject;
use futures_util::StreamExt;
use pulmo_dicomweb::accept::{multipart_type, negotiate, part_head, part_tail, Offer};

use super::dicomweb::{accept, base_url, dicom_json};
use super::error::ErrorBody;
use super::params::{
    BulkPath, BulkPathSchema, FrameList, Frames, InstancePath, SeriesPath, StudyPath, Uids,
};
use super::{frames, metadata, ApiError, AppState};
use crate::service::{Scope, Served};

/// The uncompressed transfer syntax frames and bulk data are answered in.
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Every file of a study (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}", tag = "dicomweb",
    params(StudyPath),
    responses((status = 200, description = "The study's instances, as stored",
               content_type = "multipart/related; type=\"application/dicom\""),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "Nothing of this study is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no multipart/related application/dicom", body = ErrorBody)))]
pub async fn retrieve_study(
    State(state): State<AppState>,
    uids: Uids<1>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(&state, uids.scope(), &headers, false).await
}

/// Every file of a series (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}", tag = "dicomweb",
    params(SeriesPath),
    responses((status = 200, description = "The series' instances, as stored",
               content_type = "multipart/related; type=\"application/dicom\""),
              (status = 400, description = "A UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "Nothing of this series is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no multipart/related application/dicom", body = ErrorBody)))]
pub async fn retrieve_series(
    State(state): State<AppState>,
    uids: Uids<2>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(&state, uids.scope(), &headers, false).await
}

/// One instance (WADO-RS): `multipart/related; type="application/dicom"` as the standard
/// says, or the bare Part 10 file when the client accepts only `application/dicom`.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}", tag = "dicomweb",
    params(InstancePath),
    responses((status = 200, description = "The DICOM instance: one part of multipart/related, or bare when only application/dicom is accepted",
               content(("multipart/related; type=\"application/dicom\""), ("application/dicom"))),
              (status = 400, description = "A UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No such instance is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes neither form", body = ErrorBody)))]
pub async fn retrieve_instance(
    State(state): State<AppState>,
    uids: Uids<3>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(&state, uids.scope(), &headers, true).await
}

/// The metadata of every instance of a study (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/metadata", tag = "dicomweb",
    params(StudyPath),
    responses((status = 200, description = "DICOM JSON array, one data set per instance", body = Vec<super::dicom_json::Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "The UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "Nothing of this study is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn study_metadata(
    State(state): State<AppState>,
    uids: Uids<1>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata_of(&state, uids.scope(), &headers).await
}

/// The metadata of every instance of a series (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/metadata", tag = "dicomweb",
    params(SeriesPath),
    responses((status = 200, description = "DICOM JSON array, one data set per instance", body = Vec<super::dicom_json::Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "Nothing of this series is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn series_metadata(
    State(state): State<AppState>,
    uids: Uids<2>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata_of(&state, uids.scope(), &headers).await
}

/// The metadata of one instance (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata", tag = "dicomweb",
    params(InstancePath),
    responses((status = 200, description = "DICOM JSON array of one data set", body = Vec<super::dicom_json::Dataset>,
               content_type = "application/dicom+json"),
              (status = 400, description = "A UID is not a DICOM UID", body = ErrorBody),
              (status = 404, description = "No such instance is served", body = ErrorBody),
              (status = 406, description = "The Accept header takes no DICOM JSON", body = ErrorBody)))]
pub async fn instance_metadata(
    State(state): State<AppState>,
    uids: Uids<3>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata_of(&state, uids.scope(), &headers).await
}

/// One bulk data value that an instance's metadata names (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulk/{path}", tag = "dicomweb",
    params(InstancePath, ("path" = BulkPathSchema, Path, description = "Where the value lies, as the BulkDataURI names it")),
    responses((status = 200, description = "The value's bytes (little endian); encapsulated Pixel Data as one part per fragment",
               content(("multipart/related; type=\"application/octet-stream\""), ("application/octet-stream"))),
              (status = 400, description = "A UID or the path is malformed", body = ErrorBody),
              (status = 404, description = "No such instance or value", body = ErrorBody),
              (status = 406, description = "The Accept header takes neither form", body = ErrorBody)))]
pub async fn bulk_data(
    State(state): State<AppState>,
    uids: Uids<3>,
    path: BulkPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = one(&state, uids.scope()).await?;
    let instance = file.sop_instance_uid.clone();
    // Values are little endian, as explicit VR little endian has them.
    let offers = [
        Offer {
            transfer_syntax: Some(EXPLICIT_LE),
            ..Offer::multipart("application/octet-stream")
        },
        Offer::single("application/octet-stream"),
    ];
    let chosen = negotiate(accept(&headers), &offers)
        .ok_or_else(|| not_acceptable("bulk data are application/octet-stream"))?;
    let obj = open(file.path.clone(), false).await?;
    let parts = tokio::task::spawn_blocking(move || {
        let element = metadata::bulk(&obj, &path.0)?;
        match element.value() {
            dicom_core::value::Value::PixelSequence(seq) => {
                Some(seq.fragments().iter().map(|f| f.to_vec()).collect())
            }
            dicom_core::value::Value::Primitive(value) => Some(vec![value.to_bytes().into_owned()]),
            dicom_core::value::Value::Sequence(_) => None,
        }
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("instance {instance} has no bulk data there")))?;
    if chosen == 1 {
        let bytes: Vec<u8> = parts.concat();
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
    }
    Ok(multipart(parts, "application/octet-stream"))
}

/// Frames of one instance (WADO-RS): uncompressed (`application/octet-stream`, explicit
/// VR little endian samples) by default, or in the stored compressed syntax's media type
/// when `Accept` asks for it.
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", tag = "dicomweb",
    params(InstancePath, ("frames" = FrameList, Path, description = "1-based frame numbers, comma-separated")),
    responses((status = 200, description = "One part per frame",
               content(("multipart/related; type=\"application/octet-stream\""),
                       ("multipart/related; type=\"image/jpeg\""), ("multipart/related; type=\"image/jls\""),
                       ("multipart/related; type=\"image/jp2\""), ("multipart/related; type=\"image/jphc\""),
                       ("multipart/related; type=\"image/dicom-rle\""))),
              (status = 400, description = "A UID or the frame list is malformed, or the frames come to more than 512 MiB", body = ErrorBody),
              (status = 404, description = "No such instance, or it has no such frame", body = ErrorBody),
              (status = 406, description = "The Accept header takes no media type these frames are offered in", body = ErrorBody)))]
pub async fn retrieve_frames(
    State(state): State<AppState>,
    uids: Uids<3>,
    Frames(wanted): Frames,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = one(&state, uids.scope()).await?;
    let instance = file.sop_instance_uid;
    let obj = open(file.path, false).await?;
    let syntax = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let stored = frames::media_type(&syntax);
    let uncompressed = Offer {
        transfer_syntax: Some(EXPLICIT_LE),
        ..Offer::multipart("application/octet-stream")
    };
    let compressed = stored.map(|media| Offer {
        transfer_syntax: Some(syntax.as_str()),
        ..Offer::multipart(media)
    });
    let offers: Vec<Offer<'_>> = std::iter::once(uncompressed).chain(compressed).collect();
    let chosen = negotiate(accept(&headers), &offers).ok_or_else(|| {
        not_acceptable(
            "these frames are offered as application/octet-stream or in their stored syntax",
        )
    })?;
    let decode = stored.is_some() && chosen == 0;
    let media = offers[chosen]
        .part_type
        .unwrap_or("application/octet-stream");
    let parts = tokio::task::spawn_blocking(move || frames::extract(&obj, &wanted, decode))
        .await?
        .map_err(|err| match err {
            frames::Error::NoFrame { .. } | frames::Error::NoPixelData => {
                ApiError::NotFound(format!("instance {instance}: {err}"))
            }
            frames::Error::TooLarge => ApiError::BadRequest(format!("instance {instance}: {err}")),
            other => ApiError::NotAcceptable(format!("instance {instance}: {other}")),
        })?;
    Ok(multipart(parts, media))
}

/// The files in `scope`, or a 404 that names what was looked for.
pub(super) async fn served(state: &AppState, scope: Scope<'_>) -> Result<Vec<Served>, ApiError> {
    let files = state.service.files(scope).await?;
    if files.is_empty() {
        let what = match (scope.series, scope.instance) {
            (_, Some(instance)) => format!("instance {instance}"),
            (Some(series), None) => format!("series {series}"),
            (None, None) => format!("study {}", scope.study.unwrap_or_default()),
        };
        return Err(ApiError::NotFound(format!("{what} is not served here")));
    }
    Ok(files)
}

/// The one file of an instance.
pub(super) async fn one(state: &AppState, scope: Scope<'_>) -> Result<Served, ApiError> {
    let mut files = served(state, scope).await?;
    Ok(files.swap_remove(0))
}

/// Reads a served file (through Pixel Data, unless `header_only`) on the blocking pool.
pub(super) async fn open(path: PathBuf, header_only: bool) -> Result<DefaultDicomObject, ApiError> {
    let opened = tokio::task::spawn_blocking(move || {
        pulmo_dicom::volume::part10::open_path(&path, header_only)
    })
    .await?;
    opened.map_err(|err| ApiError::internal(&err))
}

pub(super) fn not_acceptable(what: &str) -> ApiError {
    ApiError::NotAcceptable(format!("{what}; the Accept header takes none of them"))
}

async fn retrieve(
    state: &AppState,
    scope: Scope<'_>,
    headers: &HeaderMap,
    bare_allowed: bool,
) -> Result<Response, ApiError> {
    let mut offers = vec![Offer::multipart("application/dicom")];
    if bare_allowed {
        offers.push(Offer::single("application/dicom"));
    }
    let chosen = negotiate(accept(headers), &offers).ok_or_else(|| {
        not_acceptable("instances are multipart/related; type=\"application/dicom\"")
    })?;
    let files = served(state, scope).await?;
    if chosen == 1 {
        let bytes = tokio::fs::read(&files[0].path)
            .await
            .map_err(|err| ApiError::internal(&err))?;
        return Ok(([(header::CONTENT_TYPE, "application/dicom")], bytes).into_response());
    }
    Ok(stream_files(files))
}

/// The files as one `multipart/related; type="application/dicom"` body, read one by one
/// as the client takes them. A file that cannot be read cuts the answer short (logged).
fn stream_files(files: Vec<Served>) -> Response {
    let boundary = new_boundary();
    let content_type = multipart_type(&boundary, "application/dicom");
    let count = files.len();
    let parts = futures_util::stream::iter(files.into_iter().enumerate()).then(move |(n, file)| {
        let boundary = boundary.clone();
        async move {
            let bytes = tokio::fs::read(&file.path).await.inspect_err(|err| {
                tracing::error!(error = %err, sop_instance_uid = %file.sop_instance_uid, "could not read a served instance");
            })?;
            let mut part = part_head(&boundary, "application/dicom", None).into_bytes();
            part.extend_from_slice(&bytes);
            part.extend_from_slice(part_tail(&boundary, n + 1 == count).as_bytes());
            Ok::<_, std::io::Error>(bytes::Bytes::from(part))
        }
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(parts),
    )
        .into_response()
}

/// `parts` as one `multipart/related` body of `media` parts.
pub(super) fn multipart(parts: Vec<Vec<u8>>, media: &str) -> Response {
    let boundary = new_boundary();
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 128).sum());
    for (n, part) in parts.iter().enumerate() {
        body.extend_from_slice(part_head(&boundary, media, None).as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(part_tail(&boundary, n + 1 == parts.len()).as_bytes());
    }
    if parts.is_empty() {
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    let content_type = multipart_type(&boundary, media);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn new_boundary() -> String {
    format!("pulmo-{}", uuid::Uuid::new_v4().simple())
}

async fn metadata_of(
    state: &AppState,
    scope: Scope<'_>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let offers = [
        Offer::single("application/dicom+json"),
        Offer::single("application/json"),
    ];
    negotiate(accept(headers), &offers)
        .ok_or_else(|| not_acceptable("metadata are application/dicom+json"))?;
    let files = served(state, scope).await?;
    let base = base_url(state, headers);
    let items = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|file| instance_json(file, &base))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    Ok(dicom_json(items))
}

/// One instance's metadata, its bulk data URIs under `base`.
fn instance_json(file: &Served, base: &str) -> Result<serde_json::Value, ApiError> {
    let obj = pulmo_dicom::volume::part10::open_path(&file.path, false)
        .map_err(|err| ApiError::internal(&err))?;
    let prefix = format!(
        "{base}/dicomweb/studies/{}/series/{}/instances/{}/bulk/",
        file.study_uid, file.series_uid, file.sop_instance_uid
    );
    Ok(metadata::to_json(&obj, &|path| format!("{prefix}{path}")))
}

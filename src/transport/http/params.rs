//! Path and query parameters, checked before a handler sees them: UIDs must be DICOM UIDs
//! (PS3.5 9.1: digits and dots, at most 64 characters), job ids numbers, and a query string
//! what the operation documents. A bad one is answered 400 (JSON, as every refusal), never
//! echoing what was sent.

use std::borrow::Cow;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, RawPathParams};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use super::ApiError;
use crate::service::{is_uid, Scope};

/// A DICOM UID in a path, for the OpenAPI document: its pattern says what `is_uid` checks
/// (digits and dots, no empty component, at most 64 characters).
pub struct Uid;

impl utoipa::PartialSchema for Uid {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]+(\.[0-9]+)*$"))
            .max_length(Some(64))
            .examples(["1.2.826.0.1.3680043.8.498.1"])
            .description(Some("A DICOM UID (PS3.5 9.1): digits and dots"))
            .into()
    }
}

impl utoipa::ToSchema for Uid {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Uid")
    }
}

/// The path parameters that are UIDs.
const UID_PARAMS: [&str; 3] = ["study", "series", "instance"];

/// The UIDs of a route's path, in order (`{study}`, `{series}`, `{instance}`).
#[derive(Debug)]
pub struct Uids<const N: usize>(pub [String; N]);

impl<S: Send + Sync, const N: usize> FromRequestParts<S> for Uids<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("the path is not valid UTF-8".to_owned()))?;
        let uids = params
            .iter()
            .filter(|(name, _)| UID_PARAMS.contains(name))
            .map(|(name, value)| checked(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let found = uids.len();
        let uids = uids.try_into().map_err(|_| {
            ApiError::Internal(format!("a route has {found} UIDs where {N} were expected"))
        })?;
        Ok(Uids(uids))
    }
}

impl<const N: usize> Uids<N> {
    /// The study, series and instance these UIDs name, in that order.
    pub fn scope(&self) -> Scope<'_> {
        let mut uids = self.0.iter().map(String::as_str);
        Scope {
            study: uids.next(),
            series: uids.next(),
            instance: uids.next(),
        }
    }
}

/// The path of a study's resources, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct StudyPath {
    /// Study Instance UID
    #[param(value_type = Uid)]
    study: String,
}

/// The path of a series' resources, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SeriesPath {
    /// Study Instance UID
    #[param(value_type = Uid)]
    study: String,
    /// Series Instance UID
    #[param(value_type = Uid)]
    series: String,
}

/// The path of an instance's resources, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct InstancePath {
    /// Study Instance UID
    #[param(value_type = Uid)]
    study: String,
    /// Series Instance UID
    #[param(value_type = Uid)]
    series: String,
    /// SOP Instance UID
    #[param(value_type = Uid)]
    instance: String,
}

/// `value` when it is a UID; otherwise a 400 that names `name` but not the value.
fn checked(name: &str, value: &str) -> Result<String, ApiError> {
    if is_uid(value) {
        return Ok(value.to_owned());
    }
    Err(ApiError::BadRequest(format!(
        "the {name} UID in the path is not a DICOM UID (digits and dots, at most 64 characters)"
    )))
}

/// The frame numbers of a WADO-RS frames path (`{frames}`): 1-based, comma-separated.
#[derive(Debug)]
pub struct Frames(pub Vec<u32>);

impl<S: Send + Sync> FromRequestParts<S> for Frames {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(
                "the frames in the path are not frame numbers (1, 2, ...), comma-separated"
                    .to_owned(),
            )
        };
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| bad())?;
        let (_, list) = params
            .iter()
            .find(|(n, _)| *n == "frames")
            .ok_or_else(bad)?;
        if list.len() > MAX_FRAME_LIST {
            return Err(bad());
        }
        list.split(',')
            .map(frame_number)
            .collect::<Option<_>>()
            .map(Frames)
            .ok_or_else(bad)
    }
}

/// The longest frame list in a path, in characters.
const MAX_FRAME_LIST: usize = 4096;

/// A frame number as the path schemas allow it: 1 to 9 digits, no leading zero.
fn frame_number(text: &str) -> Option<u32> {
    let digits = (1..=9).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    digits.then(|| text.parse().ok()).flatten()
}

/// One frame number in a path, for the OpenAPI document.
pub struct FrameNumber;

impl utoipa::PartialSchema for FrameNumber {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[1-9][0-9]{0,8}$"))
            .examples(["1"])
            .description(Some("A 1-based frame number"))
            .into()
    }
}

impl utoipa::ToSchema for FrameNumber {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("FrameNumber")
    }
}

/// A frame list in a path, for the OpenAPI document.
pub struct FrameList;

impl utoipa::PartialSchema for FrameList {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*$"))
            .max_length(Some(MAX_FRAME_LIST))
            .examples(["1", "1,3"])
            .description(Some("1-based frame numbers, comma-separated"))
            .into()
    }
}

impl utoipa::ToSchema for FrameList {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("FrameList")
    }
}

/// Where a bulk data value lies in an instance (`{path}`): a tag (eight hex digits), or
/// sequence tag, item index and tag, dot-separated, as the metadata's BulkDataURIs name it.
#[derive(Debug)]
pub struct BulkPath(pub Vec<(u32, Option<usize>)>);

impl<S: Send + Sync> FromRequestParts<S> for BulkPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(
                "the bulk data path is not one a metadata answer names (tag, or tag.item.tag)"
                    .to_owned(),
            )
        };
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| bad())?;
        let (_, path) = params.iter().find(|(n, _)| *n == "path").ok_or_else(bad)?;
        parse_bulk_path(path).map(BulkPath).ok_or_else(bad)
    }
}

/// `ggggeeee[.item.ggggeeee]*` as (tag, item index into it) steps; the last has no item.
fn parse_bulk_path(path: &str) -> Option<Vec<(u32, Option<usize>)>> {
    let fields: Vec<&str> = path.split('.').collect();
    if fields.len() % 2 == 0 || fields.len() > 15 {
        return None;
    }
    let tag = |t: &str| {
        let hex = t.len() == 8 && t.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u32::from_str_radix(t, 16).ok()).flatten()
    };
    let item = |i: &str| {
        let digits = (1..=6).contains(&i.len()) && i.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| i.parse().ok()).flatten()
    };
    let mut steps = Vec::new();
    for pair in fields.chunks(2) {
        let index = match pair.get(1) {
            Some(i) => Some(item(i)?),
            None => None,
        };
        steps.push((tag(pair[0])?, index));
    }
    Some(steps)
}

/// A bulk data path, for the OpenAPI document.
pub struct BulkPathSchema;

impl utoipa::PartialSchema for BulkPathSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9A-Fa-f]{8}(\.[0-9]{1,6}\.[0-9A-Fa-f]{8}){0,7}$"))
            .examples(["7FE00010"])
            .description(Some(
                "A tag, or sequence tag, item index and tag, dot-separated",
            ))
            .into()
    }
}

impl utoipa::ToSchema for BulkPathSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("BulkPath")
    }
}

/// A job id from the path.
#[derive(Debug)]
pub struct JobId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let id: Result<Path<i64>, PathRejection> = Path::from_request_parts(parts, state).await;
        id.map(|Path(id)| JobId(id))
            .map_err(|_| ApiError::BadRequest("the job id in the path is not a number".to_owned()))
    }
}

/// A query string, deserialised as axum's `Query` does; one that does not fit is a 400
/// with a JSON body like every other refusal, rather than axum's plain-text rejection.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = axum::extract::Query::<T>::from_request_parts(parts, state).await;
        query.map(|axum::extract::Query(q)| Query(q)).map_err(|_| {
            ApiError::BadRequest(
                "the query string does not fit this operation's parameters (see /openapi.json)"
                    .to_owned(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_paths_alternate_tags_and_items() {
        assert_eq!(parse_bulk_path("7FE00010"), Some(vec![(0x7FE0_0010, None)]));
        assert_eq!(
            parse_bulk_path("00880200.0.7fe00010"),
            Some(vec![(0x0088_0200, Some(0)), (0x7FE0_0010, None)])
        );
        for bad in [
            "",
            "7FE0001",
            "00880200.0",
            "00880200.x.7FE00010",
            "zzzzzzzz",
        ] {
            assert_eq!(parse_bulk_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn frame_numbers_are_digits_without_a_leading_zero() {
        assert_eq!(frame_number("12"), Some(12));
        for bad in ["", "0", "01", "+1", " 1", "1234567890"] {
            assert_eq!(frame_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_bad_uid_is_named_not_echoed() {
        assert_eq!(checked("study", "1.2.3").unwrap(), "1.2.3");
        for bad in ["../../etc/passwd", "<script>", &"1".repeat(65), "1..2"] {
            let err = checked("study", bad).unwrap_err().to_string();
            assert!(err.contains("study"), "{err}");
            assert!(!err.contains(bad), "{err}");
        }
    }
}

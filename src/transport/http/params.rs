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
use crate::service::is_uid;

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
            .map(|(name, value)| checked(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let found = uids.len();
        let uids = uids.try_into().map_err(|_| {
            ApiError::Internal(format!("a route has {found} UIDs where {N} were expected"))
        })?;
        Ok(Uids(uids))
    }
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
    fn a_bad_uid_is_named_not_echoed() {
        assert_eq!(checked("study", "1.2.3").unwrap(), "1.2.3");
        for bad in ["../../etc/passwd", "<script>", &"1".repeat(65), "1..2"] {
            let err = checked("study", bad).unwrap_err().to_string();
            assert!(err.contains("study"), "{err}");
            assert!(!err.contains(bad), "{err}");
        }
    }
}

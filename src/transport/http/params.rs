//! Path parameters, checked before a handler sees them: UIDs must be DICOM UIDs (PS3.5
//! 9.1: digits and dots, at most 64 characters) and job ids numbers. A bad one is answered
//! 400 naming the parameter, never echoing what was sent.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, RawPathParams};
use axum::http::request::Parts;

use super::ApiError;
use crate::service::is_uid;

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

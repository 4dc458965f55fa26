//! The one error type of the HTTP transport, and the one place it becomes a status code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Everything a handler can answer with instead of its result.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// None of the media types the route offers is one the `Accept` header takes.
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    TooLarge(String),
    /// The client was too slow: a stalled upload.
    #[error("{0}")]
    Timeout(String),
    /// Overload: the client should come back after `retry_after` seconds.
    #[error("{reason}; retry later")]
    Busy { reason: String, retry_after: u32 },
    #[error("the model is still loading")]
    NotReady,
    /// No token, or one that is not configured. Says nothing more.
    #[error("unauthorized")]
    Unauthorized,
    /// A valid token without the role the request needs.
    #[error("forbidden")]
    Forbidden,
    /// A browser's change without its session's CSRF token.
    #[error("forbidden: missing or wrong X-CSRF-Token")]
    Csrf,
    /// The request does not fit the resource's state (the message says why).
    #[error("{0}")]
    Conflict(String),
    /// A fault of the server; the cause is logged here, once, and never sent.
    #[error("internal error")]
    Internal(String),
}

/// The body of every refusal: what was wrong, in one sentence that names no internals.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl ApiError {
    /// A server fault, logged with its whole cause chain.
    pub fn internal(err: &dyn std::error::Error) -> ApiError {
        ApiError::Internal(crate::pipeline::error_chain(err))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy { .. } | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::service::Error> for ApiError {
    fn from(err: crate::service::Error) -> ApiError {
        ApiError::internal(&err)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> ApiError {
        ApiError::internal(&err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "request failed"),
            other => tracing::info!(status = status.as_u16(), error = %other, "request refused"),
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        let retry_after = match self {
            ApiError::Busy { retry_after, .. } => Some(retry_after),
            ApiError::NotReady => Some(5),
            _ => None,
        };
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

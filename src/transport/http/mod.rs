//! The HTTP transport: DICOMweb (STOW-RS in; QIDO-RS and WADO-RS over results) and
//! pulmo's own API. Handlers turn requests into service calls and nothing more; every
//! blocking call (index, admission) runs off the async workers.

mod api;
mod dicom_json;
mod dicomweb;
mod error;
pub mod openapi;
mod push;
mod stow;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::service::Service;

/// Request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted instance (one multipart part), in bytes.
    pub max_instance_bytes: u64,
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: u64,
    /// Uploads received at once; one more is answered 503 with Retry-After.
    pub max_uploads: usize,
}

impl Default for Limits {
    /// 1 GiB per instance (large Enhanced CT), 8 GiB per request, 16 uploads at once.
    fn default() -> Self {
        Limits {
            max_instance_bytes: 1 << 30,
            max_request_bytes: 8 << 30,
            max_uploads: 16,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub limits: Limits,
    uploads: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(service: Arc<Service>, limits: Limits) -> AppState {
        AppState {
            service,
            limits,
            uploads: Arc::new(tokio::sync::Semaphore::new(limits.max_uploads)),
        }
    }
}

/// Every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/dicomweb/studies",
            post(stow::store_any).get(dicomweb::search_studies),
        )
        .route("/dicomweb/studies/{study}", post(stow::store_study))
        .route(
            "/dicomweb/studies/{study}/series",
            get(dicomweb::search_series),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances",
            get(dicomweb::search_instances),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
            get(dicomweb::retrieve_instance),
        )
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/studies/{study}", get(api::study))
        .route("/api/v1/studies/{study}/report", get(api::report))
        .route("/api/v1/studies/{study}/analyze", post(api::analyze))
        .route("/api/v1/pushes", get(push::pushes))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/info", get(api::info))
        .route("/openapi.json", get(openapi::serve))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop` fires, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

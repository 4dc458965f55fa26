//! The HTTP transport: DICOMweb (STOW-RS in; QIDO-RS and WADO-RS over the received
//! instances and the results) and pulmo's own API. Handlers turn requests into service calls and nothing more; every
//! blocking call (index, admission) runs off the async workers.

mod api;
mod audit;
pub mod auth;
pub mod connections;
mod dicom_json;
mod dicomweb;
mod error;
mod frames;
mod metadata;
pub mod openapi;
mod params;
mod push;
mod rendered;
mod review;
pub mod session;
mod stow;
mod viewer;
mod wado;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use audit::StoredStudies;
pub(crate) use audit::Throttle;
pub use auth::Tokens;
pub use error::ApiError;
pub use viewer::Viewer;

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
    /// Below this much free space in the data directory, uploads are answered 503.
    pub min_free_bytes: u64,
    /// With this many jobs queued, uploads and analyze requests are answered 503 until
    /// the queue drains.
    pub max_queued_jobs: u32,
    /// How slow clients are cut off.
    pub timeouts: Timeouts,
    /// Open connections from one client address; one more is answered 503 and closed.
    pub max_connections_per_client: usize,
}

impl Default for Limits {
    /// 1 GiB per instance (large Enhanced CT), 8 GiB per request, 16 uploads at once,
    /// 2 GiB of free space kept, 200 queued jobs, 64 connections per client.
    fn default() -> Self {
        Limits {
            max_instance_bytes: 1 << 30,
            max_request_bytes: 8 << 30,
            max_uploads: 16,
            min_free_bytes: 2 << 30,
            max_queued_jobs: 200,
            timeouts: Timeouts::default(),
            max_connections_per_client: 64,
        }
    }
}

/// When a connection or an upload that stalls is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers must arrive within this time of the connection opening, or of
    /// the previous answer on a kept-alive connection (idle connections close after it).
    pub header: std::time::Duration,
    /// An upload's body may pause this long between two reads.
    pub body_idle: std::time::Duration,
    /// An upload's body must arrive at this many bytes per second on average, after a
    /// first `body_idle` of grace: a 1 byte/s trickle cannot hold an upload slot.
    pub min_body_rate: u64,
}

impl Default for Timeouts {
    /// 30 s for headers and between body reads, and at least 16 KiB/s per upload.
    fn default() -> Self {
        Timeouts {
            header: std::time::Duration::from_secs(30),
            body_idle: std::time::Duration::from_secs(30),
            min_body_rate: 16 << 10,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub limits: Limits,
    /// `None`: no authentication (only allowed on loopback, see `pulmo serve`).
    pub tokens: Option<Arc<Tokens>>,
    /// `http` or `https`: how clients reach this server, for the URLs answers carry.
    pub scheme: &'static str,
    uploads: Arc<tokio::sync::Semaphore>,
    /// Bounds the audit records of requests without a valid token.
    audit_throttle: Arc<audit::Throttle>,
    /// Signed-in browsers (the review page).
    pub sessions: Arc<session::Sessions>,
}

impl AppState {
    pub fn new(service: Arc<Service>, limits: Limits, tokens: Option<Tokens>) -> AppState {
        AppState {
            service,
            limits,
            tokens: tokens.map(Arc::new),
            scheme: "http",
            uploads: Arc::new(tokio::sync::Semaphore::new(limits.max_uploads)),
            audit_throttle: Arc::new(audit::Throttle::default()),
            sessions: Arc::new(session::Sessions::new(
                std::time::Duration::from_secs(8 * 3600),
                None,
            )),
        }
    }

    /// Browser sessions that last `lifetime`, trusting the user a reverse proxy names in
    /// `proxy_header` when given.
    pub fn with_sessions(
        mut self,
        lifetime: std::time::Duration,
        proxy_header: Option<axum::http::HeaderName>,
    ) -> AppState {
        self.sessions = Arc::new(session::Sessions::new(lifetime, proxy_header));
        self
    }

    /// Served over `https` rather than `http`.
    pub fn with_https(mut self, https: bool) -> AppState {
        self.scheme = if https { "https" } else { "http" };
        self
    }
}

/// Every route, behind the guard (tokens, audit, metrics).
pub fn router(state: AppState) -> Router {
    routes()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}

fn routes() -> Router<AppState> {
    const INSTANCE: &str = "/dicomweb/studies/{study}/series/{series}/instances/{instance}";
    Router::new()
        .route(
            "/dicomweb/studies",
            post(stow::store_any).get(dicomweb::search_studies),
        )
        .route("/dicomweb/series", get(dicomweb::search_all_series))
        .route("/dicomweb/instances", get(dicomweb::search_all_instances))
        .route(
            "/dicomweb/studies/{study}",
            post(stow::store_study).get(wado::retrieve_study),
        )
        .route(
            "/dicomweb/studies/{study}/metadata",
            get(wado::study_metadata),
        )
        .route(
            "/dicomweb/studies/{study}/series",
            get(dicomweb::search_series),
        )
        .route(
            "/dicomweb/studies/{study}/instances",
            get(dicomweb::search_study_instances),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}",
            get(wado::retrieve_series),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances",
            get(dicomweb::search_instances),
        )
        .route(INSTANCE, get(wado::retrieve_instance))
        .route(
            &format!("{INSTANCE}/metadata"),
            get(wado::instance_metadata),
        )
        .route(&format!("{INSTANCE}/bulk/{{path}}"), get(wado::bulk_data))
        .route(
            &format!("{INSTANCE}/frames/{{frames}}"),
            get(wado::retrieve_frames),
        )
        .route(
            &format!("{INSTANCE}/rendered"),
            get(rendered::render_instance),
        )
        .route(
            &format!("{INSTANCE}/frames/{{frames}}/rendered"),
            get(rendered::render_frame),
        )
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/studies/{study}", get(api::study))
        .route("/api/v1/studies/{study}/report", get(api::report))
        .route("/api/v1/studies/{study}/analyze", post(api::analyze))
        .route("/api/v1/studies/{study}/review", get(review::get))
        .route(
            "/api/v1/studies/{study}/findings/{id}/review",
            put(review::decide),
        )
        .route("/api/v1/studies/{study}/review/sign", post(review::sign))
        .route(
            session::PATH,
            post(session::sign_in)
                .get(session::current)
                .delete(session::sign_out),
        )
        .route("/review/{study}", get(review::page))
        .route("/review/assets/{name}", get(review::file))
        .route("/api/v1/pushes", get(push::pushes))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/info", get(api::info))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(api::metrics))
}

/// Refuses new work while the analysis queue holds `max_queued_jobs`: 503 with
/// Retry-After. Every way in (STOW-RS, analyze) asks before queueing.
async fn queue_has_room(state: &AppState) -> Result<(), ApiError> {
    if state.service.queued_jobs().await? >= state.limits.max_queued_jobs {
        crate::metrics::failure("receive", "queue");
        return Err(ApiError::Busy {
            reason: "the analysis queue is full".to_owned(),
            retry_after: 30,
        });
    }
    Ok(())
}

/// Reads and drops (up to 16 MiB, for up to 5 s) the body of a request that is refused
/// before it was read, so that a client still sending a modest body gets the answer
/// rather than a broken pipe. A larger body is cut off when the connection closes.
pub async fn drain(body: axum::body::Body) {
    use futures_util::StreamExt;
    const MAX_BYTES: usize = 16 << 20;
    let mut stream = body.into_data_stream();
    let read = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
}

/// Lets the viewer pages of these origins call the API from a browser.
pub fn cors(origins: &[axum::http::HeaderValue]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins.to_vec())
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::RETRY_AFTER, header::CONTENT_TYPE])
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` fires, then
/// lets requests in flight finish. Connections are limited per client, and a connection
/// whose request headers do not arrive within `limits.timeouts.header` (a new one, or an
/// idle kept-alive one) is closed.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use axum_server::tls_rustls::RustlsAcceptor;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(60)));
    });
    listener.set_nonblocking(true)?;
    let service = app.into_make_service();
    let connections = connections::Connections::new(limits.max_connections_per_client);
    let header = limits.timeouts.header;
    let server = axum_server::from_tcp(listener)?
        .handle(handle)
        .first_request_timeout(header);
    match tls {
        Some(config) => {
            let acceptor = RustlsAcceptor::new(config)
                .handshake_timeout(header)
                .acceptor(connections::LimitAcceptor::new(connections, false));
            let mut server = server.acceptor(acceptor);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(header));
            server.serve(service).await
        }
        None => {
            let acceptor = connections::LimitAcceptor::new(connections, true);
            let mut server = server.acceptor(acceptor);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(header));
            server.serve(service).await
        }
    }
}

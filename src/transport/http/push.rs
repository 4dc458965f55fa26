//! Where pushes to the PACS and the webhook stand: `GET /api/v1/pushes`.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::service::{Push, PushState};

/// Which pushes to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PushQuery {
    /// Only pushes in this state (for example `dead`: the dead-letter list).
    pub state: Option<PushState>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Pushes of results to the PACS and of reports to the webhook, newest first.
#[utoipa::path(get, path = "/api/v1/pushes", tag = "api", params(PushQuery),
    responses((status = 200, body = Vec<Push>), (status = 400, description = "Unknown state")))]
pub async fn pushes(
    State(state): State<AppState>,
    Query(query): Query<PushQuery>,
) -> Result<Json<Vec<Push>>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    let pushes = state.service.pushes(query.state, limit).await?;
    Ok(Json(pushes))
}

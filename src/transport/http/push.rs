//! Where pushes to the PACS and the webhook stand: `GET /api/v1/pushes`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::ErrorBody;
use super::params::Query;
use super::{ApiError, AppState};
use crate::service::{Push, PushState};

/// Which pushes to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
// In the query, so an absent value is left out, never sent as null.
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// Only pushes in this state (for example `dead`: the dead-letter list).
    pub state: Option<PushState>,
    /// At most this many, newest first (default 100; more than 1000 is taken as 1000).
    #[param(value_type = i64, required = false, minimum = 0, maximum = 4294967295_i64)]
    pub limit: Option<u32>,
}

/// Pushes of results to the PACS and of reports to the webhook, newest first.
#[utoipa::path(get, path = "/api/v1/pushes", tag = "api", params(PushQuery),
    responses((status = 200, body = Vec<Push>),
              (status = 400, description = "An unknown state, or a limit that is not a number", body = ErrorBody)))]
pub async fn pushes(
    State(state): State<AppState>,
    Query(query): Query<PushQuery>,
) -> Result<Json<Vec<Push>>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    let pushes = state.service.pushes(query.state, limit).await?;
    Ok(Json(pushes))
}

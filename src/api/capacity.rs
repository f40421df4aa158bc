//! The capacity report, as the capacity component last stored it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::error::ApiError;
use super::{ApiState, Role};

pub fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/capacity", get(report))
}

#[utoipa::path(
    get,
    path = "/api/v1/capacity",
    tag = "capacity",
    summary = "Capacity planning: per metric family, each series' growth, 30-day projection, headroom and recommendation (refreshed every capacity.refresh_secs)",
    responses((status = 200, description = "The last report (404 before the first)", body = serde_json::Value))
)]
pub(super) async fn report(
    State(s): State<ApiState>,
    h: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let (js, _, _) = s.nats()?;
    match crate::capacity::stored(js).await {
        Ok(Some(r)) => Ok(Json(r)),
        Ok(None) => Err(ApiError::not_found(
            "no capacity report yet: the capacity component of `prismwatch run` writes one at start and every capacity.refresh_secs",
        )),
        Err(e) => Err(ApiError::unavailable(format!("capacity report: {e}"))),
    }
}

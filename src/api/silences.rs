//! Silences: list, get, create, expire.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, JsonBody};
use super::{ApiState, Role};
use crate::alerting::command::CommandBody;
use crate::alerting::matchers::MatcherDef;
use crate::tools::clock;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).delete(expire_silence),
        )
}

#[utoipa::path(
    get,
    path = "/api/v1/silences",
    tag = "silences",
    summary = "Every silence with its state",
    responses((status = 200, description = "The silences", body = super::schema::SilenceList))
)]
async fn list_silences(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let cache = s.cache()?;
    let now = clock::now_ms();
    let silences: Vec<Value> = cache
        .silences
        .values
        .read()
        .unwrap()
        .values()
        .map(|x| {
            let mut v = serde_json::to_value(x).expect("serialises");
            v["state"] = json!(x.state(now).as_str());
            v
        })
        .collect();
    Ok(Json(json!({"silences": silences})))
}

#[utoipa::path(
    get,
    path = "/api/v1/silences/{id}",
    tag = "silences",
    summary = "One silence",
    params(("id" = String, Path, description = "Silence id")),
    responses((status = 200, description = "The silence", body = super::schema::SilenceView))
)]
async fn get_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let x = s.silence(&id)?;
    let mut v = serde_json::to_value(&x).expect("serialises");
    v["state"] = json!(x.state(clock::now_ms()).as_str());
    Ok(Json(v))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SilenceBody {
    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`.
    matchers: Vec<String>,
    /// ms since the epoch; default now.
    #[serde(default)]
    starts_at: Option<i64>,
    /// ms since the epoch; or give `duration`.
    #[serde(default)]
    ends_at: Option<i64>,
    /// e.g. `2h`, from the start.
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    comment: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/silences",
    tag = "silences",
    summary = "Create a silence (operator)",
    request_body = SilenceBody,
    responses((status = 200, description = "Created: result.silence_id", body = super::schema::CommandAnswer))
)]
async fn create_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(b): JsonBody<SilenceBody>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    if b.matchers.is_empty() {
        return Err(ApiError::bad_request("matchers: at least one"));
    }
    let matchers = b
        .matchers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            MatcherDef::parse(m).map_err(|e| ApiError::bad_request(format!("matchers[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let start = b.starts_at.unwrap_or_else(clock::now_ms);
    let ends_at = match (b.ends_at, &b.duration) {
        (Some(t), None) => t,
        (None, Some(d)) => {
            start
                + crate::alerting::config::duration_ms(d)
                    .map_err(|e| ApiError::bad_request(format!("duration: {e}")))?
        }
        _ => return Err(ApiError::bad_request("give one of ends_at and duration")),
    };
    s.command(
        &who,
        CommandBody::SilenceCreate {
            id: None,
            matchers,
            starts_at: b.starts_at,
            ends_at,
            comment: b.comment,
            created_by: None,
        },
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/silences/{id}",
    tag = "silences",
    summary = "Expire a silence (operator)",
    params(("id" = String, Path, description = "Silence id")),
    responses((status = 200, description = "Expired", body = super::schema::CommandAnswer))
)]
async fn expire_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    s.command(&who, CommandBody::SilenceExpire { id }).await
}

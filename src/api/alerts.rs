//! Alerts: the list with filters, one alert with its history, ack, un-ack, resolve, and a
//! server-sent stream of every change.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiQuery, JsonOrDefault};
use super::{ApiState, Role};
use crate::alerting::alert::ManagedAlert;
use crate::alerting::command::CommandBody;
use crate::alerting::matchers::MatcherDef;
use crate::tools::clock;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/alerts/{id}/unack", post(unack))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/stream", get(stream))
}

/// Filters of the alert list (all optional; `active` by default).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertFilter {
    /// `active` (pending or firing; default), `all`, or one status.
    status: Option<String>,
    /// `P1`..`P4`, case-insensitive.
    priority: Option<String>,
    rule: Option<String>,
    acknowledged: Option<bool>,
    silenced: Option<bool>,
    /// Label matchers, `name=value`, `name=~regex`, ... separated by commas.
    matchers: Option<String>,
    /// Started at or after / before (ms since the epoch).
    since: Option<i64>,
    until: Option<i64>,
    /// A page of the sorted list: at most `limit` (default 500, at most 10,000) from `offset`.
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Alerts per page unless asked otherwise, and at most.
const PAGE: usize = 500;
const MAX_PAGE: usize = 10_000;

fn filter_alerts<'a>(
    alerts: impl Iterator<Item = &'a ManagedAlert>,
    f: &AlertFilter,
) -> Result<Vec<&'a ManagedAlert>, ApiError> {
    let status = f.status.as_deref().unwrap_or("active").to_ascii_lowercase();
    if !matches!(
        status.as_str(),
        "active" | "all" | "pending" | "firing" | "resolved" | "cancelled"
    ) {
        return Err(ApiError::bad_request(format!(
            "status {status:?}: expected active, all, pending, firing, resolved or cancelled"
        )));
    }
    let matchers = match &f.matchers {
        Some(m) => m
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| MatcherDef::parse(s.trim()).and_then(|d| d.compile()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::bad_request(format!("matchers: {e}")))?,
        None => Vec::new(),
    };
    let priority = f.priority.as_ref().map(|p| p.to_ascii_uppercase());
    Ok(alerts
        .filter(|a| match status.as_str() {
            "active" => a.is_active(),
            "all" => true,
            s => a.status.token() == s,
        })
        .filter(|a| {
            priority
                .as_ref()
                .is_none_or(|p| a.priority.to_string() == *p)
        })
        .filter(|a| f.rule.as_ref().is_none_or(|r| a.rule == *r))
        .filter(|a| f.acknowledged.is_none_or(|k| a.ack.is_some() == k))
        .filter(|a| f.silenced.is_none_or(|k| a.silenced_by.is_empty() != k))
        .filter(|a| f.since.is_none_or(|t| a.starts_at >= t))
        .filter(|a| f.until.is_none_or(|t| a.starts_at < t))
        .filter(|a| matchers.iter().all(|m| m.matches(&a.labels)))
        .collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    summary = "Alerts, most urgent first, filtered and paged",
    params(AlertFilter),
    responses((status = 200, description = "A page of alerts", body = super::schema::AlertPage))
)]
async fn list_alerts(
    State(s): State<ApiState>,
    h: HeaderMap,
    ApiQuery(f): ApiQuery<AlertFilter>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let cache = s.cache()?;
    // Filtered and paged under the read lock: only the page is serialised, nothing cloned.
    let held = cache.alerts.values.read().unwrap();
    let mut alerts = filter_alerts(held.values(), &f)?;
    // Most urgent first, then newest (then by id, so pages are stable).
    alerts.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.starts_at.cmp(&a.starts_at))
            .then(a.id.cmp(&b.id))
    });
    let limit = f.limit.unwrap_or(PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit: 1 to {MAX_PAGE}")));
    }
    let count = alerts.len();
    let offset = f.offset.unwrap_or(0).min(count);
    let page: Vec<&ManagedAlert> = alerts[offset..].iter().take(limit).copied().collect();
    let body = json!({"alerts": page, "count": count, "offset": offset, "limit": limit});
    drop(held);
    Ok(Json(body))
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/{id}",
    tag = "alerts",
    summary = "One alert with its history (transitions, notifications, acknowledgements)",
    params(("id" = String, Path, description = "Alert id, or fingerprint (its latest episode)")),
    responses((status = 200, description = "The alert", body = crate::alerting::alert::ManagedAlert))
)]
async fn get_alert(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let cache = s.cache()?;
    let alerts = cache.alerts.values.read().unwrap();
    let a = super::find_alert(&alerts, &id)?;
    Ok(Json(serde_json::to_value(a).expect("serialises")))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AckBody {
    #[serde(default)]
    comment: String,
    /// How long the acknowledgement holds (e.g. `2h`); default until the alert ends.
    #[serde(default)]
    expires_in: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ack",
    tag = "alerts",
    summary = "Acknowledge an alert (operator)",
    params(("id" = String, Path, description = "Alert id, or fingerprint (its latest episode)")),
    request_body = Option<AckBody>,
    responses((status = 200, description = "Acknowledged", body = super::schema::CommandAnswer))
)]
async fn ack(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    JsonOrDefault(b): JsonOrDefault<AckBody>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    let expires_at = match &b.expires_in {
        Some(d) => Some(
            clock::now_ms()
                + crate::alerting::config::duration_ms(d)
                    .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?,
        ),
        None => None,
    };
    s.command(
        &who,
        CommandBody::Ack {
            alert: id,
            comment: b.comment,
            expires_at,
        },
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/unack",
    tag = "alerts",
    summary = "Withdraw an acknowledgement (operator)",
    params(("id" = String, Path, description = "Alert id, or fingerprint (its latest episode)")),
    responses((status = 200, description = "Un-acknowledged", body = super::schema::CommandAnswer))
)]
async fn unack(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    s.command(&who, CommandBody::Unack { alert: id }).await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    #[serde(default)]
    comment: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/resolve",
    tag = "alerts",
    summary = "Resolve an external alert by hand (operator; rule alerts resolve by their condition)",
    params(("id" = String, Path, description = "Alert id, or fingerprint (its latest episode)")),
    request_body = Option<ResolveBody>,
    responses((status = 200, description = "Resolved", body = super::schema::CommandAnswer))
)]
async fn resolve(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    JsonOrDefault(b): JsonOrDefault<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    let comment = b.comment;
    s.command(&who, CommandBody::Resolve { alert: id, comment })
        .await
}

/// Server-sent events: every change of an alert or a silence as it happens (`event: alert` or
/// `silence`, data `{"kind", "op", "key", "value"}`); `event: lagged` when this client fell
/// behind (re-list, then follow again).
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "alerts",
    summary = "Server-sent events: every change of an alert or a silence",
    responses((status = 200, description = "text/event-stream: event alert|silence|lagged, data {kind, op, key, value}", body = String))
)]
async fn stream(
    State(s): State<ApiState>,
    h: HeaderMap,
) -> Result<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    s.auth.check(&h, Role::Viewer)?;
    let rx = s.cache()?.changes.subscribe();
    // Streams end when the process stops: an open one must not hold the shutdown.
    let stop = s.nats()?.2.clone();
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(c) => Event::default()
                .event(c.kind)
                .data(serde_json::to_string(&c).expect("serialises")),
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    })
    .take_until(async move { stop.cancelled().await });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

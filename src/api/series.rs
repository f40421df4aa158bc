//! One series as the processor sees it now, what an SRE asks when an anomaly alert arrives:
//! its latest value and scores, the detectors' expected value and normal band, a trend
//! forecast, and each rule's phase with the predicted time until its threshold is crossed.
//!
//! The API asks on `prism.query.series` (core NATS request/reply); the processor partition
//! that holds the series answers, wherever it runs.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiQuery};
use super::{ApiState, Role};
use crate::model::SeriesKey;
use crate::subjects;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/series", get(by_labels))
        .route("/api/v1/alerts/{id}/series", get(of_alert))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SeriesQuery {
    /// The metric name.
    metric: String,
    /// Its labels: `name=value` pairs separated by commas.
    #[serde(default)]
    labels: String,
}

/// How long a lookup waits for the processor holding the series.
const WAIT: Duration = Duration::from_secs(3);

async fn lookup(s: &ApiState, key: SeriesKey) -> Result<Json<Value>, ApiError> {
    let (js, _, _) = s.nats()?;
    let shown = key.display();
    let client = js.client();
    let inbox = client.new_inbox();
    let unavailable = |e: String| ApiError::unavailable(format!("series lookup: {e}"));
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    client
        .publish_with_reply(
            subjects::SERIES_QUERY,
            inbox,
            key.0.as_bytes().to_vec().into(),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    // Every partition's owner answers: the series, or an empty "not here".
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut not_here = 0;
    while not_here < s.partitions {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, answers.next()).await else {
            break;
        };
        if m.payload.is_empty() {
            not_here += 1;
            continue;
        }
        return serde_json::from_slice(&m.payload)
            .map(Json)
            .map_err(|e| unavailable(format!("unreadable answer for {shown}: {e}")));
    }
    if not_here == 0 && s.status.get().processor.partitions.is_empty() {
        // Nobody answered at all: maybe no processor runs (this process has none either).
        return Err(ApiError::not_found(format!(
            "no processor answered for series {shown}: none may be running"
        )));
    }
    Err(ApiError::not_found(format!(
        "no processor holds series {shown} (no point of it seen since it was evicted, or a name or label differs)"
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/series",
    tag = "series",
    summary = "One series now: value, detector scores, expected value and band, forecast, time to threshold",
    params(SeriesQuery),
    responses((status = 200, description = "What the processor knows of the series", body = serde_json::Value))
)]
async fn by_labels(
    State(s): State<ApiState>,
    h: HeaderMap,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let mut labels = BTreeMap::new();
    for pair in q.labels.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| ApiError::bad_request(format!("labels: {pair:?} is not name=value")))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    lookup(&s, SeriesKey::from_parts(&q.metric, &labels)).await
}

/// The series behind one of our rules' alerts: its labels less what the rule and the manager
/// added (`metric` is the name).
#[utoipa::path(
    get,
    path = "/api/v1/alerts/{id}/series",
    tag = "series",
    summary = "The series behind one of our rules' alerts",
    params(("id" = String, Path, description = "Alert id, or fingerprint (its latest episode)")),
    responses((status = 200, description = "What the processor knows of the series", body = serde_json::Value))
)]
async fn of_alert(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let (rule, mut labels) = {
        let cache = s.cache()?;
        let alerts = cache.alerts.values.read().unwrap();
        let a = super::find_alert(&alerts, &id)?;
        if a.source != crate::alerting::alert::AlertSource::Rule {
            return Err(ApiError::bad_request(format!(
                "alert {id} came from outside (no series of ours behind it)"
            )));
        }
        (a.rule.clone(), a.labels.clone())
    };
    let defs = s.definitions();
    if let Some(r) = defs.rules.rules.iter().find(|r| r.name == rule) {
        for (k, v) in &r.labels {
            if labels.get(k) == Some(v) {
                labels.remove(k);
            }
        }
    }
    labels.remove("alertname");
    labels.remove("priority");
    let metric = labels.remove("metric").unwrap_or_default();
    lookup(&s, SeriesKey::from_parts(&metric, &labels)).await
}

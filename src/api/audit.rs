//! The audit log, queried: every change asked of the alert manager (API, CLI, Prometheus) is a
//! command in `PRISM_COMMANDS` with who asked and when, and its result is stored beside it on
//! `prism.audit.<kind>` (the stream keeps both a year by default). `GET /api/v1/audit` reads a
//! time range back and pairs each command with its result; newest first.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiQuery};
use super::{ApiState, Role};
use crate::alerting::command::{Command, Reply};
use crate::tools::clock;

/// Writes a change the API made or refused itself to the audit log (`prism.audit.<kind>`), in
/// the shape of the manager's results (no command precedes it).
pub async fn record(
    js: &async_nats::jetstream::Context,
    principal: &str,
    kind: &str,
    ok: bool,
    message: String,
    result: Value,
) {
    let r = Reply {
        request_id: crate::alerting::client::request_id(),
        kind: kind.to_string(),
        principal: principal.to_string(),
        ok,
        message,
        result,
        at: clock::now_ms(),
    };
    crate::alerting::client::store_result(js, &r).await;
}

/// Audits the changes the API refused before they reached anyone (no or bad credentials, too
/// small a role, a malformed or too large body): who tried what, and why it was refused.
pub async fn refusals(
    State(s): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode};
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::DELETE | Method::PUT | Method::PATCH
    );
    if !mutating {
        return next.run(req).await;
    }
    let who = s.auth.identify(req.headers()).map(|p| p.name);
    let from = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let r = next.run(req).await;
    let status = r.status();
    if matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        if let Ok((js, _, _)) = s.nats() {
            let js = js.clone();
            let principal =
                who.unwrap_or_else(|| format!("anonymous@{}", from.as_deref().unwrap_or("?")));
            tokio::spawn(async move {
                record(
                    &js,
                    &principal,
                    "api.refused",
                    false,
                    format!("{method} {path} refused with {}", status.as_u16()),
                    json!({"method": method, "path": path, "status": status.as_u16()}),
                )
                .await;
            });
        }
    }
    r
}

pub fn router() -> Router<ApiState> {
    Router::new().route("/api/v1/audit", get(query))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditFilter {
    /// From (ms since the epoch, or a duration back from now like `24h`); default 24 hours.
    since: Option<String>,
    /// Until (ms since the epoch); default now.
    until: Option<i64>,
    /// Only this caller (`key:<name>`, `jwt:<sub>`).
    principal: Option<String>,
    /// Only this kind (`ack`, `silence_create`, `alert_external`, ...).
    kind: Option<String>,
    /// At most this many records, newest first (default 100, at most 1,000).
    limit: Option<usize>,
}

fn since_ms(s: &Option<String>, now: i64) -> Result<i64, ApiError> {
    match s.as_deref() {
        None => Ok(now - 86_400_000),
        Some(v) => v.parse::<i64>().or_else(|_| {
            humantime::parse_duration(v)
                .map(|d| now - d.as_millis() as i64)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "since: {v:?} is neither ms since the epoch nor a duration like 24h"
                    ))
                })
        }),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    summary = "The audit log: changes asked of the alert manager, with who, what, when and the result (admin)",
    params(AuditFilter),
    responses((status = 200, description = "Records, newest first", body = serde_json::Value))
)]
async fn query(
    State(s): State<ApiState>,
    h: HeaderMap,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Admin)?;
    let now = clock::now_ms();
    let since = since_ms(&f.since, now)?;
    let until = f.until.unwrap_or(now + 1);
    let limit = f.limit.unwrap_or(100);
    if limit == 0 || limit > 1_000 {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let (js, _, _) = s.nats()?;
    let unavailable = |e: String| ApiError::unavailable(format!("audit log: {e}"));
    let mut stream = js
        .get_stream(&s.commands_stream)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let last = stream
        .info()
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .state
        .last_sequence;
    // Commands by request id, in stream order; results joined as they come.
    let mut records: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    if last > 0 {
        let start = time::OffsetDateTime::from_unix_timestamp_nanos(since as i128 * 1_000_000)
            .map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
        let c = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut messages = c.messages().await.map_err(|e| unavailable(e.to_string()))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(m))) = next else { break };
            let Ok(info) = m.info() else { break };
            let (seq, pending) = (info.stream_sequence, info.pending);
            let at = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
            if at < until {
                if let Ok(cmd) = serde_json::from_slice::<Command>(&m.payload) {
                    let mut body = serde_json::to_value(&cmd.body).unwrap_or_default();
                    let kind = body["kind"].take();
                    records.insert(
                        cmd.request_id.clone(),
                        (
                            seq,
                            json!({
                                "request_id": cmd.request_id,
                                "at": at,
                                "principal": cmd.principal,
                                "kind": kind,
                                "command": body,
                                "result": null,
                            }),
                        ),
                    );
                } else if let Ok(reply) = serde_json::from_slice::<Reply>(&m.payload) {
                    let result = json!({
                        "ok": reply.ok,
                        "message": reply.message,
                        "result": reply.result,
                        "at": reply.at,
                    });
                    match records.get_mut(&reply.request_id) {
                        Some((_, r)) => r["result"] = result,
                        // A change the API made or refused itself (API keys, refusals): the
                        // result is the record.
                        None if reply.kind.starts_with("key.")
                            || reply.kind.starts_with("api.") =>
                        {
                            records.insert(
                                reply.request_id.clone(),
                                (
                                    seq,
                                    json!({
                                        "request_id": reply.request_id,
                                        "at": at,
                                        "principal": reply.principal,
                                        "kind": reply.kind,
                                        "command": reply.result,
                                        "result": result,
                                    }),
                                ),
                            );
                        }
                        None => {}
                    }
                }
            }
            if pending == 0 || seq >= last {
                break;
            }
        }
    }
    let mut list: Vec<(u64, Value)> = records
        .into_values()
        .filter(|(_, r)| f.principal.as_ref().is_none_or(|p| r["principal"] == *p))
        .filter(|(_, r)| f.kind.as_ref().is_none_or(|k| r["kind"] == *k))
        .collect();
    list.sort_by_key(|r| std::cmp::Reverse(r.0));
    let count = list.len();
    let records: Vec<Value> = list.into_iter().take(limit).map(|(_, r)| r).collect();
    Ok(Json(json!({
        "records": records,
        "count": count,
        "since": since,
        "until": until,
    })))
}

//! The HTTP API (`/api/v1`), on the process's HTTP listener: alerts (list with filters, one
//! with its history, ack, un-ack, resolve), silences (list, get, create, expire), status,
//! reload. Every route needs a credential with a role (viewer reads; operator acks, silences,
//! resolves; admin reloads); changes go to the alert manager as commands with the caller as
//! principal, so `PRISM_COMMANDS` is their audit log.

mod alertmanager;
mod audit;
pub mod auth;
mod cache;
pub mod config;
pub mod error;
mod limit;
mod rules;
mod series;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::alerting::alert::ManagedAlert;
use crate::alerting::client;
use crate::alerting::command::CommandBody;
use crate::alerting::matchers::MatcherDef;
use crate::app::reload::Definitions;
use crate::app::status::StatusHandle;
use crate::config::Config;
use crate::tools::clock;
use auth::{Auth, Principal};
use cache::Cache;
pub use config::{ApiConfig, Role};
use error::{ApiError, JsonBody, JsonOrDefault};
use tokio::sync::watch;

/// What the routes share. The NATS side arrives once connected (the listener starts first,
/// so health checks answer while waiting for NATS).
#[derive(Clone)]
pub struct ApiState {
    auth: Arc<Auth>,
    nats: Arc<OnceLock<(jetstream::Context, Arc<Cache>, CancellationToken)>>,
    status: StatusHandle,
    /// The rate limiter, when on (its idle clients are forgotten by [`ApiState::watch_credentials`]).
    limiter: Arc<std::sync::Mutex<Option<limit::Limiter>>>,
    /// The rules and routes in force (reloads included).
    defs: watch::Receiver<Arc<Definitions>>,
    command_timeout: Duration,
    /// `PRISM_ALERTS` (its name as configured): the alert history.
    alerts_stream: String,
    /// `PRISM_COMMANDS`: the audit log.
    commands_stream: String,
    /// How long an external alert lasts when not sent again (`alerting.external_resolve_timeout_secs`).
    external_timeout_ms: i64,
}

impl ApiState {
    pub fn new(
        cfg: &Config,
        status: StatusHandle,
        defs: watch::Receiver<Arc<Definitions>>,
    ) -> Result<ApiState, String> {
        Ok(ApiState {
            auth: Arc::new(Auth::from_config(&cfg.api)?),
            nats: Arc::default(),
            limiter: Arc::default(),
            status,
            defs,
            command_timeout: Duration::from_millis(cfg.api.command_timeout_ms),
            external_timeout_ms: cfg.alerting.external_resolve_timeout_secs as i64 * 1000,
            alerts_stream: cfg.streams.alerts.name.clone(),
            commands_stream: cfg.streams.commands.name.clone(),
        })
    }

    /// Who may call (shared with `/metrics`).
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    /// Until `stop`: reads the JWKS file again when it changes, and forgets idle clients of
    /// the rate limiter.
    pub fn watch_credentials(&self, stop: CancellationToken) {
        let (auth, limiter) = (self.auth.clone(), self.limiter.clone());
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                match auth.refresh() {
                    Some(Ok(m)) => tracing::info!("{m}"),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "JWKS not reloaded: keeping the previous keys")
                    }
                    None => {}
                }
                ticks += 1;
                if ticks.is_multiple_of(30) {
                    if let Some(l) = limiter.lock().expect("limiter lock").as_ref() {
                        l.forget_idle();
                    }
                }
            }
        });
    }

    fn definitions(&self) -> Arc<Definitions> {
        self.defs.borrow().clone()
    }

    /// One silence by id, from the mirror.
    fn silence(&self, id: &str) -> Result<crate::alerting::silence::Silence, ApiError> {
        let cache = self.cache()?;
        let silences = cache.silences.values.read().unwrap();
        silences
            .get(&crate::alerting::store::key(id))
            .filter(|x| x.id == id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no silence {id:?}")))
    }

    /// Connects the routes to NATS and starts following the manager's state.
    pub fn connect(&self, js: jetstream::Context, stop: CancellationToken) {
        let cache = Arc::new(Cache::default());
        cache.follow(js.clone(), stop.clone());
        let _ = self.nats.set((js, cache, stop));
    }

    fn nats(&self) -> Result<&(jetstream::Context, Arc<Cache>, CancellationToken), ApiError> {
        self.nats
            .get()
            .ok_or_else(|| ApiError::unavailable("not connected to NATS yet"))
    }

    fn cache(&self) -> Result<&Arc<Cache>, ApiError> {
        let (_, c, _) = self.nats()?;
        if !c.alerts.current.load(Ordering::Relaxed) || !c.silences.current.load(Ordering::Relaxed)
        {
            return Err(ApiError::unavailable("still reading the alert state"));
        }
        Ok(c)
    }

    async fn command(&self, who: &Principal, body: CommandBody) -> Result<Json<Value>, ApiError> {
        let (js, _, _) = self.nats()?;
        let reply = client::send(js, &who.name, body, self.command_timeout)
            .await
            .map_err(|e| ApiError::unavailable(format!("the alert manager did not answer: {e}")))?;
        if reply.ok {
            return Ok(Json(
                json!({"message": reply.message, "result": reply.result, "request_id": reply.request_id}),
            ));
        }
        let status =
            if reply.message.starts_with("no alert") || reply.message.starts_with("no silence") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
        Err(ApiError::new(
            status,
            if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "refused"
            },
            reply.message,
        ))
    }
}

pub fn router(state: ApiState, cfg: &ApiConfig) -> Router {
    let limiter = limit::Limiter::new(
        cfg.rate_limit_per_second,
        cfg.rate_limit_burst,
        state.auth.clone(),
    );
    let routes = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/alerts/{id}/unack", post(unack))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).delete(expire_silence),
        )
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/stream", get(stream))
        .merge(alertmanager::router())
        .merge(rules::router())
        .merge(audit::router())
        .merge(series::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes));
    let routes = match limiter {
        Some(l) => {
            *state.limiter.lock().expect("limiter lock") = Some(l.clone());
            routes.layer(axum::middleware::from_fn_with_state(l, limit::limit))
        }
        None => routes,
    };
    routes.with_state(state)
}

async fn status(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let st = s.status.get();
    Ok(Json(json!({
        "version": st.version,
        "uptime_secs": (clock::now_ms() - st.started_at_ms) / 1000,
        "nats": st.nats,
        "processor": st.processor,
        "manager": st.manager,
        "notify": st.notify,
    })))
}

/// Filters of the alert list (all optional; `active` by default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFilter {
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

async fn list_alerts(
    State(s): State<ApiState>,
    h: HeaderMap,
    q: Result<Query<AlertFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let Query(f) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
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

async fn get_alert(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let cache = s.cache()?;
    let alerts = cache.alerts.values.read().unwrap();
    // By id, or by fingerprint (its latest episode).
    let a = alerts
        .get(&crate::alerting::store::key(&id))
        .filter(|a| a.id == id)
        .or_else(|| {
            alerts
                .values()
                .filter(|a| a.fingerprint == id)
                .max_by_key(|a| a.starts_at)
        })
        .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))?;
    Ok(Json(serde_json::to_value(a).expect("serialises")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    comment: String,
    /// How long the acknowledgement holds (e.g. `2h`); default until the alert ends.
    #[serde(default)]
    expires_in: Option<String>,
}

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

async fn unack(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    s.command(&who, CommandBody::Unack { alert: id }).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(default)]
    comment: String,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
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

async fn expire_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Operator)?;
    s.command(&who, CommandBody::SilenceExpire { id }).await
}

async fn reload(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Admin)?;
    s.command(&who, CommandBody::RulesReload).await
}

/// Server-sent events: every change of an alert or a silence as it happens (`event: alert` or
/// `silence`, data `{"kind", "op", "key", "value"}`); `event: lagged` when this client fell
/// behind (re-list, then follow again).
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

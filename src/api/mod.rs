//! The HTTP API, on the process's HTTP listener: `/api/v1` (alerts, silences, rules and
//! routes, series, the audit log, status, reload; described by `/api/v1/openapi.json`) and
//! Alertmanager's API v2 for its clients. Every route needs a credential with a role (viewer
//! reads; operator acks, silences, resolves; admin reloads and reads the audit log); changes go
//! to the alert manager as commands with the caller as principal, so `PRISM_COMMANDS` is their
//! audit log.

mod alertmanager;
mod alerts;
mod audit;
pub mod auth;
mod cache;
mod capacity;
pub mod config;
pub mod error;
mod keys;
mod limit;
pub mod openapi;
mod rules;
mod schema;
mod series;
mod silences;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::alerting::client;
use crate::alerting::command::CommandBody;
use crate::app::reload::Definitions;
use crate::app::status::StatusHandle;
use crate::config::Config;
use crate::tools::clock;
use auth::{Auth, Principal};
use cache::Cache;
pub use config::{ApiConfig, Role};
use error::ApiError;
use tokio::sync::watch;

/// An alert of the mirror by id, or by fingerprint (its latest episode).
fn find_alert<'a>(
    alerts: &'a std::collections::BTreeMap<String, crate::alerting::alert::ManagedAlert>,
    id: &str,
) -> Result<&'a crate::alerting::alert::ManagedAlert, ApiError> {
    alerts
        .get(&crate::alerting::store::key(id))
        .filter(|a| a.id == id)
        .or_else(|| {
            alerts
                .values()
                .filter(|a| a.fingerprint == id)
                .max_by_key(|a| a.starts_at)
        })
        .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))
}

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
    /// `streams.partitions`: how many answers a series lookup waits for.
    partitions: u32,
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
            partitions: cfg.streams.partitions,
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
        keys::follow(js.clone(), self.auth.clone(), stop.clone());
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
            // Read-your-writes: what the manager stored shows in the next read.
            let (js, cache, _) = self.nats()?;
            cache.catch_up(js, Duration::from_secs(2)).await;
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

pub fn router(state: ApiState, cfg: &ApiConfig, http: &crate::app::http::HttpConfig) -> Router {
    let limiter = limit::Limiter::new(
        cfg.rate_limit_per_second,
        cfg.rate_limit_burst,
        state.auth.clone(),
    );
    let routes = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/reload", post(reload))
        .merge(alerts::router())
        .merge(silences::router())
        .merge(alertmanager::router())
        .merge(rules::router())
        .merge(audit::router())
        .merge(series::router())
        .merge(capacity::router())
        .merge(openapi::router())
        .merge(keys::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(error::as_json))
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes));
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        audit::refusals,
    ));
    let routes = match limiter {
        Some(l) => {
            *state.limiter.lock().expect("limiter lock") = Some(l.clone());
            routes.layer(axum::middleware::from_fn_with_state(l, limit::limit))
        }
        None => routes,
    };
    // Outermost: a browser's preflight is answered before any limit counts it.
    with_limits(routes, http).with_state(state)
}

#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    summary = "Version, uptime, NATS connection, partitions owned and their lag, manager and notifier state",
    responses((status = 200, description = "The process status", body = serde_json::Value))
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/reload",
    tag = "rules",
    summary = "Reload rules and routes in every process (admin)",
    responses((status = 200, description = "Reloaded", body = schema::CommandAnswer))
)]
async fn reload(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Admin)?;
    s.command(&who, CommandBody::RulesReload).await
}

/// The time limit on every API request, then CORS when configured.
fn with_limits(router: Router<ApiState>, cfg: &crate::app::http::HttpConfig) -> Router<ApiState> {
    use axum::response::IntoResponse;
    let limit = Duration::from_millis(cfg.request_timeout_ms);
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    format!(
                        "no answer within {} ms (http.request_timeout_ms)",
                        limit.as_millis()
                    ),
                )
                .into_response(),
            }
        },
    ));
    if cfg.cors_allowed_origins.is_empty() {
        return router;
    }
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<axum::http::HeaderValue> = cfg
        .cors_allowed_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

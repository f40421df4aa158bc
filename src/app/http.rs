//! The process's HTTP listener: `/healthz` (alive), `/readyz` (doing its work), `/metrics`
//! (Prometheus). The API adds its routes to the same [`router`].

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::status::StatusHandle;
use crate::tools::clock;

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`, e.g. `127.0.0.1:9464`; empty disables.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl HttpConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            vec![(
                "listen".into(),
                format!("{:?} is not an address like 127.0.0.1:9464", self.listen),
            )]
        } else {
            Vec::new()
        }
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub status: StatusHandle,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// `/readyz` fails while a partition lags more than this.
    pub ready_max_lag: u64,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "http listening (/healthz, /readyz, /metrics)");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let st = s.status.get();
    let body = serde_json::json!({
        "status": if st.shutting_down { "shutting_down" } else { "ok" },
        "version": st.version,
        "uptime_secs": (clock::now_ms() - st.started_at_ms) / 1000,
    });
    let code = if st.shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let st = s.status.get();
    let reasons = st.not_ready(s.ready_max_lag);
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "nats": st.nats,
        "processor": st.processor,
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

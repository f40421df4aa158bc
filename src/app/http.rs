//! The process's HTTP listener: `/healthz` (alive), `/readyz` (doing its work), `/metrics`
//! (Prometheus). The API adds its routes to the same [`router`]. Plain HTTP, or TLS (rustls)
//! from certificate and key files read again when they change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// Address of `/healthz`, `/readyz`, `/metrics` and the API, e.g. `127.0.0.1:9464`;
    /// empty disables.
    pub listen: String,
    /// TLS: serve HTTPS with this certificate chain and private key (PEM files, read again
    /// within seconds when either changes). Absent: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Longest time a request may take to answer (its response head), in ms.
    pub request_timeout_ms: u64,
    /// Browser origins allowed to call the API (CORS), e.g. `https://grafana.example.com`;
    /// empty: no CORS headers at all (browsers on other origins are refused).
    pub cors_allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            tls: None,
            request_timeout_ms: 30_000,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl HttpConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = crate::config::yaml::Problems::default();
        p.check(
            self.listen.is_empty() || self.listen.parse::<SocketAddr>().is_ok(),
            "listen",
            &format!("{:?} is not an address like 127.0.0.1:9464", self.listen),
        );
        p.check(
            self.request_timeout_ms > 0,
            "request_timeout_ms",
            "must be > 0",
        );
        for (i, o) in self.cors_allowed_origins.iter().enumerate() {
            p.check(
                o.parse::<axum::http::HeaderValue>().is_ok()
                    && (o.starts_with("http://") || o.starts_with("https://")),
                &format!("cors_allowed_origins[{i}]"),
                &format!("{o:?} is not an origin like https://grafana.example.com"),
            );
        }
        p.into_vec()
    }
}

/// A check of a request's headers: `Some(answer)` refuses it.
pub type MetricsGuard = Arc<dyn Fn(&axum::http::HeaderMap) -> Option<Response> + Send + Sync>;

#[derive(Clone)]
pub struct HttpState {
    pub status: StatusHandle,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// `/readyz` fails while a partition lags more than this.
    pub ready_max_lag: u64,
    /// Checks a `/metrics` request's credentials: the refusal to send, if any (the API's
    /// viewer check, once the API has credentials).
    pub metrics_guard: Option<MetricsGuard>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `router` on `listener` until `stop`: HTTPS when `tls` is given (the files are read
/// again when they change), with the caller's address for per-client limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<TlsFiles>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let Some(files) = tls else {
        tracing::info!(address = %address, "http listening (/healthz, /readyz, /metrics, /api)");
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await?;
        return Ok(());
    };
    let config = tls_config(&files).await?;
    tracing::info!(address = %address, cert = %files.cert_file.display(), "https listening (/healthz, /readyz, /metrics, /api)");
    let handle = axum_server::Handle::new();
    let reloads = tokio::spawn(reload_tls_on_change(files, config.clone(), stop.clone()));
    let h = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        h.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let served = axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(app)
        .await;
    reloads.abort();
    Ok(served?)
}

/// The TLS settings from the files, with a message that names them when they are wrong.
pub async fn tls_config(files: &TlsFiles) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert_file, &files.key_file)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "http.tls: cannot use {} and {}: {e}",
                files.cert_file.display(),
                files.key_file.display()
            )
        })
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert_file), m(&files.key_file))
}

/// How often the certificate and key files are checked for changes.
const TLS_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Reloads the certificate when its files change (a renewal): new connections get the new one;
/// a pair that does not load is logged and the old one kept.
async fn reload_tls_on_change(
    files: TlsFiles,
    config: axum_server::tls_rustls::RustlsConfig,
    stop: CancellationToken,
) {
    let mut seen = modified(&files);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TLS_CHECK_EVERY) => {}
        }
        let now = modified(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match config
            .reload_from_pem_file(&files.cert_file, &files.key_file)
            .await
        {
            Ok(()) => tracing::info!(cert = %files.cert_file.display(), "TLS certificate reloaded"),
            Err(e) => {
                metrics::counter!(crate::telemetry::RELOADS, "result" => "tls_error").increment(1);
                tracing::error!(cert = %files.cert_file.display(), key = %files.key_file.display(), error = %e, "TLS certificate not reloaded: keeping the previous one")
            }
        }
    }
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

async fn metrics(State(s): State<HttpState>, h: axum::http::HeaderMap) -> Response {
    if let Some(refusal) = s.metrics_guard.as_ref().and_then(|g| g(&h)) {
        return refusal;
    }
    crate::telemetry::collect_process();
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

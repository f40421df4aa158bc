//! A PrismWatch process: its components as tasks under one shutdown token, the status they
//! share, and the HTTP listener that reports it.
//!
//! `run` connects to NATS (waiting for it, and saying so, when it is not up yet), declares the
//! streams, then starts the components this process runs: by default all of them (one binary,
//! one command); `prismwatch run --only processor` runs one, for scale-out. SIGTERM or SIGINT
//! stops every component within seconds, in every state (a second signal exits at once); SIGHUP
//! reloads rules and routes (`reload.rs`).

pub mod http;
pub mod huge_pages;
pub mod reload;
pub mod status;

use std::path::PathBuf;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::rules::RuleSet;
use crate::{alerting, bus, processor, subjects, telemetry};
use reload::{Definitions, Reloader, Sources};
use status::StatusHandle;

/// The parts a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Component {
    /// Metric messages in, alert events out (partitions shared by every processor of a group).
    Processor,
    /// Alert events, commands and external alerts in; alert state, silences and notifications
    /// out (one active per group, the others stand by).
    Manager,
    /// Notifications in, deliveries to email, Slack, DingTalk, webhooks, PagerDuty and
    /// Telegram out (any number of workers share the queue).
    Notify,
    /// Exchange metrics in, exchange and platform health scores and cross-exchange deviations
    /// out, as metrics (run one; more publish the same points, deduplicated).
    Health,
    /// The capacity report, refreshed every `capacity.refresh_secs` for the API.
    Capacity,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Processor,
        Component::Manager,
        Component::Notify,
        Component::Health,
        Component::Capacity,
    ];
}

/// A process's identity in its groups: host, pid and a random suffix.
pub fn member_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let salt: u16 = rand::random();
    subjects::token(&format!(
        "{}-{}-{salt:04x}",
        host.trim(),
        std::process::id()
    ))
}

/// Cancels `stop` on the first SIGTERM or SIGINT; exits the process on the second.
pub fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        signal().await;
        tracing::info!("stopping (a second signal exits at once)");
        stop.cancel();
        signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs `components` until `stop` (or until one fails: then the others are stopped too and the
/// error is returned). Rules and routes reload from the paths `cfg` names.
pub async fn run(
    cfg: Config,
    rules: RuleSet,
    components: Vec<Component>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    run_from(cfg, None, rules, components, stop).await
}

/// [`run`] for a config read from `config_file` (relative rule and routing paths resolve
/// against it on reload too).
pub async fn run_from(
    cfg: Config,
    config_file: Option<PathBuf>,
    rules: RuleSet,
    components: Vec<Component>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    huge_pages::apply_or_warn(cfg.pipeline.transparent_huge_pages);
    // The manager routes and the notifiers deliver with the routing file's receivers.
    // The API lists routes and receivers too, where it has credentials to answer with.
    let with_routing = components.contains(&Component::Manager)
        || components.contains(&Component::Notify)
        || (!cfg.http.listen.is_empty() && cfg.api.has_credentials());
    let sources = Sources::new(cfg.clone(), config_file, with_routing);
    let routing = if with_routing {
        Some(sources.load_routing()?)
    } else {
        None
    };
    let member = member_id();
    let reloader = Reloader::new(
        sources,
        Definitions {
            rules,
            routing,
            generation: 0,
        },
        &member,
    );
    let status = StatusHandle::new(&member, &cfg.nats.url);
    let metrics = telemetry::install_metrics();
    crate::trace::init(
        &cfg.telemetry.otlp_endpoint,
        cfg.telemetry.trace_sample_ratio,
    )?;
    let http_stop = CancellationToken::new();
    let api = crate::api::ApiState::new(&cfg, status.clone(), reloader.watch())
        .map_err(anyhow::Error::msg)?;
    let http = if cfg.http.listen.is_empty() {
        None
    } else {
        let router = http::router(http::HttpState {
            status: status.clone(),
            metrics,
            ready_max_lag: cfg.processor.ready_max_lag,
            metrics_guard: cfg.api.has_credentials().then(|| {
                let auth = api.auth();
                let guard: http::MetricsGuard = std::sync::Arc::new(move |h| {
                    use axum::response::IntoResponse;
                    auth.check(h, crate::api::Role::Viewer)
                        .err()
                        .map(IntoResponse::into_response)
                });
                guard
            }),
        })
        .merge(crate::api::router(api.clone(), &cfg.api, &cfg.http));
        // A broken certificate is an error now, not at the first connection.
        if let Some(files) = &cfg.http.tls {
            http::tls_config(files).await?;
        }
        api.watch_credentials(http_stop.clone());
        // Bound first, so a taken port is an error now, not a log line later.
        let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!("http.listen: cannot listen on {}: {e}", cfg.http.listen)
            })?;
        Some(tokio::spawn(http::serve(
            listener,
            router,
            cfg.http.tls.clone(),
            http_stop.clone(),
        )))
    };

    let on_event = {
        let status = status.clone();
        move |e: async_nats::Event| {
            let connected = match e {
                async_nats::Event::Connected => true,
                async_nats::Event::Disconnected => false,
                _ => return,
            };
            tracing::info!(connected, "nats connection");
            status.update(|s| s.nats.connected = connected);
        }
    };
    let Some(client) = bus::connect_waiting(&cfg.nats, &stop, on_event).await? else {
        http_stop.cancel();
        return Ok(());
    };
    let info = client.server_info();
    status.update(|s| {
        s.nats.connected = true;
        s.nats.server_version = info.version.clone();
    });
    tracing::info!(url = %cfg.nats.url, server = %info.version, member = %member, "connected to NATS");
    let js = async_nats::jetstream::new(client.clone());
    declare_streams(&js, &cfg, &stop).await?;
    if http.is_some() {
        api.connect(js.clone(), stop.clone());
    }

    let reloads = tokio::spawn(reloader.clone().serve(client.clone(), stop.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for c in &components {
        let (cfg, js, status, member, stop) = (
            cfg.clone(),
            js.clone(),
            status.clone(),
            member.clone(),
            stop.clone(),
        );
        match c {
            Component::Processor => {
                let defs = reloader.watch();
                tasks.spawn(async move {
                    processor::run(cfg, defs, js, status, member, stop)
                        .await
                        .map_err(|e| anyhow::anyhow!("processor: {e}"))
                });
            }
            Component::Manager => {
                let reloader = reloader.clone();
                tasks.spawn(async move {
                    alerting::run(cfg, reloader, js, status, member, stop)
                        .await
                        .map_err(|e| anyhow::anyhow!("alert manager: {e}"))
                });
            }
            Component::Health => {
                tasks.spawn(async move {
                    let _ = (member, status);
                    crate::health::run(cfg, js, stop)
                        .await
                        .map_err(|e| anyhow::anyhow!("exchange health: {e}"))
                });
            }
            Component::Capacity => {
                tasks.spawn(async move {
                    let _ = (member, status);
                    crate::capacity::run(cfg, js, stop)
                        .await
                        .map_err(|e| anyhow::anyhow!("capacity: {e}"))
                });
            }
            Component::Notify => {
                let defs = reloader.watch();
                tasks.spawn(async move {
                    let _ = member;
                    crate::notify::run(cfg, defs, js, status, stop)
                        .await
                        .map_err(|e| anyhow::anyhow!("notifier: {e}"))
                });
            }
        }
    }
    let mut failure = None;
    tokio::select! {
        biased;
        _ = stop.cancelled() => {}
        Some(done) = tasks.join_next() => {
            failure = match done {
                // Stopped meanwhile: a component that returns at once on the token is no failure.
                Ok(Ok(())) if stop.is_cancelled() => None,
                Ok(Ok(())) => Some(anyhow::anyhow!("a component ended unexpectedly")),
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("a component panicked: {e}")),
            };
            stop.cancel();
        }
    }
    status.update(|s| s.shutting_down = true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "component failed while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("components did not stop within 10 s");
    }
    // What the components traced last goes out before the process does.
    tokio::task::spawn_blocking(crate::trace::flush).await.ok();
    reloads.abort();
    bus::close(&client).await;
    http_stop.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Declares the streams, retrying while the server cannot answer yet.
async fn declare_streams(
    js: &async_nats::jetstream::Context,
    cfg: &Config,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match bus::ensure_streams(js, &cfg.streams).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot declare the streams yet");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

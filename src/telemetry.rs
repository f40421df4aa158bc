//! Logs (tracing) and metrics: every metric is declared here, once.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Logs and the Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `human` or `json`.
    pub log_format: String,
    /// Default log filter (`RUST_LOG` overrides), e.g. `info` or `prismwatch=debug`.
    pub log_level: String,
    /// Address of the Prometheus `/metrics` endpoint; empty disables it.
    pub metrics_listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "human".into(),
            log_level: "info".into(),
            metrics_listen: "127.0.0.1:9464".into(),
        }
    }
}

impl TelemetryConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !matches!(self.log_format.as_str(), "human" | "json") {
            out.push((
                "log_format".into(),
                format!("{:?}: expected human or json", self.log_format),
            ));
        }
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<SocketAddr>().is_err() {
            out.push((
                "metrics_listen".into(),
                format!(
                    "{:?} is not an address like 127.0.0.1:9464",
                    self.metrics_listen
                ),
            ));
        }
        out
    }
}

/// Initialises tracing (once; later calls are ignored).
pub fn init_logs(cfg: &TelemetryConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cfg.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Starts the Prometheus exporter and describes every metric.
pub fn init_metrics(cfg: &TelemetryConfig) -> anyhow::Result<()> {
    if cfg.metrics_listen.is_empty() {
        return Ok(());
    }
    let addr: SocketAddr = cfg.metrics_listen.parse()?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .install()?;
    describe();
    Ok(())
}

pub const MESSAGES_RECEIVED: &str = "prismwatch_ingest_messages_received_total";
pub const POINTS_RECEIVED: &str = "prismwatch_ingest_points_received_total";
pub const POINTS_REJECTED: &str = "prismwatch_ingest_points_rejected_total";
pub const MESSAGES_DEADLETTERED: &str = "prismwatch_ingest_messages_deadlettered_total";
pub const POINTS_LATE: &str = "prismwatch_ingest_points_late_total";
pub const POINTS_DEDUPLICATED: &str = "prismwatch_pipeline_points_deduplicated_total";
pub const POINTS_OUT_OF_ORDER: &str = "prismwatch_pipeline_points_out_of_order_total";
pub const SERIES_ACTIVE: &str = "prismwatch_pipeline_series_active";
pub const SERIES_EVICTED: &str = "prismwatch_pipeline_series_evicted_total";
pub const WATERMARK: &str = "prismwatch_pipeline_watermark_seconds";
pub const ALERT_EVENTS: &str = "prismwatch_alerts_events_total";
pub const BATCH_DURATION: &str = "prismwatch_pipeline_batch_duration_seconds";
pub const PROCESSING_LATENCY: &str = "prismwatch_pipeline_processing_latency_seconds";
pub const CONSUMER_PENDING: &str = "prismwatch_ingest_consumer_pending_messages";
pub const PUBLISH_RETRIES: &str = "prismwatch_alerts_publish_retries_total";
pub const CHECKPOINTS: &str = "prismwatch_pipeline_checkpoints_total";

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(MESSAGES_RECEIVED, "Metric messages received from JetStream");
    describe_counter!(POINTS_RECEIVED, "Valid metric points decoded");
    describe_counter!(
        POINTS_REJECTED,
        "Points (or whole messages) rejected, by reason"
    );
    describe_counter!(
        MESSAGES_DEADLETTERED,
        "Messages copied to the dead-letter stream"
    );
    describe_counter!(POINTS_LATE, "Points older than the watermark, dropped");
    describe_counter!(
        POINTS_DEDUPLICATED,
        "Points dropped as repeats of a (series, timestamp)"
    );
    describe_counter!(
        POINTS_OUT_OF_ORDER,
        "Points older than their series' latest point, dropped"
    );
    describe_gauge!(SERIES_ACTIVE, "Series with state in the pipeline");
    describe_counter!(SERIES_EVICTED, "Idle series evicted");
    describe_gauge!(
        WATERMARK,
        Unit::Seconds,
        "Event-time watermark, seconds since the epoch"
    );
    describe_counter!(
        ALERT_EVENTS,
        "Alert events published, by priority and status"
    );
    describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "Time to decode, process and publish one batch"
    );
    describe_histogram!(
        PROCESSING_LATENCY,
        Unit::Seconds,
        "From a message's arrival in JetStream to its acknowledgement after processing"
    );
    describe_gauge!(
        CONSUMER_PENDING,
        "Messages in the stream not yet delivered to the processor"
    );
    describe_counter!(
        PUBLISH_RETRIES,
        "Failed alert or dead-letter publishes that were retried"
    );
    describe_counter!(CHECKPOINTS, "Checkpoints written");
}

//! Logs (tracing) and metrics: every metric is declared here, once.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `human` or `json`.
    pub log_format: String,
    /// Default log filter (`RUST_LOG` overrides), e.g. `info` or `prismwatch=debug`.
    pub log_level: String,
    /// OTLP/HTTP endpoint traces are exported to (e.g. `http://127.0.0.1:4318`); `""`: off.
    pub otlp_endpoint: String,
    /// Share of the messages without a publisher's sampled `traceparent` that are traced.
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "human".into(),
            log_level: "info".into(),
            otlp_endpoint: String::new(),
            trace_sample_ratio: 0.0001,
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
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            out.push((
                "trace_sample_ratio".into(),
                "must be between 0 and 1".into(),
            ));
        }
        if !self.otlp_endpoint.is_empty() {
            if !cfg!(feature = "otlp") {
                out.push((
                    "otlp_endpoint".into(),
                    "this binary is built without the `otlp` feature (cargo build --features otlp)"
                        .into(),
                ));
            } else if !self.otlp_endpoint.starts_with("http://")
                && !self.otlp_endpoint.starts_with("https://")
            {
                out.push((
                    "otlp_endpoint".into(),
                    format!(
                        "{:?}: expected an http:// or https:// URL",
                        self.otlp_endpoint
                    ),
                ));
            }
        }
        out
    }
}

/// Lets one log line through per key and period; counts what it held back, so a burst of bad
/// input is one line (with the count), not thousands.
pub struct LogLimiter {
    every: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// `Some(lines held back since the last one)` when a line for `key` may be logged now.
    pub fn allow(&mut self, key: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// Initialises tracing (once; later calls are ignored).
pub fn init_logs(cfg: &TelemetryConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if cfg.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the Prometheus recorder (once per process) and describes every metric; `/metrics`
/// renders from the returned handle.
pub fn install_metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        10.0,
                    ],
                )
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests run several apps in a process).
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_families();
            // Histograms buffer their samples until upkeep folds them in: without it they grow
            // for as long as nobody scrapes /metrics.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

pub const BUILD_INFO: &str = "prismwatch_build_info";

/// Every family at 0 from the start (Prometheus' convention: a rate over a counter that
/// appears only at its first increment misses that increment, and alerts on `absent()` fire),
/// with the label values known in advance; `prismwatch_build_info` (1, labelled with the
/// version); process metrics (CPU, memory, file descriptors, start time) are collected per
/// scrape by [`collect_process`].
fn register_families() {
    use metrics::{counter, gauge, histogram};
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for name in [
        MESSAGES_RECEIVED,
        POINTS_RECEIVED,
        MESSAGES_DEADLETTERED,
        POINTS_LATE,
        POINTS_DEDUPLICATED,
        POINTS_OUT_OF_ORDER,
        SERIES_EVICTED,
        PUBLISH_RETRIES,
        CHECKPOINTS,
        CHECKPOINTS_UNREADABLE,
        SERIES_QUARANTINED_TOTAL,
        ALERTS_SUPPRESSED,
        TICKS,
        SERIES_CONFLICTS,
        SERIES_CLAIMS_DROPPED,
    ] {
        counter!(name).absolute(0);
    }
    for name in [
        BATCH_DURATION,
        PROCESSING_LATENCY,
        CHECKPOINT_DURATION,
        CHECKPOINT_SERIALISE_DURATION,
        CHECKPOINT_PAUSE_DURATION,
    ] {
        let _ = histogram!(name);
    }
    for name in [
        CHECKPOINT_BYTES,
        MANAGER_ACTIVE,
        MANAGER_SILENCES_ACTIVE,
        MANAGER_SILENCED,
        MANAGER_INHIBITED,
        MANAGER_FLAPPING,
        MANAGER_STORMS,
        MANAGER_OVER_LIMIT,
        MANAGER_GROUPS,
    ] {
        gauge!(name).set(0.0);
    }
    for r in crate::ingest::RejectReason::ALL {
        counter!(POINTS_REJECTED, "reason" => r.as_str()).absolute(0);
    }
    for p in crate::model::Priority::ALL {
        for st in crate::model::AlertStatus::ALL {
            counter!(ALERT_EVENTS, "priority" => p.token(), "status" => st.token()).absolute(0);
        }
    }
    for kind in ["event", "dead_letter"] {
        counter!(PUBLISH_FAILURES, "kind" => kind).absolute(0);
    }
    for result in ["ok", "refused"] {
        counter!(RELOADS, "result" => result).absolute(0);
    }
}

/// Process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_start_time_seconds`, ...), read now: called per scrape.
pub fn collect_process() {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
}

pub const MESSAGES_RECEIVED: &str = "prismwatch_ingest_messages_received_total";
pub const POINTS_RECEIVED: &str = "prismwatch_ingest_points_received_total";
pub const POINTS_REJECTED: &str = "prismwatch_ingest_points_rejected_total";
pub const MESSAGES_DEADLETTERED: &str = "prismwatch_ingest_messages_deadlettered_total";
pub const RULE_EVALUATIONS: &str = "prismwatch_rule_evaluations_total";
pub const POINTS_LATE: &str = "prismwatch_ingest_points_late_total";
pub const POINTS_DEDUPLICATED: &str = "prismwatch_pipeline_points_deduplicated_total";
pub const POINTS_OUT_OF_ORDER: &str = "prismwatch_pipeline_points_out_of_order_total";
pub const SERIES_ACTIVE: &str = "prismwatch_pipeline_series_active";
pub const SERIES_EVICTED: &str = "prismwatch_pipeline_series_evicted_total";
pub const WATERMARK: &str = "prismwatch_pipeline_watermark_timestamp_seconds";
pub const ALERT_EVENTS: &str = "prismwatch_alerts_events_total";
pub const BATCH_DURATION: &str = "prismwatch_pipeline_batch_duration_seconds";
pub const PROCESSING_LATENCY: &str = "prismwatch_pipeline_processing_latency_seconds";
pub const CONSUMER_PENDING: &str = "prismwatch_ingest_consumer_pending_messages";
pub const PUBLISH_RETRIES: &str = "prismwatch_alerts_publish_retries_total";
pub const CHECKPOINTS: &str = "prismwatch_pipeline_checkpoints_total";
pub const CHECKPOINT_BYTES: &str = "prismwatch_pipeline_checkpoint_size_bytes";
pub const CHECKPOINT_SERIES: &str = "prismwatch_pipeline_checkpoint_series";
pub const CHECKPOINT_DURATION: &str = "prismwatch_pipeline_checkpoint_write_duration_seconds";
pub const CHECKPOINT_SERIALISE_DURATION: &str =
    "prismwatch_pipeline_checkpoint_serialise_duration_seconds";
pub const CHECKPOINT_PAUSE_DURATION: &str = "prismwatch_pipeline_checkpoint_pause_duration_seconds";
pub const CHECKPOINTS_UNREADABLE: &str = "prismwatch_pipeline_checkpoints_unreadable_total";
pub const SERIES_QUARANTINED_TOTAL: &str = "prismwatch_pipeline_series_quarantined_total";
pub const ALERTS_SUPPRESSED: &str = "prismwatch_alerts_republish_suppressed_total";
pub const PUBLISH_FAILURES: &str = "prismwatch_alerts_publish_failures_total";
pub const TICKS: &str = "prismwatch_ingest_ticks_published_total";
pub const SERIES_CONFLICTS: &str = "prismwatch_pipeline_series_conflicts_total";
pub const SERIES_CLAIMS_DROPPED: &str = "prismwatch_pipeline_series_claims_dropped_total";
pub const MANAGER_ACTIVE: &str = "prismwatch_manager_active";
pub const MANAGER_ALERTS: &str = "prismwatch_manager_alerts";
pub const MANAGER_NOTIFICATIONS: &str = "prismwatch_manager_notifications_total";
pub const MANAGER_COMMANDS: &str = "prismwatch_manager_commands_total";
pub const MANAGER_DELIVERIES: &str = "prismwatch_manager_delivery_outcomes_total";
pub const MANAGER_SILENCES_ACTIVE: &str = "prismwatch_manager_silences_active";
pub const MANAGER_SILENCED: &str = "prismwatch_manager_alerts_silenced";
pub const MANAGER_INHIBITED: &str = "prismwatch_manager_alerts_inhibited";
pub const MANAGER_FLAPPING: &str = "prismwatch_manager_alerts_flapping";
pub const MANAGER_STORMS: &str = "prismwatch_manager_storms_active";
pub const MANAGER_OVER_LIMIT: &str = "prismwatch_manager_alerts_over_limit";
pub const MANAGER_GROUPS: &str = "prismwatch_manager_groups";
pub const RELOADS: &str = "prismwatch_config_reloads_total";
pub const NOTIFY_ATTEMPTS: &str = "prismwatch_notify_attempts_total";
pub const NOTIFY_DELIVERIES: &str = "prismwatch_notify_deliveries_total";
pub const NOTIFY_DEAD_LETTERS: &str = "prismwatch_notify_dead_letters_total";
pub const NOTIFY_MERGED: &str = "prismwatch_notify_merged_total";
pub const PREDICTIONS: &str = "prismwatch_prediction_outcomes_total";
pub const PREDICTION_ERROR: &str = "prismwatch_prediction_error_seconds";
pub const HEALTH_POINTS_PUBLISHED: &str = "prismwatch_health_points_published_total";
pub const HEALTH_POINTS_LATE: &str = "prismwatch_health_points_late_total";
pub const SLO_BURN_RATE: &str = "prismwatch_slo_burn_rate";
pub const SLO_BUDGET_REMAINING: &str = "prismwatch_slo_error_budget_remaining_ratio";
pub const SLO_SCORE: &str = "prismwatch_slo_score";
pub const SLO_EXPERIENCE_SCORE: &str = "prismwatch_slo_experience_score";

/// The latest SLO statuses as gauges. Labels are bounded by the SLO files (and at most
/// `slo::MAX_GROUPS_PER_SLO` groups each).
pub fn record_slos(slos: &[crate::slo::SloStatus]) {
    for s in slos {
        let group = s
            .group
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        metrics::gauge!(SLO_SCORE, "slo" => s.slo.clone(), "group" => group.clone()).set(s.score);
        for o in &s.objectives {
            let labels = [
                ("slo", s.slo.clone()),
                ("objective", o.objective.clone()),
                ("group", group.clone()),
            ];
            metrics::gauge!(SLO_BUDGET_REMAINING, &labels).set(o.error_budget_remaining);
            for (window, burn) in &o.burn_rates {
                let mut l = labels.to_vec();
                l.push(("window", window.clone()));
                metrics::gauge!(SLO_BURN_RATE, &l).set(*burn);
            }
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(BUILD_INFO, "1, labelled with the version that runs");
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
    describe_counter!(RULE_EVALUATIONS, "Points each rule evaluated (by rule)");
    describe_counter!(
        POINTS_LATE,
        "Points older than their source's watermark, dead-lettered as late"
    );
    describe_counter!(
        POINTS_DEDUPLICATED,
        "Points dropped as repeats of a (series, timestamp)"
    );
    describe_counter!(
        POINTS_OUT_OF_ORDER,
        "Points older than their series' latest point, dropped"
    );
    describe_gauge!(
        SERIES_ACTIVE,
        "Series with state in the pipeline, by partition"
    );
    describe_counter!(SERIES_EVICTED, "Idle series evicted");
    describe_gauge!(
        WATERMARK,
        Unit::Seconds,
        "Event-time watermark of a partition's active sources, seconds since the epoch"
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
        "Messages of a partition not yet delivered to its consumer"
    );
    describe_counter!(
        PUBLISH_RETRIES,
        "Failed alert or dead-letter publishes that were retried"
    );
    describe_counter!(CHECKPOINTS, "Checkpoints written");
    describe_gauge!(
        CHECKPOINT_BYTES,
        Unit::Bytes,
        "Size of the last checkpoint written"
    );
    describe_gauge!(
        CHECKPOINT_SERIES,
        "Series in the last checkpoint, by partition"
    );
    describe_histogram!(
        CHECKPOINT_DURATION,
        Unit::Seconds,
        "Time to write a checkpoint to the object store"
    );
    describe_histogram!(
        CHECKPOINT_SERIALISE_DURATION,
        Unit::Seconds,
        "Time from a checkpoint's cut to its last byte handed over (batches go on meanwhile)"
    );
    describe_histogram!(
        CHECKPOINT_PAUSE_DURATION,
        Unit::Seconds,
        "Time a partition's pipeline stopped for a checkpoint's cut"
    );
    describe_counter!(
        CHECKPOINTS_UNREADABLE,
        "Checkpoints ignored as unreadable (state rebuilt from the stream)"
    );
    describe_counter!(
        SERIES_QUARANTINED_TOTAL,
        "Series quarantined because their operator or rule code panicked"
    );
    describe_counter!(
        ALERTS_SUPPRESSED,
        "Re-processed alert events not published again because PRISM_ALERTS already holds them"
    );
    describe_counter!(
        PUBLISH_FAILURES,
        "Alert events or dead letters the server refused for good (not retried), by kind"
    );
    describe_counter!(
        TICKS,
        "Ticks stored to move a quiet partition's stream time"
    );
    describe_counter!(
        SERIES_CONFLICTS,
        "Series seen from a second source in another partition (series registry)"
    );
    describe_counter!(
        SERIES_CLAIMS_DROPPED,
        "Series registry claims dropped because its queue was full (detection is best effort)"
    );
    describe_gauge!(
        MANAGER_ACTIVE,
        "1 while this process's alert manager is the active one of its group"
    );
    describe_gauge!(
        MANAGER_ALERTS,
        "Alerts the manager holds, by status and priority"
    );
    describe_counter!(
        MANAGER_NOTIFICATIONS,
        "Notifications published for the notifiers, by receiver and kind"
    );
    describe_counter!(
        MANAGER_COMMANDS,
        "Commands applied (ack, silence, ...), by kind and result"
    );
    describe_counter!(
        MANAGER_DELIVERIES,
        "Delivery outcomes reported by the notifiers, by receiver and outcome"
    );
    describe_gauge!(MANAGER_SILENCES_ACTIVE, "Silences in effect now");
    describe_gauge!(MANAGER_SILENCED, "Active alerts muted by a silence");
    describe_gauge!(
        MANAGER_INHIBITED,
        "Active alerts muted by an inhibition rule"
    );
    describe_gauge!(MANAGER_FLAPPING, "Alerts marked flapping");
    describe_gauge!(
        MANAGER_STORMS,
        "Alert storms in progress (per receiver, or one global)"
    );
    describe_gauge!(
        MANAGER_OVER_LIMIT,
        "Alerts held beyond alerting.max_alerts (active ones are never dropped)"
    );
    describe_gauge!(MANAGER_GROUPS, "Aggregation groups with alerts");
    describe_counter!(
        RELOADS,
        "Rule and route reloads, by result (ok, refused: the old set stays)"
    );
    describe_counter!(
        NOTIFY_ATTEMPTS,
        "Delivery attempts, by receiver, channel and outcome (ok, transient_error, permanent_error)"
    );
    describe_counter!(
        NOTIFY_DELIVERIES,
        "Deliveries finished, by receiver, channel and outcome (delivered, dead_lettered)"
    );
    describe_counter!(
        NOTIFY_DEAD_LETTERS,
        "Notifications dead-lettered, by receiver"
    );
    describe_counter!(
        NOTIFY_MERGED,
        "Notifications merged into another message while a channel's rate limit held, by channel"
    );
    describe_gauge!(
        SLO_BURN_RATE,
        "SLO burn rate over a window (share of bad events / share allowed), by slo, objective, group and window"
    );
    describe_gauge!(
        SLO_BUDGET_REMAINING,
        "Share of an SLO objective's error budget left over its period (1 untouched, below 0 overspent)"
    );
    describe_counter!(
        PREDICTIONS,
        "Predictions of predictive rules scored, by rule and outcome (hit, false_alarm, miss: a crossing no rule of the family predicted)"
    );
    describe_histogram!(
        PREDICTION_ERROR,
        Unit::Seconds,
        "Actual minus predicted crossing time of the hits, by rule"
    );
    describe_counter!(
        HEALTH_POINTS_PUBLISHED,
        "Exchange-health points published (scores, components, peer deviations)"
    );
    describe_counter!(
        HEALTH_POINTS_LATE,
        "Exchange metric points that came after their minute was scored (not counted)"
    );
    describe_gauge!(SLO_SCORE, "SLO group score, 0-100 (the worst objective's)");
    describe_gauge!(
        SLO_EXPERIENCE_SCORE,
        "Weighted mean of the SLO scores of the partitions this process owns, 0-100"
    );
}

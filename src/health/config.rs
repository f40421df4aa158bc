//! `health:` in the config file: which points the exchange-health component reads and how it
//! scores them.

use serde::{Deserialize, Serialize};

use super::score::ScoreLevels;

/// The metrics each health component is read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthMetrics {
    /// 1 connected, 0 not.
    pub connection: String,
    /// Messages per second from the exchange (scored against its seasonal baseline).
    pub message_rate: String,
    pub latency_ms: String,
    pub error_percent: String,
    pub delay_secs: String,
}

impl Default for HealthMetrics {
    fn default() -> Self {
        Self {
            connection: "exchange_connection_status".into(),
            message_rate: "exchange_message_rate".into(),
            latency_ms: "exchange_latency_ms".into(),
            error_percent: "exchange_error_rate_percent".into(),
            delay_secs: "market_data_delay_seconds".into(),
        }
    }
}

/// A metric compared across exchanges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerMetric {
    /// A metric name, or `message_rate_share` (each exchange's rate over its own baseline).
    pub metric: String,
    /// The smallest spread (in the metric's unit) a deviation is measured in.
    pub min_scale: f64,
}

/// The rate share's name as a peer metric.
pub const RATE_SHARE: &str = "message_rate_share";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Published-subject filters of the points read (stored subjects are derived).
    pub subjects: Vec<String>,
    /// The label that names the exchange; points without it are skipped.
    pub exchange_label: String,
    pub metrics: HealthMetrics,
    /// Each component's good and bad levels and weight.
    pub levels: ScoreLevels,
    /// Metrics compared across exchanges (per metric and the points' other labels, e.g. symbol).
    pub peer_metrics: Vec<PeerMetric>,
    /// Exchanges needed in a minute to compare them.
    pub min_peers: usize,
    /// A minute is scored once the newest point read is this much past its end.
    pub grace_secs: u64,
    /// An exchange silent (no point at all) for this many closed minutes scores 0.
    pub silent_after_minutes: u32,
    /// History read at start for the message-rate baselines (its minutes are not published
    /// again, except the last `backfill_minutes`).
    pub warmup_hours: u64,
    pub backfill_minutes: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            subjects: vec!["prism.metrics.exchange.>".into()],
            exchange_label: "exchange".into(),
            metrics: HealthMetrics::default(),
            levels: ScoreLevels::default(),
            peer_metrics: vec![
                PeerMetric {
                    metric: "market_data_delay_seconds".into(),
                    min_scale: 0.5,
                },
                PeerMetric {
                    metric: "exchange_latency_ms".into(),
                    min_scale: 20.0,
                },
                PeerMetric {
                    metric: "exchange_error_rate_percent".into(),
                    min_scale: 0.25,
                },
                PeerMetric {
                    metric: RATE_SHARE.into(),
                    min_scale: 0.1,
                },
            ],
            min_peers: 3,
            grace_secs: 30,
            silent_after_minutes: 3,
            warmup_hours: 72,
            backfill_minutes: 10,
        }
    }
}

impl HealthConfig {
    /// Problems as (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.exchange_label.is_empty() {
            out.push(("exchange_label".into(), "must name a label".into()));
        }
        if self.min_peers < 3 {
            out.push((
                "min_peers".into(),
                "must be at least 3 (two exchanges cannot tell which one is the odd one)".into(),
            ));
        }
        for (i, p) in self.peer_metrics.iter().enumerate() {
            if !(p.min_scale.is_finite() && p.min_scale > 0.0) {
                out.push((
                    format!("peer_metrics[{i}].min_scale"),
                    "must be a number > 0".into(),
                ));
            }
        }
        let l = &self.levels;
        for (name, lv) in [
            ("rate", l.rate),
            ("latency_ms", l.latency_ms),
            ("error_percent", l.error_percent),
            ("delay_secs", l.delay_secs),
        ] {
            if !(lv.weight.is_finite()
                && lv.weight >= 0.0
                && lv.good.is_finite()
                && lv.bad.is_finite())
            {
                out.push((
                    format!("levels.{name}"),
                    "good, bad and a weight >= 0 must be numbers".into(),
                ));
            }
        }
        out
    }
}

//! `capacity:` in the config file: the metric families projected, their limits, the history
//! and horizon.

use serde::{Deserialize, Serialize};

/// A metric family: every series of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyConfig {
    pub metric: String,
    /// The capacity the series grow towards (100 for a percentage); none: projection only.
    #[serde(default)]
    pub limit: Option<f64>,
    /// For people: `%`, `messages`...
    #[serde(default)]
    pub unit: String,
}

/// `capacity:` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    pub families: Vec<FamilyConfig>,
    /// History the growth is measured over.
    pub history_days: u32,
    /// How far on the projection goes.
    pub horizon_days: u32,
    /// How often the `capacity` component refreshes the stored report.
    pub refresh_secs: u64,
    /// A projection past this share of the limit is worth watching.
    pub watch_share: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        let family = |metric: &str, limit: Option<f64>, unit: &str| FamilyConfig {
            metric: metric.into(),
            limit,
            unit: unit.into(),
        };
        Self {
            families: vec![
                family("disk_usage_percent", Some(100.0), "%"),
                family("memory_usage_percent", Some(100.0), "%"),
                family("cpu_usage_percent", Some(100.0), "%"),
                family("active_connections_percent", Some(100.0), "%"),
                family("exchange_message_rate", None, "messages/s"),
                family("nats_consumer_pending_messages", None, "messages"),
            ],
            history_days: 7,
            horizon_days: 30,
            refresh_secs: 3600,
            watch_share: 0.8,
        }
    }
}

impl CapacityConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.history_days == 0 || self.horizon_days == 0 || self.refresh_secs == 0 {
            out.push((
                "history_days".into(),
                "history_days, horizon_days and refresh_secs must be > 0".into(),
            ));
        }
        if !(self.watch_share > 0.0 && self.watch_share <= 1.0) {
            out.push(("watch_share".into(), "must be in (0, 1]".into()));
        }
        for (i, f) in self.families.iter().enumerate() {
            if f.limit.is_some_and(|l| !l.is_finite()) {
                out.push((format!("families[{i}].limit"), "must be a number".into()));
            }
        }
        out
    }
}

use serde::{Deserialize, Serialize};

use super::operator::OperatorSpec;
use super::dedup::DedupConfig;
use crate::detect::zscore::ZScoreConfig;

/// Per-series operators, sharding, eviction and checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Worker shards (threads); series are assigned by a hash of their key. 0 is invalid.
    pub shards: usize,
    /// Operators run on every point of every series, in this order.
    pub operators: Vec<OperatorSpec>,
    /// A series with no point for this long (event time) and no active alert is evicted, in s.
    pub idle_series_evict_secs: u64,
    /// A series' last value counts as current for this long (event time), in seconds: a pending
    /// alert whose series goes silent longer is cancelled.
    pub staleness_secs: u64,
    /// Wall-clock milliseconds between checkpoints of the pipeline state (0 = only on shutdown).
    pub checkpoint_interval_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8),
            operators: vec![
                OperatorSpec::Dedup(DedupConfig::default()),
                OperatorSpec::Zscore(ZScoreConfig::default()),
            ],
            idle_series_evict_secs: 3600,
            staleness_secs: 300,
            checkpoint_interval_ms: 30_000,
        }
    }
}

impl PipelineConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=256).contains(&self.shards) {
            out.push(("shards".into(), "must be 1 to 256".into()));
        }
        if self.idle_series_evict_secs == 0 {
            out.push(("idle_series_evict_secs".into(), "must be > 0".into()));
        }
        if self.staleness_secs == 0 {
            out.push(("staleness_secs".into(), "must be > 0".into()));
        }
        for (i, op) in self.operators.iter().enumerate() {
            out.extend(op.problems().into_iter().map(|(k, m)| (format!("operators[{i}].{k}"), m)));
        }
        out
    }
}

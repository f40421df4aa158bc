use serde::{Deserialize, Serialize};

use super::dedup::DedupConfig;
use super::operator::OperatorSpec;
use crate::rules::Matcher;

/// An operator list for the series of some metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricOperators {
    /// Metric name: exact, or `=~regex`, `!=name`, `!~regex`.
    pub metric: String,
    /// Operators for the matching series, in order.
    pub operators: Vec<OperatorSpec>,
}
use crate::detect::zscore::ZScoreConfig;

/// The shipped per-metric operator lists (`config/prismwatch.yaml` shows the same), each measured
/// against the generic list on its kind of series (`benches/protocol.py --per-metric`, README):
/// - error rates: a one-point blip is not an incident (`confirm_points: 1`);
/// - latencies: the same, but a strong spike still pages at once (`instant_score: 0.8`);
/// - message rates: bursty counts; the detectors of one residual count once (`grouped`) and the
///   shape detector, which finds the bursts' noise new every time, is off;
/// - connection status: a binary series is for threshold rules, not detectors (no `anomaly`);
/// - disk, CPU and memory: trend first (trend and slope change; the seasonal baseline at half
///   weight; no shape or volatility detectors).
pub const DEFAULT_METRIC_OPERATORS: &str = r#"
- metric: "=~api_error_rate_percent|exchange_error_rate_percent"
  operators: [{ dedup: {} }, { zscore: {} }, { anomaly: { fusion: { confirm_points: 1 } } }]
- metric: "=~exchange_latency_ms|api_response_time_ms"
  operators:
    - dedup: {}
    - zscore: {}
    - anomaly: { fusion: { confirm_points: 1, instant_score: 0.8 } }
- metric: exchange_message_rate
  operators: [{ dedup: {} }, { zscore: {} }, { anomaly: { fusion: { combine: grouped, weights: { art: 0.0 } } } }]
- metric: exchange_connection_status
  operators: [{ dedup: {} }, { zscore: {} }]
- metric: "=~disk_usage_percent|cpu_usage_percent|memory_usage_percent"
  operators:
    - dedup: {}
    - zscore: {}
    - anomaly: { fusion: { weights: { seasonal: 0.5, variance: 0.0, art: 0.0 } } }
"#;

/// Per-series operators, sharding, eviction and checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Series shards of each partition's pipeline; series are assigned by a hash of their key.
    /// Above 1, a batch is decoded in chunks and the shards run at once, on the process-wide
    /// rayon pool. 1 by default: the partitions already spread the work over the cores.
    pub shards: usize,
    /// Operators run on every point of every series, in this order.
    pub operators: Vec<OperatorSpec>,
    /// Other operator lists (detectors, weights, false-alarm rate) for particular metrics; the first
    /// entry whose `metric` matches a series wins, other series use `operators`.
    pub metric_operators: Vec<MetricOperators>,
    /// A series with no point for this long (event time) and no active alert is evicted, in s.
    pub idle_series_evict_secs: u64,
    /// A series' last value counts as current for this long (event time), in seconds: a pending
    /// alert whose series goes silent longer is cancelled.
    pub staleness_secs: u64,
    /// The watermark is passed to the shards when it has advanced this much (event time, ms):
    /// timer-driven transitions (a `for` elapsing on a silent series) happen at most this late.
    pub watermark_step_ms: i64,
    /// Wall-clock milliseconds between checkpoints of the pipeline state (0 = only on shutdown).
    pub checkpoint_interval_ms: u64,
    /// Most series remembered as quarantined (their operator or rule code panicked; their
    /// points are dead-lettered as `quarantined`). Beyond it a panicking series is only reset.
    pub max_quarantined_series: usize,
    /// Transparent huge pages for the process's memory (Linux). Off by default: the allocator
    /// asks for them, and the first touch of each 2 MB page then zeroes all of it in one page
    /// fault, a pause of milliseconds (5-15 ms of a pipeline thread on the benchmark VM) whenever
    /// the series' state grows into new memory. On trades those pauses for fewer TLB misses.
    pub transparent_huge_pages: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            // Partitions already spread the work over the cores; a shard thread per batch
            // would only add switching. Raise it when one partition needs several cores.
            shards: 1,
            operators: vec![
                OperatorSpec::Dedup(DedupConfig::default()),
                OperatorSpec::Zscore(ZScoreConfig::default()),
                OperatorSpec::Anomaly(Box::default()),
            ],
            metric_operators: crate::config::yaml::parse_yaml(
                "<built-in>",
                DEFAULT_METRIC_OPERATORS,
            )
            .and_then(|tree| crate::config::yaml::from_tree("<built-in>", tree))
            .expect("the built-in metric operators parse"),
            idle_series_evict_secs: 3600,
            staleness_secs: 300,
            watermark_step_ms: 1000,
            checkpoint_interval_ms: 30_000,
            max_quarantined_series: 10_000,
            transparent_huge_pages: false,
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
        if self.watermark_step_ms < 1 {
            out.push(("watermark_step_ms".into(), "must be >= 1".into()));
        }
        if self.staleness_secs == 0 {
            out.push(("staleness_secs".into(), "must be > 0".into()));
        }

        for (i, op) in self.operators.iter().enumerate() {
            out.extend(
                op.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("operators[{i}].{k}"), m)),
            );
        }
        for (j, mo) in self.metric_operators.iter().enumerate() {
            if let Err(m) = Matcher::parse(&mo.metric) {
                out.push((format!("metric_operators[{j}].metric"), m));
            }
            for (i, op) in mo.operators.iter().enumerate() {
                out.extend(
                    op.problems()
                        .into_iter()
                        .map(|(k, m)| (format!("metric_operators[{j}].operators[{i}].{k}"), m)),
                );
            }
        }
        out
    }
}

impl PipelineConfig {
    /// Rules that need an operator this pipeline does not run, as `(rule file, rule, problem)`.
    pub fn rule_problems(&self, rules: &crate::rules::RuleSet) -> Vec<(String, String, String)> {
        let has_anomaly = std::iter::once(&self.operators)
            .chain(self.metric_operators.iter().map(|m| &m.operators))
            .flatten()
            .any(|o| matches!(o, OperatorSpec::Anomaly(_)));
        rules
            .rules
            .iter()
            .filter(|r| !has_anomaly && (r.condition.field == crate::rules::Field::Anomaly || r.predict_within_ms.is_some()))
            .map(|r| {
                (
                    r.source.clone(),
                    r.name.clone(),
                    "uses the fused detectors (`anomaly` condition or predicted_crossing_within) but pipeline.operators has no `anomaly` operator".to_string(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_metric_operators_are_the_documented_ones() {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/prismwatch.yaml"
        ))
        .unwrap();
        let tree = crate::config::yaml::parse_yaml("prismwatch.yaml", &yaml).unwrap();
        let cfg: crate::config::Config =
            crate::config::yaml::from_tree("prismwatch.yaml", tree).unwrap();
        let built_in = PipelineConfig::default();
        assert_eq!(cfg.pipeline.metric_operators, built_in.metric_operators);
        assert_eq!(built_in.metric_operators.len(), 5);
        assert!(built_in.problems().is_empty(), "{:?}", built_in.problems());
    }
}

//! The operator abstraction: synchronous, per-series, event-time driven, serialisable state.
//!
//! Adding an operator = one file with its config and state, one variant in [`OperatorSpec`] and
//! [`OperatorState`], one arm in [`OperatorSpec::on_point`].

use serde::{Deserialize, Serialize};

use super::dedup::{DedupConfig, DedupState};
use crate::detect::zscore::{ZScoreConfig, ZScoreState};

/// A point on its way through a series' operators; operators may annotate it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointCtx {
    pub ts: i64,
    pub value: f64,
    /// Anomaly score in [0, 1] (the highest an operator gave).
    pub score: f64,
    /// Signed rolling z-score, when a z-score operator ran.
    pub zscore: f64,
}

impl PointCtx {
    pub fn new(ts: i64, value: f64) -> Self {
        Self { ts, value, score: 0.0, zscore: 0.0 }
    }
}

/// Why an operator stopped a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Same (series, timestamp) seen before.
    Duplicate,
    /// Older than the series' latest point.
    OutOfOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Drop(DropReason),
}

/// One per-series operator: `on_point` sees the points of one series in event-time order.
pub trait Operator {
    type Config;
    fn on_point(&mut self, cfg: &Self::Config, point: &mut PointCtx) -> Flow;
}

/// An operator as configured (`pipeline.operators` in YAML: `- dedup: {...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorSpec {
    /// Drops repeated (series, timestamp) points and points older than the series' latest.
    Dedup(DedupConfig),
    /// Rolling z-score against an exponentially weighted mean and spread.
    Zscore(ZScoreConfig),
}

/// Per-series state of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorState {
    Dedup(DedupState),
    Zscore(ZScoreState),
}

impl OperatorSpec {
    pub fn new_state(&self) -> OperatorState {
        match self {
            OperatorSpec::Dedup(_) => OperatorState::Dedup(DedupState::default()),
            OperatorSpec::Zscore(_) => OperatorState::Zscore(ZScoreState::default()),
        }
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        let prefixed = |name: &str, items: Vec<(&str, String)>| {
            items.into_iter().map(|(k, m)| (format!("{name}.{k}"), m)).collect()
        };
        match self {
            OperatorSpec::Dedup(c) => prefixed("dedup", c.problems()),
            OperatorSpec::Zscore(c) => prefixed("zscore", c.problems()),
        }
    }

    #[inline]
    pub fn on_point(&self, state: &mut OperatorState, p: &mut PointCtx) -> Flow {
        match (self, state) {
            (OperatorSpec::Dedup(c), OperatorState::Dedup(s)) => s.on_point(c, p),
            (OperatorSpec::Zscore(c), OperatorState::Zscore(s)) => {
                let out = c.update(s, p.value);
                p.zscore = out.deviation;
                p.score = p.score.max(out.score);
                Flow::Continue
            }
            // A state restored under a different operator list: start this one afresh.
            (spec, state) => {
                *state = spec.new_state();
                self.on_point(state, p)
            }
        }
    }
}

//! The operators: synchronous, per-series, event-time driven, with serialisable state. Each one
//! sees the points of one series in event-time order.
//!
//! Adding an operator = one file with its config and state, one variant in [`OperatorSpec`] and
//! [`OperatorState`], one arm in [`OperatorSpec::on_point`].

use serde::{Deserialize, Serialize};

pub use super::dedup::DropReason;
use super::dedup::{DedupConfig, DedupState};
use crate::detect::zscore::{ZScoreConfig, ZScoreState};
use crate::detect::{AnomalyConfig, AnomalyExplanation, AnomalyState};

/// A point on its way through a series' operators; operators may annotate it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointCtx {
    pub ts: i64,
    pub value: f64,
    /// Anomaly score in [0, 1], from the last scoring operator (the fused detectors when the
    /// `anomaly` operator runs, else the z-score).
    pub score: f64,
    /// Signed rolling z-score, when a z-score operator ran.
    pub zscore: f64,
    /// The fused detectors' verdict, when the `anomaly` operator ran.
    pub anomaly: Option<AnomalyDetail>,
}

/// What the `anomaly` operator says about a point, beyond its score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyDetail {
    /// The fusion raises an anomaly here (once per anomaly, not on every row of it).
    pub alert: bool,
    /// Fused score before refractory damping.
    pub raw_score: f64,
    /// Each detector's score, in `DetectorKind::ALL` order.
    pub detector_scores: [f64; crate::detect::DETECTORS],
    pub explanation: AnomalyExplanation,
}

impl PointCtx {
    pub fn new(ts: i64, value: f64) -> Self {
        Self {
            ts,
            value,
            score: 0.0,
            zscore: 0.0,
            anomaly: None,
        }
    }

    /// 1 when the fused detectors raise an anomaly on this point, else 0 (rule field `anomaly`).
    pub fn anomaly_flag(&self) -> f64 {
        match self.anomaly {
            Some(a) if a.alert => 1.0,
            _ => 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Drop(DropReason),
}

/// With the `fault-injection` feature (tests), a point of this value makes operator code panic.
#[cfg(feature = "fault-injection")]
pub const FAULT_PANIC_VALUE: f64 = 6_660_000.0;

/// An operator as configured (`pipeline.operators` in YAML: `- dedup: {...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorSpec {
    /// Drops repeated (series, timestamp) points and points older than the series' latest.
    Dedup(DedupConfig),
    /// Rolling z-score against an exponentially weighted mean and spread.
    Zscore(ZScoreConfig),
    /// Fused detectors: seasonal baseline, trend (Holt), variance, isolation forest, z-score.
    Anomaly(Box<AnomalyConfig>),
}

/// Per-series state of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorState {
    Dedup(DedupState),
    Zscore(ZScoreState),
    Anomaly(Box<AnomalyState>),
}

impl OperatorSpec {
    pub fn new_state(&self) -> OperatorState {
        match self {
            OperatorSpec::Dedup(_) => OperatorState::Dedup(DedupState::default()),
            OperatorSpec::Zscore(_) => OperatorState::Zscore(ZScoreState::default()),
            OperatorSpec::Anomaly(_) => OperatorState::Anomaly(Box::default()),
        }
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        let prefixed = |name: &str, items: Vec<(&str, String)>| {
            items
                .into_iter()
                .map(|(k, m)| (format!("{name}.{k}"), m))
                .collect()
        };
        match self {
            OperatorSpec::Dedup(c) => prefixed("dedup", c.problems()),
            OperatorSpec::Zscore(c) => prefixed("zscore", c.problems()),
            OperatorSpec::Anomaly(c) => c
                .problems()
                .into_iter()
                .map(|(k, m)| (format!("anomaly.{k}"), m))
                .collect(),
        }
    }

    #[inline]
    pub fn on_point(&self, state: &mut OperatorState, p: &mut PointCtx) -> Flow {
        // Test builds only: a way to make operator code panic on one series (quarantine tests).
        #[cfg(feature = "fault-injection")]
        if p.value == FAULT_PANIC_VALUE {
            panic!("injected fault: operator panic on value {}", p.value);
        }
        match (self, state) {
            (OperatorSpec::Dedup(c), OperatorState::Dedup(s)) => match s.admit(c, p.ts) {
                Ok(()) => Flow::Continue,
                Err(reason) => Flow::Drop(reason),
            },
            (OperatorSpec::Zscore(c), OperatorState::Zscore(s)) => {
                let out = c.update(s, p.value);
                p.zscore = out.deviation;
                p.score = out.score;
                Flow::Continue
            }
            (OperatorSpec::Anomaly(c), OperatorState::Anomaly(s)) => {
                let out = c.update(s, p.ts, p.value);
                p.score = out.score;
                p.anomaly = Some(AnomalyDetail {
                    alert: out.alert,
                    raw_score: out.raw_score,
                    detector_scores: out.per_detector.map(|d| d.score),
                    explanation: out.explanation,
                });
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

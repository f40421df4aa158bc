//! Rolling z-score: deviation of a point from an exponentially weighted mean, in units of an
//! exponentially weighted standard deviation.
//!
//! Exponential weighting keeps the state at 32 bytes per series (a true sliding window would need
//! `window_points` values). The spread has a floor relative to the level, so a spike after a
//! perfectly flat baseline scores high instead of dividing by zero.

use serde::{Deserialize, Serialize};

use super::{deviation_to_score, ge, gt, DetectorOutput};

/// Configuration of the rolling z-score detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZScoreConfig {
    /// Effective window, in points: the mean and spread forget with weight `1 / window_points`.
    pub window_points: u32,
    /// Points a series must have seen before it is scored (score 0 before).
    pub min_points: u32,
    /// Floor of the spread, as a fraction of the absolute mean (guards flat baselines).
    pub spread_floor_ratio: f64,
    /// Absolute floor of the spread, in the metric's unit (guards flat baselines at zero).
    pub spread_floor_abs: f64,
    /// The |z| that maps to an anomaly score of 0.5 (score = |z| / (|z| + half_score_at_z)).
    pub half_score_at_z: f64,
}

impl Default for ZScoreConfig {
    fn default() -> Self {
        Self {
            window_points: 300,
            min_points: 20,
            spread_floor_ratio: 0.001,
            spread_floor_abs: 1e-9,
            half_score_at_z: 3.0,
        }
    }
}

/// Per-series state of the rolling z-score: 24 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ZScoreState {
    /// Exponentially weighted mean.
    pub mean: f64,
    /// Exponentially weighted variance.
    pub var: f64,
    /// Points seen, saturating.
    pub count: u32,
}

impl ZScoreConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.window_points < 2 {
            out.push(("window_points", "must be at least 2".to_string()));
        }
        if !ge(self.spread_floor_ratio, 0.0) || !ge(self.spread_floor_abs, 0.0) {
            out.push(("spread_floor_ratio", "floors must be >= 0".to_string()));
        }
        if !gt(self.half_score_at_z, 0.0) {
            out.push(("half_score_at_z", "must be > 0".to_string()));
        }
        out
    }

    /// Scores `value` against the state, then folds it into the state.
    pub fn update(&self, state: &mut ZScoreState, value: f64) -> DetectorOutput {
        let out = if state.count >= self.min_points.max(1) {
            let floor = self
                .spread_floor_abs
                .max(self.spread_floor_ratio * state.mean.abs());
            let spread = state.var.sqrt().max(floor);
            let z = (value - state.mean) / spread;
            DetectorOutput {
                score: deviation_to_score(z, self.half_score_at_z),
                expected: Some(state.mean),
                deviation: z,
            }
        } else {
            DetectorOutput::default()
        };
        self.learn(state, value);
        out
    }

    fn learn(&self, state: &mut ZScoreState, value: f64) {
        if state.count == 0 {
            state.mean = value;
            state.var = 0.0;
        } else {
            // West's incremental EW mean/variance; the first `window_points` points use 1/n so the
            // warm-up estimate is the plain mean rather than biased towards the first point.
            let n = f64::from(state.count.saturating_add(1).min(self.window_points));
            let alpha = 1.0 / n;
            let diff = value - state.mean;
            let incr = alpha * diff;
            state.mean += incr;
            state.var = (1.0 - alpha) * (state.var + diff * incr);
        }
        state.count = state.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(cfg: &ZScoreConfig, values: &[f64]) -> Vec<DetectorOutput> {
        let mut st = ZScoreState::default();
        values.iter().map(|v| cfg.update(&mut st, *v)).collect()
    }

    #[test]
    fn spike_after_flat_baseline_scores_high() {
        let cfg = ZScoreConfig::default();
        let mut values = vec![100.0; 50];
        values.push(101.0);
        let out = run(&cfg, &values);
        assert_eq!(out[49].score, 0.0);
        assert!(out[50].score > 0.75, "score {}", out[50].score);
        assert!(out[50].deviation > 9.0);
    }

    #[test]
    fn no_score_during_warm_up() {
        let cfg = ZScoreConfig {
            min_points: 5,
            ..Default::default()
        };
        let out = run(&cfg, &[1.0, 2.0, 1.0, 2.0, 1.0, 1000.0]);
        assert!(out[..5].iter().all(|o| o.score == 0.0));
        assert!(out[5].score > 0.5);
    }

    #[test]
    fn noise_scores_low() {
        let cfg = ZScoreConfig::default();
        let values: Vec<f64> = (0..500)
            .map(|i| 50.0 + ((i * 7919) % 13) as f64 * 0.1)
            .collect();
        let out = run(&cfg, &values);
        assert!(out[100..].iter().all(|o| o.score < 0.5));
    }

    proptest! {
        #[test]
        fn invariant_to_shift_and_positive_scale(
            values in proptest::collection::vec(-1000.0f64..1000.0, 30..120),
            shift in -1e4f64..1e4,
            scale in 0.01f64..100.0,
        ) {
            // Floors are relative to the level, so switch them off for exact invariance.
            let cfg = ZScoreConfig { spread_floor_ratio: 0.0, spread_floor_abs: 1e-12, ..Default::default() };
            let a = run(&cfg, &values);
            let moved: Vec<f64> = values.iter().map(|v| v * scale + shift).collect();
            let b = run(&cfg, &moved);
            for (x, y) in a.iter().zip(&b) {
                if x.deviation.abs() < 1e6 {
                    prop_assert!((x.deviation - y.deviation).abs() <= 1e-6 * (1.0 + x.deviation.abs()));
                }
            }
        }
    }
}

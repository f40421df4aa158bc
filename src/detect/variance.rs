//! Volatility change and flatline: the shape of the noise rather than its level.
//!
//! - Variance change: the short-window mean absolute point-to-point change against the long-window
//!   one. A series that suddenly gets noisier (or calmer) scores, whatever its level.
//! - Flatline: a run of identical values is scored by its surprise, `run * -log2(p0)` bits, where
//!   `p0` is this series' learnt rate of "no change" steps. A counter stuck at one value after
//!   moving every step scores high within a few points; a series that is often flat does not.
//!
//! # Memory bound
//! 8 scalars: **64 bytes per series**.

use serde::{Deserialize, Serialize};

use super::{ge, gt, DetectorOutput};

/// Configuration of the volatility / flatline detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VarianceConfig {
    /// Effective window of the short-term volatility, in points.
    pub short_window_points: u32,
    /// Effective window of the long-term volatility, in points.
    pub long_window_points: u32,
    /// Volatility ratio (short / long, either way) that scores 0.5.
    pub half_score_at_ratio: f64,
    /// Effective window of the rate of unchanged steps, in points.
    pub flat_rate_window_points: u32,
    /// Surprise of a flat run, in bits, that scores 0.5.
    pub flat_half_score_bits: f64,
    /// Shortest flat run that is scored, in points.
    pub flat_min_run_points: u32,
    /// Two values are "unchanged" when they differ by at most this fraction of their magnitude.
    pub flat_tolerance_ratio: f64,
    /// Points seen before the detector scores.
    pub min_points: u32,
}

impl Default for VarianceConfig {
    fn default() -> Self {
        Self {
            short_window_points: 24,
            long_window_points: 576,
            half_score_at_ratio: 4.0,
            flat_rate_window_points: 1000,
            flat_half_score_bits: 40.0,
            flat_min_run_points: 6,
            flat_tolerance_ratio: 1e-9,
            min_points: 60,
        }
    }
}

/// Per-series state of the volatility / flatline detector: 64 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VarianceState {
    /// Previous value (volatility input).
    pub last: f64,
    /// Previous raw value (flatline input).
    pub last_raw: f64,
    /// Short-window mean absolute change.
    pub short_mad: f64,
    /// Long-window mean absolute change.
    pub long_mad: f64,
    /// Rate of unchanged steps.
    pub flat_rate: f64,
    /// Current run of unchanged steps, in points.
    pub flat_run: u32,
    /// Points seen, saturating.
    pub count: u32,
}

impl VarianceConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.short_window_points < 1 || self.long_window_points <= self.short_window_points {
            out.push((
                "long_window_points",
                "must be > short_window_points >= 1".to_string(),
            ));
        }
        if !gt(self.half_score_at_ratio, 1.0) {
            out.push(("half_score_at_ratio", "must be > 1".to_string()));
        }
        if self.flat_rate_window_points < 2 {
            out.push(("flat_rate_window_points", "must be >= 2".to_string()));
        }
        if !gt(self.flat_half_score_bits, 0.0) {
            out.push(("flat_half_score_bits", "must be > 0".to_string()));
        }
        if !ge(self.flat_tolerance_ratio, 0.0) {
            out.push(("flat_tolerance_ratio", "must be >= 0".to_string()));
        }
        out
    }

    /// Scores the change of volatility and the flat run ending at `value`, then learns.
    pub fn update(&self, st: &mut VarianceState, value: f64) -> DetectorOutput {
        self.update_split(st, value, value)
    }

    /// Like `update`, with volatility measured on `value` (e.g. deseasonalised) and flat runs on
    /// `raw` (the value as received: a stuck sensor repeats the raw value, not the residual).
    pub fn update_split(&self, st: &mut VarianceState, value: f64, raw: f64) -> DetectorOutput {
        if !value.is_finite() || !raw.is_finite() {
            return DetectorOutput::default();
        }
        if st.count == 0 {
            st.last = value;
            st.last_raw = raw;
            st.count = 1;
            return DetectorOutput::default();
        }
        let d = (value - st.last).abs();
        let tol = self.flat_tolerance_ratio * raw.abs().max(st.last_raw.abs()) + f64::MIN_POSITIVE;
        let flat = (raw - st.last_raw).abs() <= tol;
        st.last_raw = raw;
        st.flat_run = if flat {
            st.flat_run.saturating_add(1)
        } else {
            0
        };

        let n = f64::from(st.count);
        let a_s = 1.0 / f64::from(self.short_window_points.max(1)).min(n);
        let a_l = 1.0 / f64::from(self.long_window_points.max(2)).min(n);
        let a_f = 1.0 / f64::from(self.flat_rate_window_points.max(2)).min(n);
        // The long volatility learns clipped changes, so one spike does not hide the next.
        let d_long = if st.long_mad > 0.0 {
            d.min(10.0 * st.long_mad)
        } else {
            d
        };
        st.short_mad += a_s * (d - st.short_mad);
        st.long_mad += a_l * (d_long - st.long_mad);

        let warm = st.count >= self.min_points.max(2);
        let mut out = DetectorOutput::default();
        if warm {
            let floor = 1e-12 * (1.0 + value.abs());
            let ratio = (st.short_mad + floor) / (st.long_mad + floor);
            let lr = ratio.ln();
            let half = self.half_score_at_ratio.ln();
            let vol_score = lr.abs() / (lr.abs() + half);
            let mut flat_score = 0.0;
            if st.flat_run >= self.flat_min_run_points {
                let p0 = st
                    .flat_rate
                    .max(1.0 / f64::from(self.flat_rate_window_points.max(2)));
                let bits = f64::from(st.flat_run) * -p0.log2();
                flat_score = bits / (bits + self.flat_half_score_bits);
            }
            out = DetectorOutput {
                score: vol_score.max(flat_score),
                expected: None,
                deviation: if flat_score > vol_score {
                    -f64::from(st.flat_run)
                } else {
                    lr / std::f64::consts::LN_2
                },
            };
        }
        // The flat rate learns after scoring, so the run being scored does not excuse itself.
        st.flat_rate += a_f * (if flat { 1.0 } else { 0.0 } - st.flat_rate);
        st.last = value;
        st.count = st.count.saturating_add(1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::Noise;
    use proptest::prelude::*;

    fn run(cfg: &VarianceConfig, values: &[f64]) -> Vec<DetectorOutput> {
        let mut st = VarianceState::default();
        values.iter().map(|v| cfg.update(&mut st, *v)).collect()
    }

    #[test]
    fn noisier_series_scores_high_calm_one_low() {
        let mut z = Noise::new(7);
        let mut v: Vec<f64> = (0..1500).map(|_| 10.0 + z.normal()).collect();
        v.extend((0..100).map(|_| 10.0 + 6.0 * z.normal()));
        let out = run(&VarianceConfig::default(), &v);
        assert!(
            out[200..1500].iter().all(|o| o.score < 0.5),
            "calm part scored high"
        );
        assert!(out[1500..1600].iter().any(|o| o.score > 0.5));
    }

    #[test]
    fn flatline_after_moving_series_scores_high_constant_series_does_not() {
        let mut z = Noise::new(3);
        let mut v: Vec<f64> = (0..1000).map(|_| 50.0 + z.normal()).collect();
        v.extend(std::iter::repeat_n(50.3, 40));
        let out = run(&VarianceConfig::default(), &v);
        assert!(out[1000..].iter().any(|o| o.score > 0.6), "flatline missed");
        let flat = run(&VarianceConfig::default(), &vec![45.0; 2000]);
        assert!(flat.iter().all(|o| o.score < 0.5));
    }

    proptest! {
        #[test]
        fn scores_are_in_unit_interval(values in proptest::collection::vec(-1e6f64..1e6, 1..400)) {
            for o in run(&VarianceConfig::default(), &values) {
                prop_assert!((0.0..=1.0).contains(&o.score));
            }
        }
    }
}

//! Robust incremental Holt (double exponential smoothing) with a residual variance, so it can
//! forecast with prediction intervals and say when a threshold will be crossed
//! ("disk reaches 90% in 3h40m ± 25m").
//!
//! Per point it is O(1): no refit is ever needed. Residuals are Huber-clipped before they are
//! learnt, so a spike does not bend the trend; a run of same-sided clipped residuals (a level shift)
//! is absorbed after `shift_adopt_points`. It scores three things, and reports the largest:
//! - the one-step forecast residual, in residual standard deviations (spikes, drops);
//! - a two-sided CUSUM of those residuals (level shifts and drifts too small for one point);
//! - the deviation of the fast trend from a slow trend, in units of the trend's own variability
//!   (trend acceleration).
//!
//! # Memory bound
//! 16 scalars: **128 bytes per series**.

use serde::{Deserialize, Serialize};

use super::{clip, deviation_to_score, ge, gt, DetectorOutput};

/// Configuration of the Holt trend / forecast detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrendConfig {
    /// Effective window of the level, in points (alpha = 1 / window).
    pub level_window_points: u32,
    /// Effective window of the trend, in points (beta = 1 / window).
    pub trend_window_points: u32,
    /// Window of the slow trend the fast one is compared with, in points.
    pub slow_trend_window_points: u32,
    /// Effective window of the residual variance, in points.
    pub var_window_points: u32,
    /// Residuals are clipped to this many standard deviations before they are learnt.
    pub learn_clip_z: f64,
    /// Consecutive same-sided clipped residuals after which the level jumps to the data.
    pub shift_adopt_points: u32,
    /// CUSUM allowance, in residual standard deviations per point.
    pub cusum_allowance_z: f64,
    /// CUSUM value (in standard deviations) that scores 0.5.
    pub cusum_half_score: f64,
    /// Trend-acceleration z that scores 0.5 (0 disables the acceleration score).
    pub accel_half_score_z: f64,
    /// One-step |residual z| that scores 0.5.
    pub half_score_at_z: f64,
    /// Points seen before the detector scores.
    pub min_points: u32,
    /// Floor of the residual spread, as a fraction of the absolute level.
    pub spread_floor_ratio: f64,
    /// Absolute floor of the residual spread, in the metric's unit.
    pub spread_floor_abs: f64,
}

impl Default for TrendConfig {
    fn default() -> Self {
        Self {
            level_window_points: 6,
            trend_window_points: 48,
            slow_trend_window_points: 288,
            var_window_points: 288,
            learn_clip_z: 4.0,
            shift_adopt_points: 12,
            cusum_allowance_z: 1.0,
            cusum_half_score: 12.0,
            accel_half_score_z: 6.0,
            half_score_at_z: 6.0,
            min_points: 30,
            spread_floor_ratio: 1e-3,
            spread_floor_abs: 1e-9,
        }
    }
}

/// Direction of a threshold crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossingDirection {
    /// The series rises through the threshold.
    Up,
    /// The series falls through the threshold.
    Down,
}

/// Per-series state of the Holt detector: 128 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrendState {
    /// Smoothed level.
    pub level: f64,
    /// Smoothed trend, per point.
    pub trend: f64,
    /// Slow trend, per point.
    pub slow_trend: f64,
    /// EW variance of the fast trend around the slow trend.
    pub trend_var: f64,
    /// EW variance of the one-step residual.
    pub var: f64,
    /// Upper CUSUM, in standard deviations.
    pub cusum_hi: f64,
    /// Lower CUSUM, in standard deviations.
    pub cusum_lo: f64,
    /// Mean step between points, in ms (EW, gaps clipped).
    pub step_ms: f64,
    /// Timestamp of the last point, in ms.
    pub last_ts_ms: i64,
    /// Signed run of consecutive clipped residuals (+ above, - below).
    pub clipped_run: i32,
    /// Points seen, saturating.
    pub count: u32,
}

impl TrendConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.level_window_points < 1
            || self.trend_window_points < 1
            || self.slow_trend_window_points < 1
            || self.var_window_points < 2
        {
            out.push((
                "level_window_points",
                "windows must be >= 1 (var >= 2)".to_string(),
            ));
        }
        if !gt(self.learn_clip_z, 0.0)
            || !gt(self.half_score_at_z, 0.0)
            || !gt(self.cusum_half_score, 0.0)
        {
            out.push((
                "half_score_at_z",
                "learn_clip_z, half_score_at_z, cusum_half_score must be > 0".to_string(),
            ));
        }
        if !ge(self.cusum_allowance_z, 0.0) || !ge(self.accel_half_score_z, 0.0) {
            out.push((
                "cusum_allowance_z",
                "cusum_allowance_z and accel_half_score_z must be >= 0".to_string(),
            ));
        }
        if !ge(self.spread_floor_ratio, 0.0) || !ge(self.spread_floor_abs, 0.0) {
            out.push(("spread_floor_ratio", "floors must be >= 0".to_string()));
        }
        out
    }

    fn sd(&self, st: &TrendState) -> f64 {
        let floor = self
            .spread_floor_abs
            .max(self.spread_floor_ratio * st.level.abs());
        st.var.sqrt().max(floor)
    }

    /// Scores `value` against the one-step forecast, then learns it.
    pub fn update(&self, st: &mut TrendState, ts_ms: i64, value: f64) -> DetectorOutput {
        if !value.is_finite() {
            return DetectorOutput::default();
        }
        if st.count == 0 {
            st.level = value;
            st.last_ts_ms = ts_ms;
            st.count = 1;
            return DetectorOutput {
                score: 0.0,
                expected: None,
                deviation: 0.0,
            };
        }
        let dt = (ts_ms - st.last_ts_ms) as f64;
        if dt > 0.0 {
            st.step_ms = if st.step_ms <= 0.0 {
                dt
            } else {
                st.step_ms + 0.05 * (dt.min(10.0 * st.step_ms) - st.step_ms)
            };
            st.last_ts_ms = ts_ms;
        }
        let forecast = st.level + st.trend;
        let sd = self.sd(st);
        let resid = value - forecast;
        let z = resid / sd;
        let warm = st.count >= self.min_points.max(2);

        // CUSUM on the standardised residual.
        let zc = clip(z, 3.0 * self.learn_clip_z);
        st.cusum_hi = (st.cusum_hi + zc - self.cusum_allowance_z).max(0.0);
        st.cusum_lo = (st.cusum_lo - zc - self.cusum_allowance_z).max(0.0);
        let cusum = st.cusum_hi.max(st.cusum_lo);
        let accel_z = if st.trend_var > 0.0 {
            (st.trend - st.slow_trend) / st.trend_var.sqrt()
        } else {
            0.0
        };

        let out = if warm {
            let mut score = deviation_to_score(z, self.half_score_at_z);
            score = score.max(deviation_to_score(cusum, self.cusum_half_score));
            if self.accel_half_score_z > 0.0 {
                score = score.max(deviation_to_score(accel_z, self.accel_half_score_z));
            }
            DetectorOutput {
                score,
                expected: Some(forecast),
                deviation: z,
            }
        } else {
            DetectorOutput {
                score: 0.0,
                expected: Some(forecast),
                deviation: 0.0,
            }
        };

        // Learn, robustly.
        let lim = self.learn_clip_z * sd;
        let rc = if warm { clip(resid, lim) } else { resid };
        if warm && resid.abs() > lim {
            let s = if resid > 0.0 { 1 } else { -1 };
            st.clipped_run = if st.clipped_run.signum() == s {
                st.clipped_run + s
            } else {
                s
            };
        } else {
            st.clipped_run = 0;
        }
        let alpha = 1.0 / f64::from(self.level_window_points.max(1));
        let beta = 1.0 / f64::from(self.trend_window_points.max(1)).min(f64::from(st.count));
        let old_level = st.level;
        st.level = forecast + alpha * rc;
        st.trend += beta * (st.level - old_level - st.trend);
        if st.clipped_run.unsigned_abs() >= self.shift_adopt_points.max(1) {
            // A sustained shift: adopt the new level, keep the trend, restart the CUSUM.
            st.level = value;
            st.clipped_run = 0;
            st.cusum_hi = 0.0;
            st.cusum_lo = 0.0;
        }
        let gamma = 1.0 / f64::from(self.slow_trend_window_points.max(1)).min(f64::from(st.count));
        st.slow_trend += gamma * (st.trend - st.slow_trend);
        let dtr = st.trend - st.slow_trend;
        st.trend_var += gamma * (dtr * dtr - st.trend_var);
        let a_var = 1.0 / f64::from(self.var_window_points.max(2)).min(f64::from(st.count) + 1.0);
        st.var += a_var * (rc * rc - st.var);
        st.count = st.count.saturating_add(1);
        out
    }

    /// Forecast `horizon_points` ahead: `(mean, half width of the ~95 % interval)`.
    ///
    /// The interval is Holt's: `var_h = var * (1 + sum_{j<h} (alpha * (1 + j * beta))^2)`.
    pub fn forecast(&self, st: &TrendState, horizon_points: u32) -> (f64, f64) {
        let h = f64::from(horizon_points.max(1));
        let alpha = 1.0 / f64::from(self.level_window_points.max(1));
        let beta = 1.0 / f64::from(self.trend_window_points.max(1));
        // Closed form of sum_{j=1}^{h-1} (alpha (1 + j beta))^2.
        let m = h - 1.0;
        let s1 = m * (m + 1.0) / 2.0;
        let s2 = m * (m + 1.0) * (2.0 * m + 1.0) / 6.0;
        let sum = alpha * alpha * (m + 2.0 * beta * s1 + beta * beta * s2);
        let sd = self.sd(st) * (1.0 + sum).sqrt();
        (st.level + h * st.trend, 1.96 * sd)
    }

    /// Time until the level crosses `threshold` in `direction`, as `(mean_ms, plusminus_ms)`
    /// (one standard deviation). `Some((0, 0))` when already across; `None` when the trend does not
    /// head there or is not distinguishable from noise (|trend| < 2 × its variability).
    pub fn time_until_crossing(
        &self,
        st: &TrendState,
        threshold: f64,
        direction: CrossingDirection,
    ) -> Option<(i64, i64)> {
        if st.count < self.min_points.max(2) || st.step_ms <= 0.0 {
            return None;
        }
        let dist = threshold - st.level;
        let across = match direction {
            CrossingDirection::Up => dist <= 0.0,
            CrossingDirection::Down => dist >= 0.0,
        };
        if across {
            return Some((0, 0));
        }
        let b = st.trend;
        let sd_b = st.trend_var.sqrt();
        if b == 0.0 || dist.signum() != b.signum() || b.abs() < 2.0 * sd_b {
            return None;
        }
        let steps = dist / b;
        let sd_steps = ((steps * sd_b / b.abs()).powi(2) + (self.sd(st) / b.abs()).powi(2)).sqrt();
        let mean_ms = steps * st.step_ms;
        let pm_ms = sd_steps * st.step_ms;
        if !mean_ms.is_finite() || mean_ms > 1e15 {
            return None;
        }
        Some((mean_ms.round() as i64, pm_ms.min(1e15).round() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::{Noise, STEP_MS};
    use proptest::prelude::*;

    fn feed(cfg: &TrendConfig, values: &[f64]) -> (TrendState, Vec<DetectorOutput>) {
        let mut st = TrendState::default();
        let out = values
            .iter()
            .enumerate()
            .map(|(i, v)| cfg.update(&mut st, i as i64 * STEP_MS, *v))
            .collect();
        (st, out)
    }

    #[test]
    fn time_until_crossing_on_a_noisy_ramp() {
        // Disk at 50 %, +0.01 % per 5 minutes, noise 0.05: 90 % is 4000 points (~13.9 days) away
        // from the last point of the first 1000.
        let mut z = Noise::new(11);
        let v: Vec<f64> = (0..1000)
            .map(|i| 50.0 + 0.01 * i as f64 + 0.05 * z.normal())
            .collect();
        let cfg = TrendConfig::default();
        let (st, _) = feed(&cfg, &v);
        let (mean_ms, pm_ms) = cfg
            .time_until_crossing(&st, 90.0, CrossingDirection::Up)
            .expect("crossing");
        let expected_ms = (90.0 - 60.0) / 0.01 * STEP_MS as f64;
        assert!(
            (mean_ms as f64 - expected_ms).abs() < 0.25 * expected_ms,
            "{mean_ms} vs {expected_ms}"
        );
        assert!(pm_ms > 0);
        assert_eq!(
            cfg.time_until_crossing(&st, 10.0, CrossingDirection::Down),
            None
        );
        assert_eq!(
            cfg.time_until_crossing(&st, 40.0, CrossingDirection::Up),
            Some((0, 0))
        );
    }

    #[test]
    fn flat_noise_has_no_crossing_and_scores_low() {
        let mut z = Noise::new(5);
        let v: Vec<f64> = (0..2000).map(|_| 20.0 + z.normal()).collect();
        let cfg = TrendConfig::default();
        let (st, out) = feed(&cfg, &v);
        assert_eq!(
            cfg.time_until_crossing(&st, 90.0, CrossingDirection::Up),
            None
        );
        let high = out[300..].iter().filter(|o| o.score > 0.5).count();
        assert!(high < 10, "{high} high scores on noise");
    }

    #[test]
    fn level_shift_and_acceleration_score_high() {
        let mut z = Noise::new(9);
        let mut v: Vec<f64> = (0..1000).map(|_| 20.0 + z.normal()).collect();
        v.extend((0..50).map(|_| 28.0 + z.normal()));
        let cfg = TrendConfig::default();
        let (_, out) = feed(&cfg, &v);
        assert!(
            out[1000..1020].iter().any(|o| o.score > 0.6),
            "level shift missed"
        );

        let mut v: Vec<f64> = (0..1000)
            .map(|i| 20.0 + 0.01 * i as f64 + z.normal())
            .collect();
        v.extend((0..200).map(|i| 30.0 + 0.01 * i as f64 + 0.0008 * (i * i) as f64 + z.normal()));
        let (_, out) = feed(&cfg, &v);
        let max = |o: &[DetectorOutput]| o.iter().map(|o| o.score).fold(0.0, f64::max);
        let (normal, accel) = (max(&out[300..1000]), max(&out[1000..1200]));
        assert!(
            accel > 0.4 && accel > normal,
            "acceleration missed: {accel} vs normal {normal}"
        );
    }

    proptest! {
        #[test]
        fn interval_widens_with_horizon(values in proptest::collection::vec(-100.0f64..100.0, 40..200), h in 1u32..500) {
            let cfg = TrendConfig::default();
            let (st, _) = feed(&cfg, &values);
            let (_, w1) = cfg.forecast(&st, h);
            let (_, w2) = cfg.forecast(&st, h + 1);
            prop_assert!(w2 >= w1);
        }
    }
}

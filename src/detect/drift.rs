//! Change in slope: a two-sided Page-Hinkley test on the series' rate of change.
//!
//! The Holt trend adapts its slope within `trend_window_points`, so a disk that starts to fill
//! faster is absorbed before the residual or the trend-acceleration score grows; the predictive
//! rule sees it only once the new slope reaches its threshold. This detector compares the current
//! rate of change with the *long-run* rate of change instead. Points are averaged in blocks of
//! `block_secs` (at least `min_block_points` points): a block mean's noise falls with the square
//! root of its points while a slope change adds up over the block, so a slope change that is
//! invisible point to point (a hundredth of the noise per point) stands out block to block. Per
//! block, the change of the block mean, standardised by its own long-run mean and robust spread
//! and clipped (a step or a nightly clean-up is one clipped block, not a drift), feeds the
//! Page-Hinkley statistics `g⁺ = max(0, g⁺ + z - δ)` and `g⁻ = max(0, g⁻ - z - δ)`: a change of
//! slope by `c` spreads per block raises `g` by about `c - δ` per block, so it is seen after
//! `λ / (c - δ)` blocks: hours for a disk that fills a few times faster, not the days until the
//! new slope crosses a threshold.
//!
//! Once a change is established (`g ≥ adopt_at`), the new slope becomes the baseline and the
//! statistics restart, so one change is reported once.
//!
//! # Memory bound
//! 11 scalars: **88 bytes per series**.

use serde::{Deserialize, Serialize};

use super::{clip, deviation_to_score, ge, gt, DetectorOutput};

/// Configuration of the slope-change (Page-Hinkley) detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Block length in event time, in seconds (the series' step decides the points per block).
    pub block_secs: u64,
    /// Points per block, at least.
    pub min_block_points: u32,
    /// Effective window of the long-run slope and of its spread, in blocks.
    pub baseline_window_blocks: u32,
    /// Page-Hinkley allowance δ, in spreads per block: slower changes are ignored.
    pub allowance_z: f64,
    /// Standardised block changes are clipped to this many spreads (steps are not drifts).
    pub clip_z: f64,
    /// Page-Hinkley statistic that scores 0.5.
    pub half_score: f64,
    /// Statistic at which the new slope is adopted as the baseline and the test restarts.
    pub adopt_at: f64,
    /// Blocks seen before the detector scores.
    pub min_blocks: u32,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            block_secs: 3600,
            min_block_points: 4,
            baseline_window_blocks: 48,
            allowance_z: 0.5,
            clip_z: 3.0,
            half_score: 6.0,
            adopt_at: 18.0,
            min_blocks: 12,
        }
    }
}

/// Per-series state of the slope-change detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftState {
    /// Sum of the values of the block being filled.
    pub block_sum: f64,
    /// Points in the block being filled.
    pub block_n: u32,
    /// Blocks closed, saturating.
    pub blocks: u32,
    /// Mean of the previous block.
    pub prev_mean: f64,
    /// Long-run mean of the block-to-block changes.
    pub mean: f64,
    /// Long-run mean absolute deviation of the changes (robust spread).
    pub mad: f64,
    /// Upper Page-Hinkley statistic (slope increase).
    pub g_hi: f64,
    /// Lower Page-Hinkley statistic (slope decrease).
    pub g_lo: f64,
    /// Recent mean of the changes, unclipped (the slope adopted after a change).
    pub recent: f64,
    /// The last block's output (held until the next block closes).
    pub last_score: f64,
    /// Its signed statistic.
    pub last_dev: f64,
}

impl DriftConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.baseline_window_blocks < 2 {
            out.push(("baseline_window_blocks", "must be >= 2".to_string()));
        }
        if self.min_block_points < 1 {
            out.push(("min_block_points", "must be >= 1".to_string()));
        }
        if !ge(self.allowance_z, 0.0) {
            out.push(("allowance_z", "must be >= 0".to_string()));
        }
        if !gt(self.clip_z, 0.0) || !gt(self.half_score, 0.0) {
            out.push(("clip_z", "clip_z and half_score must be > 0".to_string()));
        }
        if !ge(self.adopt_at, self.half_score) {
            out.push(("adopt_at", "must be >= half_score".to_string()));
        }
        out
    }

    /// Folds the de-seasonalised `value` into its block (step `step_ms`, 0 if unknown); scores
    /// when a block closes, and holds that score until the next one.
    pub fn update(&self, st: &mut DriftState, value: f64, step_ms: i64) -> DetectorOutput {
        if !value.is_finite() {
            return DetectorOutput::default();
        }
        let per_block = if step_ms > 0 {
            (self.block_secs as f64 * 1000.0 / step_ms as f64).round() as u32
        } else {
            0
        }
        .max(self.min_block_points.max(1));
        st.block_sum += value;
        st.block_n += 1;
        if st.block_n >= per_block {
            let m = st.block_sum / f64::from(st.block_n);
            st.block_sum = 0.0;
            st.block_n = 0;
            self.close_block(st, m);
        }
        DetectorOutput {
            score: st.last_score,
            expected: None,
            deviation: st.last_dev,
        }
    }

    fn close_block(&self, st: &mut DriftState, m: f64) {
        st.blocks = st.blocks.saturating_add(1);
        if st.blocks == 1 {
            st.prev_mean = m;
            return;
        }
        let diff = m - st.prev_mean;
        st.prev_mean = m;
        let k = f64::from(st.blocks - 1);
        if k == 1.0 {
            st.mean = diff;
            st.mad = diff.abs().max(1e-12 * (1.0 + m.abs()));
            st.recent = diff;
            return;
        }
        let spread = (st.mad * 1.2533).max(1e-12 * (1.0 + m.abs()));
        let z = clip((diff - st.mean) / spread, self.clip_z);
        if st.blocks > self.min_blocks.max(3) {
            st.g_hi = (st.g_hi + z - self.allowance_z).max(0.0);
            st.g_lo = (st.g_lo - z - self.allowance_z).max(0.0);
            let g = st.g_hi.max(st.g_lo);
            st.last_score = deviation_to_score(g, self.half_score);
            st.last_dev = if st.g_hi >= st.g_lo { g } else { -g };
        }
        // Learn the long-run slope and spread from clipped changes; the recent slope fast.
        let alpha = 1.0 / f64::from(self.baseline_window_blocks.max(2)).min(k);
        let dc = st.mean + z * spread;
        st.mad += alpha * ((dc - st.mean).abs() - st.mad);
        st.mean += alpha * (dc - st.mean);
        // The recent slope learns the changes as they are: after a change it is the new slope.
        st.recent += alpha.max(0.25) * (diff - st.recent);
        if st.g_hi.max(st.g_lo) >= self.adopt_at {
            st.mean = st.recent;
            st.g_hi = 0.0;
            st.g_lo = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::Noise;

    fn run(cfg: &DriftConfig, values: &[f64]) -> Vec<DetectorOutput> {
        let mut st = DriftState::default();
        values
            .iter()
            .map(|v| cfg.update(&mut st, *v, 60_000))
            .collect()
    }

    #[test]
    fn a_disk_that_fills_seven_times_faster_is_seen_within_hours() {
        // One-minute points: 1 % a day, noise 0.05 (a slope 70 times below the noise per point);
        // from point 3000 on, 7 % a day.
        let mut z = Noise::new(1);
        let mut x = 40.0;
        let values: Vec<f64> = (0..6000)
            .map(|i| {
                x += if i >= 3000 { 7.0 } else { 1.0 } / 1440.0;
                x + 0.05 * z.normal()
            })
            .collect();
        let out = run(&DriftConfig::default(), &values);
        let normal_max = out[900..3000].iter().map(|o| o.score).fold(0.0, f64::max);
        let first = (3000..4000)
            .find(|i| out[*i].score >= 0.5)
            .expect("never scored 0.5");
        assert!(normal_max < 0.4, "normal part scored {normal_max}");
        // Hours, not days: the predictive rule would need the new slope to reach its threshold.
        assert!(
            first - 3000 <= 6 * 60,
            "seen after {} minutes",
            first - 3000
        );
        assert!(out[first].deviation > 0.0);
    }

    #[test]
    fn noise_steps_and_gaps_are_not_drift() {
        let mut z = Noise::new(2);
        let values: Vec<f64> = (0..5000)
            .map(|i| 100.0 + if i >= 2500 { 30.0 } else { 0.0 } + 5.0 * z.normal())
            .collect();
        let out = run(&DriftConfig::default(), &values);
        let max = out[900..].iter().map(|o| o.score).fold(0.0, f64::max);
        // A step is at most two clipped blocks: well below half the score of a drift.
        assert!(max < 0.5, "noise and one step scored {max}");
    }

    #[test]
    fn a_slowing_feed_is_seen_too_and_one_change_reports_once() {
        let mut z = Noise::new(3);
        let mut x = 0.0;
        let values: Vec<f64> = (0..6000)
            .map(|i| {
                x += if i >= 3000 { 0.0 } else { 0.05 };
                x + 0.2 * z.normal()
            })
            .collect();
        let out = run(&DriftConfig::default(), &values);
        let first = (3000..6000).find(|i| out[*i].score >= 0.5).expect("missed");
        assert!(out[first].deviation < 0.0);
        assert!(first - 3000 < 600, "{first}");
        // After adopting the new slope the statistic restarts: late points are calm again.
        let late = out[5000..].iter().map(|o| o.score).fold(0.0, f64::max);
        assert!(late < 0.5, "{late}");
    }
}

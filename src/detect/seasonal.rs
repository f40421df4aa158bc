//! Seasonal baseline: an additive level + per-phase profile (Holt-Winters without trend) whose
//! period is *tested*, not estimated.
//!
//! Per series the detector keeps a ring of slot means (a slot is the data's median step, widened to
//! at least `min_slot_secs`) and, every `retest_every_slots` slots, tests each candidate period
//! (hour, day, week, ... in wall-clock seconds) that the ring can resolve: the augurs periodogram
//! (Welch) of the winsorised, detrended ring must show a peak near the candidate, and the
//! autocorrelation at exactly that lag must be at least `min_acf`. The longest accepted period
//! becomes the baseline's season; the profile is then rebuilt from the ring, so a newly found
//! season is usable at once. `fixed_periods_secs` skips the test.
//!
//! The expected value of a point is `level + profile(phase)`, the profile linearly interpolated
//! between bucket centres; phases are aligned to the epoch (UTC), so gaps do not shift them. The
//! residual is scored in units of a robust spread (mean absolute residual, per bucket and global).
//! A value normal for the day but wrong for its hour has a large residual; the daily rise has not.
//!
//! # Memory bound
//! `history_slots` half floats (default 576: 1.1 KiB, allocated a day at a time; see
//! [`SlotRing`]) + 2 × `max_buckets` half floats (default 168: 0.7 KiB) + ~200 bytes of scalars:
//! **≤ 2 KiB per series with the defaults**, whatever the data rate.

use augurs::seasons::PeriodogramDetector;
use serde::{Deserialize, Serialize};

use super::halves::ScaledHalves;
use super::rounding::unit_hash;
use super::slot_ring::SlotRing;
use super::{clip, deviation_to_score, ge, gt, DetectorOutput, StepEstimator};

/// Configuration of the seasonal baseline detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeasonalConfig {
    /// Candidate season lengths, in seconds, tested on the history (default hour, day, week).
    pub candidate_periods_secs: Vec<u64>,
    /// Season lengths to use without testing, in seconds; empty = test the candidates.
    pub fixed_periods_secs: Vec<u64>,
    /// Slots kept in the history ring (each the mean of the points of one slot, in 2 bytes).
    pub history_slots: u32,
    /// Minimum width of a history slot, in seconds (slots are a whole number of data steps).
    pub min_slot_secs: u64,
    /// Cycles of a candidate the history must hold before it is tested.
    pub min_cycles: f64,
    /// Slots between two period tests (a test costs ~0.1-0.5 ms; amortised over the slot's points).
    pub retest_every_slots: u32,
    /// Minimum autocorrelation at the candidate lag for the season to be accepted; the
    /// autocorrelation at half the lag must also be lower by at least this much.
    pub min_acf: f64,
    /// Minimum periodogram power near the candidate, relative to the strongest peak.
    pub min_relative_power: f64,
    /// Maximum number of phase buckets of the profile (a season gets one bucket per slot, up to this).
    pub max_buckets: u32,
    /// Effective window of the level, in points.
    pub level_window_points: u32,
    /// Effective window of each profile bucket, in visits of that bucket's phase (≈ cycles).
    pub profile_window_cycles: f64,
    /// Effective window of the global residual spread, in points.
    pub spread_window_points: u32,
    /// Residuals are clipped to this many spreads before they are learnt (robustness to spikes).
    pub learn_clip_z: f64,
    /// Points seen before the detector scores (score 0 before).
    pub min_points: u32,
    /// Floor of the spread, as a fraction of the absolute level.
    pub spread_floor_ratio: f64,
    /// Absolute floor of the spread, in the metric's unit.
    pub spread_floor_abs: f64,
    /// The |residual z| that scores 0.5.
    pub half_score_at_z: f64,
    /// A phase bucket's spread is at least this fraction of the global spread.
    pub bucket_spread_min_ratio: f64,
    /// A newly installed season is blended in over this fraction of its period (0 = switched on
    /// at once): the de-seasonalised value the other detectors see moves gradually, not in a jump.
    pub blend_cycles: f64,
}

impl Default for SeasonalConfig {
    fn default() -> Self {
        Self {
            candidate_periods_secs: vec![3_600, 86_400, 604_800],
            fixed_periods_secs: Vec::new(),
            history_slots: 576,
            min_slot_secs: 900,
            min_cycles: 2.0,
            retest_every_slots: 192,
            min_acf: 0.3,
            min_relative_power: 0.1,
            max_buckets: 168,
            level_window_points: 48,
            profile_window_cycles: 4.0,
            spread_window_points: 288,
            learn_clip_z: 4.0,
            min_points: 30,
            spread_floor_ratio: 1e-3,
            spread_floor_abs: 1e-9,
            half_score_at_z: 4.0,
            bucket_spread_min_ratio: 0.5,
            blend_cycles: 0.25,
        }
    }
}

/// Per-series state of the seasonal detector; bounded as documented in the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeasonalState {
    /// Sampling step of the series.
    pub step: StepEstimator,
    /// Width of a history slot in ms (0 until the step is known).
    pub slot_ms: i64,
    /// History ring of slot means, two bytes a slot.
    pub ring: SlotRing,
    /// Index (ts_ms / slot_ms) of the slot being accumulated.
    pub acc_slot: i64,
    /// Sum of the values of the slot being accumulated.
    pub acc_sum: f64,
    /// Points in the slot being accumulated.
    pub acc_n: u32,
    /// Slots closed since the last period test.
    pub slots_since_test: u32,
    /// Season in use, in ms (0 = none).
    pub period_ms: i64,
    /// Profile per phase bucket (offset from the level), two bytes a bucket; empty without a
    /// season.
    pub profile: ScaledHalves,
    /// Mean absolute residual per phase bucket, likewise.
    pub bucket_spread: ScaledHalves,
    /// Level (deseasonalised).
    pub level: f64,
    /// Global mean absolute residual.
    pub spread: f64,
    /// Points seen, saturating.
    pub count: u32,
    /// Share of the season not blended in yet (1 just after it was installed, 0 when in full).
    pub unblended: f32,
}

/// Mean absolute deviation to standard deviation, for normal residuals.
const MAD_TO_SD: f64 = 1.2533;

/// A point's seasonal score with the phase's component and spread before the point was learnt.
#[derive(Debug, Clone, Copy)]
pub struct Phased {
    pub output: DetectorOutput,
    /// [`SeasonalConfig::component`] at the point's time.
    pub component: f64,
    /// [`SeasonalConfig::spread_sd`] at the point's time.
    pub spread_sd: f64,
}

impl SeasonalConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self
            .candidate_periods_secs
            .iter()
            .chain(&self.fixed_periods_secs)
            .any(|p| *p == 0)
        {
            out.push((
                "candidate_periods_secs",
                "periods must be > 0 seconds".to_string(),
            ));
        }
        if !(16..=65_536).contains(&self.history_slots) {
            out.push(("history_slots", "must be in 16..=65536".to_string()));
        }
        if !ge(self.min_cycles, 1.5) {
            out.push(("min_cycles", "must be >= 1.5".to_string()));
        }
        if self.retest_every_slots == 0 {
            out.push(("retest_every_slots", "must be >= 1".to_string()));
        }
        if !(self.min_acf > -1.0 && self.min_acf < 1.0) {
            out.push(("min_acf", "must be in (-1, 1)".to_string()));
        }
        if !(0.0..=1.0).contains(&self.min_relative_power) {
            out.push(("min_relative_power", "must be in [0, 1]".to_string()));
        }
        if !(2..=4096).contains(&self.max_buckets) {
            out.push(("max_buckets", "must be in 2..=4096".to_string()));
        }
        if self.level_window_points < 1 || self.spread_window_points < 2 {
            out.push((
                "level_window_points",
                "windows must be >= 1 (spread >= 2)".to_string(),
            ));
        }
        if !ge(self.profile_window_cycles, 1.0) {
            out.push(("profile_window_cycles", "must be >= 1".to_string()));
        }
        if !gt(self.learn_clip_z, 0.0) || !gt(self.half_score_at_z, 0.0) {
            out.push((
                "half_score_at_z",
                "learn_clip_z and half_score_at_z must be > 0".to_string(),
            ));
        }
        if !ge(self.spread_floor_ratio, 0.0) || !ge(self.spread_floor_abs, 0.0) {
            out.push(("spread_floor_ratio", "floors must be >= 0".to_string()));
        }
        if !(0.0..=1.0).contains(&self.bucket_spread_min_ratio) {
            out.push(("bucket_spread_min_ratio", "must be in [0, 1]".to_string()));
        }
        if !(0.0..=4.0).contains(&self.blend_cycles) {
            out.push(("blend_cycles", "must be in [0, 4]".to_string()));
        }
        out
    }

    /// Scores `value` at `ts_ms` against the baseline, then learns it.
    pub fn update(&self, st: &mut SeasonalState, ts_ms: i64, value: f64) -> DetectorOutput {
        self.update_phased(st, ts_ms, value).output
    }

    /// [`Self::update`], also returning what [`Self::component`] and [`Self::spread_sd`] return
    /// before the point is learnt: the phase (three integer divisions) is found once.
    pub fn update_phased(&self, st: &mut SeasonalState, ts_ms: i64, value: f64) -> Phased {
        if !value.is_finite() {
            return Phased {
                output: DetectorOutput::default(),
                component: self.component(st, ts_ms),
                spread_sd: self.spread_sd(st, ts_ms),
            };
        }
        // The phase and spread depend on the profile, level and spreads, not on the step.
        let (seasonal, b0, b1, w1) = self.phase(st, ts_ms);
        let sd_before = self.spread_at(st, b0, b1, w1);
        st.step.observe(ts_ms);
        let mut sd = sd_before;
        if st.count == 0 {
            // The spread's floor follows the level, which the first point sets.
            st.level = value;
            sd = self.spread_at(st, b0, b1, w1);
        }
        let expected = st.level + seasonal;
        let resid = value - expected;
        let z = resid / sd;
        let out = if st.count >= self.min_points.max(1) {
            DetectorOutput {
                score: deviation_to_score(z, self.half_score_at_z),
                expected: Some(expected),
                deviation: z,
            }
        } else {
            DetectorOutput {
                score: 0.0,
                expected: Some(expected),
                deviation: 0.0,
            }
        };

        // Learn: Huber-clipped residual, so one spike moves nothing far.
        let rc = clip(resid, self.learn_clip_z * sd);
        let a_level =
            1.0 / f64::from(self.level_window_points.max(1)).min(f64::from(st.count) + 1.0);
        st.level += a_level * rc;
        let a_spread =
            1.0 / f64::from(self.spread_window_points.max(2)).min(f64::from(st.count) + 2.0);
        st.spread += a_spread * (rc.abs() - st.spread);
        if st.unblended > 0.0 {
            // Blending in: the profile is as installed until it is used in full.
            let step = st.step.step_ms().max(1) as f64;
            let ramp = (self.blend_cycles * st.period_ms as f64 / step).max(1.0);
            st.unblended = (f64::from(st.unblended) - 1.0 / ramp).max(0.0) as f32;
        } else if !st.profile.is_empty() {
            let per_visit = self.points_per_bucket_visit(st);
            let a_prof = (1.0 / (self.profile_window_cycles * per_visit)).min(1.0);
            // Residual after the level moved; shared between the two neighbouring buckets.
            let r2 = rc * (1.0 - a_level);
            let n = u64::from(st.count);
            for (b, w) in [(b0, 1.0 - w1), (b1, w1)] {
                let p = st.profile.get(b) + a_prof * w * r2;
                st.profile.set(b, p, unit_hash(n, b as u64));
                let s = st.bucket_spread.get(b);
                let s = s + a_prof * w * (rc.abs() - s);
                st.bucket_spread
                    .set(b, s, unit_hash(n, (b as u64) << 32 | 1));
            }
        }
        st.count = st.count.saturating_add(1);
        self.accumulate(st, ts_ms, value);
        Phased {
            output: out,
            component: seasonal,
            spread_sd: sd_before,
        }
    }

    /// The seasonal component (profile value, without the level) at `ts_ms`; 0 without a season.
    pub fn component(&self, st: &SeasonalState, ts_ms: i64) -> f64 {
        self.phase(st, ts_ms).0
    }

    /// Spread (standard deviation) at a phase, in the metric's unit, with floors.
    pub fn spread_sd(&self, st: &SeasonalState, ts_ms: i64) -> f64 {
        let (_, b0, b1, w1) = self.phase(st, ts_ms);
        self.spread_at(st, b0, b1, w1)
    }

    fn spread_at(&self, st: &SeasonalState, b0: usize, b1: usize, w1: f64) -> f64 {
        let floor = self
            .spread_floor_abs
            .max(self.spread_floor_ratio * st.level.abs());
        let mut mad = st.spread;
        if !st.bucket_spread.is_empty() {
            let local = (1.0 - w1) * st.bucket_spread.get(b0) + w1 * st.bucket_spread.get(b1);
            mad = local.max(self.bucket_spread_min_ratio * st.spread);
        }
        (mad * MAD_TO_SD).max(floor)
    }

    /// Interpolated profile value at `ts_ms` and the two buckets/weight used.
    fn phase(&self, st: &SeasonalState, ts_ms: i64) -> (f64, usize, usize, f64) {
        let nb = st.profile.len();
        if nb == 0 || st.period_ms <= 0 {
            return (0.0, 0, 0, 0.0);
        }
        let frac = ts_ms.rem_euclid(st.period_ms) as f64 / st.period_ms as f64;
        let pos = frac * nb as f64 - 0.5;
        let fl = super::rounding::floor(pos);
        let w1 = pos - fl;
        let b0 = (fl as i64).rem_euclid(nb as i64) as usize;
        let b1 = (b0 + 1) % nb;
        let v = (1.0 - w1) * st.profile.get(b0) + w1 * st.profile.get(b1);
        (v * (1.0 - f64::from(st.unblended)), b0, b1, w1)
    }

    fn points_per_bucket_visit(&self, st: &SeasonalState) -> f64 {
        let step = st.step.step_ms().max(1) as f64;
        (st.period_ms as f64 / st.profile.len().max(1) as f64 / step).max(1.0)
    }

    /// Folds the point into the slot accumulator; closes slots into the ring and tests periods.
    fn accumulate(&self, st: &mut SeasonalState, ts_ms: i64, value: f64) {
        if st.slot_ms == 0 {
            let step = st.step.step_ms;
            if step <= 0 {
                return;
            }
            let min_slot = (self.min_slot_secs as i64).saturating_mul(1000);
            let k = ((min_slot + step - 1) / step).max(1);
            st.slot_ms = step * k;
            st.acc_slot = ts_ms.div_euclid(st.slot_ms);
        }
        let slot = ts_ms.div_euclid(st.slot_ms);
        if slot < st.acc_slot {
            return; // late point: scored, but not added to the history
        }
        if slot > st.acc_slot {
            let mean = if st.acc_n > 0 {
                st.acc_sum / f64::from(st.acc_n)
            } else {
                value
            };
            // Gaps repeat the last mean (bounded by the ring size).
            let missing = (slot - st.acc_slot).min(i64::from(self.history_slots));
            for _ in 0..missing {
                st.ring.push(self.history_slots as usize, mean);
            }
            st.acc_slot = slot;
            st.acc_sum = 0.0;
            st.acc_n = 0;
            st.slots_since_test = st.slots_since_test.saturating_add(missing as u32);
            self.maybe_test(st);
        }
        st.acc_sum += value;
        st.acc_n += 1;
    }

    /// Ring in chronological order.
    fn history(&self, st: &mut SeasonalState) -> Vec<f64> {
        st.ring.chronological(self.history_slots as usize)
    }

    fn maybe_test(&self, st: &mut SeasonalState) {
        let len = st.ring.len();
        if !self.fixed_periods_secs.is_empty() {
            if st.period_ms == 0 {
                let slots = self
                    .fixed_periods_secs
                    .iter()
                    .map(|p| *p as i64 * 1000 / st.slot_ms);
                if let Some(best) = self
                    .fixed_periods_secs
                    .iter()
                    .zip(slots)
                    .filter(|(_, s)| *s >= 2)
                    .map(|(p, _)| *p as i64 * 1000)
                    .max()
                {
                    if len as f64 * st.slot_ms as f64 >= best as f64 {
                        let hist = self.history(st);
                        self.install_period(st, &hist, best);
                    }
                }
            }
            return;
        }
        // First test as soon as the shortest candidate is testable, then on the schedule.
        let due = st.slots_since_test >= self.retest_every_slots
            || (st.period_ms == 0 && st.slots_since_test >= (self.retest_every_slots / 4).max(1));
        if !due {
            return;
        }
        let hist = self.history(st);
        let periods = self.detect_periods(&hist, st.slot_ms);
        st.slots_since_test = 0;
        let best = periods.into_iter().max().unwrap_or(0);
        if best != st.period_ms && best > 0 {
            self.install_period(st, &hist, best);
        }
    }

    /// Candidate periods (ms) present in `hist` (slot means, `slot_ms` apart).
    pub fn detect_periods(&self, hist: &[f64], slot_ms: i64) -> Vec<i64> {
        let n = hist.len();
        let testable: Vec<(i64, usize)> = self
            .candidate_periods_secs
            .iter()
            .map(|p| {
                (
                    *p as i64 * 1000,
                    (*p as i64 * 1000 / slot_ms.max(1)) as usize,
                )
            })
            .filter(|(pm, lag)| {
                *lag >= 4
                    && pm % slot_ms == 0
                    && (*lag as f64) * self.min_cycles <= n as f64
                    && *lag * 2 <= n
            })
            .collect();
        if testable.is_empty() {
            return Vec::new();
        }
        let x = winsorised_detrended(hist);
        let var: f64 = x.iter().map(|v| v * v).sum::<f64>() / n as f64;
        if !gt(var, 0.0) {
            return Vec::new();
        }
        let max_period = (n / 2).max(8) as u32;
        let pg = PeriodogramDetector::builder()
            .min_period(3)
            .max_period(max_period)
            .build()
            .periodogram(&x);
        let max_power = pg.powers.iter().copied().fold(0.0f64, f64::max);
        let mut out = Vec::new();
        for (pm, lag) in testable {
            let lo = lag as f64 * 0.75;
            let hi = lag as f64 * 1.33;
            let near = pg
                .periods
                .iter()
                .zip(&pg.powers)
                .filter(|(p, _)| (**p as f64) >= lo && (**p as f64) <= hi)
                .map(|(_, w)| *w)
                .fold(0.0f64, f64::max);
            let peak_ok = max_power > 0.0 && near >= self.min_relative_power * max_power;
            // A season repeats at its lag but not at half of it; red noise (slowly wandering
            // data) correlates more at the shorter lag, so the contrast rules it out.
            let acf = |l: usize| {
                x[l..]
                    .iter()
                    .zip(&x[..n - l])
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    / (n as f64 * var)
            };
            let at = acf(lag);
            let half = acf(lag / 2);
            if peak_ok && at >= self.min_acf && at - half >= self.min_acf {
                out.push(pm);
            }
        }
        out
    }

    /// Switches to season `period_ms` and rebuilds the profile from the history.
    fn install_period(&self, st: &mut SeasonalState, hist: &[f64], period_ms: i64) {
        let slots_per_period = (period_ms / st.slot_ms).max(1) as usize;
        let nb = slots_per_period.min(self.max_buckets as usize).max(2);
        let mut sum = vec![0.0f64; nb];
        let mut cnt = vec![0u32; nb];
        let n = hist.len();
        let newest_slot = st.acc_slot - 1;
        let mean = hist.iter().sum::<f64>() / n.max(1) as f64;
        let bucket_of = |slot: i64| -> usize {
            let centre = slot * st.slot_ms + st.slot_ms / 2;
            let frac = centre.rem_euclid(period_ms) as f64 / period_ms as f64;
            ((frac * nb as f64) as usize).min(nb - 1)
        };
        for (i, v) in hist.iter().enumerate() {
            let b = bucket_of(newest_slot - (n - 1 - i) as i64);
            sum[b] += v - mean;
            cnt[b] += 1;
        }
        let prof: Vec<f64> = sum
            .iter()
            .zip(&cnt)
            .map(|(s, c)| if *c > 0 { s / f64::from(*c) } else { 0.0 })
            .collect();
        let pm = prof.iter().sum::<f64>() / nb as f64;
        // Residual spread of the slot means against the new profile, scaled to points.
        let per_slot = (st.slot_ms / st.step.step_ms().max(1)).max(1) as f64;
        let recent = slots_per_period.min(n);
        let mut level = 0.0;
        let mut rs = vec![0.0f64; nb];
        let mut rc = vec![0u32; nb];
        for (i, v) in hist.iter().enumerate() {
            let b = bucket_of(newest_slot - (n - 1 - i) as i64);
            let de = v - (prof[b] - pm);
            if i >= n - recent {
                level += de / recent as f64;
            }
            rs[b] += (de - mean).abs();
            rc[b] += 1;
        }
        let offsets: Vec<f64> = prof.iter().map(|p| p - pm).collect();
        st.profile = ScaledHalves::from_values(&offsets);
        let spreads: Vec<f64> = rs
            .iter()
            .zip(&rc)
            .map(|(s, c)| {
                let slot_mad = if *c > 0 { s / f64::from(*c) } else { st.spread };
                (slot_mad * per_slot.sqrt())
                    .min(st.spread)
                    .max(0.25 * st.spread)
            })
            .collect();
        st.bucket_spread = ScaledHalves::from_values(&spreads);
        st.period_ms = period_ms;
        if self.blend_cycles > 0.0 {
            // The expected value stays where it was; the level follows as the season comes in.
            st.unblended = 1.0;
        } else {
            st.level = level;
            st.unblended = 0.0;
        }
    }

    /// Heap + inline bytes of a state, for the memory budget.
    pub fn state_bytes(st: &SeasonalState) -> usize {
        std::mem::size_of::<SeasonalState>()
            + st.ring.heap_bytes()
            + st.profile.heap_bytes()
            + st.bucket_spread.heap_bytes()
            + st.step.gaps_ms.capacity() * 8
    }
}

/// Clips to median ± 5 MAD and removes a least-squares line.
fn winsorised_detrended(hist: &[f64]) -> Vec<f64> {
    let n = hist.len();
    let mut sorted = hist.to_vec();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[n / 2];
    let mut dev: Vec<f64> = hist.iter().map(|v| (v - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = dev[n / 2].max(1e-12);
    let x: Vec<f64> = hist
        .iter()
        .map(|v| v.clamp(med - 5.0 * mad, med + 5.0 * mad))
        .collect();
    let tm = (n as f64 - 1.0) / 2.0;
    let xm = x.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in x.iter().enumerate() {
        let t = i as f64 - tm;
        sxy += t * (v - xm);
        sxx += t * t;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    x.iter()
        .enumerate()
        .map(|(i, v)| v - xm - slope * (i as f64 - tm))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::{daily, Noise, DAY, STEP_MS};
    use proptest::prelude::*;

    fn run(cfg: &SeasonalConfig, pts: &[(i64, f64)]) -> (SeasonalState, Vec<DetectorOutput>) {
        let mut st = SeasonalState::default();
        let out = pts
            .iter()
            .map(|(t, v)| cfg.update(&mut st, *t, *v))
            .collect();
        (st, out)
    }

    #[test]
    fn finds_the_daily_season_and_not_one_in_a_random_walk() {
        let cfg = SeasonalConfig::default();
        let (st, _) = run(&cfg, &daily(4 * DAY, 100.0, 30.0, 2.0, 1));
        assert_eq!(st.period_ms, 86_400_000);

        let mut z = Noise::new(4);
        let mut x = 100.0;
        let walk: Vec<(i64, f64)> = (0..4 * DAY)
            .map(|i| {
                x += z.normal();
                (i as i64 * STEP_MS, x)
            })
            .collect();
        let (st, _) = run(&cfg, &walk);
        assert_eq!(st.period_ms, 0, "random walk has no season");
    }

    #[test]
    fn value_normal_for_the_day_but_wrong_for_the_hour_scores_high() {
        let cfg = SeasonalConfig::default();
        let mut pts = daily(6 * DAY, 100.0, 30.0, 2.0, 2);
        // The daily rise itself scores low.
        let (_, out) = run(&cfg, &pts);
        let high = out[4 * DAY..].iter().filter(|o| o.score > 0.5).count();
        assert!(high <= 2, "{high} high scores on the normal days");
        // At the daily trough (phase 3/4) put the daily peak value: normal for the day, not the hour.
        let i = 5 * DAY + 3 * DAY / 4;
        pts[i].1 = 130.0;
        let (_, out) = run(&cfg, &pts);
        assert!(out[i].score > 0.8, "score {}", out[i].score);
        assert!(out[i].deviation > 5.0);
    }

    #[test]
    fn memory_is_bounded() {
        let cfg = SeasonalConfig::default();
        let (st, _) = run(&cfg, &daily(20 * DAY, 10.0, 3.0, 1.0, 3));
        assert!(
            SeasonalConfig::state_bytes(&st) <= 4_700,
            "{}",
            SeasonalConfig::state_bytes(&st)
        );
    }

    proptest! {
        #[test]
        fn scores_in_unit_interval_and_deterministic(values in proptest::collection::vec(-1e4f64..1e4, 1..600)) {
            let cfg = SeasonalConfig::default();
            let pts: Vec<(i64, f64)> = values.iter().enumerate().map(|(i, v)| (i as i64 * STEP_MS, *v)).collect();
            let (a, oa) = run(&cfg, &pts);
            let (b, ob) = run(&cfg, &pts);
            prop_assert_eq!(a, b);
            for (x, y) in oa.iter().zip(&ob) {
                prop_assert!((0.0..=1.0).contains(&x.score));
                prop_assert_eq!(x.score.to_bits(), y.score.to_bits());
            }
        }

        #[test]
        fn residual_is_invariant_to_shift_and_scale(shift in -1e3f64..1e3, scale in 0.1f64..10.0) {
            let cfg = SeasonalConfig { spread_floor_ratio: 0.0, spread_floor_abs: 0.0, ..Default::default() };
            let pts = daily(3 * DAY, 50.0, 10.0, 1.0, 5);
            let moved: Vec<(i64, f64)> = pts.iter().map(|(t, v)| (*t, v * scale + shift)).collect();
            let (_, a) = run(&cfg, &pts);
            let (_, b) = run(&cfg, &moved);
            for (i, (x, y)) in a.iter().zip(&b).enumerate().skip(100) {
                prop_assert!(x.deviation.abs() > 50.0 || (x.deviation - y.deviation).abs() <= 1e-2 * (1.0 + x.deviation.abs()), "point {} {} {}", i, x.deviation, y.deviation);
            }
        }
    }
}

//! Pure detector maths: statistics, baselines, models. Synchronous, no I/O, no clock.
//!
//! Every detector follows one shape so the pipeline can run it per series:
//! - a `*Config` struct (serde, `deny_unknown_fields`, units in field names, a doc comment per field);
//! - a per-series `*State` struct (serde, `Default`), whose size is bounded and documented;
//! - `Config::update(&self, state, ts_ms, value) -> DetectorOutput`, which scores the point
//!   against the state *before* learning from it, then learns.
//!
//! Time comes only from the points (`ts_ms`, event time), never from a clock; randomness only from
//! seeded generators, so the same input gives the same scores live, in replay and after a restore.

pub mod art;
pub mod drift;
pub mod fusion;
pub mod halves;
pub mod iforest;
pub mod rounding;
pub mod seasonal;
pub mod slot_ring;
pub mod trend;
pub mod variance;
pub mod zscore;

pub use fusion::{
    AnomalyConfig, AnomalyExplanation, AnomalyOutput, AnomalyState, DetectorKind, DETECTORS,
};

/// What one detector says about one point.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DetectorOutput {
    /// Anomaly score in [0, 1]; 0 while the detector is still warming up.
    pub score: f64,
    /// The value the detector expected at this point, when it has one.
    pub expected: Option<f64>,
    /// Signed deviation in the detector's own unit (a z-score for statistical detectors).
    pub deviation: f64,
}

/// Maps a non-negative deviation (in standard deviations) to a score in [0, 1): `d / (d + k)`.
/// `k` is the deviation that scores 0.5.
pub fn deviation_to_score(deviation: f64, half_at: f64) -> f64 {
    let d = deviation.abs();
    if d.is_finite() {
        d / (d + half_at)
    } else {
        1.0
    }
}

/// Median sampling step of a series, learnt from its first inter-point gaps (event time only).
///
/// Keeps at most [`StepEstimator::SAMPLES`] gaps (136 bytes); once full, the median is frozen, so
/// a later outage does not change the resolution a baseline was built at.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepEstimator {
    /// Timestamp of the last point seen, in ms (0 before the first point).
    pub last_ts_ms: i64,
    /// Points seen, saturating.
    pub seen: u32,
    /// Positive gaps seen so far, in ms, at most `SAMPLES` of them.
    pub gaps_ms: Vec<i64>,
    /// Median gap once `SAMPLES` gaps were seen, in ms; 0 before.
    pub step_ms: i64,
}

impl StepEstimator {
    /// Gaps used for the median.
    pub const SAMPLES: usize = 15;

    /// Folds a timestamp in; returns the gap to the previous point in ms (0 for the first point).
    pub fn observe(&mut self, ts_ms: i64) -> i64 {
        let gap = if self.seen == 0 {
            0
        } else {
            ts_ms - self.last_ts_ms
        };
        if self.seen == 0 || ts_ms > self.last_ts_ms {
            self.last_ts_ms = ts_ms;
        }
        self.seen = self.seen.saturating_add(1);
        if gap > 0 && self.step_ms == 0 {
            self.gaps_ms.push(gap);
            if self.gaps_ms.len() >= Self::SAMPLES {
                let mut g = std::mem::take(&mut self.gaps_ms);
                g.sort_unstable();
                self.step_ms = g[g.len() / 2];
            }
        }
        gap
    }

    /// The median step in ms: the frozen one, else a provisional median of the gaps so far, else 0.
    pub fn step_ms(&self) -> i64 {
        if self.step_ms > 0 {
            return self.step_ms;
        }
        if self.gaps_ms.len() >= 3 {
            let mut g = self.gaps_ms.clone();
            g.sort_unstable();
            return g[g.len() / 2];
        }
        0
    }
}

/// Clamps `x` to `[-limit, limit]`; NaN becomes 0.
#[inline]
pub(crate) fn clip(x: f64, limit: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-limit, limit)
    }
}

/// `a >= b`, false for NaN (config checks read `!ge(x, 0.0)`: "x is not >= 0, or is NaN").
#[inline]
pub(crate) fn ge(a: f64, b: f64) -> bool {
    a >= b
}

/// `a > b`, false for NaN.
#[inline]
pub(crate) fn gt(a: f64, b: f64) -> bool {
    a > b
}

/// Deterministic synthetic series for the detectors' tests.
#[cfg(test)]
pub(crate) mod testdata {
    /// Step of the synthetic series: 5 minutes.
    pub const STEP_MS: i64 = 300_000;
    /// Points per day at `STEP_MS`.
    pub const DAY: usize = 288;

    /// Standard normal noise from a seeded xorshift + Box-Muller.
    pub struct Noise(u64);

    impl Noise {
        pub fn new(seed: u64) -> Self {
            Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        pub fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// `n` points of `level + amp * sin(daily) + sd * noise`, 5 minutes apart from a midnight.
    pub fn daily(n: usize, level: f64, amp: f64, sd: f64, seed: u64) -> Vec<(i64, f64)> {
        let mut z = Noise::new(seed);
        let t0 = 1_396_310_400_000; // 2014-04-01T00:00:00Z
        (0..n)
            .map(|i| {
                let ph = (i % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
                (
                    t0 + i as i64 * STEP_MS,
                    level + amp * ph.sin() + sd * z.normal(),
                )
            })
            .collect()
    }
}

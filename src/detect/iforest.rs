//! Seeded isolation forest over a small feature vector per point, refitted on a schedule from a
//! bounded reservoir of recent points.
//!
//! Why our own: the crates are either not seedable (so not deterministic), or integer-only and
//! slow (see PITFALLS.md). This one is small on purpose: `trees` axis-parallel trees of depth
//! `log2(sample_size)`, stored as implicit complete binary trees in flat arrays (no pointers, no
//! allocation when scoring), scoring a point in ~`trees * depth` comparisons.
//!
//! Determinism: the reservoir's replacement decisions hash `(seed, points seen)`, and each refit
//! draws from a ChaCha8 generator seeded with `(seed, refit number)`, so no RNG state is stored and
//! the same input gives the same scores bit for bit, also after a snapshot/restore.
//!
//! The reservoir keeps a biased sample of about the last `horizon_points` points: while it has
//! room every point enters; then a point replaces a random slot with probability
//! `reservoir_size / min(seen, horizon_points)`.
//!
//! # Memory bound
//! reservoir `reservoir_size × FEATURES × 4` bytes (default 128 × 4 × 4 = 2 KiB) + forest
//! `trees × (2^depth − 1) × 5 + trees × 2^depth` bytes (default 16 trees of depth 6: 6 KiB) +
//! ~100 bytes: **≤ 8.2 KiB per series with the defaults**.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::DetectorOutput;

/// Number of features per point.
pub const FEATURES: usize = 4;

/// Marks a node that ends a path early (its `thr` then holds the node's sample count).
const TERMINAL: u8 = u8::MAX;

/// Configuration of the isolation forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IForestConfig {
    /// Trees in the forest.
    pub trees: u32,
    /// Points drawn (without replacement) from the reservoir to grow each tree; the tree depth is
    /// `ceil(log2(sample_size))`. Power of two recommended, at most 256.
    pub sample_size: u32,
    /// Points kept in the reservoir.
    pub reservoir_size: u32,
    /// The reservoir is a sample of about this many of the most recent points.
    pub horizon_points: u32,
    /// Points between two refits of the forest.
    pub refit_every_points: u32,
    /// Points in the reservoir before the first fit (score 0 before).
    pub min_points: u32,
    /// Raw isolation scores (`2^(-E[h]/c(n))`, about 0.5 for ordinary points) at or below this
    /// map to 0; 1 maps to 1, linearly in between.
    pub score_floor: f64,
    /// Seed of the forest's random choices.
    pub seed: u64,
}

impl Default for IForestConfig {
    fn default() -> Self {
        Self {
            trees: 16,
            sample_size: 64,
            reservoir_size: 128,
            horizon_points: 2016,
            refit_every_points: 256,
            min_points: 96,
            score_floor: 0.5,
            seed: 0x5eed_1f0e_57ab_1e00,
        }
    }
}

/// Per-series state of the isolation forest; bounded as documented in the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IForestState {
    /// Reservoir of feature vectors, `FEATURES` per point, flattened.
    pub reservoir: Vec<f32>,
    /// Points offered to the reservoir, saturating.
    pub seen: u64,
    /// Points since the last fit.
    pub since_fit: u32,
    /// Fits done (seeds the next fit).
    pub fits: u32,
    /// Depth of the fitted trees (0 = no forest yet).
    pub depth: u8,
    /// Sample size the forest was grown with.
    pub fitted_sample: u16,
    /// Split feature of every internal node (`trees × (2^depth − 1)`), or `TERMINAL`.
    pub feat: Vec<u8>,
    /// Split threshold of every internal node, or a terminal node's sample count.
    pub thr: Vec<f32>,
    /// Sample count of every leaf at full depth (`trees × 2^depth`).
    pub leaf: Vec<u8>,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` points.
pub fn c_factor(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n < 2.5 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl IForestConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=256).contains(&self.trees) {
            out.push(("trees", "must be in 1..=256".to_string()));
        }
        if !(4..=256).contains(&self.sample_size) {
            out.push(("sample_size", "must be in 4..=256".to_string()));
        }
        if self.reservoir_size < self.sample_size || self.reservoir_size > 65_536 {
            out.push((
                "reservoir_size",
                "must be >= sample_size and <= 65536".to_string(),
            ));
        }
        if self.horizon_points < self.reservoir_size {
            out.push(("horizon_points", "must be >= reservoir_size".to_string()));
        }
        if self.refit_every_points == 0 {
            out.push(("refit_every_points", "must be >= 1".to_string()));
        }
        if self.min_points < self.sample_size.min(self.reservoir_size) / 2 {
            out.push(("min_points", "must be >= sample_size / 2".to_string()));
        }
        if !(0.0..1.0).contains(&self.score_floor) {
            out.push(("score_floor", "must be in [0, 1)".to_string()));
        }
        out
    }

    /// Scores `x` with the current forest, then offers it to the reservoir and refits when due.
    pub fn update(&self, st: &mut IForestState, x: &[f32; FEATURES]) -> DetectorOutput {
        if x.iter().any(|v| !v.is_finite()) {
            return DetectorOutput::default();
        }
        let out = match self.raw_score(st, x) {
            Some(s) => {
                let f = self.score_floor;
                DetectorOutput {
                    score: ((s - f) / (1.0 - f)).clamp(0.0, 1.0),
                    expected: None,
                    deviation: s,
                }
            }
            None => DetectorOutput::default(),
        };
        self.learn(st, x);
        out
    }

    /// The raw isolation score `2^(-E[h]/c(n))` of `x`, or `None` before the first fit.
    pub fn raw_score(&self, st: &IForestState, x: &[f32; FEATURES]) -> Option<f64> {
        let depth = usize::from(st.depth);
        if depth == 0 {
            return None;
        }
        let internal = (1usize << depth) - 1;
        let leaves = 1usize << depth;
        let trees = st.feat.len() / internal;
        if trees == 0 {
            return None;
        }
        let mut total = 0.0;
        for t in 0..trees {
            let feat = &st.feat[t * internal..(t + 1) * internal];
            let thr = &st.thr[t * internal..(t + 1) * internal];
            let mut i = 0usize;
            let mut d = 0usize;
            let path = loop {
                if d == depth {
                    break d as f64 + c_factor(f64::from(st.leaf[t * leaves + i - internal]));
                }
                let f = feat[i];
                if f == TERMINAL {
                    break d as f64 + c_factor(f64::from(thr[i]));
                }
                i = if x[usize::from(f)] < thr[i] {
                    2 * i + 1
                } else {
                    2 * i + 2
                };
                d += 1;
            };
            total += path;
        }
        let mean = total / trees as f64;
        Some(2f64.powf(-mean / c_factor(f64::from(st.fitted_sample))))
    }

    fn learn(&self, st: &mut IForestState, x: &[f32; FEATURES]) {
        let cap = self.reservoir_size as usize;
        st.seen = st.seen.saturating_add(1);
        let len = st.reservoir.len() / FEATURES;
        if len < cap {
            st.reservoir.extend_from_slice(x);
        } else {
            let h = splitmix(self.seed ^ st.seen.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let window = st.seen.min(u64::from(self.horizon_points.max(1))).max(1);
            // Replace with probability cap / window, at a uniformly chosen slot.
            let r = h % window;
            if (r as usize) < cap {
                let j = r as usize;
                st.reservoir[j * FEATURES..(j + 1) * FEATURES].copy_from_slice(x);
            }
        }
        st.since_fit = st.since_fit.saturating_add(1);
        let len = st.reservoir.len() / FEATURES;
        let first = st.depth == 0 && len as u32 >= self.min_points.min(self.reservoir_size);
        if first || (st.depth > 0 && st.since_fit >= self.refit_every_points) {
            self.fit(st);
        }
    }

    /// Grows a new forest from the reservoir.
    pub fn fit(&self, st: &mut IForestState) {
        let n = st.reservoir.len() / FEATURES;
        if n < 2 {
            return;
        }
        let psi = (self.sample_size as usize).min(n).max(2);
        let depth = (psi as f64).log2().ceil().max(1.0) as usize;
        let internal = (1usize << depth) - 1;
        let leaves = 1usize << depth;
        let trees = self.trees.max(1) as usize;
        st.feat.clear();
        st.feat.resize(trees * internal, TERMINAL);
        st.thr.clear();
        st.thr.resize(trees * internal, 0.0);
        st.leaf.clear();
        st.leaf.resize(trees * leaves, 0);
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix(
            self.seed ^ u64::from(st.fits).wrapping_mul(0x9e37_79b9),
        ));
        let mut idx: Vec<u16> = (0..n as u16).collect();
        for t in 0..trees {
            // Partial Fisher-Yates: the first `psi` entries are the sample.
            for i in 0..psi {
                let j = rng.random_range(i..n);
                idx.swap(i, j);
            }
            let mut sample: Vec<u16> = idx[..psi].to_vec();
            let mut tree = TreeBuf {
                feat: &mut st.feat[t * internal..(t + 1) * internal],
                thr: &mut st.thr[t * internal..(t + 1) * internal],
                leaf: &mut st.leaf[t * leaves..(t + 1) * leaves],
                depth,
            };
            grow(&mut tree, &st.reservoir, &mut sample, 0, 0, &mut rng);
        }
        st.depth = depth as u8;
        st.fitted_sample = psi as u16;
        st.since_fit = 0;
        st.fits = st.fits.wrapping_add(1);
    }

    /// Heap + inline bytes of a state, for the memory budget.
    pub fn state_bytes(st: &IForestState) -> usize {
        std::mem::size_of::<IForestState>()
            + st.reservoir.capacity() * 4
            + st.feat.capacity()
            + st.thr.capacity() * 4
            + st.leaf.capacity()
    }
}

struct TreeBuf<'a> {
    feat: &'a mut [u8],
    thr: &'a mut [f32],
    leaf: &'a mut [u8],
    depth: usize,
}

fn grow(
    tree: &mut TreeBuf<'_>,
    data: &[f32],
    sample: &mut [u16],
    node: usize,
    d: usize,
    rng: &mut ChaCha8Rng,
) {
    let internal = (1usize << tree.depth) - 1;
    if d == tree.depth {
        tree.leaf[node - internal] = sample.len().min(255) as u8;
        return;
    }
    if sample.len() <= 1 {
        tree.feat[node] = TERMINAL;
        tree.thr[node] = sample.len() as f32;
        return;
    }
    // Pick a random feature with a non-zero range (try each at most once, from a random start).
    let start = rng.random_range(0..FEATURES);
    let mut chosen = None;
    for k in 0..FEATURES {
        let f = (start + k) % FEATURES;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &i in sample.iter() {
            let v = data[usize::from(i) * FEATURES + f];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi > lo {
            chosen = Some((f, lo, hi));
            break;
        }
    }
    let Some((f, lo, hi)) = chosen else {
        tree.feat[node] = TERMINAL;
        tree.thr[node] = sample.len() as f32;
        return;
    };
    let mut split = lo + (hi - lo) * rng.random::<f32>();
    if split <= lo {
        split = lo + (hi - lo) * 0.5;
    }
    tree.feat[node] = f as u8;
    tree.thr[node] = split;
    // Partition: values < split go left.
    let mut m = 0;
    for k in 0..sample.len() {
        if data[usize::from(sample[k]) * FEATURES + f] < split {
            sample.swap(k, m);
            m += 1;
        }
    }
    let (left, right) = sample.split_at_mut(m);
    grow(tree, data, left, 2 * node + 1, d + 1, rng);
    grow(tree, data, right, 2 * node + 2, d + 1, rng);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::Noise;
    use proptest::prelude::*;

    fn cluster(n: usize, seed: u64) -> Vec<[f32; FEATURES]> {
        let mut z = Noise::new(seed);
        (0..n)
            .map(|_| std::array::from_fn(|_| z.normal() as f32))
            .collect()
    }

    #[test]
    fn outlier_scores_above_inliers_and_is_deterministic() {
        let cfg = IForestConfig::default();
        let mut st = IForestState::default();
        for x in cluster(600, 1) {
            cfg.update(&mut st, &x);
        }
        let inlier = cfg.raw_score(&st, &[0.1, -0.2, 0.0, 0.3]).unwrap();
        let outlier = cfg.raw_score(&st, &[6.0, 0.0, -5.0, 0.0]).unwrap();
        assert!(
            outlier > 0.55 && outlier > inlier + 0.12,
            "outlier {outlier} inlier {inlier}"
        );

        let mut st2 = IForestState::default();
        for x in cluster(600, 1) {
            cfg.update(&mut st2, &x);
        }
        assert_eq!(st, st2);
    }

    #[test]
    fn state_is_bounded() {
        let cfg = IForestConfig::default();
        let mut st = IForestState::default();
        for x in cluster(5000, 2) {
            cfg.update(&mut st, &x);
        }
        assert_eq!(st.reservoir.len(), cfg.reservoir_size as usize * FEATURES);
        assert!(
            IForestConfig::state_bytes(&st) <= 8_400,
            "{}",
            IForestConfig::state_bytes(&st)
        );
    }

    proptest! {
        #[test]
        fn scores_in_unit_interval(points in proptest::collection::vec(proptest::array::uniform4(-50.0f32..50.0), 100..300)) {
            let cfg = IForestConfig { min_points: 64, ..Default::default() };
            let mut st = IForestState::default();
            for p in &points {
                let o = cfg.update(&mut st, p);
                prop_assert!((0.0..=1.0).contains(&o.score));
            }
        }

        #[test]
        fn c_factor_is_monotone(n in 2.0f64..10_000.0) {
            prop_assert!(c_factor(n + 1.0) >= c_factor(n));
        }
    }
}

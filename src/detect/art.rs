//! Shape novelty: fuzzy ART over windows of the series, after ARTime (Hampton, 2021; the top of
//! NAB's scoreboard).
//!
//! ARTime's idea is to learn the *shapes* a series takes over short windows with adaptive
//! resonance theory, and to call a window anomalous when it resonates with none of the learnt
//! shapes. What we take from its design and code:
//! - features are a window of recent values, each normalised to [0, 1], complement-coded
//!   (`a, 1 - a`) so a category is a hyper-box and its size is bounded;
//! - fuzzy ART's choice `|I ∧ w| / (α + |w|)` picks a category, its match `|I ∧ w| / |I|` must reach
//!   the vigilance `ρ` to resonate; a resonating category learns slowly
//!   (`w ← β (I ∧ w) + (1 - β) w`), a window that resonates with none becomes a new category;
//! - the anomaly evidence is how far the window is from the best match, `1 - max match`, scored
//!   before learning.
//!
//! What differs, to fit a streaming operator with bounded state: values are normalised by a slow
//! running level and spread of the (de-seasonalised) input rather than the probation period's
//! min/max, squashed by a logistic so an outlier does not compress every later window; categories
//! are capped and the least recently used one is recycled; the score goes through the fusion's
//! per-series calibration like every other detector instead of ARTime's fixed masking rules.
//! A novel value stays in the next `window_points - 1` windows and makes them novel too: the score
//! keeps that echo, but the detector also says how much of a window's novelty is its own, and only
//! that confirms an anomaly (`fusion.confirm_points`), so a one-point blip is not a lasting one.
//!
//! # Memory bound
//! `max_categories × 2 × window_points` 8-bit fixed-point weights plus `max_categories` u32 and
//! the window, grown a category at a time: **≤ 0.6 KiB per series** with the defaults (24
//! categories, window 8).

use serde::{Deserialize, Serialize};

use super::rounding::{round_unit_code, unit_hash, unit_u8_stochastic};
use super::{gt, DetectorOutput};

/// 1.0 in the fixed-point unit of windows and weights (1/255).
const ONE: u8 = u8::MAX;

/// Configuration of the fuzzy-ART shape detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtConfig {
    /// Values per window (features = 2 × this after complement coding), at most 32.
    pub window_points: u32,
    /// Vigilance ρ in (0, 1]: the match a window needs to belong to a category.
    pub vigilance: f64,
    /// Learning rate β in (0, 1] of a resonating category.
    pub learning_rate: f64,
    /// Choice parameter α > 0 (small: prefer the closest category, not the largest).
    pub choice_alpha: f64,
    /// Categories kept per series, at most 64 (the least recently used is recycled).
    pub max_categories: u32,
    /// Effective window of the running level and spread used to normalise values, in points.
    pub norm_window_points: u32,
    /// Spreads that map to the logistic's slope (larger = coarser shapes).
    pub norm_spreads: f64,
    /// Points seen before the detector scores.
    pub min_points: u32,
}

impl Default for ArtConfig {
    fn default() -> Self {
        Self {
            window_points: 8,
            vigilance: 0.95,
            learning_rate: 0.1,
            choice_alpha: 0.001,
            max_categories: 24,
            norm_window_points: 1000,
            norm_spreads: 1.0,
            min_points: 100,
        }
    }
}

/// Per-series state of the fuzzy-ART shape detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArtState {
    /// Points seen, saturating.
    pub count: u32,
    /// Running level of the input.
    pub level: f64,
    /// Running mean absolute deviation of the input.
    pub mad: f64,
    /// The last `window_points` normalised values in units of 1/255, oldest first once full.
    #[serde(with = "serde_bytes")]
    pub window: Vec<u8>,
    /// Category weights in units of 1/255, `2 × window_points` each, concatenated. A learning step
    /// is rounded stochastically, so the small ones are kept on average (see
    /// [`super::rounding`]); a step of 1/255 is 1/13 of the vigilance's radius over a window.
    #[serde(with = "serde_bytes")]
    pub weights: Vec<u8>,
    /// Last point each category resonated at (for recycling).
    pub last_used: Vec<u32>,
    /// Windows still to come that hold the newest value of the last novel window: their novelty
    /// is partly its echo.
    pub echo_left: u8,
    /// Novelty of that window.
    pub echo: f32,
}

impl ArtConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=32).contains(&self.window_points) {
            out.push(("window_points", "must be in 1..=32".to_string()));
        }
        if !(1..=64).contains(&self.max_categories) {
            out.push(("max_categories", "must be in 1..=64".to_string()));
        }
        if !(gt(self.vigilance, 0.0) && self.vigilance <= 1.0) {
            out.push(("vigilance", "must be in (0, 1]".to_string()));
        }
        if !(gt(self.learning_rate, 0.0) && self.learning_rate <= 1.0) {
            out.push(("learning_rate", "must be in (0, 1]".to_string()));
        }
        if !gt(self.choice_alpha, 0.0) || !gt(self.norm_spreads, 0.0) {
            out.push((
                "choice_alpha",
                "choice_alpha and norm_spreads must be > 0".to_string(),
            ));
        }
        if self.norm_window_points < 2 {
            out.push(("norm_window_points", "must be >= 2".to_string()));
        }
        out
    }

    /// Bytes of one state (inline + heap).
    pub fn state_bytes(st: &ArtState) -> usize {
        std::mem::size_of::<ArtState>()
            + st.window.capacity()
            + st.weights.capacity()
            + st.last_used.capacity() * 4
    }

    /// Scores the window ending at `value`, then learns it. Also returns the score of what the
    /// window adds beyond the echo of an earlier novel window (see [`ArtState::echo_left`]).
    pub fn update(&self, st: &mut ArtState, value: f64) -> (DetectorOutput, f64) {
        if !value.is_finite() {
            return (DetectorOutput::default(), 0.0);
        }
        st.count = st.count.saturating_add(1);
        let n = f64::from(st.count);
        let w = self.window_points.clamp(1, 32) as usize;
        if st.count == 1 {
            st.level = value;
        }
        // Normalise against the level and spread before this point (scored before learnt).
        let spread = (st.mad * 1.2533).max(1e-9 * (1.0 + st.level.abs()));
        let u = (value - st.level) / (self.norm_spreads * spread);
        let a = round_unit_code(f64::from(ONE) / (1.0 + (-u).exp()));
        let alpha = 1.0 / f64::from(self.norm_window_points.max(2)).min(n);
        let dev = (value - st.level).abs().min(6.0 * spread.max(st.mad));
        st.mad += alpha * (dev - st.mad);
        st.level += alpha * (value - st.level).clamp(-6.0 * spread, 6.0 * spread);
        if st.count <= 2 {
            st.mad = st.mad.max((value - st.level).abs());
        }
        if st.window.len() >= w {
            st.window.remove(0);
        } else if st.window.capacity() < w {
            st.window.reserve_exact(w - st.window.len());
        }
        st.window.push(a);
        if st.window.len() < w {
            return (DetectorOutput::default(), 0.0);
        }

        // Complement-coded input: |I| = w.
        let dims = 2 * w;
        let mut input = [0u8; 64];
        for (k, v) in st.window.iter().enumerate() {
            input[k] = *v;
            input[w + k] = ONE - *v;
        }
        let input = &input[..dims];
        let cats = st.weights.len() / dims;
        let (mut best_choice, mut best_cat) = (-1.0f64, usize::MAX);
        let unit = f64::from(ONE);
        // A category's match `|I ∧ w| / |I|` only grows with `|I ∧ w|`: the vigilance test and
        // the best match are on the integer overlap, and only the categories that pass it pay
        // for the choice's divisions (two per category were a good part of this detector's cost).
        let match_of = |inter: u32| f64::from(inter) / unit / w as f64;
        let resonates_from = least_passing(self.vigilance, w as u32 * u32::from(ONE), match_of);
        let mut max_inter = 0u32;
        for (c, weights) in st.weights.chunks_exact(dims).enumerate() {
            let (inter, size) = overlap(input, weights);
            max_inter = max_inter.max(inter);
            if inter >= resonates_from {
                let choice = f64::from(inter) / unit / (self.choice_alpha + f64::from(size) / unit);
                if choice > best_choice {
                    best_choice = choice;
                    best_cat = c;
                }
            }
        }
        let max_match = match_of(max_inter);
        let warm = st.count > self.min_points && cats > 0;
        let novelty = (1.0 - max_match).clamp(0.0, 1.0);
        let radius = (1.0 - self.vigilance).max(1e-6);
        // A novel value stays in the next `window_points - 1` windows, and each of them is novel
        // because of it. The score keeps that echo (it helps find the anomaly's window), but what
        // confirms an anomaly is only the novelty a window adds beyond it: else a one-point blip
        // would look like an anomaly lasting a whole window and pass any confirmation.
        // A window holding the echo is fresh evidence only if it is more novel than the most
        // novel window of the echo so far by at least the vigilance's radius (what makes a window
        // novel on its own); a shape moving through the window varies by less than that.
        let mut fresh = novelty;
        if st.echo_left > 0 {
            st.echo_left -= 1;
            fresh = novelty - f64::from(st.echo);
            if fresh < radius {
                fresh = 0.0;
            }
            st.echo = st.echo.max(novelty as f32);
        }
        if fresh >= radius {
            st.echo_left = (w - 1) as u8;
            st.echo = novelty as f32;
        }
        // A window at the vigilance's distance scores 0.5.
        let score_of = |x: f64| x / (x + radius);
        let (out, fresh_score) = if warm {
            let out = DetectorOutput {
                score: score_of(novelty),
                expected: None,
                deviation: novelty / radius,
            };
            (out, score_of(fresh))
        } else {
            (DetectorOutput::default(), 0.0)
        };

        // Learn: the resonating category moves toward the window, else a new (or recycled) one.
        if best_cat != usize::MAX {
            let beta = self.learning_rate;
            let wc = &mut st.weights[best_cat * dims..(best_cat + 1) * dims];
            for (k, (x, i)) in wc.iter_mut().zip(input).enumerate() {
                // Weights only shrink towards the input; most are already inside it.
                if *i >= *x {
                    continue;
                }
                let (lo, cur) = (f64::from(*i), f64::from(*x));
                let moved = (beta * lo + (1.0 - beta) * cur) / f64::from(ONE);
                *x = unit_u8_stochastic(moved, unit_hash(u64::from(st.count), k as u64));
            }
            st.last_used[best_cat] = st.count;
        } else if cats < self.max_categories.clamp(1, 64) as usize {
            // Grown a category at a time: a smooth series needs few, and holds only those.
            st.weights.reserve_exact(dims);
            st.weights.extend_from_slice(input);
            st.last_used.reserve_exact(1);
            st.last_used.push(st.count);
        } else {
            let lru = (0..cats).min_by_key(|c| st.last_used[*c]).unwrap_or(0);
            st.weights[lru * dims..(lru + 1) * dims].copy_from_slice(input);
            st.last_used[lru] = st.count;
        }
        (out, fresh_score)
    }
}

/// The least `i` in `0..=max` with `f(i) >= threshold`, for a non-decreasing `f` (`max + 1` if
/// there is none): the exact integer form of a test on `f`, found from an estimate in a few steps.
fn least_passing(threshold: f64, max: u32, f: impl Fn(u32) -> f64) -> u32 {
    let top = f(max);
    let mut i = if top > 0.0 {
        (threshold / top * f64::from(max))
            .ceil()
            .clamp(0.0, f64::from(max)) as u32
    } else {
        0
    };
    while i > 0 && f(i - 1) >= threshold {
        i -= 1;
    }
    while i <= max && f(i) < threshold {
        i += 1;
    }
    i
}

/// `(Σ min(input, weight), Σ weight)` over a window and a category of equal length: fuzzy ART's
/// `|I ∧ w|` and `|w|`. In fixed 16-byte chunks, which compile to vector instructions; over a
/// slice of run-time length (16 bytes by default) the loop stayed scalar and was most of this
/// detector's cost.
fn overlap(input: &[u8], weights: &[u8]) -> (u32, u32) {
    let (mut inter, mut size) = (0u32, 0u32);
    let (mut xs, mut ws) = (input.chunks_exact(16), weights.chunks_exact(16));
    for (x, w) in (&mut xs).zip(&mut ws) {
        let (x, w): (&[u8; 16], &[u8; 16]) = (x.try_into().unwrap(), w.try_into().unwrap());
        let low: [u8; 16] = std::array::from_fn(|k| x[k].min(w[k]));
        inter += low.iter().map(|v| u32::from(*v)).sum::<u32>();
        size += w.iter().map(|v| u32::from(*v)).sum::<u32>();
    }
    for (x, w) in xs.remainder().iter().zip(ws.remainder()) {
        inter += u32::from(*x.min(w));
        size += u32::from(*w);
    }
    (inter, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testdata::Noise;

    #[test]
    fn the_integer_vigilance_test_is_the_float_one() {
        for w in 1..=32u32 {
            let unit = f64::from(ONE);
            let match_of = |inter: u32| f64::from(inter) / unit / f64::from(w);
            let max = w * u32::from(ONE);
            for vigilance in [1e-9, 0.3, 0.5, 0.9, 0.95, 0.97, 0.999, 1.0] {
                let scanned = (0..=max)
                    .find(|i| match_of(*i) >= vigilance)
                    .unwrap_or(max + 1);
                assert_eq!(
                    least_passing(vigilance, max, match_of),
                    scanned,
                    "w {w}, vigilance {vigilance}"
                );
            }
        }
    }

    #[test]
    fn overlap_in_chunks_is_the_plain_sum() {
        let mut seed = 7u64;
        for len in 1..=64 {
            let mut byte = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            };
            let x: Vec<u8> = (0..len).map(|_| byte()).collect();
            let w: Vec<u8> = (0..len).map(|_| byte()).collect();
            let plain = x.iter().zip(&w).fold((0u32, 0u32), |(i, s), (a, b)| {
                (i + u32::from(*a.min(b)), s + u32::from(*b))
            });
            assert_eq!(overlap(&x, &w), plain, "length {len}");
        }
    }

    #[test]
    fn a_new_shape_scores_a_known_one_does_not() {
        let cfg = ArtConfig::default();
        let mut st = ArtState::default();
        let mut z = Noise::new(5);
        // A cycle of 12 points with a little noise: its windows become categories. Then the
        // value holds still at mid-range for 24 points: every value is in range, the shape is new.
        let mut scores = Vec::new();
        for i in 0..3000 {
            let v = if (2000..2024).contains(&i) {
                0.0
            } else {
                10.0 * (i as f64 / 12.0 * std::f64::consts::TAU).sin()
            } + 0.2 * z.normal();
            scores.push(cfg.update(&mut st, v).0.score);
        }
        let normal = scores[1000..1990].iter().cloned().fold(0.0, f64::max);
        let held = scores[2000..2024].iter().cloned().fold(0.0, f64::max);
        assert!(
            held > 0.5 && held > normal + 0.2,
            "held {held}, normal {normal}"
        );
        assert!(st.last_used.len() <= cfg.max_categories as usize);
        assert!(
            ArtConfig::state_bytes(&st) <= 640,
            "{}",
            ArtConfig::state_bytes(&st)
        );
    }

    #[test]
    fn a_blip_is_fresh_once_and_its_echo_is_not() {
        let cfg = ArtConfig::default();
        let mut st = ArtState::default();
        let mut z = Noise::new(7);
        let mut out = Vec::new();
        for i in 0..3000 {
            let mut v = 10.0 * (i as f64 / 12.0 * std::f64::consts::TAU).sin() + 0.2 * z.normal();
            if i == 2500 {
                v += 60.0;
            }
            out.push(cfg.update(&mut st, v));
        }
        let (blip, fresh) = out[2500];
        assert!(blip.score > 0.5 && fresh == blip.score, "{blip:?} {fresh}");
        // The next windows still hold the blip: novel, but none of it their own.
        let echo = &out[2501..2508];
        assert!(echo.iter().any(|(o, _)| o.score > 0.5), "{echo:?}");
        assert!(echo.iter().all(|(_, fresh)| *fresh == 0.0), "{echo:?}");
    }

    #[test]
    fn noise_keeps_its_categories_bounded_and_scores_stay_finite() {
        let cfg = ArtConfig::default();
        let mut st = ArtState::default();
        let mut z = Noise::new(6);
        for _ in 0..5000 {
            let o = cfg.update(&mut st, 1e6 + 1e3 * z.normal()).0;
            assert!(o.score.is_finite() && (0.0..=1.0).contains(&o.score));
        }
        assert!(st.last_used.len() <= cfg.max_categories as usize);
        assert!(cfg.problems().is_empty());
        assert!(!ArtConfig {
            vigilance: 0.0,
            ..Default::default()
        }
        .problems()
        .is_empty());
    }
}

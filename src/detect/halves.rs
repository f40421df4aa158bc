//! A vector of half floats with a shared power-of-two scale: per-phase state (the seasonal
//! profile and spreads) at two bytes a value, for metrics of any magnitude.
//!
//! A half float alone tops out at 65,504 (a byte count's daily swing does not fit) and keeps 11
//! significant bits. Values are stored as `f16(x / 2^exp)`, with `exp` chosen when the vector is
//! built so that the widest value sits near 2,048, and raised (every value re-scaled, exactly) when
//! a later value would not fit. Writes round stochastically (see [`super::rounding`]), so the small
//! steps a profile learns by are kept on average.

use half::f16;
use serde::{Deserialize, Serialize};

use super::rounding::{f16_stochastic, to_f16};

/// Scaled values are kept below this magnitude (f16's largest finite value is 65,504).
const MAX_SCALED: f64 = 32_768.0;
/// A new scale puts the widest value near this (room to grow 16-fold before a re-scale).
const TARGET_SCALED: f64 = 2_048.0;

/// Half floats sharing one scale (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaledHalves {
    /// Values are stored divided by `2^exp`.
    exp: i32,
    values: Vec<f16>,
}

impl ScaledHalves {
    /// The values, rounded to nearest, at a scale that fits the widest; non-finite ones become 0.
    pub fn from_values(values: &[f64]) -> Self {
        let widest = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let exp = exp_for(widest);
        Self {
            exp,
            values: values
                .iter()
                .map(|v| to_f16(if v.is_finite() { v * exp2(-exp) } else { 0.0 }))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Value `i`.
    pub fn get(&self, i: usize) -> f64 {
        self.values[i].to_f64() * exp2(self.exp)
    }

    /// Sets value `i` to `x`, rounded stochastically with `u` (uniform in `[0, 1)`); re-scales
    /// every value first if `x` would not fit. A non-finite `x` is ignored.
    pub fn set(&mut self, i: usize, x: f64, u: f64) {
        if !x.is_finite() {
            return;
        }
        let scaled = x.abs() * exp2(-self.exp);
        if scaled > MAX_SCALED {
            let up = exp_for(x.abs()) - self.exp;
            for v in &mut self.values {
                *v = to_f16(v.to_f64() * exp2(-up));
            }
            self.exp += up;
        }
        self.values[i] = f16_stochastic(x * exp2(-self.exp), u);
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * 2
    }
}

fn exp_for(widest: f64) -> i32 {
    if widest > 0.0 {
        (widest / TARGET_SCALED)
            .log2()
            .ceil()
            .clamp(-1000.0, 1000.0) as i32
    } else {
        0
    }
}

/// 2^e, built from its bits (`exp` stays within ±1000, inside f64's normal exponents).
fn exp2(e: i32) -> f64 {
    f64::from_bits(((e.clamp(-1022, 1023) + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_magnitudes_keep_eleven_bits() {
        for scale in [1e-6, 1.0, 3e7, 1e12] {
            let values: Vec<f64> = (0..96).map(|i| scale * (i as f64 - 40.0) / 7.0).collect();
            let h = ScaledHalves::from_values(&values);
            // Within 1/2048 of the widest value (55/7 of the scale): 11 significant bits.
            for (i, v) in values.iter().enumerate() {
                assert!(
                    (h.get(i) - v).abs() <= scale * 8.0 / 2048.0,
                    "{} vs {v}",
                    h.get(i)
                );
            }
            assert_eq!(h.heap_bytes(), 96 * 2);
        }
    }

    #[test]
    fn a_value_that_does_not_fit_rescales_the_others_and_nan_is_ignored() {
        let mut h = ScaledHalves::from_values(&[1.0, -2.0, 3.0]);
        h.set(1, 1e9, 0.5);
        assert!((h.get(1) - 1e9).abs() < 1e9 / 1000.0);
        assert!((h.get(0) - 1.0).abs() < 1e-3 && (h.get(2) - 3.0).abs() < 1e-3);
        h.set(0, f64::NAN, 0.5);
        assert!((h.get(0) - 1.0).abs() < 1e-3);
        assert!(ScaledHalves::from_values(&[f64::INFINITY, 0.0]).get(0) == 0.0);
    }
}

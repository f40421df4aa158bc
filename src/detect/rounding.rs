//! Rounding to compact number formats without bias.
//!
//! Per-series state is kept in half floats or 8-bit codes where a detector's precision allows it
//! (see the memory bounds of the detectors). Some of that state learns in small steady steps: a
//! seasonal profile moves by 1/60 of a residual per visit, a shape category by a tenth of a gap.
//! Rounded to nearest, a step smaller than half a unit of the format would vanish every time and
//! the state would stop learning; rounded stochastically it is kept on average. The random number
//! comes from a hash of the series' own counters, so a replay rebuilds the same state.

use half::f16;

/// A number in `[0, 1)` from two integers: the same integers give the same number. Two
/// multiplications (it runs for every weight a shape category learns): uniform enough to round
/// by, not a random number generator.
pub fn unit_hash(a: u64, b: u64) -> f64 {
    let z = (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Smallest normal half float, 2^-14.
const F16_MIN_NORMAL: f64 = 6.103_515_625e-5;
/// Largest finite half float.
const F16_MAX: f64 = 65_504.0;

/// `x` as a half float, rounded down or up with the probabilities that make its expected value
/// `x` (`u` uniform in `[0, 1)`).
///
/// In the normal range the two neighbouring half floats come straight from `x`'s bits (they are
/// `2^(e-10)` apart in `x`'s binade `2^e`), with the same bits and the same probability as the
/// general path below, which converts three times (in software: this build has no F16C).
pub fn f16_stochastic(x: f64, u: f64) -> f16 {
    let ax = x.abs();
    if !(F16_MIN_NORMAL..F16_MAX).contains(&ax) {
        return f16_stochastic_general(x, u);
    }
    let e = ((ax.to_bits() >> 52) & 0x7ff) as i64 - 1023;
    let ulp = f64::from_bits(((e - 10 + 1023) as u64) << 52);
    // Dividing by `ulp` is multiplying by this power of two, exactly (and without a division).
    let per_ulp = f64::from_bits(((10 - e + 1023) as u64) << 52);
    // Exact: the floor of a number below 2^11.
    let units = floor(ax * per_ulp);
    let lo = units * ulp;
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    // The magnitude just below |x| (or |x| itself); +1 is the next one up, across binades too.
    let lo_bits = (((e + 15) as u16) << 10) | (units as u16 - 1024);
    if lo == ax {
        return f16::from_bits(sign | lo_bits);
    }
    // The chance of the upper neighbour, exact (Sterbenz) and as the general path computes it.
    let up = if sign == 0 {
        (ax - lo) * per_ulp
    } else {
        ((lo + ulp) - ax) * per_ulp
    };
    let away_from_zero = (u < up) == (sign == 0);
    f16::from_bits(sign | (lo_bits + u16::from(away_from_zero)))
}

/// [`f16_stochastic`] for any `x`: round to nearest, then pick between that and its neighbour
/// towards `x`.
fn f16_stochastic_general(x: f64, u: f64) -> f16 {
    let near = to_f16(x);
    let nv = near.to_f64();
    if !near.is_finite() || nv == x || x.is_nan() {
        return near;
    }
    let other = step_toward(near, x > nv);
    let ov = other.to_f64();
    if !other.is_finite() {
        return near;
    }
    let (lo, hi, lov, hiv) = if nv < ov {
        (near, other, nv, ov)
    } else {
        (other, near, ov, nv)
    };
    if u < (x - lov) / (hiv - lov) {
        hi
    } else {
        lo
    }
}

/// `x` as the nearest half float, through f32 on every machine: with or without the F16C
/// instructions (which convert from f32 only), the same bits, so replays match across hosts.
pub fn to_f16(x: f64) -> f16 {
    f16::from_f32(x as f32)
}

/// The neighbouring half float above (`up`) or below.
fn step_toward(h: f16, up: bool) -> f16 {
    let bits = h.to_bits();
    if bits & 0x7fff == 0 {
        return f16::from_bits(if up { 0x0001 } else { 0x8001 });
    }
    let positive = bits & 0x8000 == 0;
    f16::from_bits(if up == positive { bits + 1 } else { bits - 1 })
}

/// `x.floor()` for a finite `|x| < 2^63` (but `0.0` for `-0.0`), without the call to libm's
/// `floor` that the baseline x86-64 target (no SSE4.1) makes, in the detectors' per-point paths.
pub fn floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// `x.round()` (halves away from zero) as a code, for `x` in `[0, 255]`: without libm's call.
pub fn round_unit_code(x: f64) -> u8 {
    let down = floor(x);
    (down + f64::from(x - down >= 0.5)) as u8
}

/// `x` in `[0, 1]` as an 8-bit code (units of 1/255), rounded stochastically.
pub fn unit_u8_stochastic(x: f64, u: f64) -> u8 {
    let scaled = (x.clamp(0.0, 1.0) * 255.0).min(255.0);
    let down = floor(scaled);
    (down + f64::from(u < scaled - down)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_steps_survive_on_average_and_exact_values_stay() {
        // 20,000 steps of 1e-4 on 100 (a half float's unit there is 0.0625): rounded to nearest
        // nothing moves, stochastically the sum arrives within a few units.
        let (mut near, mut sto) = (to_f16(100.0), to_f16(100.0));
        for i in 0..20_000u64 {
            near = to_f16(near.to_f64() + 1e-4);
            sto = f16_stochastic(sto.to_f64() + 1e-4, unit_hash(i, 7));
        }
        assert_eq!(near.to_f64(), 100.0);
        assert!((sto.to_f64() - 102.0).abs() < 0.3, "{}", sto);
        for v in [0.0, -3.5, 1024.0, 6.103_515_625e-5] {
            assert_eq!(f16_stochastic(v, 0.99).to_f64(), v);
        }
        assert!((-1e-9..=1e-9).contains(&f16_stochastic(1e-9, 0.5).to_f64().abs()));
        assert!(f16_stochastic(1e6, 0.5).is_infinite());
        // Negative values round both ways too.
        let down = f16_stochastic(-100.01, 0.99).to_f64();
        let up = f16_stochastic(-100.01, 0.0).to_f64();
        assert!(down <= -100.01 && up >= -100.01 && down < up, "{down} {up}");
    }

    #[test]
    fn the_normal_range_path_matches_the_general_one_bit_for_bit() {
        let mut checked = 0;
        for i in 0..200_000u64 {
            // Magnitudes from below the subnormals to beyond the largest half float, both signs,
            // exact half floats and their midpoints among them.
            let mag = 2f64.powf(unit_hash(i, 1) * 44.0 - 28.0);
            let x = match i % 4 {
                0 => mag,
                1 => -mag,
                2 => to_f16(mag).to_f64(),
                _ => -(to_f16(mag).to_f64() + step_toward(to_f16(mag), true).to_f64()) / 2.0,
            };
            for u in [0.0, unit_hash(i, 2), 0.5, 0.999_999] {
                let (fast, general) = (f16_stochastic(x, u), f16_stochastic_general(x, u));
                assert_eq!(fast.to_bits(), general.to_bits(), "x {x:e}, u {u}");
                checked += 1;
            }
        }
        assert_eq!(checked, 800_000);
    }

    #[test]
    fn floor_and_round_without_libm_are_libms() {
        for i in 0..100_000u64 {
            let x = (unit_hash(i, 4) - 0.5) * 2f64.powf(unit_hash(i, 5) * 70.0 - 20.0);
            let near_integer = x.round() + (unit_hash(i, 6) - 0.5) * 1e-15 * x.abs().max(1.0);
            for v in [x, near_integer, x.round(), x.round() + 0.5] {
                assert_eq!(floor(v), v.floor(), "floor {v:e}");
            }
            let code = unit_hash(i, 7) * 256.0;
            for v in [
                code,
                code.round() + 0.5,
                code.floor() + 0.5 - 1e-14,
                255.0,
                0.0,
            ] {
                let v = v.min(255.0);
                assert_eq!(round_unit_code(v), v.round() as u8, "round {v:e}");
            }
        }
    }

    #[test]
    fn codes_round_both_ways_in_proportion() {
        let mean: f64 = (0..10_000u64)
            .map(|i| f64::from(unit_u8_stochastic(0.5 / 255.0 + 0.1, unit_hash(i, 1))))
            .sum::<f64>()
            / 10_000.0;
        assert!((mean - (0.1 * 255.0 + 0.5)).abs() < 0.02, "{mean}");
        assert_eq!(unit_u8_stochastic(1.0, 0.999), 255);
        assert_eq!(unit_u8_stochastic(-0.5, 0.0), 0);
        let u: Vec<f64> = (0..1000).map(|i| unit_hash(i, 3)).collect();
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        assert!((u.iter().sum::<f64>() / 1000.0 - 0.5).abs() < 0.03);
    }
}

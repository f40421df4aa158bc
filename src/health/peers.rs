//! Cross-exchange outliers: how far each exchange is from its peers on the same metric (and
//! symbol) in the same minute, in robust units (median and MAD), which no single-series detector
//! can see: an exchange whose delay rises while the others' stays flat.

/// The consistency constant that makes the MAD estimate a normal distribution's σ.
const MAD_TO_SIGMA: f64 = 1.4826;

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Each value's deviation from the median of all, over `max(1.4826 × MAD, min_scale,
/// 0.1 × |median|)`: the floors keep identical peers from turning a small step into a huge
/// deviation. `None` with fewer than `min_peers` values.
pub fn deviations(values: &[f64], min_peers: usize, min_scale: f64) -> Option<Vec<f64>> {
    if values.len() < min_peers.max(2) || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let m = median(&sorted);
    let mut abs: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    abs.sort_by(f64::total_cmp);
    let scale = (MAD_TO_SIGMA * median(&abs))
        .max(min_scale)
        .max(0.1 * m.abs())
        .max(f64::MIN_POSITIVE);
    Some(values.iter().map(|v| (v - m) / scale).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_exchange_behind_its_peers_stands_out_and_the_peers_do_not() {
        // Market-data delay: okx 8 s behind, the others 0.3 s.
        let d = deviations(&[0.31, 8.0, 0.29, 0.33], 3, 0.5).unwrap();
        assert!(d[1] > 10.0, "{d:?}");
        assert!(
            d.iter().enumerate().all(|(i, z)| i == 1 || z.abs() < 1.0),
            "{d:?}"
        );
        // Two exchanges are too few to call one of them the odd one out.
        assert_eq!(deviations(&[0.3, 8.0], 3, 0.5), None);
        // Identical peers and a small step: the floor keeps it small.
        let d = deviations(&[100.0, 100.0, 103.0], 3, 5.0).unwrap();
        assert!(d[2] < 1.0, "{d:?}");
    }

    proptest! {
        /// Deviations do not change when every value is shifted, and scale with them when the
        /// floors are out of the way.
        #[test]
        fn shift_invariant(v in proptest::collection::vec(-1e3f64..1e3, 3..12), shift in -1e3f64..1e3) {
            let a = deviations(&v, 3, 1.0).unwrap();
            let shifted: Vec<f64> = v.iter().map(|x| x + shift).collect();
            // The relative floor depends on the median's size: compare with it out of play.
            let b = deviations(&shifted, 3, 1.0).unwrap();
            let m_a = { let mut s = v.clone(); s.sort_by(f64::total_cmp); median(&s) };
            let m_b = m_a + shift;
            if 0.1 * m_a.abs() <= 1.0 && 0.1 * m_b.abs() <= 1.0 {
                for (x, y) in a.iter().zip(&b) {
                    prop_assert!((x - y).abs() < 1e-6 * (1.0 + x.abs()));
                }
            }
        }
    }
}

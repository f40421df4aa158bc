//! The health score of one exchange for one minute, from what its collector reported in it.
//!
//! ```text
//! score = 100 × connected × Σ wᵢ·sᵢ / Σ wᵢ      (over the components reported that minute)
//! ```
//! `connected` is the minute's mean `exchange_connection_status` (1 when not reported); each
//! component `sᵢ` is 1 when good and falls linearly to 0 between its `good` and `bad` levels:
//! message rate as a share of its seasonal baseline (1 at or above it, 0 at `rate_bad_share`),
//! latency, error rate and market-data delay against their levels.

use serde::{Deserialize, Serialize};

/// A component's levels: at or better than `good` it scores 1, at or worse than `bad` 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub good: f64,
    pub bad: f64,
    /// Its weight in the score.
    pub weight: f64,
}

impl Levels {
    /// 1 at `good`, 0 at `bad`, linear between (either direction).
    pub fn score(&self, x: f64) -> f64 {
        if self.good == self.bad {
            return if x == self.good { 1.0 } else { 0.0 };
        }
        ((x - self.bad) / (self.good - self.bad)).clamp(0.0, 1.0)
    }
}

/// How each component is scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreLevels {
    /// Message rate / seasonal baseline (good 1: at its usual rate; bad 0.2).
    pub rate: Levels,
    /// Round-trip latency in ms.
    pub latency_ms: Levels,
    /// Error rate in percent.
    pub error_percent: Levels,
    /// Market-data delay in seconds.
    pub delay_secs: Levels,
}

impl Default for ScoreLevels {
    fn default() -> Self {
        Self {
            rate: Levels {
                good: 1.0,
                bad: 0.2,
                weight: 0.3,
            },
            latency_ms: Levels {
                good: 100.0,
                bad: 1000.0,
                weight: 0.2,
            },
            error_percent: Levels {
                good: 0.5,
                bad: 5.0,
                weight: 0.2,
            },
            delay_secs: Levels {
                good: 1.0,
                bad: 10.0,
                weight: 0.3,
            },
        }
    }
}

/// What one exchange reported in one minute (means; `None`: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinuteInputs {
    pub connected: Option<f64>,
    /// Message rate over its seasonal baseline.
    pub rate_share: Option<f64>,
    pub latency_ms: Option<f64>,
    pub error_percent: Option<f64>,
    pub delay_secs: Option<f64>,
}

/// The score (0-100), or `None` when nothing was reported.
pub fn score(levels: &ScoreLevels, m: &MinuteInputs) -> Option<f64> {
    let parts = [
        (m.rate_share, levels.rate),
        (m.latency_ms, levels.latency_ms),
        (m.error_percent, levels.error_percent),
        (m.delay_secs, levels.delay_secs),
    ];
    let (mut sum, mut weights) = (0.0, 0.0);
    for (x, l) in parts {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            sum += l.weight * l.score(x);
            weights += l.weight;
        }
    }
    let connected = m.connected.map(|c| c.clamp(0.0, 1.0));
    match (weights > 0.0, connected) {
        (true, c) => Some(100.0 * c.unwrap_or(1.0) * sum / weights),
        (false, Some(c)) => Some(100.0 * c),
        (false, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_formula() {
        let l = ScoreLevels::default();
        let healthy = MinuteInputs {
            connected: Some(1.0),
            rate_share: Some(1.1),
            latency_ms: Some(45.0),
            error_percent: Some(0.1),
            delay_secs: Some(0.3),
        };
        assert_eq!(score(&l, &healthy), Some(100.0));
        // 8 s behind (delay score (10 - 8) / 9 = 0.222) and 550 ms (0.5): weights 0.3 and 0.2
        // of 1.0: 100 × (0.3 + 0.3 × 0.222 + 0.2 × 0.5 + 0.2) = 66.7.
        let lagging = MinuteInputs {
            delay_secs: Some(8.0),
            latency_ms: Some(550.0),
            ..healthy
        };
        let s = score(&l, &lagging).unwrap();
        assert!(
            (s - 100.0 * (0.3 + 0.3 * 2.0 / 9.0 + 0.1 + 0.2)).abs() < 1e-9,
            "{s}"
        );
        // Disconnected for half the minute halves it; without any reading there is no score.
        let half = MinuteInputs {
            connected: Some(0.5),
            ..healthy
        };
        assert_eq!(score(&l, &half), Some(50.0));
        assert_eq!(score(&l, &MinuteInputs::default()), None);
        // Only the connection reported: the score is the connection.
        let only = MinuteInputs {
            connected: Some(0.0),
            ..Default::default()
        };
        assert_eq!(score(&l, &only), Some(0.0));
        // Missing components leave the others' weights: a rate at 60 % of its baseline alone.
        let rate = MinuteInputs {
            rate_share: Some(0.6),
            ..Default::default()
        };
        assert!((score(&l, &rate).unwrap() - 50.0).abs() < 1e-9);
    }
}

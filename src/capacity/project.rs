//! The projection of one series: a least-squares line through its hourly means, carried
//! `horizon_days` on, against its family's limit, with a recommendation in words.

use serde::Serialize;

/// Hours of history a projection needs.
pub const MIN_HOURS: usize = 6;

/// One series' projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    pub series: String,
    /// The last hour's mean.
    pub current: f64,
    /// Growth in units per day (negative: shrinking).
    pub growth_per_day: f64,
    /// How well a line fits the hourly means (0-1).
    pub r2: f64,
    /// The value `horizon_days` on.
    pub projected: f64,
    /// Limit − current, and at the horizon (`None` without a limit).
    pub headroom: Option<f64>,
    pub headroom_at_horizon: Option<f64>,
    /// Days until the limit at this growth (`None`: never, or no limit).
    pub days_to_limit: Option<f64>,
    /// `ok`, `watch`, `plan` or `urgent`.
    pub status: &'static str,
    pub recommendation: String,
}

/// Least squares through `(x, y)`: (slope, intercept, r²).
fn fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let r2 = if sxx > 0.0 && syy > 0.0 {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (slope, my - slope * mx, r2)
}

/// Projects a series from its hourly means `(hour index, mean)` in time order; `None` with less
/// than [`MIN_HOURS`] of them. `watch_share`: the share of the limit that is worth watching.
pub fn project(
    series: String,
    hourly: &[(i64, f64)],
    limit: Option<f64>,
    horizon_days: f64,
    watch_share: f64,
) -> Option<Projection> {
    if hourly.len() < MIN_HOURS {
        return None;
    }
    let points: Vec<(f64, f64)> = hourly.iter().map(|(h, v)| (*h as f64, *v)).collect();
    let (slope, _, r2) = fit(&points);
    let current = hourly.last()?.1;
    let growth_per_day = slope * 24.0;
    let projected = current + growth_per_day * horizon_days;
    let headroom = limit.map(|l| l - current);
    let headroom_at_horizon = limit.map(|l| l - projected);
    let days_to_limit = match (limit, growth_per_day > 0.0) {
        (Some(l), true) if current < l => Some((l - current) / growth_per_day),
        (Some(l), _) if current >= l => Some(0.0),
        _ => None,
    };
    let fmt = |x: f64| crate::rules::fmt_value((x * 100.0).round() / 100.0);
    let (status, recommendation) = match (limit, days_to_limit) {
        (Some(_), Some(d)) if d <= 7.0 => (
            "urgent",
            format!(
                "reaches its limit in {} days at {} a day: add capacity now",
                fmt(d),
                fmt(growth_per_day)
            ),
        ),
        (Some(l), Some(d)) if d <= horizon_days => (
            "plan",
            format!(
                "reaches its limit in {} days at {} a day: add at least {} (the growth over {} days past the limit) before then",
                fmt(d),
                fmt(growth_per_day),
                fmt(projected - l),
                horizon_days
            ),
        ),
        (Some(l), _) if projected >= watch_share * l => (
            "watch",
            format!(
                "{} % of its limit in {} days at {} a day",
                fmt(projected / l * 100.0),
                horizon_days,
                fmt(growth_per_day)
            ),
        ),
        (Some(l), _) => (
            "ok",
            format!(
                "{} % of its limit in {} days ({} a day)",
                fmt(projected.max(0.0) / l * 100.0),
                horizon_days,
                fmt(growth_per_day)
            ),
        ),
        (None, _) => (
            "ok",
            format!(
                "{} in {} days ({} a day; no limit set)",
                fmt(projected),
                horizon_days,
                fmt(growth_per_day)
            ),
        ),
    };
    Some(Projection {
        series,
        current,
        growth_per_day,
        r2,
        projected,
        headroom,
        headroom_at_horizon,
        days_to_limit,
        status,
        recommendation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(from: f64, per_day: f64, hours: i64) -> Vec<(i64, f64)> {
        (0..hours)
            .map(|h| (1000 + h, from + per_day * h as f64 / 24.0))
            .collect()
    }

    #[test]
    fn a_known_linear_growth_is_projected_exactly() {
        // 1 % a day from 50 % for a week: 56.96 % now, 86.96 % in 30 days, limit in 43 days.
        let p = project(
            "disk".into(),
            &linear(50.0, 1.0, 168),
            Some(100.0),
            30.0,
            0.8,
        )
        .unwrap();
        assert!((p.growth_per_day - 1.0).abs() < 1e-9, "{p:?}");
        assert!((p.current - (50.0 + 167.0 / 24.0)).abs() < 1e-9);
        assert!((p.projected - (p.current + 30.0)).abs() < 1e-9);
        assert!((p.days_to_limit.unwrap() - (100.0 - p.current)).abs() < 1e-9);
        assert!((p.r2 - 1.0).abs() < 1e-9);
        assert_eq!(p.status, "watch", "{p:?}");
        // Faster: the limit within the horizon, then within a week.
        let p = project(
            "disk".into(),
            &linear(50.0, 2.0, 168),
            Some(100.0),
            30.0,
            0.8,
        )
        .unwrap();
        assert_eq!(p.status, "plan", "{p:?}");
        assert!(
            p.recommendation.contains("add at least"),
            "{}",
            p.recommendation
        );
        let p = project(
            "disk".into(),
            &linear(80.0, 2.0, 168),
            Some(100.0),
            30.0,
            0.8,
        )
        .unwrap();
        assert_eq!(p.status, "urgent", "{p:?}");
        // Flat, shrinking, no limit, too little history.
        let p = project(
            "disk".into(),
            &linear(40.0, 0.0, 48),
            Some(100.0),
            30.0,
            0.8,
        )
        .unwrap();
        assert_eq!((p.status, p.days_to_limit), ("ok", None));
        let p = project(
            "disk".into(),
            &linear(40.0, -1.0, 48),
            Some(100.0),
            30.0,
            0.8,
        )
        .unwrap();
        assert_eq!(p.status, "ok");
        let p = project("rate".into(), &linear(400.0, 10.0, 48), None, 30.0, 0.8).unwrap();
        assert!(p.recommendation.contains("no limit set"));
        assert!(project("x".into(), &linear(1.0, 1.0, 5), Some(2.0), 30.0, 0.8).is_none());
    }
}

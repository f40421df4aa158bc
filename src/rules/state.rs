//! The lifecycle of one rule on one series, driven by event time only.
//!
//! Semantics: a series' value holds from one point until the next, for at most `staleness_ms`.
//! A condition that has held since `active_since` fires at exactly `active_since + for`, whether
//! that moment is reached by the series' next point or by the watermark, so the transitions and
//! their times do not depend on how input was batched. When the series' data goes stale, a
//! pending alert is cancelled and a firing one resolves (as in Prometheus), both marked `stale`.

use serde::{Deserialize, Serialize};

use super::Rule;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Inactive,
    Pending,
    Firing,
}

/// State of one (series, rule) pair: 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub phase: Phase,
    /// When the condition started to hold (the alert's `starts_at`).
    pub active_since: i64,
    /// While firing: when the condition became false (`i64::MIN` = it holds).
    pub false_since: i64,
    /// While active: the most extreme value seen, in the condition's direction (the highest
    /// for `>`, the lowest for `<`): what "peak" says when the alert ends.
    #[serde(default)]
    pub peak: Option<f64>,
}

impl Default for RuleState {
    fn default() -> Self {
        Self {
            phase: Phase::Inactive,
            active_since: 0,
            false_since: i64::MIN,
            peak: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    Pending,
    Firing,
    Resolved,
    Cancelled,
}

/// A lifecycle transition at event time `at`, of the alert that started at `starts_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub kind: TransitionKind,
    pub at: i64,
    pub starts_at: i64,
    /// The alert ended because its series' data went stale, not because its condition went false.
    pub stale: bool,
    /// The most extreme value while it was active (see [`RuleState::peak`]).
    pub peak: Option<f64>,
}

impl RuleState {
    /// Takes a point's value into the peak while the alert is active.
    pub fn observe(&mut self, rule: &Rule, value: f64) {
        if self.phase == Phase::Inactive || !value.is_finite() {
            return;
        }
        let lower_is_worse = matches!(rule.condition.op, super::Op::Lt | super::Op::Le);
        self.peak = Some(match self.peak {
            None => value,
            Some(p) if lower_is_worse => p.min(value),
            Some(p) => p.max(value),
        });
    }

    pub fn is_active(&self) -> bool {
        self.phase != Phase::Inactive
    }

    /// The next event time at which this state changes without a new point, if any.
    /// `last_ts` is the series' latest point; pending alerts of a silent series are cancelled
    /// once its data is stale.
    pub fn next_due(&self, rule: &Rule, last_ts: i64, staleness_ms: i64) -> Option<i64> {
        let stale_at = last_ts.saturating_add(staleness_ms);
        match self.phase {
            Phase::Inactive => None,
            Phase::Pending => Some((self.active_since + rule.for_ms).min(stale_at)),
            Phase::Firing => Some(self.resolve_at(rule).min(stale_at)),
        }
    }

    /// While firing: when the condition's falseness resolves it (`i64::MAX` while it holds).
    fn resolve_at(&self, rule: &Rule) -> i64 {
        if self.false_since == i64::MIN {
            i64::MAX
        } else {
            self.false_since.saturating_add(rule.resolve_after_ms)
        }
    }

    /// Applies the transitions due at or before `t` (the series has had no point since `last_ts`).
    pub fn advance_to(
        &mut self,
        rule: &Rule,
        t: i64,
        last_ts: i64,
        staleness_ms: i64,
    ) -> Option<Transition> {
        let due = self.next_due(rule, last_ts, staleness_ms)?;
        if due > t {
            return None;
        }
        let starts_at = self.active_since;
        let peak = self.peak;
        let stale_at = last_ts.saturating_add(staleness_ms);
        match self.phase {
            // Data that goes stale exactly when `for` elapses never held for all of `for`.
            Phase::Pending if stale_at <= self.active_since + rule.for_ms => {
                *self = RuleState::default();
                Some(Transition {
                    kind: TransitionKind::Cancelled,
                    at: due,
                    starts_at,
                    stale: true,
                    peak,
                })
            }
            Phase::Pending => {
                self.phase = Phase::Firing;
                self.false_since = i64::MIN;
                Some(Transition {
                    kind: TransitionKind::Firing,
                    at: due,
                    starts_at,
                    stale: false,
                    peak,
                })
            }
            Phase::Firing => {
                let stale = stale_at < self.resolve_at(rule);
                *self = RuleState::default();
                Some(Transition {
                    kind: TransitionKind::Resolved,
                    at: due,
                    starts_at,
                    stale,
                    peak,
                })
            }
            Phase::Inactive => None,
        }
    }

    /// Applies a new point at `ts` whose condition is `holds` (call [`advance_to`] first).
    pub fn on_point(&mut self, rule: &Rule, ts: i64, holds: bool) -> Option<Transition> {
        match (self.phase, holds) {
            (Phase::Inactive, true) => {
                self.active_since = ts;
                self.false_since = i64::MIN;
                self.peak = None;
                let peak = None;
                if rule.for_ms == 0 {
                    self.phase = Phase::Firing;
                    Some(Transition {
                        kind: TransitionKind::Firing,
                        at: ts,
                        starts_at: ts,
                        stale: false,
                        peak,
                    })
                } else {
                    self.phase = Phase::Pending;
                    Some(Transition {
                        kind: TransitionKind::Pending,
                        at: ts,
                        starts_at: ts,
                        stale: false,
                        peak,
                    })
                }
            }
            (Phase::Pending, false) => {
                let (starts_at, peak) = (self.active_since, self.peak);
                *self = RuleState::default();
                Some(Transition {
                    kind: TransitionKind::Cancelled,
                    at: ts,
                    starts_at,
                    stale: false,
                    peak,
                })
            }
            (Phase::Firing, true) => {
                self.false_since = i64::MIN;
                None
            }
            (Phase::Firing, false) => {
                if self.false_since == i64::MIN {
                    self.false_since = ts;
                }
                if ts - self.false_since >= rule.resolve_after_ms {
                    let (starts_at, peak) = (self.active_since, self.peak);
                    let at = self.false_since + rule.resolve_after_ms;
                    *self = RuleState::default();
                    Some(Transition {
                        kind: TransitionKind::Resolved,
                        at,
                        starts_at,
                        stale: false,
                        peak,
                    })
                } else {
                    None
                }
            }
            (Phase::Inactive, false) | (Phase::Pending, true) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    const MIN: i64 = 60_000;

    fn rule(extra: &str) -> Rule {
        let mut set = RuleSet::default();
        set.add_file(
            "t.yaml",
            &format!("rules:\n  - name: r\n    metric: m\n    condition: value > 10\n    priority: P2\n{extra}"),
        )
        .unwrap();
        set.rules.remove(0)
    }

    /// Feeds (ts, value) points, advancing before each; returns the transitions.
    fn run(rule: &Rule, points: &[(i64, f64)], until: i64) -> Vec<Transition> {
        let mut st = RuleState::default();
        let mut out = Vec::new();
        let mut last = i64::MIN / 2;
        for &(ts, v) in points {
            while let Some(t) = st.advance_to(rule, ts, last, 5 * MIN) {
                out.push(t);
            }
            out.extend(st.on_point(rule, ts, rule.condition.holds(v, 0.0, 0.0)));
            last = ts;
        }
        while let Some(t) = st.advance_to(rule, until, last, 5 * MIN) {
            out.push(t);
        }
        out
    }

    fn kinds(ts: &[Transition]) -> Vec<(TransitionKind, i64)> {
        ts.iter().map(|t| (t.kind, t.at)).collect()
    }

    fn series(from_min: i64, to_min: i64, value: f64) -> Vec<(i64, f64)> {
        (from_min * 6..to_min * 6)
            .map(|i| (i * 10_000, value))
            .collect()
    }

    #[test]
    fn fires_after_for_and_never_on_shorter_excursion() {
        let r = rule("    for: 5m\n");
        let mut pts = series(0, 10, 1.0);
        pts.extend(series(10, 14, 50.0)); // 4-minute excursion
        pts.extend(series(14, 20, 1.0));
        let t = kinds(&run(&r, &pts, 20 * MIN));
        assert_eq!(
            t,
            vec![
                (TransitionKind::Pending, 10 * MIN),
                (TransitionKind::Cancelled, 14 * MIN)
            ]
        );

        let mut pts = series(0, 10, 1.0);
        pts.extend(series(10, 17, 50.0));
        pts.extend(series(17, 20, 1.0));
        let t = kinds(&run(&r, &pts, 20 * MIN));
        assert_eq!(
            t,
            vec![
                (TransitionKind::Pending, 10 * MIN),
                (TransitionKind::Firing, 15 * MIN),
                (TransitionKind::Resolved, 17 * MIN)
            ]
        );
    }

    #[test]
    fn watermark_fires_when_points_stop_and_stale_pending_cancels() {
        let r = rule("    for: 2m\n");
        // One true point then silence: the value holds for 2m (< 5m staleness): fires at 2m,
        // and resolves as stale when the value is 5m old.
        let t = run(&r, &[(0, 50.0)], 10 * MIN);
        assert_eq!(
            kinds(&t),
            vec![
                (TransitionKind::Pending, 0),
                (TransitionKind::Firing, 2 * MIN),
                (TransitionKind::Resolved, 5 * MIN)
            ]
        );
        assert_eq!(
            t.iter().map(|t| t.stale).collect::<Vec<_>>(),
            [false, false, true]
        );
        let r = rule("    for: 10m\n");
        let t = run(&r, &[(0, 50.0)], 20 * MIN);
        assert_eq!(
            kinds(&t),
            vec![
                (TransitionKind::Pending, 0),
                (TransitionKind::Cancelled, 5 * MIN)
            ]
        );
        assert!(t[1].stale);
    }

    #[test]
    fn a_firing_alert_resolves_by_its_condition_before_its_data_is_stale() {
        let r = rule("    resolve_after: 2m\n");
        // Fires at 0, goes false at 1m, then silence: resolve_after (3m) comes before stale (6m).
        let t = run(&r, &[(0, 50.0), (MIN, 1.0)], 20 * MIN);
        assert_eq!(
            kinds(&t),
            vec![
                (TransitionKind::Firing, 0),
                (TransitionKind::Resolved, 3 * MIN)
            ]
        );
        assert!(!t[1].stale);
    }

    #[test]
    fn resolve_after_waits_and_reset_by_true() {
        let r = rule("    resolve_after: 1m\n");
        let pts = vec![
            (0, 50.0),
            (10_000, 1.0),
            (40_000, 50.0),
            (50_000, 1.0),
            (100_000, 1.0),
            (200_000, 1.0),
        ];
        let t = kinds(&run(&r, &pts, 300_000));
        assert_eq!(
            t,
            vec![
                (TransitionKind::Firing, 0),
                (TransitionKind::Resolved, 110_000)
            ]
        );
    }

    #[test]
    fn same_transitions_whether_driven_by_points_or_watermark() {
        let r = rule("    for: 1m\n    resolve_after: 30s\n");
        let pts: Vec<(i64, f64)> = (0..100)
            .map(|i| (i * 7_000, if (20..60).contains(&i) { 50.0 } else { 1.0 }))
            .collect();
        let by_points = run(&r, &pts, 700_000);
        // Same points, but advance by a watermark between every point too.
        let mut st = RuleState::default();
        let mut out = Vec::new();
        let mut last = i64::MIN / 2;
        for &(ts, v) in &pts {
            out.extend(st.advance_to(&r, ts - 3_000, last, 5 * MIN));
            out.extend(st.advance_to(&r, ts, last, 5 * MIN));
            out.extend(st.on_point(&r, ts, v > 10.0));
            last = ts;
        }
        out.extend(st.advance_to(&r, 700_000, last, 5 * MIN));
        assert_eq!(by_points, out);
    }
}

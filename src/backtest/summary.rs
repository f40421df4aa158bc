//! What one rule set did over the history: its alerts (one per alert id, from its events) and
//! the pages they sent, per day and rule, priority and receiver.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::alerting::alert::routing_labels;
use crate::alerting::config::Routing;
use crate::model::{AlertEvent, AlertStatus, EndReason, Priority, SeriesKey};

/// One alert from pending (or firing) to its end. A *page* is an alert that fired: what the
/// receivers would have been sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: String,
    pub fingerprint: String,
    pub rule: String,
    pub priority: Priority,
    /// The series, `name{label="value",...}`.
    pub series: String,
    #[serde(skip)]
    pub series_key: Arc<str>,
    pub labels: BTreeMap<String, String>,
    /// When the condition started to hold (ms since the epoch, event time).
    pub starts_at: i64,
    /// When it fired; `None`: it never did (cancelled while pending, or still pending).
    pub fired_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub end_reason: Option<EndReason>,
    /// The largest value seen in its events.
    pub peak: f64,
    /// The receivers its routes send it to.
    pub receivers: Vec<String>,
}

impl Alert {
    pub fn paged(&self) -> bool {
        self.fired_at.is_some()
    }

    /// The span it covers, open-ended while active.
    pub fn span(&self) -> (i64, i64) {
        (self.starts_at, self.ends_at.unwrap_or(i64::MAX))
    }
}

/// The alerts of an event sequence, in order of their first event.
pub fn alerts_of(events: &[(Arc<str>, AlertEvent)], routing: &Routing) -> Vec<Alert> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, Alert> = BTreeMap::new();
    for (series, e) in events {
        let a = by_id.entry(e.id.clone()).or_insert_with(|| {
            order.push(e.id.clone());
            Alert {
                id: e.id.clone(),
                fingerprint: e.fingerprint.clone(),
                rule: e.rule.clone(),
                priority: e.priority,
                series: SeriesKey(series.clone()).display(),
                series_key: series.clone(),
                labels: e.labels.clone(),
                starts_at: e.starts_at,
                fired_at: None,
                ends_at: None,
                end_reason: None,
                peak: e.value,
                receivers: routing.receivers_of(&routing_labels(e)),
            }
        });
        a.peak = a.peak.max(e.value);
        a.priority = e.priority;
        match e.status {
            AlertStatus::Pending => {}
            AlertStatus::Firing => a.fired_at = a.fired_at.or(Some(e.event_time)),
            AlertStatus::Resolved | AlertStatus::Cancelled => {
                a.ends_at = e.ends_at.or(Some(e.event_time));
                a.end_reason = e.end_reason;
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// Counts per UTC day (`YYYY-MM-DD`).
pub type PerDay = BTreeMap<String, u64>;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleCounts {
    pub pages: u64,
    /// Alerts that never fired (no page sent).
    pub pending_only: u64,
    pub pages_per_day: PerDay,
}

/// Pages and alerts of one rule set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub alerts: u64,
    pub pages: u64,
    pub pending_only: u64,
    pub pages_per_day: PerDay,
    pub per_rule: BTreeMap<String, RuleCounts>,
    pub per_priority: BTreeMap<String, PerDay>,
    pub pages_per_priority: BTreeMap<String, u64>,
    pub per_receiver: BTreeMap<String, PerDay>,
    /// Rules by pages sent, most first (ties by name), with their pages.
    pub noisiest: Vec<(String, u64)>,
}

pub fn summarize(alerts: &[Alert]) -> Summary {
    let mut s = Summary::default();
    for a in alerts {
        s.alerts += 1;
        let rule = s.per_rule.entry(a.rule.clone()).or_default();
        let Some(fired) = a.fired_at else {
            s.pending_only += 1;
            rule.pending_only += 1;
            continue;
        };
        let day = crate::tools::clock::day_of(fired);
        s.pages += 1;
        rule.pages += 1;
        *rule.pages_per_day.entry(day.clone()).or_default() += 1;
        *s.pages_per_day.entry(day.clone()).or_default() += 1;
        *s.pages_per_priority
            .entry(a.priority.to_string())
            .or_default() += 1;
        *s.per_priority
            .entry(a.priority.to_string())
            .or_default()
            .entry(day.clone())
            .or_default() += 1;
        for r in &a.receivers {
            *s.per_receiver
                .entry(r.clone())
                .or_default()
                .entry(day.clone())
                .or_default() += 1;
        }
    }
    let mut noisiest: Vec<(String, u64)> = s
        .per_rule
        .iter()
        .filter(|(_, c)| c.pages > 0)
        .map(|(r, c)| (r.clone(), c.pages))
        .collect();
    noisiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    noisiest.truncate(10);
    s.noisiest = noisiest;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(rule: &str, series: &str, status: AlertStatus, at: i64) -> AlertEvent {
        AlertEvent {
            id: format!("{rule}-{series}-start"),
            fingerprint: format!("{rule}-{series}"),
            rule: rule.into(),
            priority: Priority::P2,
            status,
            labels: BTreeMap::from([("metric".to_string(), series.to_string())]),
            annotations: BTreeMap::new(),
            value: at as f64,
            score: 0.0,
            starts_at: 0,
            ends_at: matches!(status, AlertStatus::Resolved | AlertStatus::Cancelled).then_some(at),
            end_reason: None,
            event_time: at,
        }
    }

    #[test]
    fn alerts_fold_their_events_and_pages_count_per_day() {
        let routing = Routing::parse("r.yaml", crate::config::builtin::ROUTING).unwrap();
        let key: Arc<str> = "cpu".into();
        let day = 86_400_000;
        let mut paged = event("cpu_high", "cpu", AlertStatus::Firing, day + 60_000);
        paged.id = "a".into();
        let mut resolved = event("cpu_high", "cpu", AlertStatus::Resolved, day + 120_000);
        resolved.id = "a".into();
        let mut cancelled = event("cpu_high", "cpu", AlertStatus::Cancelled, 2 * day);
        cancelled.id = "b".into();
        let events: Vec<_> = [paged, resolved, cancelled]
            .into_iter()
            .map(|e| (key.clone(), e))
            .collect();
        let alerts = alerts_of(&events, &routing);
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].fired_at, Some(day + 60_000));
        assert_eq!(alerts[0].ends_at, Some(day + 120_000));
        assert_eq!(alerts[0].peak, (day + 120_000) as f64);
        assert_eq!(alerts[0].receivers, ["email-oncall", "slack-alerts"]);
        assert!(!alerts[1].paged());
        let s = summarize(&alerts);
        assert_eq!((s.alerts, s.pages, s.pending_only), (2, 1, 1));
        assert_eq!(s.pages_per_day, PerDay::from([("1970-01-02".into(), 1)]));
        assert_eq!(s.per_receiver["slack-alerts"]["1970-01-02"], 1);
        assert_eq!(s.per_priority["P2"]["1970-01-02"], 1);
        assert_eq!(s.noisiest, [("cpu_high".to_string(), 1)]);
    }
}

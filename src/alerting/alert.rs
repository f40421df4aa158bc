//! An alert as the manager keeps it (one entry per alert id in the KV bucket
//! `PRISM_ALERT_STATE`): its latest status, and what people and the manager did about it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{AckInfo, AlertEvent, AlertStatus, EndReason, Priority};

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// A rule of ours, evaluated by the processor (which owns its status).
    Rule,
    /// Sent from outside (Prometheus, a script): resolved when not sent again before it ends.
    External,
}

/// The manager's record of one alert (an episode: a rule on a series from `starts_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManagedAlert {
    pub id: String,
    /// Alerts of one rule on one series share it across episodes (flapping is counted on it).
    pub fingerprint: String,
    pub rule: String,
    pub priority: Priority,
    pub status: AlertStatus,
    pub source: AlertSource,
    /// The event's labels plus `alertname` and `priority`: what routes, silences and
    /// inhibitions match.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    /// Event time, ms since the epoch.
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    #[serde(default)]
    pub end_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
    /// Manager (wall) time it was first received.
    pub received_at: i64,
    /// Manager time it started firing, if it did.
    #[serde(default)]
    pub fired_at: Option<i64>,
    /// Manager time of its last change.
    pub updated_at: i64,
    /// External alerts: resolved at this manager time unless sent again.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub ack: Option<AckInfo>,
    #[serde(default)]
    pub silenced_by: Vec<String>,
    /// `<inhibition rule>:<fingerprint of the source alert>`.
    #[serde(default)]
    pub inhibited_by: Vec<String>,
    #[serde(default)]
    pub flapping: bool,
    /// What each receiver was told about it.
    #[serde(default)]
    pub notifications: BTreeMap<String, NotifyRecord>,
    /// Its transitions, acknowledgements and notifications, newest last (bounded).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// Notifications of one alert to one receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotifyRecord {
    /// Notifications that listed it.
    pub sent: u32,
    pub last_notification: String,
    pub last_sent_at: i64,
    pub last_status: Option<AlertStatus>,
    /// From the notifier: the last delivery's outcome (`delivered`, `dead_lettered`), when and
    /// after how many attempts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    #[serde(default)]
    pub outcome_at: Option<i64>,
    #[serde(default)]
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub at: i64,
    pub what: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

/// Most history entries kept per alert.
pub const MAX_HISTORY: usize = 64;

/// An event's labels plus `alertname` and `priority`: what routes, silences and inhibitions
/// match.
pub fn routing_labels(e: &AlertEvent) -> BTreeMap<String, String> {
    let mut labels = e.labels.clone();
    labels.insert("alertname".into(), e.rule.clone());
    labels.insert("priority".into(), e.priority.to_string());
    labels
}

impl ManagedAlert {
    /// A new record from a processor event received at `now`.
    pub fn from_event(e: &AlertEvent, now: i64) -> Self {
        let labels = routing_labels(e);
        ManagedAlert {
            id: e.id.clone(),
            fingerprint: e.fingerprint.clone(),
            rule: e.rule.clone(),
            priority: e.priority,
            status: e.status,
            source: AlertSource::Rule,
            labels,
            annotations: e.annotations.clone(),
            value: e.value,
            starts_at: e.starts_at,
            ends_at: e.ends_at,
            end_reason: e.end_reason,
            generator_url: String::new(),
            received_at: now,
            fired_at: None,
            updated_at: now,
            expires_at: None,
            ack: None,
            silenced_by: Vec::new(),
            inhibited_by: Vec::new(),
            flapping: false,
            notifications: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    pub fn log(&mut self, at: i64, what: impl Into<String>, by: &str) {
        self.history.push(HistoryEntry {
            at,
            what: what.into(),
            by: by.to_string(),
        });
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self.status, AlertStatus::Pending | AlertStatus::Firing)
    }

    pub fn is_muted(&self) -> bool {
        !self.silenced_by.is_empty() || !self.inhibited_by.is_empty()
    }

    /// Acknowledged now (an ack with an expiry in the past no longer counts).
    pub fn is_acked(&self, now: i64) -> bool {
        self.ack
            .as_ref()
            .is_some_and(|a| a.expires_at.is_none_or(|t| t > now))
    }
}

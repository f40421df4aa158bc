//! Notifications: what the alert manager publishes on `prism.notify.send.<receiver>` for the
//! notifier workers, and what the workers report back on `prism.notify.outcome.<receiver>`.
//! JSON (`subjects/schemas/notification.schema.json`, `delivery-outcome.schema.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AlertStatus, Priority};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A group's alerts (Alertmanager's notification).
    Group,
    /// Too many alerts started at once: one summary instead of a notification per group.
    Storm,
    /// The storm is over: a closing summary.
    StormOver,
    /// `prismwatch notify test`.
    Test,
}

/// One message for one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Deterministic: `<receiver>.<group hash>.<sequence>` (also its `Nats-Msg-Id`), so a
    /// manager that restarts or fails over cannot send a flush twice. Idempotency key for the
    /// channels that take one.
    pub id: String,
    pub kind: NotificationKind,
    pub receiver: String,
    /// `firing` while any alert listed fires, else `resolved`.
    pub status: AlertStatus,
    /// The highest priority among the alerts listed.
    pub priority: Priority,
    /// The route and the values of its `group_by` labels.
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// Labels and annotations every listed alert shares.
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub alerts: Vec<NotifiedAlert>,
    /// Alerts left out of `alerts` (the list is capped at `alerting.max_alerts_per_notification`).
    pub truncated: usize,
    /// Storm summaries only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormSummary>,
    /// Wall time of the flush, ms since the epoch.
    pub created_at: i64,
    /// The group's flush number (1 for its first notification).
    pub sequence: u64,
}

/// An alert as a notification lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    /// The alert (episode) id.
    pub id: String,
    pub fingerprint: String,
    pub rule: String,
    pub priority: Priority,
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<AckInfo>,
    /// Changes state too often: notified once as flapping, not on each change.
    #[serde(default)]
    pub flapping: bool,
    /// Where it came from: a rule of ours, or an external source (Prometheus, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

/// Who acknowledged an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AckInfo {
    pub by: String,
    pub at: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// When the acknowledgement lapses (ms since the epoch); none = until the alert ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// What a storm notification summarises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormSummary {
    /// Alerts that started in the window (for a storm) or during the storm (for storm over).
    pub alerts: usize,
    pub window_secs: u64,
    pub started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    pub by_rule: BTreeMap<String, usize>,
    pub by_priority: BTreeMap<String, usize>,
    pub by_exchange: BTreeMap<String, usize>,
}

/// A notifier worker's report of one delivery attempt sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryOutcome {
    pub notification_id: String,
    pub receiver: String,
    /// `delivered` or `dead_lettered`.
    pub outcome: String,
    pub attempts: u32,
    /// Wall time of the final attempt, ms since the epoch.
    pub at: i64,
    /// The alerts the notification listed.
    pub alert_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

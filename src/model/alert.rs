//! Alert events: what the processor publishes on `prism.alerts.<priority>.<status>.<rule>`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Alert priority, P1 (page now) to P4 (informational).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
// Read in any case (`p1` or `P1`), as the subjects and the CLI write it; written `P1`.
#[serde(try_from = "String")]
pub enum Priority {
    P1,
    P2,
    P3,
    P4,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::P1, Priority::P2, Priority::P3, Priority::P4];

    /// Lower-case subject token (`p1`).
    pub fn token(self) -> &'static str {
        match self {
            Priority::P1 => "p1",
            Priority::P2 => "p2",
            Priority::P3 => "p3",
            Priority::P4 => "p4",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl TryFrom<String> for Priority {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "P1" => Ok(Priority::P1),
            "P2" => Ok(Priority::P2),
            "P3" => Ok(Priority::P3),
            "P4" => Ok(Priority::P4),
            _ => Err(format!("unknown priority {s:?}, expected P1, P2, P3 or P4")),
        }
    }
}

/// Lifecycle status carried by an alert event.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds but not yet for the rule's `for` duration.
    Pending,
    /// The condition held for `for`: operators are notified.
    Firing,
    /// A firing alert whose condition has been false for the rule's `resolve_after`.
    Resolved,
    /// A pending alert whose condition went false (or whose data went stale) before `for` elapsed.
    Cancelled,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 4] = [
        AlertStatus::Pending,
        AlertStatus::Firing,
        AlertStatus::Resolved,
        AlertStatus::Cancelled,
    ];

    pub fn token(self) -> &'static str {
        match self {
            AlertStatus::Pending => "pending",
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for AlertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlertStatus::ALL
            .into_iter()
            .find(|st| st.token() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown status {s:?}, expected pending, firing, resolved or cancelled")
            })
    }
}

/// Why an alert ended (resolved or cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// Its condition went false (for `resolve_after`, when firing).
    Condition,
    /// Its series sent no point for `pipeline.staleness_secs`: no data is not a recovery, but
    /// the alert can no longer be evaluated (as in Prometheus).
    Stale,
    /// Its rule was removed by a reload (set by the alert manager; the processor no longer
    /// evaluates it).
    Removed,
}

/// One lifecycle transition of one alert. Serialised as JSON (`subjects/schemas/alert-event.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Alert id: `<fingerprint>-<starts_at>`; the same for every transition of one alert.
    pub id: String,
    /// Hash of the rule name and the series identity (hex, 16 chars).
    pub fingerprint: String,
    pub rule: String,
    pub priority: Priority,
    pub status: AlertStatus,
    /// Series labels, plus `metric` (the series name) and the rule's own labels.
    pub labels: BTreeMap<String, String>,
    /// Templated annotations (summary, description, ...).
    pub annotations: BTreeMap<String, String>,
    /// The metric value at the transition.
    pub value: f64,
    /// The anomaly score (0..1) at the transition.
    pub score: f64,
    /// When the condition started to hold, ms since the epoch (event time).
    pub starts_at: i64,
    /// When the alert resolved or was cancelled, ms since the epoch; null while active.
    pub ends_at: Option<i64>,
    /// Why it ended: `condition` or `stale`; null while active.
    #[serde(default)]
    pub end_reason: Option<EndReason>,
    /// The event time of this transition, ms since the epoch.
    pub event_time: i64,
}

impl AlertEvent {
    /// The `Nats-Msg-Id` of this transition: deterministic, so a redelivered input that causes
    /// the same transition is dropped by JetStream's duplicate window.
    pub fn msg_id(&self) -> String {
        format!("{}-{}", self.id, self.status.token())
    }

    /// Deterministic order of events produced by one batch.
    pub fn sort_key(&self) -> (i64, &str, &str, AlertStatus) {
        (self.event_time, &self.rule, &self.fingerprint, self.status)
    }
}

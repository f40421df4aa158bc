//! Every NATS subject, stream, consumer and bucket name the system uses, in one place.
//! `subjects/catalog.yaml` is the machine-readable contract; a test checks the two agree.

use crate::model::{AlertStatus, Priority};

/// Metric points: `prism.metrics.<domain>.<source>.<metric>`.
pub const METRICS_PREFIX: &str = "prism.metrics";
/// Every metric subject.
pub const METRICS_ALL: &str = "prism.metrics.>";
/// Alert events: `prism.alerts.<priority>.<status>.<rule>`.
pub const ALERTS_PREFIX: &str = "prism.alerts";
pub const ALERTS_ALL: &str = "prism.alerts.>";
/// Rejected metric messages: `prism.deadletter.metrics.<reason>`.
pub const DEADLETTER_METRICS_PREFIX: &str = "prism.deadletter.metrics";
pub const DEADLETTER_ALL: &str = "prism.deadletter.>";

pub const METRICS_STREAM: &str = "PRISM_METRICS";
pub const ALERTS_STREAM: &str = "PRISM_ALERTS";
pub const DEADLETTER_STREAM: &str = "PRISM_DEADLETTER";
/// Durable pull consumer of the processor on `PRISM_METRICS` (default name; configurable).
pub const PROCESSOR_CONSUMER: &str = "prismwatch-processor";
/// Object store bucket with pipeline checkpoints (operator state + stream position).
pub const CHECKPOINT_BUCKET: &str = "PRISM_CHECKPOINTS";

/// Header carrying the payload encoding of a metric message.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";
/// Header on dead-lettered messages: why it was rejected.
pub const HEADER_REJECT_REASON: &str = "Prism-Reject-Reason";
/// Header on dead-lettered messages: human detail of the first problem.
pub const HEADER_REJECT_DETAIL: &str = "Prism-Reject-Detail";
/// Header on dead-lettered messages: the subject it was published on.
pub const HEADER_ORIGINAL_SUBJECT: &str = "Prism-Original-Subject";
/// Header on dead-lettered messages: its sequence in `PRISM_METRICS`.
pub const HEADER_ORIGINAL_SEQUENCE: &str = "Prism-Original-Sequence";

/// `prism.metrics.<domain>.<source>.<metric>`, with each part made a valid subject token.
pub fn metric_subject(domain: &str, source: &str, metric: &str) -> String {
    format!(
        "{METRICS_PREFIX}.{}.{}.{}",
        token(domain),
        token(source),
        token(metric)
    )
}

/// `prism.alerts.<priority>.<status>.<rule>`.
pub fn alert_subject(priority: Priority, status: AlertStatus, rule: &str) -> String {
    format!(
        "{ALERTS_PREFIX}.{}.{}.{}",
        priority.token(),
        status.token(),
        token(rule)
    )
}

/// A subscription filter on alert subjects; `None` parts match anything.
pub fn alert_filter(priority: Option<&str>, status: Option<&str>, rule: Option<&str>) -> String {
    format!(
        "{ALERTS_PREFIX}.{}.{}.{}",
        priority
            .map(|p| p.to_ascii_lowercase())
            .as_deref()
            .unwrap_or("*"),
        status.unwrap_or("*"),
        rule.unwrap_or("*")
    )
}

pub fn deadletter_subject(reason: &str) -> String {
    format!("{DEADLETTER_METRICS_PREFIX}.{}", token(reason))
}

/// Replaces characters that are not allowed (or not wise) in a subject token.
pub fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".to_string()
    } else {
        t
    }
}

/// True when `s` can be used as one subject token unchanged.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && token(s) == s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_tokens() {
        assert_eq!(
            metric_subject("exchange", "binance", "connection.status"),
            "prism.metrics.exchange.binance.connection_status"
        );
        assert_eq!(
            alert_subject(Priority::P1, AlertStatus::Firing, "disk_full"),
            "prism.alerts.p1.firing.disk_full"
        );
        assert_eq!(alert_filter(Some("P2"), None, None), "prism.alerts.p2.*.*");
        assert!(is_token("api-error_rate"));
        assert!(!is_token("a.b"));
        assert!(!is_token(""));
    }
}

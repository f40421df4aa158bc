//! Every NATS subject, stream, consumer and bucket name the system uses, in one place.
//! `subjects/catalog.yaml` is the machine-readable contract; a test checks the two agree.

use crate::model::{AlertStatus, Priority};

/// Metric points: `prism.metrics.<domain>.<source>.<metric>`.
pub const METRICS_PREFIX: &str = "prism.metrics";
/// Every metric subject publishers use (exactly five tokens).
pub const METRICS_ALL: &str = "prism.metrics.*.*.*";
/// Stored form of the metrics: `PRISM_METRICS` rewrites `prism.metrics.<d>.<s>.<m>` to
/// `prism.part.<partition>.<d>.<s>.<m>`, the partition a hash of `<d>.<s>` (a stream subject
/// transform), so every source lives in exactly one partition.
pub const PARTITION_PREFIX: &str = "prism.part";
/// Tick messages: a partition's owner stores one when the partition is quiet, so stream time
/// (and with it every quiet source's clock) moves live and in replay alike.
pub const TICKS_ALL: &str = "prism.part.*.tick";
/// Alert events: `prism.alerts.<priority>.<status>.<rule>`.
pub const ALERTS_PREFIX: &str = "prism.alerts";
pub const ALERTS_ALL: &str = "prism.alerts.>";
/// Rejected metric messages: `prism.deadletter.metrics.<reason>`.
pub const DEADLETTER_METRICS_PREFIX: &str = "prism.deadletter.metrics";
pub const DEADLETTER_ALL: &str = "prism.deadletter.>";

pub const METRICS_STREAM: &str = "PRISM_METRICS";
pub const ALERTS_STREAM: &str = "PRISM_ALERTS";
pub const DEADLETTER_STREAM: &str = "PRISM_DEADLETTER";
/// Processor group: durable pull consumers `<group>-<partition>` on `PRISM_METRICS`, checkpoint
/// objects and leases are named after it (default name; configurable).
pub const PROCESSOR_CONSUMER: &str = "prismwatch-processor";
/// Object store bucket with pipeline checkpoints (operator state + stream position).
pub const CHECKPOINT_BUCKET: &str = "PRISM_CHECKPOINTS";
/// KV bucket of processor membership and partition leases (entries expire after the lease TTL).
pub const LEASE_BUCKET: &str = "PRISM_LEASES";
/// KV bucket recording which partition first saw each series (conflict detection).
pub const SERIES_BUCKET: &str = "PRISM_SERIES";
/// Series lookups (core NATS request/reply): the payload is a canonical series key; the
/// processor partition holding the series answers with what it knows of it (JSON).
pub const SERIES_QUERY: &str = "prism.query.series";
/// KV bucket of API keys made through the API (key: its name; value: role and SHA-256).
pub const API_KEYS_BUCKET: &str = "PRISM_API_KEYS";
/// KV bucket of rule evaluations per processor (key: member id; JSON rule -> points).
pub const RULE_STATS_BUCKET: &str = "PRISM_RULE_STATS";
/// KV bucket of the capacity report (key [`CAPACITY_KEY`]; JSON), refreshed by the capacity
/// component.
pub const CAPACITY_BUCKET: &str = "PRISM_CAPACITY";
pub const CAPACITY_KEY: &str = "report";

/// Commands to the alert manager: `prism.cmd.<kind>` (ack, unack, resolve, silence.create,
/// silence.expire, alert.external, rules.reload), and their results: `prism.audit.<kind>`.
/// Both are kept in `PRISM_COMMANDS`: the audit log.
pub const COMMANDS_STREAM: &str = "PRISM_COMMANDS";
pub const COMMANDS_ALL: &str = "prism.cmd.>";
pub const AUDIT_ALL: &str = "prism.audit.>";
/// Notifications for the notifier workers: `prism.notify.send.<receiver>`; their delivery
/// outcomes: `prism.notify.outcome.<receiver>` (both in `PRISM_NOTIFY`).
pub const NOTIFY_STREAM: &str = "PRISM_NOTIFY";
pub const NOTIFY_SEND_ALL: &str = "prism.notify.send.*";
pub const NOTIFY_OUTCOME_ALL: &str = "prism.notify.outcome.*";
/// Notifications that could not be delivered: `prism.notify.dead.<receiver>`.
pub const NOTIFY_DEAD_STREAM: &str = "PRISM_NOTIFY_DEAD";
pub const NOTIFY_DEAD_ALL: &str = "prism.notify.dead.*";
/// The durable consumer every notifier worker shares (default name; configurable).
pub const NOTIFY_CONSUMER: &str = "prismwatch-notify";
/// KV bucket of the notifiers' rate limits: recent send times per channel.
pub const NOTIFY_RATE_BUCKET: &str = "PRISM_NOTIFY_RATE";
/// Tells every process to reload its rules and routes (core NATS).
pub const RELOAD_SUBJECT: &str = "prism.ctl.reload";
/// The alert manager's KV buckets: alert state (key = alert id), silences (key = silence id),
/// notification log (key = group id) and its own records (flap/storm state, stream cursors).
pub const ALERT_STATE_BUCKET: &str = "PRISM_ALERT_STATE";
pub const SILENCE_BUCKET: &str = "PRISM_SILENCES";
pub const NOTIFY_LOG_BUCKET: &str = "PRISM_NOTIFY_LOG";
pub const MANAGER_BUCKET: &str = "PRISM_MANAGER";

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
/// Header on dead-lettered messages: the stream the original is in.
pub const HEADER_ORIGINAL_STREAM: &str = "Prism-Original-Stream";
/// Header on dead letters that carry a reference instead of the payload (it would not fit the
/// server's `max_payload` with the headers): the original payload's size in bytes.
pub const HEADER_PAYLOAD_OMITTED: &str = "Prism-Payload-Omitted";
/// Header on dead-lettered messages: how many of its points were rejected for this reason.
pub const HEADER_REJECTED_POINTS: &str = "Prism-Rejected-Points";
/// Header on alert events: `<partition>:<sequence>` of the metric message that caused it.
pub const HEADER_SOURCE_MESSAGE: &str = "Prism-Source-Message";

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

/// The subject transform of `PRISM_METRICS` into `partitions` partitions: (source, destination).
pub fn partition_transform(partitions: u32) -> (String, String) {
    (
        METRICS_ALL.to_string(),
        format!(
            "{PARTITION_PREFIX}.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}"
        ),
    )
}

/// The partition count of a transform made by [`partition_transform`], if it is one.
pub fn partitions_of_transform(destination: &str) -> Option<u32> {
    let rest = destination.strip_prefix(&format!("{PARTITION_PREFIX}.{{{{partition("))?;
    rest.split(',').next()?.trim().parse().ok()
}

/// Every stored subject of one partition (metrics and ticks).
pub fn partition_filter(partition: u32) -> String {
    format!("{PARTITION_PREFIX}.{partition}.>")
}

/// The tick subject of one partition.
pub fn tick_subject(partition: u32) -> String {
    format!("{PARTITION_PREFIX}.{partition}.tick")
}

/// What a stored metric subject says: its partition (when stored partitioned), whether it is a
/// tick, and its source (`<domain>.<source>`, borrowed from the subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSubject<'a> {
    pub partition: Option<u32>,
    pub tick: bool,
    pub source: &'a str,
}

/// Parses `prism.part.<p>.<d>.<s>.<m>`, `prism.part.<p>.tick` or `prism.metrics.<d>.<s>.<m>`.
/// Runs on every message: byte scans, no allocation.
pub fn parse_stored(subject: &str) -> Option<StoredSubject<'_>> {
    if let Some(rest) = subject.strip_prefix("prism.part.") {
        let dot = memchr::memchr(b'.', rest.as_bytes())?;
        let (p, rest) = (&rest[..dot], &rest[dot + 1..]);
        let partition = p.parse().ok();
        if rest == "tick" {
            return Some(StoredSubject {
                partition,
                tick: true,
                source: "",
            });
        }
        return Some(StoredSubject {
            partition,
            tick: false,
            source: source_tokens(rest)?,
        });
    }
    let rest = subject.strip_prefix("prism.metrics.")?;
    Some(StoredSubject {
        partition: None,
        tick: false,
        source: source_tokens(rest)?,
    })
}

/// The partition of a stored subject `prism.part.<p>.…` (`None` for others): the part of
/// [`parse_stored`] that routes a message to its partition's pipeline.
pub fn partition_of(subject: &str) -> Option<u32> {
    let rest = subject.strip_prefix("prism.part.")?;
    let dot = memchr::memchr(b'.', rest.as_bytes())?;
    rest[..dot].parse().ok()
}

/// The subject a stored message was published on: `prism.metrics.<d>.<s>.<m>` for
/// `prism.part.<p>.<d>.<s>.<m>` (anything else unchanged).
pub fn published_subject(stored: &str) -> String {
    match stored
        .strip_prefix("prism.part.")
        .and_then(|rest| rest.split_once('.'))
    {
        Some((_, rest)) if rest != "tick" => format!("{METRICS_PREFIX}.{rest}"),
        _ => stored.to_string(),
    }
}

/// Whether `subject` matches the NATS subject filter `filter` (`*` one token, `>` the rest).
pub fn filter_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// `<d>.<s>` of `<d>.<s>.<m>`.
fn source_tokens(rest: &str) -> Option<&str> {
    let b = rest.as_bytes();
    let first = memchr::memchr(b'.', b)?;
    let second = first + 1 + memchr::memchr(b'.', &b[first + 1..])?;
    Some(&rest[..second])
}

/// `prism.cmd.<kind>` (kinds may hold a dot: `silence.create`).
pub fn command_subject(kind: &str) -> String {
    format!("prism.cmd.{kind}")
}

/// `prism.audit.<kind>`.
pub fn audit_subject(kind: &str) -> String {
    format!("prism.audit.{kind}")
}

/// `prism.notify.send.<receiver>`.
pub fn notify_subject(receiver: &str) -> String {
    format!("prism.notify.send.{}", token(receiver))
}

/// `prism.notify.outcome.<receiver>`.
pub fn outcome_subject(receiver: &str) -> String {
    format!("prism.notify.outcome.{}", token(receiver))
}

/// `prism.notify.dead.<receiver>`.
pub fn notify_dead_subject(receiver: &str) -> String {
    format!("prism.notify.dead.{}", token(receiver))
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
    fn the_partition_of_a_stored_subject() {
        for s in [
            "prism.part.3.exchange.binance.rate",
            "prism.part.3.tick",
            "prism.metrics.exchange.binance.rate",
            "prism.part.x.tick",
        ] {
            assert_eq!(
                partition_of(s),
                parse_stored(s).and_then(|p| p.partition),
                "{s}"
            );
        }
        assert_eq!(partition_of("prism.part.3.tick"), Some(3));
    }

    #[test]
    fn filters_match_like_nats() {
        let s = "prism.metrics.exchange.binance.rate";
        for (f, yes) in [
            ("prism.metrics.>", true),
            ("prism.metrics.exchange.*.rate", true),
            ("prism.metrics.exchange.binance.rate", true),
            ("prism.metrics.exchange.okx.>", false),
            ("prism.metrics.exchange.*", false),
            ("prism.metrics.exchange.binance.rate.x", false),
            ("prism.metrics.exchange.binance.rate.>", false),
        ] {
            assert_eq!(filter_matches(f, s), yes, "{f}");
        }
    }

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
        let (src, dest) = partition_transform(4);
        assert_eq!(src, "prism.metrics.*.*.*");
        assert_eq!(
            dest,
            "prism.part.{{partition(4,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
        );
        assert_eq!(partitions_of_transform(&dest), Some(4));
        assert_eq!(partitions_of_transform("other.{{wildcard(1)}}"), None);
        assert_eq!(
            parse_stored("prism.part.3.exchange.binance.rate"),
            Some(StoredSubject {
                partition: Some(3),
                tick: false,
                source: "exchange.binance"
            })
        );
        assert_eq!(
            parse_stored(&tick_subject(2)),
            Some(StoredSubject {
                partition: Some(2),
                tick: true,
                source: ""
            })
        );
        assert_eq!(
            parse_stored("prism.metrics.service.api.cpu").map(|s| s.source),
            Some("service.api")
        );
        assert_eq!(parse_stored("prism.metrics.bad"), None);
        assert_eq!(partition_filter(1), "prism.part.1.>");
        assert_eq!(
            published_subject("prism.part.3.exchange.binance.rate"),
            "prism.metrics.exchange.binance.rate"
        );
        assert_eq!(published_subject("prism.part.3.tick"), "prism.part.3.tick");
        assert!(!is_token("a.b"));
        assert!(!is_token(""));
    }
}

use serde::{Deserialize, Serialize};

use crate::subjects;

/// NATS connection settings. The token, if any, comes from `PRISMWATCH_NATS_TOKEN` only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Client name shown in the server's connection list.
    pub client_name: String,
    /// Connection timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Messages a core subscription buffers before the client drops them (see PITFALLS.md).
    pub subscription_capacity: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            client_name: "prismwatch".into(),
            connect_timeout_ms: 3000,
            subscription_capacity: 1 << 20,
        }
    }
}

impl NatsConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(bad) = self.url.split(',').map(str::trim).find(|u| !is_nats_url(u)) {
            out.push((
                "url".into(),
                format!("{bad:?} is not a NATS URL like nats://host:4222 (schemes nats, tls, ws, wss; several separated by commas)"),
            ));
        }
        if self.connect_timeout_ms == 0 {
            out.push(("connect_timeout_ms".into(), "must be > 0".into()));
        }
        out
    }
}

/// `nats://host:port`, `tls://...`, `ws://...`, `wss://...` (user info allowed), or `host:port`.
fn is_nats_url(u: &str) -> bool {
    let rest = match u.split_once("://") {
        Some(("nats" | "tls" | "ws" | "wss", rest)) => rest,
        Some(_) => return false,
        None => u,
    };
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split('/').next().unwrap_or("");
    match host_port.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => !host_port.is_empty() && u.contains("://"),
    }
}

/// One JetStream stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stream name.
    pub name: String,
    /// Subjects it stores.
    pub subjects: Vec<String>,
    /// Messages older than this are removed, in seconds (0 = keep forever).
    pub max_age_secs: u64,
    /// Size cap in bytes (-1 = none).
    #[serde(default = "unlimited")]
    pub max_bytes: i64,
    /// Replicas (1 on a single server, 3 in a cluster).
    #[serde(default = "one")]
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is dropped, in seconds.
    pub duplicate_window_secs: u64,
}

fn unlimited() -> i64 {
    -1
}
fn one() -> usize {
    1
}

/// The streams PrismWatch declares on start (created, or updated to these settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// `PRISM_METRICS` is split into this many partitions by a hash of each subject's
    /// `<domain>.<source>`; each has one owner process at a time. Fixed once the stream exists
    /// (the processor refuses a different number: changing it means rebuilding the stream).
    pub partitions: u32,
    /// Metric points, kept for replay and backtests.
    pub metrics: StreamConfig,
    /// Alert events (history). Its duplicate window must cover a restart from a checkpoint.
    pub alerts: StreamConfig,
    /// Rejected metric messages.
    pub deadletter: StreamConfig,
    /// Commands to the alert manager and their results: the audit log.
    pub commands: StreamConfig,
    /// Notifications for the notifier workers, and their delivery outcomes. Its duplicate
    /// window must cover a manager's restart or failover (a flush is re-sent with its id).
    pub notify: StreamConfig,
    /// Notifications that could not be delivered.
    pub notify_dead: StreamConfig,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            partitions: 4,
            metrics: StreamConfig {
                name: subjects::METRICS_STREAM.into(),
                subjects: vec![subjects::METRICS_ALL.into(), subjects::TICKS_ALL.into()],
                max_age_secs: 7 * DAY,
                max_bytes: -1,
                replicas: 1,
                duplicate_window_secs: 120,
            },
            alerts: StreamConfig {
                name: subjects::ALERTS_STREAM.into(),
                subjects: vec![subjects::ALERTS_ALL.into()],
                max_age_secs: 30 * DAY,
                max_bytes: -1,
                replicas: 1,
                duplicate_window_secs: DAY,
            },
            deadletter: StreamConfig {
                name: subjects::DEADLETTER_STREAM.into(),
                subjects: vec![subjects::DEADLETTER_ALL.into()],
                max_age_secs: 14 * DAY,
                max_bytes: -1,
                replicas: 1,
                duplicate_window_secs: 120,
            },
            commands: StreamConfig {
                name: subjects::COMMANDS_STREAM.into(),
                subjects: vec![subjects::COMMANDS_ALL.into(), subjects::AUDIT_ALL.into()],
                max_age_secs: 365 * DAY,
                max_bytes: -1,
                replicas: 1,
                duplicate_window_secs: DAY,
            },
            notify: StreamConfig {
                name: subjects::NOTIFY_STREAM.into(),
                subjects: vec![
                    subjects::NOTIFY_SEND_ALL.into(),
                    subjects::NOTIFY_OUTCOME_ALL.into(),
                ],
                max_age_secs: 7 * DAY,
                max_bytes: -1,
                replicas: 1,
                duplicate_window_secs: DAY,
            },
            notify_dead: StreamConfig {
                name: subjects::NOTIFY_DEAD_STREAM.into(),
                subjects: vec![subjects::NOTIFY_DEAD_ALL.into()],
                max_age_secs: 30 * DAY,
                max_bytes: -1,
                replicas: 1,
                duplicate_window_secs: DAY,
            },
        }
    }
}

impl StreamsConfig {
    /// Every stream, for declaring them.
    pub fn all(&self) -> [&StreamConfig; 6] {
        [
            &self.metrics,
            &self.alerts,
            &self.deadletter,
            &self.commands,
            &self.notify,
            &self.notify_dead,
        ]
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=1024).contains(&self.partitions) {
            out.push(("partitions".into(), "must be 1 to 1024".into()));
        }
        let partitioned = [
            subjects::METRICS_ALL.to_string(),
            subjects::TICKS_ALL.to_string(),
        ];
        if self.metrics.subjects != partitioned {
            out.push((
                "metrics.subjects".into(),
                format!("must be {partitioned:?}: partitioning and ticks rely on them"),
            ));
        }
        for (key, s) in [
            ("metrics", &self.metrics),
            ("alerts", &self.alerts),
            ("deadletter", &self.deadletter),
            ("commands", &self.commands),
            ("notify", &self.notify),
            ("notify_dead", &self.notify_dead),
        ] {
            if s.name.is_empty() || s.name.contains(['.', ' ', '*', '>']) {
                out.push((
                    format!("{key}.name"),
                    format!("{:?} is not a valid stream name", s.name),
                ));
            }
            if s.subjects.is_empty() {
                out.push((
                    format!("{key}.subjects"),
                    "needs at least one subject".into(),
                ));
            }
            if !(1..=5).contains(&s.replicas) {
                out.push((format!("{key}.replicas"), "must be 1 to 5".into()));
            }
            if s.duplicate_window_secs == 0 {
                out.push((format!("{key}.duplicate_window_secs"), "must be > 0".into()));
            }
        }
        out
    }
}

//! What a process is doing, for health checks and the status API: one value in a watch
//! channel, updated by the components, read by `/healthz`, `/readyz` and `/api/v1/status`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::tools::clock;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// This process's member id in its processor group.
    pub member: String,
    pub started_at_ms: i64,
    pub nats: NatsStatus,
    pub processor: ProcessorStatus,
    pub manager: ManagerStatus,
    pub notify: NotifyStatus,
    pub shutting_down: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NotifyStatus {
    /// A notifier worker runs in this process and consumes.
    pub running: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NatsStatus {
    pub url: String,
    pub connected: bool,
    pub server_version: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessorStatus {
    /// The processor runs in this process.
    pub enabled: bool,
    pub group: String,
    /// Heartbeating in its group (a standby owns no partition and is still ready).
    pub joined: bool,
    pub partitions_total: u32,
    /// The partitions this process owns.
    pub partitions: BTreeMap<u32, PartitionStatus>,
    /// The weighted mean of the scores of the SLO groups of the partitions this process owns
    /// (see the README's SLO section); `None` without an SLO group.
    pub experience_score: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ManagerStatus {
    /// The alert manager runs in this process.
    pub enabled: bool,
    /// This process's manager is the active one of its group (the others stand by).
    pub active: bool,
    /// Alerts held (every state), as of the last count.
    pub alerts: usize,
    pub silences_active: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub phase: PartitionPhase,
    pub owned_since_ms: i64,
    /// Every message up to here is processed, its effects stored and acked.
    pub last_seq: u64,
    /// Messages of the partition not yet delivered to its consumer.
    pub lag: u64,
    pub series: usize,
    pub sources: usize,
    pub quarantined: usize,
    /// The latest status of the SLO groups counted in this partition.
    pub slos: Vec<crate::slo::SloStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionPhase {
    /// Restoring the checkpoint and creating the consumer.
    Recovering,
    Running,
}

/// The status, shared by the components of a process.
#[derive(Clone)]
pub struct StatusHandle(Arc<watch::Sender<Status>>);

impl StatusHandle {
    pub fn new(member: &str, nats_url: &str) -> Self {
        let (tx, _) = watch::channel(Status {
            version: env!("CARGO_PKG_VERSION"),
            member: member.to_string(),
            started_at_ms: clock::now_ms(),
            nats: NatsStatus {
                url: nats_url.to_string(),
                ..Default::default()
            },
            processor: ProcessorStatus::default(),
            manager: ManagerStatus::default(),
            notify: NotifyStatus::default(),
            shutting_down: false,
        });
        Self(Arc::new(tx))
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.0.send_modify(f);
    }

    pub fn get(&self) -> Status {
        self.0.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.0.subscribe()
    }
}

impl Status {
    /// Why the process is not ready to do its work, if it is not: NATS unreachable, not yet in
    /// its group, a partition still recovering or lagging by more than `max_lag` messages.
    pub fn not_ready(&self, max_lag: u64) -> Vec<String> {
        let mut why = Vec::new();
        if self.shutting_down {
            why.push("shutting down".to_string());
        }
        if !self.nats.connected {
            why.push(format!("not connected to NATS at {}", self.nats.url));
        }
        if self.processor.enabled {
            if !self.processor.joined {
                why.push("not yet a member of its processor group".to_string());
            }
            for (p, s) in &self.processor.partitions {
                if s.phase == PartitionPhase::Recovering {
                    why.push(format!("partition {p} is recovering"));
                } else if s.lag > max_lag {
                    why.push(format!(
                        "partition {p} lags by {} messages (> {max_lag})",
                        s.lag
                    ));
                }
            }
        }
        why
    }
}

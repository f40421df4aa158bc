use serde::{Deserialize, Serialize};

use crate::config::yaml::Problems;
use crate::subjects;

/// How metrics are consumed and which messages are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Processor group name: its durable consumers are `<name>-<partition>`, its checkpoints
    /// and partition leases are named after it. Processes with the same name share the work.
    pub consumer_name: String,
    /// Most messages processed as one batch (bounded in-flight work per step).
    pub max_batch: usize,
    /// A batch also ends once its payloads reach this many bytes: big messages make smaller
    /// batches, so one batch's processing time (what its alerts wait for) stays short.
    pub max_batch_bytes: usize,
    /// Most unacknowledged messages the server lets this consumer have (back-pressure).
    pub max_ack_pending: i64,
    /// Seconds before the server redelivers an unacknowledged message.
    pub ack_wait_secs: u64,
    /// A point older than its source's newest event time minus this is late: counted, logged
    /// and dead-lettered (reason `late`), in ms. Sources are the subjects' `<domain>.<source>`.
    pub allowed_lateness_ms: i64,
    /// After this much stream time without a message, a source's clock runs on with stream
    /// time (so `for` and staleness elapse without data), in ms. `allowed_lateness_ms +
    /// source_idle_ms` must exceed the longest gap between a publisher's messages.
    pub source_idle_ms: i64,
    /// Points stamped further than this after the message's publish time are rejected, in ms.
    pub max_future_ms: i64,
    /// Messages larger than this are rejected without decoding, in bytes.
    pub max_message_bytes: usize,
    /// Most points in one message.
    pub max_points_per_message: usize,
    /// Most labels on one point.
    pub max_labels: usize,
    /// Longest metric or label name, in bytes.
    pub max_name_bytes: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Seconds between refreshes of the consumer-pending gauge.
    pub pending_poll_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            consumer_name: subjects::PROCESSOR_CONSUMER.into(),
            max_batch: 1000,
            max_batch_bytes: 1 << 20,
            max_ack_pending: 20_000,
            ack_wait_secs: 30,
            allowed_lateness_ms: 5_000,
            source_idle_ms: 5_000,
            max_future_ms: 300_000,
            max_message_bytes: 1 << 20,
            max_points_per_message: 10_000,
            max_labels: 32,
            max_name_bytes: 200,
            max_label_value_bytes: 256,
            pending_poll_secs: 5,
        }
    }
}

impl IngestConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.check(
            subjects::is_token(&self.consumer_name),
            "consumer_name",
            "must be one subject token ([A-Za-z0-9_-]+)",
        );
        p.check(self.max_batch > 0, "max_batch", "must be > 0");
        p.check(self.max_batch_bytes > 0, "max_batch_bytes", "must be > 0");
        p.check(
            self.max_ack_pending >= self.max_batch as i64,
            "max_ack_pending",
            "must be >= max_batch",
        );
        p.check(self.ack_wait_secs > 0, "ack_wait_secs", "must be > 0");
        p.check(
            self.allowed_lateness_ms >= 0,
            "allowed_lateness_ms",
            "must be >= 0",
        );
        p.check(self.source_idle_ms >= 0, "source_idle_ms", "must be >= 0");
        p.check(self.max_future_ms >= 0, "max_future_ms", "must be >= 0");
        p.check(
            self.max_message_bytes > 0,
            "max_message_bytes",
            "must be > 0",
        );
        p.check(
            self.max_points_per_message > 0,
            "max_points_per_message",
            "must be > 0",
        );
        p.check(self.max_name_bytes > 0, "max_name_bytes", "must be > 0");
        p.check(
            self.pending_poll_secs > 0,
            "pending_poll_secs",
            "must be > 0",
        );
        p.into_vec()
    }
}

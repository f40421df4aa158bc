//! Durable publishing of alert events and dead letters: pipelined JetStream publishes, each
//! awaited for its stream ack, retried with capped backoff until stored (never dropped: the input
//! is not acked before this returns).

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::DeadLetter;
use crate::model::AlertEvent;
use crate::{subjects, telemetry};

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
}

struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

impl Publisher {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    pub async fn publish_events(&self, events: &[AlertEvent]) {
        let out: Vec<Outgoing> = events
            .iter()
            .map(|e| {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", e.msg_id().as_str());
                headers.insert(subjects::HEADER_CONTENT_TYPE, "application/json");
                Outgoing {
                    subject: subjects::alert_subject(e.priority, e.status, &e.rule),
                    headers,
                    payload: serde_json::to_vec(e)
                        .expect("alert events serialise")
                        .into(),
                }
            })
            .collect();
        self.publish_all(out).await;
        for e in events {
            metrics::counter!(telemetry::ALERT_EVENTS, "priority" => e.priority.token(), "status" => e.status.token())
                .increment(1);
        }
    }

    pub async fn publish_dead_letters(&self, dead: &[DeadLetter]) {
        let out: Vec<Outgoing> = dead
            .iter()
            .map(|d| {
                let mut headers = HeaderMap::new();
                // One dead letter per stream message, whatever the number of attempts.
                headers.insert(
                    "Nats-Msg-Id",
                    format!("dl-{}", d.incoming.stream_seq).as_str(),
                );
                headers.insert(subjects::HEADER_REJECT_REASON, d.reject.reason.as_str());
                let detail = if d.rejected_points > 1 {
                    format!(
                        "{} points rejected; first: {}",
                        d.rejected_points, d.reject.detail
                    )
                } else {
                    d.reject.detail.clone()
                };
                headers.insert(
                    subjects::HEADER_REJECT_DETAIL,
                    sanitize_header(&detail).as_str(),
                );
                headers.insert(
                    subjects::HEADER_ORIGINAL_SUBJECT,
                    d.incoming.subject.as_str(),
                );
                headers.insert(
                    subjects::HEADER_ORIGINAL_SEQUENCE,
                    d.incoming.stream_seq.to_string().as_str(),
                );
                if let Some(ct) = &d.incoming.content_type {
                    headers.insert(subjects::HEADER_CONTENT_TYPE, ct.as_str());
                }
                Outgoing {
                    subject: subjects::deadletter_subject(d.reject.reason.as_str()),
                    headers,
                    payload: d.incoming.payload.clone(),
                }
            })
            .collect();
        if !out.is_empty() {
            tracing::warn!(count = out.len(), first = %dead[0].reject.detail, "metric messages dead-lettered");
        }
        self.publish_all(out).await;
        metrics::counter!(telemetry::MESSAGES_DEADLETTERED).increment(dead.len() as u64);
    }

    /// Publishes all, pipelined; retries the failed ones until every one is stored.
    async fn publish_all(&self, mut pending: Vec<Outgoing>) {
        let mut backoff = Duration::from_millis(50);
        while !pending.is_empty() {
            let mut acks: Vec<(usize, Result<PublishAckFuture, String>)> =
                Vec::with_capacity(pending.len());
            for (i, o) in pending.iter().enumerate() {
                let r = self
                    .js
                    .publish_with_headers(o.subject.clone(), o.headers.clone(), o.payload.clone())
                    .await
                    .map_err(|e| e.to_string());
                acks.push((i, r));
            }
            let mut failed = Vec::new();
            for (i, r) in acks {
                let result = match r {
                    Ok(fut) => fut.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    tracing::warn!(subject = %pending[i].subject, error = %e, "publish failed, will retry");
                    failed.push(i);
                }
            }
            if failed.is_empty() {
                return;
            }
            metrics::counter!(telemetry::PUBLISH_RETRIES).increment(failed.len() as u64);
            let mut keep = vec![false; pending.len()];
            for i in failed {
                keep[i] = true;
            }
            let mut idx = 0;
            pending.retain(|_| {
                idx += 1;
                keep[idx - 1]
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Header values cannot hold line breaks.
fn sanitize_header(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect()
}

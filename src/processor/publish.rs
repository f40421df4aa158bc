//! Durable publishing of what a batch caused: alert events and dead letters, pipelined, each
//! awaited for its stream ack. Sending and awaiting the acks are separate steps, so that a
//! partition sends the next batch's events while the server stores the previous batch's.
//! Transient failures are retried with capped backoff (until stored, the lease is lost or
//! shutdown is asked); permanent ones are counted, logged and worked around (a dead letter too
//! big for the server carries a reference to the original instead of its bytes), never retried
//! forever.
//!
//! Re-processing after a restart publishes the same deterministic ids again. Inside
//! `PRISM_ALERTS`' duplicate window the server drops the repeats; outside it the [`Suppressor`]
//! checks what the stream already holds, so week-old alerts never page again.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::{publish_retry, ProcessorError, Retry};
use crate::bus::lease::LeaseGuard;
use crate::ingest::Incoming;
use crate::pipeline::{Emitted, MessageReject};
use crate::tools::clock;
use crate::{subjects, telemetry};

/// Room kept under the server's `max_payload` for the subject and protocol framing.
const PAYLOAD_MARGIN: usize = 1024;

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    partition: u32,
    max_payload: usize,
}

#[derive(Debug, Clone)]
struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    /// For a dead letter: the same letter by reference, if the bytes turn out not to fit.
    by_reference: Option<Box<Outgoing>>,
    is_event: bool,
}

impl Outgoing {
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, vs)| {
                vs.iter()
                    .map(|v| k.to_string().len() + v.as_str().len() + 4)
                    .sum::<usize>()
            })
            .sum();
        self.payload.len() + headers + self.subject.len() + 16
    }
}

/// What a batch's publish did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub events: usize,
    pub suppressed: usize,
    pub dead_letters: usize,
}

/// A message handed to the server, with its stream ack to come (or why it could not be sent).
type Sending = (Outgoing, Result<AckWait, PublishError>);

/// A stream ack awaited on a task of its own.
type AckWait = tokio::task::JoinHandle<Result<jetstream::publish::PublishAck, PublishError>>;

/// A batch's events and dead letters, sent; [`Publisher::stored`] awaits their acks.
pub struct Sent {
    waiting: Vec<Sending>,
    report: Published,
    /// Each event's priority and status, counted once the events are stored.
    events: Vec<(&'static str, &'static str)>,
}

impl Sent {
    /// Nothing to wait for (every event suppressed, or none): [`Sent::record`] it at once.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Counts what is stored (or suppressed).
    pub fn record(self) -> Published {
        for (priority, status) in self.events {
            metrics::counter!(telemetry::ALERT_EVENTS, "priority" => priority, "status" => status)
                .increment(1);
        }
        let report = self.report;
        if report.suppressed > 0 {
            metrics::counter!(telemetry::ALERTS_SUPPRESSED).increment(report.suppressed as u64);
        }
        metrics::counter!(telemetry::MESSAGES_DEADLETTERED).increment(report.dead_letters as u64);
        report
    }
}

impl Publisher {
    pub fn new(js: jetstream::Context, partition: u32) -> Self {
        let max_payload = js.client().server_info().max_payload.max(64 * 1024);
        Self {
            js,
            partition,
            max_payload,
        }
    }

    /// Sends a batch's dead letters and alert events (those not already published by an earlier
    /// owner), in order; [`Publisher::stored`] then awaits their stream acks.
    pub async fn send_batch(
        &self,
        batch: &[Incoming],
        (events, traceparents): (&[Emitted], &[Option<String>]),
        rejects: &[MessageReject],
        suppressor: &mut Suppressor,
        guard: &LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<Sent, ProcessorError> {
        let mut report = Published::default();
        let mut out = Vec::with_capacity(events.len() + rejects.len());
        for r in rejects {
            let m = &batch[r.msg as usize];
            if suppressor.already_dead_lettered(m.stream_seq) {
                continue;
            }
            out.push(self.dead_letter(m, r));
            report.dead_letters += 1;
        }
        for (i, e) in events.iter().enumerate() {
            let m = &batch[e.msg as usize];
            if suppressor
                .already_published(&e.event.msg_id(), m, stop)
                .await?
            {
                report.suppressed += 1;
                continue;
            }
            out.push(self.event(e, m, traceparents.get(i).and_then(Option::as_deref)));
            report.events += 1;
        }
        let events = events
            .iter()
            .map(|e| (e.event.priority.token(), e.event.status.token()))
            .collect();
        let waiting = if out.is_empty() {
            Vec::new()
        } else {
            guard.wait_valid(stop).await?;
            self.send_all(out).await
        };
        Ok(Sent {
            waiting,
            report,
            events,
        })
    }

    /// Returns once everything `sent` holds is stored (transient failures sent again until it
    /// is, permanent ones accounted for), and counts it.
    pub async fn stored(
        &self,
        mut sent: Sent,
        guard: &LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<Published, ProcessorError> {
        let waiting = std::mem::take(&mut sent.waiting);
        self.settle(waiting, guard, stop).await?;
        Ok(sent.record())
    }

    /// Publishes one dead letter (the series registry's reports).
    pub async fn publish_dead_letter(
        &self,
        m: &Incoming,
        r: &MessageReject,
        guard: &LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<(), ProcessorError> {
        self.publish_all(vec![self.dead_letter(m, r)], guard, stop)
            .await?;
        metrics::counter!(telemetry::MESSAGES_DEADLETTERED).increment(1);
        metrics::counter!(telemetry::POINTS_REJECTED, "reason" => r.reason.as_str()).increment(1);
        Ok(())
    }

    fn event(&self, e: &Emitted, cause: &Incoming, traceparent: Option<&str>) -> Outgoing {
        let mut headers = HeaderMap::new();
        if let Some(tp) = traceparent {
            headers.insert(crate::trace::HEADER, tp);
        }
        headers.insert("Nats-Msg-Id", e.event.msg_id().as_str());
        headers.insert(subjects::HEADER_CONTENT_TYPE, "application/json");
        headers.insert(
            subjects::HEADER_SOURCE_MESSAGE,
            format!("{}:{}", self.partition, cause.stream_seq).as_str(),
        );
        Outgoing {
            subject: subjects::alert_subject(e.event.priority, e.event.status, &e.event.rule),
            headers,
            payload: serde_json::to_vec(&e.event)
                .expect("alert events serialise")
                .into(),
            by_reference: None,
            is_event: true,
        }
    }

    /// One dead letter per (message, reason): the original bytes with the reason in headers,
    /// or, when that would not fit the server's `max_payload`, a reference to the original.
    fn dead_letter(&self, m: &Incoming, r: &MessageReject) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("dl-{}-{}", m.stream_seq, r.reason.as_str()).as_str(),
        );
        headers.insert(subjects::HEADER_REJECT_REASON, r.reason.as_str());
        let detail = if r.points > 1 {
            format!("{} points rejected; first: {}", r.points, r.detail)
        } else {
            r.detail.clone()
        };
        headers.insert(
            subjects::HEADER_REJECT_DETAIL,
            sanitize_header(&detail).as_str(),
        );
        headers.insert(
            subjects::HEADER_REJECTED_POINTS,
            r.points.to_string().as_str(),
        );
        headers.insert(
            subjects::HEADER_ORIGINAL_SUBJECT,
            subjects::published_subject(&m.subject).as_str(),
        );
        headers.insert(subjects::HEADER_ORIGINAL_STREAM, subjects::METRICS_STREAM);
        headers.insert(
            subjects::HEADER_ORIGINAL_SEQUENCE,
            m.stream_seq.to_string().as_str(),
        );
        if let Some(ct) = &m.content_type {
            headers.insert(subjects::HEADER_CONTENT_TYPE, &**ct);
        }
        let mut reference_headers = headers.clone();
        reference_headers.insert(
            subjects::HEADER_PAYLOAD_OMITTED,
            m.payload.len().to_string().as_str(),
        );
        let reference = Outgoing {
            subject: subjects::deadletter_subject(r.reason.as_str()),
            headers: reference_headers,
            payload: Bytes::new(),
            by_reference: None,
            is_event: false,
        };
        let full = Outgoing {
            payload: m.payload.clone(),
            headers,
            by_reference: None,
            ..reference.clone()
        };
        if full.size() + PAYLOAD_MARGIN > self.max_payload {
            reference
        } else {
            Outgoing {
                by_reference: Some(Box::new(reference)),
                ..full
            }
        }
    }

    /// Publishes all, pipelined; retries transient failures with backoff until every one is
    /// stored; permanent failures are logged, counted, and (dead letters) sent by reference.
    async fn publish_all(
        &self,
        pending: Vec<Outgoing>,
        guard: &LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<(), ProcessorError> {
        guard.wait_valid(stop).await?;
        let sent = self.send_all(pending).await;
        self.settle(sent, guard, stop).await
    }

    /// Hands every message to the server without waiting for its ack. Each ack is awaited on a
    /// task of its own from the start: the client allows a bounded number of acks outstanding
    /// (shared by the partitions) and a send waits for one to be free, which only happens as
    /// outstanding ones are awaited; awaited later, here, an alert storm (thousands of events
    /// in the batches at hand) would wait for itself forever.
    async fn send_all(&self, pending: Vec<Outgoing>) -> Vec<Sending> {
        let mut sent = Vec::with_capacity(pending.len());
        for o in pending {
            let ack = self
                .js
                .publish_with_headers(o.subject.clone(), o.headers.clone(), o.payload.clone())
                .await
                .map(|ack| tokio::spawn(std::future::IntoFuture::into_future(ack)));
            sent.push((o, ack));
        }
        sent
    }

    /// Awaits the acks of `sent`; sends what failed transiently again, with backoff, until
    /// every one is stored; permanent failures are logged, counted, and (dead letters) sent by
    /// reference.
    async fn settle(
        &self,
        mut sent: Vec<Sending>,
        guard: &LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<(), ProcessorError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut retry = Vec::new();
            for (o, ack) in sent {
                let result = match ack {
                    Ok(ack) => match ack.await {
                        Ok(stored) => stored.map(drop),
                        // Its task ended without an answer (the runtime is stopping): unknown.
                        Err(_) => Err(PublishError::new(PublishErrorKind::Other)),
                    },
                    Err(e) => Err(e),
                };
                let Err(e) = result else { continue };
                match publish_retry(e.kind()) {
                    Retry::Transient => {
                        tracing::warn!(subject = %o.subject, error = %e, "publish failed, will retry");
                        retry.push(o);
                    }
                    Retry::Permanent => match o.by_reference {
                        Some(reference) => {
                            tracing::warn!(subject = %o.subject, error = %e, "dead letter does not fit the server; sending a reference to the original");
                            retry.push(*reference);
                        }
                        None => {
                            metrics::counter!(telemetry::PUBLISH_FAILURES, "kind" => if o.is_event { "event" } else { "dead_letter" })
                                .increment(1);
                            tracing::error!(subject = %o.subject, error = %e, "publish refused for good; dropped");
                        }
                    },
                }
            }
            if retry.is_empty() {
                return Ok(());
            }
            metrics::counter!(telemetry::PUBLISH_RETRIES).increment(retry.len() as u64);
            tokio::select! {
                _ = stop.cancelled() => return Err(ProcessorError::Stopped),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            guard.wait_valid(stop).await?;
            sent = self.send_all(retry).await;
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

/// Decides which re-published events and dead letters are repeats of ones already stored.
pub struct Suppressor {
    js: jetstream::Context,
    alerts_stream: String,
    /// The partition consumer's ack floor before this owner recreated it: everything up to it
    /// was processed and its effects stored by an earlier owner.
    acked_before: u64,
    /// `PRISM_ALERTS`' duplicate window as the server has it, ms.
    dup_window_ms: i64,
    /// Ids of alert events `PRISM_ALERTS` holds (loaded on first need).
    held: Option<HashSet<String>>,
}

impl Suppressor {
    pub async fn new(
        js: &jetstream::Context,
        alerts_stream: &str,
        acked_before: u64,
    ) -> Result<Self, ProcessorError> {
        let mut s = js
            .get_stream(alerts_stream)
            .await
            .map_err(ProcessorError::nats("look up the alerts stream"))?;
        let info = s
            .info()
            .await
            .map_err(ProcessorError::nats("read the alerts stream's settings"))?;
        Ok(Self {
            js: js.clone(),
            alerts_stream: alerts_stream.to_string(),
            acked_before,
            dup_window_ms: info.config.duplicate_window.as_millis() as i64,
            held: None,
        })
    }

    pub fn already_dead_lettered(&self, seq: u64) -> bool {
        seq <= self.acked_before
    }

    /// True when the event with `msg_id`, caused by `cause`, is already in `PRISM_ALERTS` and
    /// the server's duplicate window can no longer drop a repeat.
    async fn already_published(
        &mut self,
        msg_id: &str,
        cause: &Incoming,
        stop: &CancellationToken,
    ) -> Result<bool, ProcessorError> {
        if cause.stream_seq <= self.acked_before {
            return Ok(true);
        }
        // The event, if published before, was published after its cause was stored; while that
        // is inside the window (with a minute to spare) the server drops a repeat by its id.
        let margin = 60_000.min(self.dup_window_ms / 2);
        if cause.published_ms > clock::now_ms() - self.dup_window_ms + margin {
            return Ok(false);
        }
        if self.held.is_none() {
            self.held = Some(self.load_held(cause.published_ms - 60_000, stop).await?);
        }
        Ok(self.held.as_ref().is_some_and(|h| h.contains(msg_id)))
    }

    /// Reads the ids of every alert event stored since `from_ms` (headers only).
    async fn load_held(
        &self,
        from_ms: i64,
        stop: &CancellationToken,
    ) -> Result<HashSet<String>, ProcessorError> {
        fn err(e: impl std::fmt::Display) -> ProcessorError {
            ProcessorError::Nats(format!("read the alerts stream's ids: {e}"))
        }
        let mut stream = self.js.get_stream(&self.alerts_stream).await.map_err(err)?;
        let last = stream.info().await.map_err(err)?.state.last_sequence;
        let mut held = HashSet::new();
        if last == 0 {
            return Ok(held);
        }
        let start =
            time::OffsetDateTime::from_unix_timestamp_nanos(from_ms.max(0) as i128 * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(err)?;
        let mut messages = consumer.messages().await.map_err(err)?;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Err(ProcessorError::Stopped),
                next = tokio::time::timeout(Duration::from_secs(5), messages.next()) => next,
            };
            let m = match next {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(err(e)),
                // Nothing at or after the start time.
                Ok(None) | Err(_) => break,
            };
            if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                held.insert(id.to_string());
            }
            let info = m.info().map_err(err)?;
            if info.stream_sequence >= last || info.pending == 0 {
                break;
            }
        }
        tracing::info!(
            ids = held.len(),
            "loaded the ids of stored alert events to avoid re-publishing old ones"
        );
        Ok(held)
    }
}

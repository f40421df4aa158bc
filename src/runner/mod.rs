//! The processor: consume metric messages from JetStream, run them through the [`Pipeline`],
//! publish alert events (and dead letters) durably, then ack; checkpoint state; recover from the
//! last checkpoint on start; replay a stream range for backtests.
//!
//! Exactly-once effect: a message is acked only after everything it caused is stored, and every
//! alert event carries a deterministic `Nats-Msg-Id`, so reprocessing after a crash (from the
//! checkpoint) re-publishes the same ids, which JetStream drops as duplicates.

mod checkpoint;
mod publish;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use publish::Publisher;

use crate::config::Config;
use crate::ingest::{decode_message, Reject};
use crate::model::AlertEvent;
use crate::pipeline::{BatchOutput, Pipeline};
use crate::rules::RuleSet;
use crate::{bus, subjects, telemetry};

/// One metric message as the pipeline needs it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub subject: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub stream_seq: u64,
    /// When JetStream stored it, ms since the epoch.
    pub published_ms: i64,
}

impl Incoming {
    fn from_js(msg: &jetstream::Message) -> Option<Incoming> {
        let info = msg.info().ok()?;
        Some(Incoming {
            subject: msg.subject.to_string(),
            payload: msg.payload.clone(),
            content_type: msg
                .headers
                .as_ref()
                .and_then(|h| h.get(subjects::HEADER_CONTENT_TYPE))
                .map(|v| v.to_string()),
            stream_seq: info.stream_sequence,
            published_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }
}

/// A rejected message, to be copied to the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub incoming: Incoming,
    pub reject: Reject,
    pub rejected_points: usize,
}

/// Decodes a batch of messages and runs it through the pipeline.
pub fn process_batch(pipeline: &mut Pipeline, cfg: &Config, batch: &[Incoming]) -> (BatchOutput, Vec<DeadLetter>) {
    let mut dead = Vec::new();
    let mut points = 0u64;
    for m in batch {
        match decode_message(&m.payload, m.content_type.as_deref(), m.published_ms, &cfg.ingest) {
            Ok(decoded) => {
                points += decoded.points.len() as u64;
                if let Some(reject) = decoded.first_reject {
                    dead.push(DeadLetter {
                        incoming: m.clone(),
                        reject,
                        rejected_points: decoded.rejected,
                    });
                }
                pipeline.push_message(decoded.points);
            }
            Err(reject) => dead.push(DeadLetter {
                incoming: m.clone(),
                reject,
                rejected_points: 1,
            }),
        }
    }
    let out = pipeline.run();
    metrics::counter!(telemetry::MESSAGES_RECEIVED).increment(batch.len() as u64);
    metrics::counter!(telemetry::POINTS_RECEIVED).increment(points);
    metrics::counter!(telemetry::POINTS_LATE).increment(out.late);
    metrics::counter!(telemetry::POINTS_DEDUPLICATED).increment(out.stats.duplicates);
    metrics::counter!(telemetry::POINTS_OUT_OF_ORDER).increment(out.stats.out_of_order);
    metrics::counter!(telemetry::SERIES_EVICTED).increment(out.stats.series_evicted);
    metrics::gauge!(telemetry::SERIES_ACTIVE).set(pipeline.series_count() as f64);
    metrics::gauge!(telemetry::WATERMARK).set(pipeline.watermark().max(0) as f64 / 1000.0);
    for d in &dead {
        metrics::counter!(telemetry::POINTS_REJECTED, "reason" => d.reject.reason.as_str())
            .increment(d.rejected_points as u64);
    }
    (out, dead)
}

/// Runs the processor until `shutdown` turns true. Connects, declares streams, recovers from the
/// last checkpoint, then consumes.
pub async fn run(cfg: Config, rules: RuleSet, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client = bus::connect(&cfg.nats).await?;
    let js = jetstream::new(client.clone());
    bus::ensure_streams(&js, &cfg.streams).await?;
    let publisher = Publisher::new(js.clone(), &cfg);
    let checkpoints = CheckpointStore::open(&js, &cfg.ingest.consumer_name).await?;
    let mut pipeline = Pipeline::new(&cfg.pipeline, cfg.ingest.allowed_lateness_ms, rules);

    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let mut consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &cfg.ingest.consumer_name,
            consumer::pull::Config {
                durable_name: Some(cfg.ingest.consumer_name.clone()),
                // Cumulative explicit acks: acking the last message of a batch acks the batch.
                // One ack per batch instead of per message halves the server's work per
                // single-point message; a processor partition is the consumer's only reader.
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(cfg.ingest.ack_wait_secs),
                max_ack_pending: cfg.ingest.max_ack_pending,
                filter_subject: cfg.ingest.filter_subject.clone(),
                ..Default::default()
            },
        )
        .await?;

    // Recovery: restore the checkpoint, then re-run what the consumer delivered after it.
    let mut last_seq = 0;
    if let Some(cp) = checkpoints.load().await? {
        tracing::info!(seq = cp.last_seq, series = cp.pipeline.series.len(), "restored checkpoint");
        last_seq = cp.last_seq;
        pipeline.restore(cp.pipeline);
    }
    // Messages the consumer delivered after the checkpoint (acked or not) were processed by the
    // previous run but are not in the restored state: process them again (events are dropped
    // by JetStream as duplicates); unacked ones are redelivered later and skipped by sequence.
    let delivered = consumer.info().await?.delivered.stream_sequence;
    let first_seq = js.get_stream(&cfg.streams.metrics.name).await?.info().await?.state.first_sequence;
    let from = (last_seq + 1).max(first_seq);
    if delivered >= from {
        tracing::info!(from, to = delivered, "re-processing messages delivered since the checkpoint");
        let events = replay_range(&js, &cfg, &mut pipeline, from, Some(delivered), |events, dead| {
            let publisher = publisher.clone();
            async move {
                publisher.publish_dead_letters(&dead).await;
                publisher.publish_events(&events).await
            }
        })
        .await?;
        tracing::info!(events, "recovery done");
    }
    last_seq = last_seq.max(delivered);

    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.ingest.max_batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?
        .ready_chunks(cfg.ingest.max_batch);
    let mut last_checkpoint = Instant::now();
    let mut last_pending_poll = Instant::now();
    let checkpoint_every = Duration::from_millis(cfg.pipeline.checkpoint_interval_ms);
    tracing::info!(consumer = %cfg.ingest.consumer_name, subject = %cfg.ingest.filter_subject, "processor running");
    loop {
        let chunk = tokio::select! {
            _ = shutdown.changed() => break,
            chunk = messages.next() => match chunk {
                Some(chunk) => chunk,
                None => anyhow::bail!("consumer stream ended"),
            },
        };
        let started = Instant::now();
        let mut msgs = Vec::with_capacity(chunk.len());
        for m in chunk {
            match m {
                Ok(m) => msgs.push(m),
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        // Redeliveries of messages already covered by the checkpoint/recovery are acked as is.
        let mut batch = Vec::with_capacity(msgs.len());
        for m in &msgs {
            match Incoming::from_js(m) {
                Some(inc) if inc.stream_seq > last_seq => batch.push(inc),
                Some(_) => {}
                None => tracing::warn!(subject = %m.subject, "message without JetStream metadata"),
            }
        }
        let (out, dead) = tokio::task::block_in_place(|| process_batch(&mut pipeline, &cfg, &batch));
        publisher.publish_dead_letters(&dead).await;
        publisher.publish_events(&out.events).await;
        if let Some(last) = msgs.last() {
            if let Err(e) = last.ack_with(AckKind::Ack).await {
                tracing::warn!(error = %e, "ack failed");
            }
        }
        if let Some(max) = batch.iter().map(|m| m.stream_seq).max() {
            last_seq = last_seq.max(max);
        }
        let now_ms = crate::tools::clock::now_ms();
        for m in &batch {
            metrics::histogram!(telemetry::PROCESSING_LATENCY).record((now_ms - m.published_ms).max(0) as f64 / 1000.0);
        }
        metrics::histogram!(telemetry::BATCH_DURATION).record(started.elapsed().as_secs_f64());
        if !checkpoint_every.is_zero() && last_checkpoint.elapsed() >= checkpoint_every {
            checkpoints.save(&Checkpoint { last_seq, pipeline: pipeline.snapshot() }).await;
            last_checkpoint = Instant::now();
        }
        if last_pending_poll.elapsed() >= Duration::from_secs(cfg.ingest.pending_poll_secs) {
            last_pending_poll = Instant::now();
            if let Ok(mut c) = stream.get_consumer::<consumer::pull::Config>(&cfg.ingest.consumer_name).await {
                if let Ok(info) = c.info().await {
                    metrics::gauge!(telemetry::CONSUMER_PENDING).set(info.num_pending as f64);
                }
            }
        }
    }
    checkpoints.save(&Checkpoint { last_seq, pipeline: pipeline.snapshot() }).await;
    tracing::info!(last_seq, "processor stopped, checkpoint written");
    Ok(())
}

/// Feeds stream messages `from..=to` (to the stream's end when `to` is `None`) through the
/// pipeline with an ordered consumer, in fixed batches of `ingest.max_batch` messages, so the
/// event order is the same on every replay. `sink` receives each batch's events and dead letters. Returns the count
/// of events.
pub async fn replay_range<F, Fut>(
    js: &jetstream::Context,
    cfg: &Config,
    pipeline: &mut Pipeline,
    from: u64,
    to: Option<u64>,
    mut sink: F,
) -> anyhow::Result<usize>
where
    F: FnMut(Vec<AlertEvent>, Vec<DeadLetter>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let last = stream.info().await?.state.last_sequence;
    let end = to.unwrap_or(last).min(last);
    if from > end {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: cfg.ingest.filter_subject.clone(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from.max(1) },
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut count = 0;
    let mut batch: Vec<Incoming> = Vec::with_capacity(cfg.ingest.max_batch);
    let mut done = false;
    while !done {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => anyhow::bail!("replay consumer error: {e}"),
            Ok(None) | Err(_) => {
                tracing::warn!("replay ended before reaching sequence {end}");
                break;
            }
        };
        let Some(inc) = Incoming::from_js(&msg) else { continue };
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        if inc.stream_seq >= end || pending == 0 {
            done = true;
        }
        if inc.stream_seq <= end {
            batch.push(inc);
        }
        if batch.len() >= cfg.ingest.max_batch || done {
            let (out, dead) = tokio::task::block_in_place(|| process_batch(pipeline, cfg, &batch));
            count += out.events.len();
            sink(out.events, dead).await;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        let (out, dead) = tokio::task::block_in_place(|| process_batch(pipeline, cfg, &batch));
        count += out.events.len();
        sink(out.events, dead).await;
    }
    Ok(count)
}

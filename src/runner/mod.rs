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
use std::collections::VecDeque;

use tokio::sync::{oneshot, watch};

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
    pub subject: async_nats::Subject,
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
            subject: msg.subject.clone(),
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
pub fn process_batch(
    pipeline: &mut Pipeline,
    cfg: &Config,
    batch: &[Incoming],
) -> (BatchOutput, Vec<DeadLetter>) {
    let mut dead = Vec::new();
    let mut points = 0u64;
    for m in batch {
        match decode_message(
            &m.payload,
            m.content_type.as_deref(),
            m.published_ms,
            &cfg.ingest,
        ) {
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
pub async fn run(
    cfg: Config,
    rules: RuleSet,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = bus::connect(&cfg.nats).await?;
    let js = jetstream::new(client.clone());
    bus::ensure_streams(&js, &cfg.streams).await?;
    let publisher = Publisher::new(js.clone());
    let checkpoints = CheckpointStore::open(&js, &cfg.ingest.consumer_name).await?;
    let mut pipeline = Pipeline::new(&cfg.pipeline, cfg.ingest.allowed_lateness_ms, rules);

    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let filter_subject = effective_filter(
        &stream.cached_info().config.subjects,
        &cfg.ingest.filter_subject,
    );
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
                filter_subject,
                ..Default::default()
            },
        )
        .await?;

    // Recovery: restore the checkpoint, then re-run what the consumer delivered after it.
    let mut last_seq = 0;
    if let Some(cp) = checkpoints.load().await? {
        tracing::info!(
            seq = cp.last_seq,
            series = cp.pipeline.series.len(),
            "restored checkpoint"
        );
        last_seq = cp.last_seq;
        pipeline.restore(cp.pipeline);
    }
    // Messages the consumer delivered after the checkpoint (acked or not) were processed by the
    // previous run but are not in the restored state: process them again (events are dropped
    // by JetStream as duplicates); unacked ones are redelivered later and skipped by sequence.
    let delivered = consumer.info().await?.delivered.stream_sequence;
    let first_seq = js
        .get_stream(&cfg.streams.metrics.name)
        .await?
        .info()
        .await?
        .state
        .first_sequence;
    let from = (last_seq + 1).max(first_seq);
    if delivered >= from {
        tracing::info!(
            from,
            to = delivered,
            "re-processing messages delivered since the checkpoint"
        );
        let events = replay_range(
            &js,
            &cfg,
            &mut pipeline,
            from,
            Some(delivered),
            |events, dead| {
                let publisher = publisher.clone();
                async move {
                    publisher.publish_dead_letters(&dead).await;
                    publisher.publish_events(&events).await
                }
            },
        )
        .await?;
        tracing::info!(events, "recovery done");
    }
    last_seq = last_seq.max(delivered);

    let messages = consumer
        .stream()
        .max_messages_per_batch(cfg.ingest.max_batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?
        .ready_chunks(cfg.ingest.max_batch);
    let (pulled_tx, mut pulled) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
    let puller = tokio::spawn(pull_batches(
        messages,
        cfg.ingest.max_batch_bytes,
        pulled_tx,
    ));
    let mut worker = PipelineWorker::start(pipeline, cfg.clone(), last_seq);
    let mut last_checkpoint = Instant::now();
    let checkpoints = std::sync::Arc::new(checkpoints);
    let mut checkpoint_upload: Option<tokio::task::JoinHandle<()>> = None;
    // The pending gauge is polled off the hot loop, so a slow server answer never delays a batch.
    let pending_poll = tokio::spawn(poll_pending(
        stream.clone(),
        cfg.ingest.consumer_name.clone(),
        cfg.ingest.pending_poll_secs,
    ));
    let checkpoint_every = Duration::from_millis(cfg.pipeline.checkpoint_interval_ms);
    let mut done_sink = DoneSink {
        publisher: &publisher,
        latency: metrics::histogram!(telemetry::PROCESSING_LATENCY),
        batch_duration: metrics::histogram!(telemetry::BATCH_DURATION),
        last_seq,
    };
    // Batches in the pipeline thread; the next is pulled while one is processed, and results are
    // published and acked strictly in order. Only each batch's last message is kept, for the
    // cumulative ack; the others travel as compact `Incoming`s.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Before a checkpoint no new batch is started, so the snapshot covers exactly what is acked.
    let mut draining = false;
    tracing::info!(consumer = %cfg.ingest.consumer_name, subject = %cfg.ingest.filter_subject, "processor running");
    loop {
        let upload_idle = checkpoint_upload.as_ref().is_none_or(|h| h.is_finished());
        if !checkpoint_every.is_zero()
            && last_checkpoint.elapsed() >= checkpoint_every
            && upload_idle
        {
            draining = true;
        }
        if draining && in_flight.is_empty() {
            if let Some(snapshot) = worker.snapshot().await {
                let store = checkpoints.clone();
                let cp = Checkpoint {
                    last_seq: done_sink.last_seq,
                    pipeline: snapshot,
                };
                checkpoint_upload = Some(tokio::spawn(async move { store.save(&cp).await }));
            }
            last_checkpoint = Instant::now();
            draining = false;
        }
        let can_pull = !draining && in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            done = async {
                match in_flight.front_mut() {
                    Some(batch) => (&mut batch.done).await,
                    None => std::future::pending().await,
                }
            } => {
                let batch = in_flight.pop_front().expect("a batch in flight");
                let done = done.map_err(|_| anyhow::anyhow!("pipeline worker stopped"))?;
                done_sink.finish(done, batch).await;
            }
            next = pulled.recv(), if can_pull => {
                let Some(Pulled { batch, last }) = next else { anyhow::bail!("consumer stream ended") };
                let Some(done) = worker.submit(batch) else { anyhow::bail!("pipeline worker stopped") };
                in_flight.push_back(InFlight { started: Instant::now(), ack: last, done });
            }
        }
    }
    puller.abort();
    pending_poll.abort();
    // Finish what was started: publish and ack it before the final checkpoint.
    while let Some(mut batch) = in_flight.pop_front() {
        if let Ok(done) = (&mut batch.done).await {
            done_sink.finish(done, batch).await;
        }
    }
    if let Some(upload) = checkpoint_upload {
        let _ = upload.await;
    }
    let last_seq = done_sink.last_seq;
    if let Some(snapshot) = worker.snapshot().await {
        checkpoints
            .save(&Checkpoint {
                last_seq,
                pipeline: snapshot,
            })
            .await;
    }
    tracing::info!(last_seq, "processor stopped, checkpoint written");
    bus::close(&client).await;
    Ok(())
}

/// The consumer's filter: none when `filter` selects the whole stream (its only subject), so
/// the server does not match every message against it.
fn effective_filter(stream_subjects: &[String], filter: &str) -> String {
    if stream_subjects.len() == 1 && stream_subjects[0] == filter {
        String::new()
    } else {
        filter.to_string()
    }
}

/// A batch of pulled messages: compact `Incoming`s, and the last message for the cumulative ack.
struct Pulled {
    batch: Vec<Incoming>,
    last: Option<jetstream::Message>,
}

/// Drives the consumer's message stream on a task of its own, so it keeps issuing pull requests
/// (the client asks for more only while its stream is polled) while the run loop publishes and
/// acks; `out`'s bound is the back-pressure. A chunk is cut into batches of at most
/// `max_batch_bytes` of payload. Ends when the stream or the receiver does.
async fn pull_batches<S>(
    mut messages: S,
    max_batch_bytes: usize,
    out: tokio::sync::mpsc::Sender<Pulled>,
) where
    S: futures::Stream<Item = Vec<Result<jetstream::Message, consumer::pull::MessagesError>>>
        + Unpin,
{
    while let Some(chunk) = messages.next().await {
        let mut cut = BatchCut::new(max_batch_bytes);
        let mut batch = Vec::new();
        let mut last = None;
        for m in chunk {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
            };
            let full = cut.add(m.payload.len());
            batch.extend(Incoming::from_js(&m));
            last = Some(m);
            if full {
                let batch = std::mem::take(&mut batch);
                if out
                    .send(Pulled {
                        batch,
                        last: last.take(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if last.is_some() && out.send(Pulled { batch, last }).await.is_err() {
            return;
        }
    }
}

/// Where batches end: after the message that brings a batch's payload to `max_bytes`.
struct BatchCut {
    max_bytes: usize,
    bytes: usize,
}

impl BatchCut {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
        }
    }

    /// Adds a message of `len` bytes; true when the batch ends with it.
    fn add(&mut self, len: usize) -> bool {
        self.bytes += len;
        if self.bytes >= self.max_bytes {
            self.bytes = 0;
            true
        } else {
            false
        }
    }
}

/// Batches the pipeline thread may hold at once.
const MAX_IN_FLIGHT: usize = 2;

/// A batch handed to the pipeline thread.
struct InFlight {
    started: Instant,
    /// The batch's last message: acking it acks the whole batch (AckPolicy::All).
    ack: Option<jetstream::Message>,
    done: oneshot::Receiver<BatchDone>,
}

/// Publishes what a batch caused, then acks it.
struct DoneSink<'a> {
    publisher: &'a Publisher,
    latency: metrics::Histogram,
    batch_duration: metrics::Histogram,
    /// Every message up to here is processed, its effects stored and acked.
    last_seq: u64,
}

impl DoneSink<'_> {
    async fn finish(&mut self, done: BatchDone, batch: InFlight) {
        self.publisher.publish_dead_letters(&done.dead).await;
        self.publisher.publish_events(&done.output.events).await;
        // Cumulative ack: the batch's last message acks all of it, now that all it caused is stored.
        if let Some(last) = batch.ack {
            if let Err(e) = last.ack_with(AckKind::Ack).await {
                tracing::warn!(error = %e, "ack failed");
            }
        }
        self.last_seq = self.last_seq.max(done.max_seq);
        let now_ms = crate::tools::clock::now_ms();
        for published_ms in done.published_ms {
            self.latency
                .record((now_ms - published_ms).max(0) as f64 / 1000.0);
        }
        self.batch_duration
            .record(batch.started.elapsed().as_secs_f64());
    }
}

/// Refreshes the consumer-pending gauge every `every_secs`.
async fn poll_pending(stream: jetstream::stream::Stream, consumer_name: String, every_secs: u64) {
    let gauge = metrics::gauge!(telemetry::CONSUMER_PENDING);
    let mut tick = tokio::time::interval(Duration::from_secs(every_secs.max(1)));
    loop {
        tick.tick().await;
        if let Ok(mut c) = stream
            .get_consumer::<consumer::pull::Config>(&consumer_name)
            .await
        {
            if let Ok(info) = c.info().await {
                gauge.set(info.num_pending as f64);
            }
        }
    }
}

/// What the worker did with one batch of messages.
struct BatchDone {
    output: BatchOutput,
    dead: Vec<DeadLetter>,
    max_seq: u64,
    published_ms: Vec<i64>,
}

enum Job {
    Process {
        batch: Vec<Incoming>,
        reply: oneshot::Sender<BatchDone>,
    },
    Snapshot(oneshot::Sender<crate::pipeline::PipelineSnapshot>),
}

/// The pipeline on a thread of its own: CPU work never blocks the tasks that move bytes to and
/// from NATS, and the two overlap.
struct PipelineWorker {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl PipelineWorker {
    /// `processed_through`: the stream sequence the pipeline's state already covers.
    fn start(mut pipeline: Pipeline, cfg: Config, mut processed_through: u64) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(MAX_IN_FLIGHT + 1);
        std::thread::Builder::new()
            .name("prismwatch-pipeline".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Process { mut batch, reply } => {
                            // Redeliveries of messages the state already covers (recovered
                            // ones) are acked without processing.
                            batch.retain(|m| m.stream_seq > processed_through);
                            processed_through = batch
                                .iter()
                                .map(|m| m.stream_seq)
                                .fold(processed_through, u64::max);
                            let (output, dead) = process_batch(&mut pipeline, &cfg, &batch);
                            let _ = reply.send(BatchDone {
                                output,
                                dead,
                                max_seq: batch.iter().map(|m| m.stream_seq).max().unwrap_or(0),
                                published_ms: batch.iter().map(|m| m.published_ms).collect(),
                            });
                        }
                        Job::Snapshot(reply) => {
                            let _ = reply.send(pipeline.snapshot());
                        }
                    }
                }
            })
            .expect("spawn pipeline thread");
        Self { jobs: tx }
    }

    /// Queues a batch; its result arrives on the returned receiver.
    fn submit(&mut self, batch: Vec<Incoming>) -> Option<oneshot::Receiver<BatchDone>> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Process { batch, reply }).ok()?;
        Some(rx)
    }

    async fn snapshot(&mut self) -> Option<crate::pipeline::PipelineSnapshot> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Snapshot(reply)).ok()?;
        rx.await.ok()
    }
}

/// Feeds stream messages `from..=to` (to the stream's end when `to` is `None`) through the
/// pipeline with an ordered consumer, in fixed batches (`ingest.max_batch` messages, or fewer
/// that reach `ingest.max_batch_bytes`), so the event order is the same on every replay. `sink`
/// receives each batch's events and dead letters. Returns the count of events.
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
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut count = 0;
    let mut batch: Vec<Incoming> = Vec::with_capacity(cfg.ingest.max_batch);
    let mut cut = BatchCut::new(cfg.ingest.max_batch_bytes);
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
        let Some(inc) = Incoming::from_js(&msg) else {
            continue;
        };
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        if inc.stream_seq >= end || pending == 0 {
            done = true;
        }
        let mut full = false;
        if inc.stream_seq <= end {
            full = cut.add(inc.payload.len());
            batch.push(inc);
        }
        if full || batch.len() >= cfg.ingest.max_batch || done {
            cut = BatchCut::new(cfg.ingest.max_batch_bytes);
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

#[cfg(test)]
mod tests {
    use super::{effective_filter, BatchCut};

    #[test]
    fn a_batch_ends_at_the_message_that_reaches_the_byte_bound() {
        let mut cut = BatchCut::new(1000);
        let ends: Vec<bool> = [400, 400, 400, 100, 2000, 10, 990]
            .into_iter()
            .map(|len| cut.add(len))
            .collect();
        // 400+400+400 ≥ 1000 ends the first; 100+2000 the second; 10+990 the third.
        assert_eq!(ends, [false, false, true, false, true, false, true]);
    }

    #[test]
    fn a_filter_selecting_the_whole_stream_is_dropped() {
        let stream = vec!["prism.metrics.>".to_string()];
        assert_eq!(effective_filter(&stream, "prism.metrics.>"), "");
        assert_eq!(
            effective_filter(&stream, "prism.metrics.exchange.>"),
            "prism.metrics.exchange.>"
        );
        let two = vec!["prism.metrics.>".to_string(), "other.>".to_string()];
        assert_eq!(effective_filter(&two, "prism.metrics.>"), "prism.metrics.>");
    }
}

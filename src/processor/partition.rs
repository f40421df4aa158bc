//! One owned partition, from takeover to release: restore the checkpoint (or rebuild from the
//! stream), recreate the consumer right after it, then consume, process, publish, ack and
//! checkpoint until told to stop (gracefully: finish what is in flight, checkpoint) or the lease
//! is lost (at once: publish and ack nothing more).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::consume::{self, PullProgress, Pulled};
use super::publish::{Publisher, Suppressor};
use super::store::{CheckpointStore, NoCheckpoint};
use super::worker::{BatchDone, PipelineWorker, MAX_IN_FLIGHT};
use super::{ProcessorCtx, ProcessorError};
use crate::app::status::{PartitionPhase, PartitionStatus};
use crate::bus::lease::LeaseGuard;
use crate::ingest::RejectReason;
use crate::pipeline::Pipeline;
use crate::subjects;
use crate::telemetry::{self, LogLimiter};
use crate::tools::clock;

/// Processed batches that may wait for their events' stream acks at once (each holds its
/// messages until then); beyond that the partition waits before it sends more.
const MAX_PUBLISHING: usize = 16;

/// How a partition's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (shutdown or rebalancing): in-flight work finished, checkpoint written.
    Stopped,
    /// The lease went to another process: stopped at once.
    LeaseLost,
}

/// A batch handed to the pipeline thread.
struct InFlight {
    started: Instant,
    /// Its sampled messages.
    traces: Vec<crate::trace::Traced>,
    /// The batch's last message: acking it acks the whole batch (AckPolicy::All).
    ack: Option<jetstream::Message>,
    done: oneshot::Receiver<BatchDone>,
}

/// Runs partition `p` while this process owns it.
pub async fn run(
    ctx: Arc<ProcessorCtx>,
    p: u32,
    guard: LeaseGuard,
    stop: CancellationToken,
) -> Result<Exit, ProcessorError> {
    set_status(&ctx, p, PartitionPhase::Recovering, 0, None);
    let running = AtomicBool::new(false);
    // Once running, a stop is handled inside (gracefully); while recovering, it ends here.
    let stopped_while_recovering = async {
        stop.cancelled().await;
        if running.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        // Lost or stopped while recovering: nothing was published yet; just stop.
        _ = guard.lost() => Ok(Exit::LeaseLost),
        _ = stopped_while_recovering => Ok(Exit::Stopped),
        r = run_owned(&ctx, p, &guard, &stop, &running) => r,
    };
    ctx.status.update(|s| {
        s.processor.partitions.remove(&p);
    });
    match result {
        Err(ProcessorError::LeaseLost(_)) => Ok(Exit::LeaseLost),
        Err(ProcessorError::Stopped) => Ok(Exit::Stopped),
        other => other,
    }
}

async fn run_owned(
    ctx: &Arc<ProcessorCtx>,
    p: u32,
    guard: &LeaseGuard,
    stop: &CancellationToken,
    running: &AtomicBool,
) -> Result<Exit, ProcessorError> {
    let cfg = &ctx.cfg;
    let group = &cfg.ingest.consumer_name;
    let stream = ctx
        .js
        .get_stream(&cfg.streams.metrics.name)
        .await
        .map_err(ProcessorError::nats("look up the metrics stream"))?;
    let consumer_name = consume::consumer_name(group, p);
    let acked_before = consume::acked_before(&stream, &consumer_name).await?;

    // Restore the checkpoint, or rebuild from the stream's start.
    let checkpoint_name = CheckpointStore::object_name(group, p);
    let rules = ctx.rules();
    let mut pipeline = Pipeline::new(&cfg.pipeline, &cfg.ingest, rules.clone());
    let last_seq = match ctx.store.load(&checkpoint_name, &mut pipeline).await? {
        Ok(h) if h.partition == p => h.last_seq,
        found => {
            let why = match found {
                Ok(h) => format!("it is partition {}'s", h.partition),
                Err(NoCheckpoint::Unreadable(why)) => why,
                Err(NoCheckpoint::Missing) => "none".into(),
            };
            if why == "none" {
                tracing::info!(
                    partition = p,
                    "no checkpoint: building the partition's state from the stream"
                );
            } else {
                metrics::counter!(telemetry::CHECKPOINTS_UNREADABLE).increment(1);
                tracing::warn!(partition = p, checkpoint = %checkpoint_name, reason = %why, "unreadable checkpoint ignored: rebuilding the partition's state from the stream (alerts it already published are not published again)");
            }
            pipeline = Pipeline::new(&cfg.pipeline, &cfg.ingest, rules.clone());
            0
        }
    };
    let info = stream.cached_info().state.clone();
    if last_seq > 0 && last_seq + 1 < info.first_sequence {
        tracing::warn!(
            partition = p,
            checkpoint_seq = last_seq,
            first_seq = info.first_sequence,
            "messages after the checkpoint expired from the stream before they were processed"
        );
    }
    let consumer = consume::recreate(&stream, cfg, p, last_seq).await?;
    let suppressor = Suppressor::new(&ctx.js, &cfg.streams.alerts.name, acked_before).await?;
    let publisher = Publisher::new(ctx.js.clone(), p);
    tracing::info!(
        partition = p,
        from_seq = last_seq + 1,
        acked_before,
        series = pipeline.series_count(),
        "partition taken over"
    );

    let messages = consumer
        .stream()
        .max_messages_per_batch(cfg.ingest.max_batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(ProcessorError::nats("start pulling"))?
        .ready_chunks(cfg.ingest.max_batch);
    let (pulled_tx, mut pulled) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
    let progress = Arc::new(PullProgress::default());
    let has_timers = Arc::new(AtomicBool::new(pipeline.has_timers()));
    // Helper tasks end with this partition.
    let tasks = CancellationToken::new();
    let _end_tasks = tasks.clone().drop_guard();
    spawn_until(
        &tasks,
        consume::pull_batches(
            messages,
            cfg.ingest.max_batch_bytes,
            pulled_tx,
            progress.clone(),
        ),
    );
    spawn_until(
        &tasks,
        poll_lag(
            ctx.clone(),
            stream.clone(),
            consumer_name.clone(),
            p,
            progress.clone(),
        ),
    );
    spawn_until(
        &tasks,
        tick_when_quiet(ctx.clone(), p, guard.clone(), progress, has_timers.clone()),
    );

    let worker = PipelineWorker::start(pipeline, p, last_seq);
    // Series lookups for the API: every partition hears each request, and the one that holds
    // the series answers (the others stay silent).
    let mut queries = ctx
        .js
        .client()
        .subscribe(subjects::SERIES_QUERY)
        .await
        .map_err(ProcessorError::nats("subscribe to series queries"))?;
    let mut sink = DoneSink {
        ctx: ctx.clone(),
        partition: p,
        publisher,
        suppressor,
        last_seq,
        has_timers,
        logs: LogLimiter::new(Duration::from_secs(10)),
        m: SinkMetrics::new(p),
        rules: rules
            .rules
            .iter()
            .map(|r| {
                let evaluations =
                    metrics::counter!(telemetry::RULE_EVALUATIONS, "rule" => r.name.clone());
                (r.name.clone(), evaluations)
            })
            .collect(),
    };
    set_status(ctx, p, PartitionPhase::Running, last_seq, None);
    // From here on a stop is graceful: in-flight work finishes and a checkpoint is written.
    running.store(true, Ordering::Relaxed);

    let checkpoint_every = Duration::from_millis(cfg.pipeline.checkpoint_interval_ms);
    // A partition waits while its state is serialised (tens of ms per 10,000 series). The
    // partitions' first checkpoints are spread over the interval, and so are the later ones,
    // so that they do not all pause at once, competing for the cores.
    let mut next_checkpoint = Instant::now()
        + checkpoint_every
        + first_checkpoint_offset(checkpoint_every, p, cfg.streams.partitions);
    let mut checkpointed_seq = last_seq;
    let mut upload: Option<tokio::task::JoinHandle<()>> = None;
    // Batches in the pipeline thread; the next is pulled while one is processed, and results are
    // published and acked strictly in order.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Processed batches whose events are sent, each waiting for the stream's acks before its
    // messages are acked: the loop goes on pulling, processing and sending meanwhile (waiting
    // here for each batch's acks held the next trigger back by a round trip to the server).
    let mut publishing: VecDeque<Publishing> = VecDeque::new();
    // Ends the waits for the stream's acks: a stop's deadline.
    let give_up = CancellationToken::new();
    // Before a checkpoint no new batch is started, so the snapshot covers exactly what is acked.
    let mut draining = false;
    // One timer for the next checkpoint, reset when it moves (not a new one per batch).
    let checkpoint_due = tokio::time::sleep_until(next_checkpoint);
    tokio::pin!(checkpoint_due);
    let end = loop {
        let upload_idle = upload.as_ref().is_none_or(|h| h.is_finished());
        if !checkpoint_every.is_zero() && Instant::now() >= next_checkpoint && upload_idle {
            draining = true;
        }
        if draining && in_flight.is_empty() && publishing.is_empty() {
            if sink.last_seq != checkpointed_seq && guard.wait_valid(stop).await.is_ok() {
                upload = Some(checkpoint(ctx, &worker, p, sink.last_seq, &checkpoint_name));
                checkpointed_seq = sink.last_seq;
            }
            next_checkpoint = Instant::now() + checkpoint_every;
            checkpoint_due.as_mut().reset(next_checkpoint);
            draining = false;
        }
        let can_pull = !draining && in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            _ = guard.lost() => break Exit::LeaseLost,
            _ = stop.cancelled() => break Exit::Stopped,
            stored = async {
                match publishing.front_mut() {
                    Some(p) => p.stored().await,
                    None => std::future::pending().await,
                }
            } => {
                stored?;
                let p = publishing.pop_front().expect("a batch publishing");
                sink.acked(p, guard, stop).await?;
            }
            done = async {
                match in_flight.front_mut() {
                    Some(batch) => (&mut batch.done).await,
                    None => std::future::pending().await,
                }
            }, if publishing.len() < MAX_PUBLISHING => {
                let batch = in_flight.pop_front().expect("a batch in flight");
                let done = done.map_err(|_| ProcessorError::Permanent("the pipeline thread stopped".into()))?;
                publishing.push_back(sink.send(done, batch, guard, stop, &give_up).await?);
            }
            next = pulled.recv(), if can_pull => {
                let Some(Pulled { batch, last, traces }) = next else {
                    return Err(ProcessorError::Nats("the consumer's message stream ended".into()));
                };
                let done = worker
                    .submit(batch)
                    .ok_or_else(|| ProcessorError::Permanent("the pipeline thread stopped".into()))?;
                in_flight.push_back(InFlight { started: Instant::now(), traces, ack: last, done });
            }
            _ = &mut checkpoint_due, if !checkpoint_every.is_zero() && !draining && Instant::now() < next_checkpoint => {}
            Some(q) = queries.next() => answer_query(ctx, &worker, q),
        }
    };
    if end == Exit::LeaseLost {
        tracing::warn!(
            partition = p,
            "lease lost: stopped without publishing or acking more"
        );
        return Ok(Exit::LeaseLost);
    }
    // Graceful: finish what was started, publish and ack it, then a final checkpoint, all
    // within a few seconds: a stop that comes while NATS is away must not wait for it.
    let deadline = Instant::now() + Duration::from_secs(4);
    let hurry = give_up;
    let hurry_on = {
        let hurry = hurry.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            hurry.cancel();
        })
    };
    while let Some(mut batch) = in_flight.pop_front() {
        let Ok(done) = (&mut batch.done).await else {
            continue;
        };
        match sink.send(done, batch, guard, &hurry, &hurry).await {
            Ok(p) => publishing.push_back(p),
            Err(_) => break,
        }
    }
    while let Some(mut p) = publishing.pop_front() {
        if p.stored().await.is_err() || sink.acked(p, guard, &hurry).await.is_err() {
            break;
        }
    }
    if let Some(u) = upload {
        let _ = tokio::time::timeout_at(deadline, u).await;
    }
    if sink.last_seq != checkpointed_seq
        && !hurry.is_cancelled()
        && ctx.js.client().connection_state() == async_nats::connection::State::Connected
        && guard.wait_valid(&hurry).await.is_ok()
    {
        let u = checkpoint(ctx, &worker, p, sink.last_seq, &checkpoint_name);
        let _ = tokio::time::timeout_at(deadline, u).await;
    }
    hurry_on.abort();
    tracing::info!(
        partition = p,
        last_seq = sink.last_seq,
        "partition released"
    );
    Ok(Exit::Stopped)
}

/// Answers a series lookup (off the loop: the pipeline thread answers between batches).
fn answer_query(ctx: &Arc<ProcessorCtx>, worker: &PipelineWorker, q: async_nats::Message) {
    let Some(reply) = q.reply else { return };
    let Ok(key) = std::str::from_utf8(&q.payload) else {
        return;
    };
    let Some(rx) = worker.describe(key.to_string()) else {
        return;
    };
    let client = ctx.js.client();
    tokio::spawn(async move {
        // Found: the series as JSON; not held here: an empty answer (the asker counts them,
        // one per partition, to say "not found" without waiting).
        let body = match rx.await {
            Ok(Some(view)) => serde_json::to_vec(&view).expect("serialises"),
            Ok(None) => Vec::new(),
            Err(_) => return,
        };
        let _ = client.publish(reply, body.into()).await;
    });
}

/// How much later than the others partition `p` of `partitions` takes its first checkpoint:
/// an equal share of the interval each.
fn first_checkpoint_offset(every: Duration, p: u32, partitions: u32) -> Duration {
    every.mul_f64(f64::from(p % partitions.max(1)) / f64::from(partitions.max(1)))
}

/// Checkpoints the partition: the pipeline thread cuts its state at once and then writes it
/// between batches, streamed to the object store. Returns at once with the upload, which ends
/// when the object is stored (the next checkpoint waits for it).
fn checkpoint(
    ctx: &Arc<ProcessorCtx>,
    worker: &PipelineWorker,
    p: u32,
    last_seq: u64,
    name: &str,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let serialised = worker.checkpoint(p, last_seq, tx);
    let store = ctx.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        let (saved, serialised) = tokio::join!(store.store.save(&name, rx), async move {
            match serialised {
                Some(reply) => reply
                    .await
                    .map_err(|_| "the pipeline thread stopped".to_string()),
                None => Err("the pipeline thread stopped".to_string()),
            }
        });
        match serialised {
            Ok(Ok(s)) => {
                metrics::histogram!(telemetry::CHECKPOINT_SERIALISE_DURATION).record(s.seconds);
                metrics::histogram!(telemetry::CHECKPOINT_PAUSE_DURATION).record(s.pause_seconds);
                metrics::gauge!(telemetry::CHECKPOINT_SERIES, "partition" => p.to_string())
                    .set(s.series as f64);
                tracing::debug!(
                    partition = p,
                    bytes = s.bytes,
                    series = s.series,
                    seconds = s.seconds,
                    pause_seconds = s.pause_seconds,
                    "checkpoint serialised"
                );
            }
            // Cut off by a stop or a lost lease, or unencodable state: the upload was told,
            // and the last complete checkpoint stays.
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(partition = p, error = %e, "checkpoint not completed; the last complete one stays");
                return;
            }
        }
        if let Err(e) = saved {
            tracing::warn!(partition = p, error = %e, "checkpoint write failed; retried at the next interval");
        }
    })
}

/// Waits for the stream acks of what a batch caused.
type StoredFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ProcessorError>> + Send>>;

/// A processed batch whose events and dead letters are sent: its messages are acked once they
/// are stored. Batches are acked strictly in order (acking a batch's last message acks every
/// earlier one), while later batches are processed and sent meanwhile.
struct Publishing {
    batch: InFlight,
    done: BatchDone,
    /// `None`: nothing to wait for.
    stored: Option<StoredFuture>,
}

impl Publishing {
    async fn stored(&mut self) -> Result<(), ProcessorError> {
        match &mut self.stored {
            Some(f) => f.await,
            None => Ok(()),
        }
    }
}

/// Publishes what a batch caused, then acks it.
struct DoneSink {
    ctx: Arc<ProcessorCtx>,
    partition: u32,
    publisher: Publisher,
    suppressor: Suppressor,
    /// Every message up to here is processed, its effects stored and acked.
    last_seq: u64,
    has_timers: Arc<AtomicBool>,
    logs: LogLimiter,
    m: SinkMetrics,
    /// The partition's rules by index (what the pipeline's evaluation counts refer to), with
    /// their evaluation counters: registered once, not looked up in the registry per batch (a
    /// lookup allocates its key, and a batch of one message is common).
    rules: Vec<(String, metrics::Counter)>,
}

/// The metric handles a partition records into after every batch (registered once).
struct SinkMetrics {
    latency: metrics::Histogram,
    batch_duration: metrics::Histogram,
    messages: metrics::Counter,
    points: metrics::Counter,
    late: metrics::Counter,
    deduplicated: metrics::Counter,
    out_of_order: metrics::Counter,
    evicted: metrics::Counter,
    quarantined: metrics::Counter,
    series: metrics::Gauge,
    watermark: metrics::Gauge,
}

impl SinkMetrics {
    fn new(p: u32) -> Self {
        let part = p.to_string();
        Self {
            latency: metrics::histogram!(telemetry::PROCESSING_LATENCY),
            batch_duration: metrics::histogram!(telemetry::BATCH_DURATION),
            messages: metrics::counter!(telemetry::MESSAGES_RECEIVED),
            points: metrics::counter!(telemetry::POINTS_RECEIVED),
            late: metrics::counter!(telemetry::POINTS_LATE),
            deduplicated: metrics::counter!(telemetry::POINTS_DEDUPLICATED),
            out_of_order: metrics::counter!(telemetry::POINTS_OUT_OF_ORDER),
            evicted: metrics::counter!(telemetry::SERIES_EVICTED),
            quarantined: metrics::counter!(telemetry::SERIES_QUARANTINED_TOTAL),
            series: metrics::gauge!(telemetry::SERIES_ACTIVE, "partition" => part.clone()),
            watermark: metrics::gauge!(telemetry::WATERMARK, "partition" => part),
        }
    }
}

impl DoneSink {
    /// Sends what a processed batch caused (in batch order); its messages are acked once that is
    /// stored ([`Publishing::stored`], then [`DoneSink::acked`]). `give_up` ends the wait for
    /// the stream's acks (a stop's deadline).
    async fn send(
        &mut self,
        done: BatchDone,
        batch: InFlight,
        guard: &LeaseGuard,
        stop: &CancellationToken,
        give_up: &CancellationToken,
    ) -> Result<Publishing, ProcessorError> {
        let out = &done.output;
        let mut stored = None;
        if !out.events.is_empty() || !out.rejects.is_empty() {
            self.log_rejects(&done);
            let traceparents = trace_events(&batch.traces, &done);
            let sent = self
                .publisher
                .send_batch(
                    &done.batch,
                    (&out.events, &traceparents),
                    &out.rejects,
                    &mut self.suppressor,
                    guard,
                    stop,
                )
                .await?;
            if sent.is_empty() {
                sent.record();
            } else {
                let (publisher, guard, give_up) =
                    (self.publisher.clone(), guard.clone(), give_up.clone());
                stored = Some(Box::pin(async move {
                    publisher.stored(sent, &guard, &give_up).await.map(drop)
                }) as StoredFuture);
            }
        }
        Ok(Publishing {
            batch,
            done,
            stored,
        })
    }

    /// Acks a batch whose effects are stored, and records it.
    async fn acked(
        &mut self,
        publishing: Publishing,
        guard: &LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<(), ProcessorError> {
        let Publishing { batch, done, .. } = publishing;
        let out = &done.output;
        // Cumulative ack: the batch's last message acks all of it, now that all it caused is
        // stored. Only while the lease holds: a lost partition's messages are the next owner's.
        guard.wait_valid(stop).await?;
        if let Some(last) = batch.ack {
            if let Err(e) = last.ack_with(AckKind::Ack).await {
                tracing::warn!(partition = self.partition, error = %e, "ack failed (the messages come back after ack_wait and are skipped)");
            }
        }
        self.last_seq = done
            .batch
            .iter()
            .map(|m| m.stream_seq)
            .fold(self.last_seq, u64::max);
        self.has_timers.store(done.has_timers, Ordering::Relaxed);
        self.ctx
            .registry
            .claim(self.partition, &out.claims, &done.batch);
        self.record(&done, batch.started);
        Ok(())
    }

    fn log_rejects(&mut self, done: &BatchDone) {
        for r in &done.output.rejects {
            let Some(suppressed) = self.logs.allow(r.reason.as_str()) else {
                continue;
            };
            let m = &done.batch[r.msg as usize];
            let msg = "metric points dropped and dead-lettered";
            match r.reason {
                RejectReason::Panic => {
                    tracing::error!(partition = self.partition, reason = r.reason.as_str(), subject = %m.subject, seq = m.stream_seq, points = r.points, detail = %r.detail, suppressed, "{msg}")
                }
                _ => {
                    tracing::warn!(partition = self.partition, reason = r.reason.as_str(), subject = %m.subject, seq = m.stream_seq, points = r.points, detail = %r.detail, suppressed, "{msg}")
                }
            }
        }
    }

    fn record(&mut self, done: &BatchDone, started: Instant) {
        let s = &done.output.stats;
        let m = &self.m;
        m.messages.increment(s.messages - s.ticks);
        m.points.increment(s.points);
        m.late.increment(s.late);
        m.deduplicated.increment(s.shards.duplicates);
        m.out_of_order.increment(s.shards.out_of_order);
        m.evicted.increment(s.shards.series_evicted);
        m.quarantined.increment(s.shards.series_quarantined);
        m.series.set(done.series as f64);
        m.watermark.set(done.watermark.max(0) as f64 / 1000.0);
        for r in &done.output.rejects {
            metrics::counter!(telemetry::POINTS_REJECTED, "reason" => r.reason.as_str())
                .increment(r.points as u64);
        }
        let now_ms = clock::now_ms();
        for msg in &done.batch {
            m.latency
                .record((now_ms - msg.published_ms).max(0) as f64 / 1000.0);
        }
        m.batch_duration.record(started.elapsed().as_secs_f64());
        for p in &done.output.predictions {
            let outcome = p.outcome.as_str();
            metrics::counter!(telemetry::PREDICTIONS, "rule" => p.rule.clone(), "outcome" => outcome)
                .increment(1);
            self.ctx
                .rule_counts
                .add(&super::rulestats::prediction_key(&p.rule, outcome), 1);
            if let crate::rules::prediction::Outcome::Hit { error_ms } = p.outcome {
                metrics::histogram!(telemetry::PREDICTION_ERROR, "rule" => p.rule.clone())
                    .record(error_ms as f64 / 1000.0);
                self.ctx.rule_counts.add(
                    &super::rulestats::prediction_key(&p.rule, "abs_error_ms"),
                    error_ms.unsigned_abs(),
                );
            }
        }
        let evaluated = || {
            done.output
                .rule_evaluations
                .iter()
                .zip(&self.rules)
                .filter(|(&n, _)| n > 0)
                .map(|(&n, (rule, counter))| (rule.as_str(), counter, n))
        };
        for (_, counter, n) in evaluated() {
            counter.increment(n);
        }
        self.ctx
            .rule_counts
            .add_all(evaluated().map(|(rule, _, n)| (rule, n)));
        if let Some(slos) = &done.slos {
            telemetry::record_slos(slos);
        }
        let (p, last_seq) = (self.partition, self.last_seq);
        self.ctx.status.update(|st| {
            if let Some(ps) = st.processor.partitions.get_mut(&p) {
                ps.last_seq = last_seq;
                ps.series = done.series;
                ps.sources = done.sources;
                ps.quarantined = done.quarantined;
                if let Some(slos) = &done.slos {
                    ps.slos = slos.clone();
                }
            }
            if done.slos.is_some() {
                let all: Vec<_> = st
                    .processor
                    .partitions
                    .values()
                    .flat_map(|ps| ps.slos.iter().cloned())
                    .collect();
                let score = (!all.is_empty()).then(|| crate::slo::experience_score(&all));
                st.processor.experience_score = score;
                if let Some(s) = score {
                    metrics::gauge!(telemetry::SLO_EXPERIENCE_SCORE).set(s);
                }
            }
        });
    }
}

/// The spans of a batch's sampled messages: each one's evaluation, and the publish of each alert
/// event it caused; returns the events' `traceparent` headers (all `None` without a sample).
fn trace_events(traces: &[crate::trace::Traced], done: &BatchDone) -> Vec<Option<String>> {
    use opentelemetry::KeyValue;
    let events = &done.output.events;
    let mut out = vec![None; events.len()];
    for t in traces {
        let Some(msg) = done.batch.iter().position(|m| m.stream_seq == t.stream_seq) else {
            continue;
        };
        let caused: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].msg as usize == msg)
            .collect();
        let cx = crate::trace::evaluated(t, done.output.stats.points, caused.len());
        for i in caused {
            let e = &events[i].event;
            out[i] = crate::trace::step(
                &cx,
                "prismwatch.alert.publish",
                opentelemetry::trace::SpanKind::Producer,
                vec![
                    KeyValue::new("prismwatch.alert.id", e.id.clone()),
                    KeyValue::new("prismwatch.rule", e.rule.clone()),
                    KeyValue::new("prismwatch.alert.status", e.status.token()),
                ],
            );
        }
    }
    out
}

fn set_status(ctx: &ProcessorCtx, p: u32, phase: PartitionPhase, last_seq: u64, lag: Option<u64>) {
    ctx.status.update(|s| {
        let e = s
            .processor
            .partitions
            .entry(p)
            .or_insert_with(|| PartitionStatus {
                phase,
                owned_since_ms: clock::now_ms(),
                last_seq,
                lag: 0,
                series: 0,
                sources: 0,
                quarantined: 0,
                slos: Vec::new(),
            });
        e.phase = phase;
        e.last_seq = e.last_seq.max(last_seq);
        if let Some(lag) = lag {
            e.lag = lag;
        }
    });
}

fn spawn_until(
    tasks: &CancellationToken,
    f: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let tasks = tasks.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tasks.cancelled() => {}
            _ = f => {}
        }
    });
}

/// Refreshes the partition's lag (messages not yet delivered) every `pending_poll_secs`. While
/// messages flow, the lag is the pending count the server stamped on the last one delivered;
/// the server is asked (consumer info) only when nothing was delivered since the last refresh.
/// Asking it under load is not free: consumer info on a filtered consumer of a busy stream took
/// 0.6-23 ms per call, and with the 4 partitions asking every 5 s the half-load latency runs
/// had stalls of 0.1-0.6 s (worst 123, 197, 595 ms); without the calls, 46-74 ms in 5 runs.
async fn poll_lag(
    ctx: Arc<ProcessorCtx>,
    stream: jetstream::stream::Stream,
    consumer: String,
    p: u32,
    progress: Arc<PullProgress>,
) {
    let gauge = metrics::gauge!(telemetry::CONSUMER_PENDING, "partition" => p.to_string());
    let mut tick =
        tokio::time::interval(Duration::from_secs(ctx.cfg.ingest.pending_poll_secs.max(1)));
    // Never equal to a count: the first refresh asks the server.
    let mut seen = u64::MAX;
    loop {
        tick.tick().await;
        let pulled = progress.pulled.load(Ordering::Relaxed);
        let lag = if pulled != seen {
            progress.pending.load(Ordering::Relaxed)
        } else {
            match stream.consumer_info(&consumer).await {
                Ok(info) => info.num_pending,
                Err(_) => continue,
            }
        };
        seen = pulled;
        gauge.set(lag as f64);
        ctx.status.update(|s| {
            if let Some(ps) = s.processor.partitions.get_mut(&p) {
                ps.lag = lag;
            }
        });
    }
}

/// Stores a tick on the partition's tick subject when nothing arrived for a while, so stream
/// time (and every quiet source's clock) moves live: every `tick_interval_ms` while some timer
/// waits, else every `quiet_tick_interval_ms` (idle eviction only needs it now and then).
async fn tick_when_quiet(
    ctx: Arc<ProcessorCtx>,
    p: u32,
    guard: LeaseGuard,
    progress: Arc<PullProgress>,
    has_timers: Arc<AtomicBool>,
) {
    let pc = &ctx.cfg.processor;
    let every = Duration::from_millis(pc.tick_interval_ms.max(10));
    let quiet_every = Duration::from_millis(pc.quiet_tick_interval_ms.max(pc.tick_interval_ms));
    let subject = crate::subjects::tick_subject(p);
    let mut seen = progress.pulled.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let mut last_tick = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let now_seen = progress.pulled.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            quiet_since = Instant::now();
            continue;
        }
        let want = if has_timers.load(Ordering::Relaxed) {
            every
        } else {
            quiet_every
        };
        if quiet_since.elapsed() < every || last_tick.elapsed() < want {
            continue;
        }
        if guard.wait_valid(&CancellationToken::new()).await.is_err() {
            return;
        }
        match ctx.js.publish(subject.clone(), bytes::Bytes::new()).await {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::debug!(partition = p, error = %e, "tick not stored");
                }
            }
            Err(e) => tracing::debug!(partition = p, error = %e, "tick not sent"),
        }
        last_tick = Instant::now();
        metrics::counter!(telemetry::TICKS).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partitions_first_checkpoints_share_the_interval_out() {
        let every = Duration::from_secs(30);
        let offsets: Vec<f64> = (0..4)
            .map(|p| first_checkpoint_offset(every, p, 4).as_secs_f64())
            .collect();
        assert_eq!(offsets, [0.0, 7.5, 15.0, 22.5]);
        // A partition number past the count (a stream with more partitions than configured)
        // still lands inside the interval; no partitions at all does not divide by zero.
        assert_eq!(first_checkpoint_offset(every, 5, 4).as_secs_f64(), 7.5);
        assert_eq!(first_checkpoint_offset(every, 0, 0), Duration::ZERO);
    }
}

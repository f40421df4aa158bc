//! Replay: a range of `PRISM_METRICS` through fresh pipelines, one per partition, exactly as
//! the live processor would process it (same decoding, timelines, ticks and batching), with
//! nothing published. For `prismwatch replay` and backtests.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};

use super::consume::{self, BatchCut};
use crate::config::Config;
use crate::ingest::Incoming;
use crate::model::AlertEvent;
use crate::pipeline::{BatchOutput, MessageReject, Pipeline};
use crate::rules::RuleSet;
use crate::subjects;

/// What a replay read and gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub messages: u64,
    pub points: u64,
    pub rejected_points: u64,
    pub events: u64,
}

/// The stream sequences a time range of `PRISM_METRICS` covers (store times, ms since the
/// epoch): the first message stored at or after `from`, and the last stored at or before `to`
/// (`None`: to the stream's end). JetStream finds both (start-by-time consumers).
pub async fn seq_range_of_times(
    js: &jetstream::Context,
    cfg: &Config,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<(u64, Option<u64>)> {
    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    // The sequence of the first message stored at or after `t`, if any.
    let first_at = |t: i64| {
        let stream = stream.clone();
        async move {
            let start = time::OffsetDateTime::from_unix_timestamp_nanos(t as i128 * 1_000_000)
                .map_err(|e| anyhow::anyhow!("time {t}: {e}"))?;
            let c = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
                    ..Default::default()
                })
                .await?;
            let pending = c.cached_info().num_pending;
            if pending == 0 {
                return Ok::<Option<u64>, anyhow::Error>(None);
            }
            let mut messages = c.messages().await?;
            match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
                Ok(Some(Ok(m))) => Ok(m.info().ok().map(|i| i.stream_sequence)),
                _ => Ok(None),
            }
        }
    };
    let from_seq = match from {
        None => 1,
        Some(t) => first_at(t).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "empty range: no message stored at or after {}",
                crate::tools::tail::format_ms(t) + " UTC"
            )
        })?,
    };
    let to_seq = match to {
        None => None,
        Some(t) => first_at(t + 1).await?.map(|s| s.saturating_sub(1)),
    };
    Ok((from_seq, to_seq))
}

/// The stored-subject filters (`prism.part.*...`) for subject filters given in the published
/// form (`prism.metrics.exchange.binance.>`, or relative: `exchange.binance.>`), plus the
/// partitions' ticks (they move stream time, as they did live) unless a filter covers them.
/// Empty: no filter.
pub fn stored_filters(filters: &[String]) -> anyhow::Result<Vec<String>> {
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut ticks_covered = false;
    for f in filters {
        let rest = f
            .strip_prefix(&format!("{}.", subjects::METRICS_PREFIX))
            .unwrap_or(f);
        let tokens: Vec<&str> = rest.split('.').collect();
        anyhow::ensure!(
            !rest.is_empty() && tokens.iter().all(|t| !t.is_empty()),
            "subject filter {f:?}: expected prism.metrics.<domain>.<source>.<metric> with * and > wildcards"
        );
        ticks_covered |= tokens[0] == ">";
        out.push(format!("{}.*.{rest}", subjects::PARTITION_PREFIX));
    }
    if !ticks_covered {
        out.push(format!("{}.*.tick", subjects::PARTITION_PREFIX));
    }
    Ok(out)
}

/// Messages a replay asks the server for at a time. The ordered consumer asks for 500 and
/// refills at 250 (fixed in async-nats, nats-io/nats.rs#1611): on this machine a replay then
/// waits on those round trips with a core to spare. Bigger requests keep the server streaming.
const READ_BATCH: usize = 8_192;
/// At most this many bytes per request (a bound on what is buffered, whatever the messages' size).
const READ_BATCH_BYTES: usize = 8 << 20;
/// Consumers a read may recreate in a row without getting a single message further, waiting
/// this much longer before each (0.5 + 1 + ... + 2.5 s: a server restart).
const READ_RETRIES: u32 = 5;
const READ_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Reads stream messages `from..=to` (to the stream's last when `to` is `None`) in order, only
/// those on `filters` (stored subjects; empty: all), and hands them to `sink` in chunks with
/// the count of messages still to come. Returns the messages read.
///
/// The reader is an ephemeral pull consumer that acknowledges nothing (history is read, not
/// consumed) and asks for large batches. Like an ordered consumer it checks that the consumer
/// sequences follow each other; after a gap (a message lost on a reconnect) or an error it
/// reads on from the next stream sequence with a new consumer, so nothing is skipped or read
/// twice.
pub async fn read_range(
    js: &jetstream::Context,
    cfg: &Config,
    from: u64,
    to: Option<u64>,
    filters: &[String],
    mut sink: impl FnMut(Vec<Incoming>, u64) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let last = stream.info().await?.state.last_sequence;
    let end = to.unwrap_or(last).min(last);
    anyhow::ensure!(
        from >= 1 && from <= end,
        "empty range: messages {from}..={end} (the stream holds up to {last})"
    );
    let mut cursor = Cursor {
        end,
        next_seq: from,
        read: 0,
        chunk: Vec::with_capacity(Cursor::CHUNK),
    };
    let mut retries = 0;
    loop {
        if retries > 0 {
            // A server whose JetStream is still starting refuses at once: give it a moment.
            tokio::time::sleep(READ_RETRY_PAUSE * retries).await;
        }
        let before = cursor.next_seq;
        let Err(fault) = read_with_one_consumer(&stream, filters, &mut cursor, &mut sink).await?
        else {
            break;
        };
        if cursor.next_seq > before {
            retries = 0;
        }
        retries += 1;
        anyhow::ensure!(
            retries <= READ_RETRIES,
            "{fault} ({retries} consumers in a row without progress)"
        );
        tracing::warn!(%fault, next_seq = cursor.next_seq, "replay: reading on with a new consumer");
    }
    if !cursor.chunk.is_empty() {
        sink(std::mem::take(&mut cursor.chunk), 0)?;
    }
    Ok(cursor.read)
}

/// Where a range read stands: the next stream sequence to read, up to `end`, and the messages
/// read but not yet handed over.
struct Cursor {
    end: u64,
    next_seq: u64,
    read: u64,
    chunk: Vec<Incoming>,
}

impl Cursor {
    /// Messages handed to the sink at a time.
    const CHUNK: usize = 512;
}

/// Reads on from `cursor.next_seq` with a new consumer until the range's end (`Ok(Ok(()))`) or
/// a fault the caller reads on from with another consumer (`Ok(Err(why))`); the sink's errors
/// end the read. The consumer is deleted either way.
async fn read_with_one_consumer(
    stream: &jetstream::stream::Stream,
    filters: &[String],
    cursor: &mut Cursor,
    sink: &mut impl FnMut(Vec<Incoming>, u64) -> anyhow::Result<()>,
) -> anyhow::Result<Result<(), String>> {
    let consumer: consumer::PullConsumer = match stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: cursor.next_seq,
            },
            ack_policy: consumer::AckPolicy::None,
            replay_policy: consumer::ReplayPolicy::Instant,
            filter_subjects: filters.to_vec(),
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("creating a replay consumer: {e}"))),
    };
    let name = consumer.cached_info().name.clone();
    let result = if consumer.cached_info().num_pending == 0 {
        // Nothing left on the filters up to the stream's end.
        Ok(Ok(()))
    } else {
        match consumer
            .stream()
            .max_messages_per_batch(READ_BATCH)
            .max_bytes_per_batch(READ_BATCH_BYTES)
            // A consumer lost with a restarting server shows as missing heartbeats within
            // seconds (the stall timeout below would take 10).
            .heartbeat(Duration::from_secs(1))
            .expires(Duration::from_secs(10))
            .messages()
            .await
        {
            Ok(messages) => read_messages(messages, cursor, sink).await,
            Err(e) => Ok(Err(format!("replay consumer: {e}"))),
        }
    };
    delete_quietly(stream, &name).await;
    result
}

/// Takes one consumer's messages into the cursor (see [`read_with_one_consumer`]).
async fn read_messages(
    mut messages: consumer::pull::Stream,
    cursor: &mut Cursor,
    sink: &mut impl FnMut(Vec<Incoming>, u64) -> anyhow::Result<()>,
) -> anyhow::Result<Result<(), String>> {
    let end = cursor.end;
    let mut consumer_seq = 0;
    loop {
        // A message at hand is taken without arming a timer (one per message costs a clock
        // read and a timer-wheel entry); the stall timeout only when waiting.
        let next = match messages.next().now_or_never() {
            Some(m) => Ok(m),
            None => tokio::time::timeout(Duration::from_secs(10), messages.next()).await,
        };
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Ok(Err(format!("replay consumer error: {e}"))),
            Ok(None) => {
                return Ok(Err(format!(
                    "replay consumer's messages ended before sequence {end}"
                )))
            }
            Err(_) => {
                return Ok(Err(format!(
                    "replay stalled: no message for 10 s before reaching sequence {end}"
                )))
            }
        };
        let Ok(info) = msg.info() else {
            continue;
        };
        if info.consumer_sequence != consumer_seq + 1 {
            return Ok(Err(format!(
                "replay consumer skipped from {consumer_seq} to {}",
                info.consumer_sequence
            )));
        }
        consumer_seq = info.consumer_sequence;
        let pending = info.pending;
        let inc = consume::incoming_with(&msg, &info);
        cursor.next_seq = inc.stream_seq + 1;
        let done = inc.stream_seq >= end || pending == 0;
        if inc.stream_seq <= end {
            cursor.read += 1;
            cursor.chunk.push(inc);
            if cursor.chunk.len() >= Cursor::CHUNK {
                let full = std::mem::replace(&mut cursor.chunk, Vec::with_capacity(Cursor::CHUNK));
                sink(full, pending)?;
            }
        }
        if done {
            return Ok(Ok(()));
        }
    }
}

/// Deletes a reader's consumer, best effort: it would expire after its `inactive_threshold`
/// anyway.
async fn delete_quietly(stream: &jetstream::stream::Stream, name: &str) {
    let _ = stream.delete_consumer(name).await;
}

/// One partition's pipeline and its batch being filled.
struct Lane {
    pipeline: Pipeline,
    batch: Vec<Incoming>,
    cut: BatchCut,
}

/// A batch a lane ran, and what its pipeline made of it.
pub struct Flushed {
    pub batch: Vec<Incoming>,
    pub out: BatchOutput,
}

impl Flushed {
    /// Rejected messages with their reasons.
    pub fn rejects(&self) -> Vec<(Incoming, MessageReject)> {
        self.out
            .rejects
            .iter()
            .map(|r| (self.batch[r.msg as usize].clone(), r.clone()))
            .collect()
    }
}

/// Fresh pipelines, one per partition, fed stored messages in order and run in batches of
/// `ingest.max_batch` messages (or fewer that reach `ingest.max_batch_bytes`), as the live
/// processor cuts them: every replay of a range gives the same sequence.
pub struct Lanes {
    pipeline: crate::pipeline::PipelineConfig,
    ingest: crate::ingest::IngestConfig,
    rules: RuleSet,
    watched: Option<Arc<HashSet<Arc<str>>>>,
    lanes: BTreeMap<Option<u32>, Lane>,
}

impl Lanes {
    pub fn new(cfg: &Config, rules: &RuleSet) -> Self {
        Self {
            pipeline: cfg.pipeline.clone(),
            ingest: cfg.ingest.clone(),
            rules: rules.clone(),
            watched: None,
            lanes: BTreeMap::new(),
        }
    }

    /// Traces every point of these series (see [`Pipeline::watch`]).
    pub fn watch(&mut self, series: Arc<HashSet<Arc<str>>>) {
        for lane in self.lanes.values_mut() {
            lane.pipeline.watch(series.clone());
        }
        self.watched = Some(series);
    }

    /// Adds one message; returns its partition's batch when the message completed it.
    pub fn push(&mut self, inc: Incoming) -> Option<Flushed> {
        let part = subjects::partition_of(&inc.subject);
        let lane = self.lanes.entry(part).or_insert_with(|| {
            let mut pipeline = Pipeline::new(&self.pipeline, &self.ingest, self.rules.clone());
            if let Some(w) = &self.watched {
                pipeline.watch(w.clone());
            }
            Lane {
                pipeline,
                batch: Vec::with_capacity(self.ingest.max_batch),
                cut: BatchCut::new(self.ingest.max_batch_bytes),
            }
        });
        let full = lane.cut.add(inc.payload.len());
        lane.batch.push(inc);
        if full || lane.batch.len() >= self.ingest.max_batch {
            lane.cut = BatchCut::new(self.ingest.max_batch_bytes);
            return Some(lane.run());
        }
        None
    }

    /// Runs the batches still being filled.
    pub fn finish(&mut self) -> Vec<Flushed> {
        self.lanes
            .values_mut()
            .filter(|l| !l.batch.is_empty())
            .map(Lane::run)
            .collect()
    }
}

impl Lane {
    fn run(&mut self) -> Flushed {
        let batch = std::mem::take(&mut self.batch);
        let out = self.pipeline.process(&batch);
        Flushed { batch, out }
    }
}

/// Feeds stream messages `from..=to` (to the stream's last when `to` is `None`) through
/// [`Lanes`]. `sink` receives each batch's events and rejected messages.
pub async fn replay_range(
    js: &jetstream::Context,
    cfg: &Config,
    rules: &RuleSet,
    from: u64,
    to: Option<u64>,
    mut sink: impl FnMut(Vec<AlertEvent>, Vec<(Incoming, MessageReject)>),
) -> anyhow::Result<Replayed> {
    let mut lanes = Lanes::new(cfg, rules);
    let mut out = Replayed::default();
    let mut take = |f: Flushed| {
        out.messages += f.out.stats.messages;
        out.points += f.out.stats.points;
        out.events += f.out.events.len() as u64;
        let rejects = f.rejects();
        out.rejected_points += rejects.iter().map(|(_, r)| r.points as u64).sum::<u64>();
        sink(f.out.events.into_iter().map(|e| e.event).collect(), rejects);
    };
    read_range(js, cfg, from, to, &[], |chunk: Vec<Incoming>, _| {
        tokio::task::block_in_place(|| {
            for inc in chunk {
                if let Some(f) = lanes.push(inc) {
                    take(f);
                }
            }
        });
        Ok(())
    })
    .await?;
    for f in lanes.finish() {
        take(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::stored_filters;

    #[test]
    fn subject_filters_become_stored_subjects_with_the_ticks() {
        assert!(stored_filters(&[]).unwrap().is_empty());
        assert_eq!(
            stored_filters(&["prism.metrics.exchange.binance.>".into()]).unwrap(),
            ["prism.part.*.exchange.binance.>", "prism.part.*.tick"]
        );
        assert_eq!(
            stored_filters(&["service.*.disk_usage_percent".into()]).unwrap(),
            [
                "prism.part.*.service.*.disk_usage_percent",
                "prism.part.*.tick"
            ]
        );
        // `>` covers the ticks already (overlapping filters are refused by the server).
        assert_eq!(
            stored_filters(&["prism.metrics.>".into()]).unwrap(),
            ["prism.part.*.>"]
        );
        let err = stored_filters(&["exchange..rate".into()]).unwrap_err();
        assert!(err.to_string().contains("exchange..rate"), "{err}");
    }
}

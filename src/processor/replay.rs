//! Replay: a range of `PRISM_METRICS` through fresh pipelines, one per partition, exactly as
//! the live processor would process it (same decoding, timelines, ticks and batching), with
//! nothing published. For `prismwatch replay` and backtests.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use super::consume::{self, BatchCut};
use crate::config::Config;
use crate::ingest::Incoming;
use crate::model::AlertEvent;
use crate::pipeline::{MessageReject, Pipeline};
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

/// One partition's pipeline and its batch being filled.
struct Lane {
    pipeline: Pipeline,
    batch: Vec<Incoming>,
    cut: BatchCut,
}

/// Feeds stream messages `from..=to` (to the stream's last when `to` is `None`) through a
/// fresh pipeline per partition, in batches of `ingest.max_batch` messages (or fewer that reach
/// `ingest.max_batch_bytes`), so every replay gives the same sequence. `sink` receives each
/// batch's events and rejected messages.
pub async fn replay_range<F, Fut>(
    js: &jetstream::Context,
    cfg: &Config,
    rules: &RuleSet,
    from: u64,
    to: Option<u64>,
    mut sink: F,
) -> anyhow::Result<Replayed>
where
    F: FnMut(Vec<AlertEvent>, Vec<(Incoming, MessageReject)>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let last = stream.info().await?.state.last_sequence;
    let end = to.unwrap_or(last).min(last);
    anyhow::ensure!(
        from >= 1 && from <= end,
        "empty range: messages {from}..={end} (the stream holds up to {last})"
    );
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut lanes: BTreeMap<Option<u32>, Lane> = BTreeMap::new();
    let mut out = Replayed::default();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => anyhow::bail!("replay consumer error: {e}"),
            Ok(None) | Err(_) => {
                anyhow::bail!("replay stalled: no message for 10 s before reaching sequence {end}")
            }
        };
        let Some(inc) = consume::from_message(&msg) else {
            continue;
        };
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        let done = inc.stream_seq >= end || pending == 0;
        if inc.stream_seq <= end {
            let part = subjects::parse_stored(&inc.subject).and_then(|s| s.partition);
            let lane = lanes.entry(part).or_insert_with(|| Lane {
                pipeline: Pipeline::new(&cfg.pipeline, &cfg.ingest, rules.clone()),
                batch: Vec::with_capacity(cfg.ingest.max_batch),
                cut: BatchCut::new(cfg.ingest.max_batch_bytes),
            });
            let full = lane.cut.add(inc.payload.len());
            lane.batch.push(inc);
            if full || lane.batch.len() >= cfg.ingest.max_batch {
                lane.cut = BatchCut::new(cfg.ingest.max_batch_bytes);
                flush(lane, &mut out, &mut sink).await;
            }
        }
        if done {
            break;
        }
    }
    for lane in lanes.values_mut() {
        flush(lane, &mut out, &mut sink).await;
    }
    Ok(out)
}

async fn flush<F, Fut>(lane: &mut Lane, out: &mut Replayed, sink: &mut F)
where
    F: FnMut(Vec<AlertEvent>, Vec<(Incoming, MessageReject)>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if lane.batch.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut lane.batch);
    let result = tokio::task::block_in_place(|| lane.pipeline.process(&batch));
    out.messages += result.stats.messages;
    out.points += result.stats.points;
    out.events += result.events.len() as u64;
    let rejects: Vec<(Incoming, MessageReject)> = result
        .rejects
        .into_iter()
        .map(|r| (batch[r.msg as usize].clone(), r))
        .collect();
    out.rejected_points += rejects.iter().map(|(_, r)| r.points as u64).sum::<u64>();
    sink(
        result.events.into_iter().map(|e| e.event).collect(),
        rejects,
    )
    .await;
}

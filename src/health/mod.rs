//! Exchange health: a component that reads the exchanges' metrics from `PRISM_METRICS`, scores
//! each exchange every event-time minute, compares the exchanges with each other, and publishes
//! the results back as metrics on `prism.metrics.health.<exchange>.batch` (the platform's on
//! `prism.metrics.health.platform.batch`): rules, SLOs, the API and backtests use them as any
//! series. The exchanges are usually in different partitions, so this cannot be a per-partition
//! pipeline stage; it is one more reader of the stream.
//!
//! It keeps no state of its own: at start it reads `warmup_hours` of history (for the
//! message-rate baselines) and publishes only from `backfill_minutes` before its start on. Its
//! messages carry a `Nats-Msg-Id` made of the source and minute, so a restart within the
//! stream's duplicate window writes nothing twice, and the processor drops a point it has
//! already seen (same series, same time).

pub mod config;
pub mod engine;
pub mod peers;
pub mod score;

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use config::HealthConfig;
pub use engine::HealthEngine;

use crate::config::Config;
use crate::ingest::{Decoder, Encoding};
use crate::model::MetricPoint;
use crate::processor::replay;
use crate::subjects;
use crate::telemetry;
use crate::tools::{clock, publish};

/// The stream quiet this long (wall time), event time runs on with the clock.
const QUIET_AFTER: Duration = Duration::from_secs(60);

/// Publishes health points, one message per source (exchange, or `platform`) and minute.
async fn publish(
    js: &jetstream::Context,
    points: Vec<MetricPoint>,
    label: &str,
) -> anyhow::Result<()> {
    let mut by_source: std::collections::BTreeMap<(i64, String), Vec<MetricPoint>> =
        std::collections::BTreeMap::new();
    for p in points {
        let source = p
            .labels
            .get(label)
            .cloned()
            .unwrap_or_else(|| "platform".to_string());
        by_source.entry((p.timestamp, source)).or_default().push(p);
    }
    let mut acks = Vec::new();
    for ((ts, source), points) in by_source {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HEADER_CONTENT_TYPE, "application/msgpack");
        headers.insert("Nats-Msg-Id", format!("health-{source}-{ts}").as_str());
        let subject = subjects::metric_subject("health", &source, "batch");
        let payload = publish::encode(&points, Encoding::MsgPack)?;
        metrics::counter!(telemetry::HEALTH_POINTS_PUBLISHED).increment(points.len() as u64);
        acks.push(
            js.publish_with_headers(subject, headers, payload.into())
                .await?,
        );
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// Runs the component until `stop`.
pub async fn run(
    cfg: Config,
    js: jetstream::Context,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let hc = cfg.health.clone();
    let started = clock::now_ms();
    let publish_from = started - hc.backfill_minutes as i64 * 60_000;
    let grace = hc.grace_secs as i64 * 1000;
    let label = hc.exchange_label.clone();
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(
        (started - hc.warmup_hours as i64 * 3_600_000) as i128 * 1_000_000,
    )?;
    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            replay_policy: consumer::ReplayPolicy::Instant,
            filter_subjects: replay::stored_filters(&hc.subjects)?,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut engine = HealthEngine::new(hc);
    let mut decoder = Decoder::new(&cfg.ingest, Default::default());
    // When the last message came (wall time): a stream gone quiet moves the clock on.
    let mut last_message = tokio::time::Instant::now();
    let mut wall = tokio::time::interval(Duration::from_secs(5));
    let mut reported_late = 0;
    tracing::info!(
        from_ms = start.unix_timestamp() * 1000,
        "exchange health reading the metrics"
    );
    loop {
        let watermark = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => {
                let msg = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => anyhow::bail!("exchange health consumer: {e}"),
                    None => anyhow::bail!("exchange health consumer ended"),
                };
                let Ok(info) = msg.info() else { continue };
                last_message = tokio::time::Instant::now();
                let incoming = crate::processor::consume::incoming_with(&msg, &info);
                for p in crate::ingest::owned_points(&mut decoder, &incoming) {
                    engine.observe(&p);
                }
                engine.newest.saturating_sub(grace)
            }
            _ = wall.tick() => {
                // With every exchange silent for a minute, event time runs on with the clock, so
                // minutes still close and the silence scores 0 (as a quiet source's watermark
                // does in the processor).
                let quiet = last_message.elapsed().saturating_sub(QUIET_AFTER);
                if engine.newest == i64::MIN || quiet.is_zero() {
                    continue;
                }
                engine
                    .newest
                    .saturating_sub(grace)
                    .saturating_add(quiet.as_millis() as i64)
            }
        };
        let out: Vec<MetricPoint> = engine
            .close(watermark)
            .into_iter()
            .filter(|p| p.timestamp >= publish_from)
            .collect();
        if engine.late_points > reported_late {
            metrics::counter!(telemetry::HEALTH_POINTS_LATE)
                .increment(engine.late_points - reported_late);
            reported_late = engine.late_points;
        }
        if !out.is_empty() {
            publish(&js, out, &label).await?;
        }
    }
}

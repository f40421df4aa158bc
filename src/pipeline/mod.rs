//! The event-time pipeline: watermarks, sharding by series key, per-series operators and rules.
//!
//! [`Pipeline`] is synchronous and deterministic: the same messages in the same order give the
//! same alert events, whatever the batching (the async runner in `runner.rs` feeds it from NATS).

mod config;
pub mod dedup;
pub mod operator;
mod shard;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use config::{MetricOperators, PipelineConfig};
pub use shard::{fingerprint, Item, PipelineCtx, SeriesSnapshot, Shard, ShardStats};

use crate::ingest::KeyedPoint;
use crate::model::{AlertEvent, SeriesKey};
use crate::rules::RuleSet;

/// Below this many items a batch runs on the calling thread: spawning costs more than it saves.
const PARALLEL_MIN_ITEMS: usize = 2048;

/// Event-time watermark: the max timestamp seen minus the allowed lateness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub max_seen: i64,
    pub lateness_ms: i64,
}

impl Watermark {
    pub fn new(lateness_ms: i64) -> Self {
        Self {
            max_seen: i64::MIN,
            lateness_ms,
        }
    }

    pub fn current(&self) -> i64 {
        self.max_seen.saturating_sub(self.lateness_ms)
    }

    /// Accepts `ts` (and advances) unless it is older than the watermark.
    #[inline]
    pub fn admit(&mut self, ts: i64) -> bool {
        if ts < self.current() {
            return false;
        }
        self.max_seen = self.max_seen.max(ts);
        true
    }
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Alert events, in a deterministic order.
    pub events: Vec<AlertEvent>,
    pub late: u64,
    pub stats: ShardStats,
}

/// The pipeline state written to a checkpoint; independent of the shard count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSnapshot {
    pub watermark: Watermark,
    /// Watermark last delivered to the shards.
    pub delivered_watermark: i64,
    pub series: Vec<SeriesSnapshot>,
}

pub struct Pipeline {
    shards: Vec<Shard>,
    queues: Vec<Vec<Item>>,
    watermark: Watermark,
    delivered_watermark: i64,
    watermark_step_ms: i64,
    late: u64,
}

impl Pipeline {
    pub fn new(config: &PipelineConfig, lateness_ms: i64, rules: RuleSet) -> Self {
        let ctx = Arc::new(PipelineCtx::new(config, rules));
        let n = config.shards.max(1);
        Self {
            shards: (0..n).map(|_| Shard::new(ctx.clone())).collect(),
            queues: vec![Vec::new(); n],
            watermark: Watermark::new(lateness_ms),
            delivered_watermark: i64::MIN,
            watermark_step_ms: config.watermark_step_ms.max(1),
            late: 0,
        }
    }

    /// Queues the points of one message (in order), dropping late ones.
    pub fn push_message(&mut self, points: Vec<KeyedPoint>) {
        let n = self.shards.len();
        for p in points {
            if !self.watermark.admit(p.ts) {
                self.late += 1;
                continue;
            }
            let shard = if n == 1 {
                0
            } else {
                SeriesKey::shard_of(&p.key, n)
            };
            self.queues[shard].push(Item::Point(p));
        }
        let w = self.watermark.current();
        // Watermarks reach the shards in steps (a function of the stream's content, so still
        // deterministic): one item per shard per message would double the work of
        // single-point messages, and timers only need event-time resolution.
        if w >= self
            .delivered_watermark
            .saturating_add(self.watermark_step_ms)
        {
            self.delivered_watermark = w;
            for q in &mut self.queues {
                q.push(Item::Watermark(w));
            }
        }
    }

    /// Runs every queued item through the shards and returns the alert events.
    pub fn run(&mut self) -> BatchOutput {
        let total: usize = self.queues.iter().map(Vec::len).sum();
        let mut per_shard: Vec<Vec<AlertEvent>> = vec![Vec::new(); self.shards.len()];
        if self.shards.len() == 1 || total < PARALLEL_MIN_ITEMS {
            for ((shard, q), out) in self
                .shards
                .iter_mut()
                .zip(&mut self.queues)
                .zip(&mut per_shard)
            {
                shard.process(q.drain(..), out);
            }
        } else {
            std::thread::scope(|s| {
                let mut jobs = self
                    .shards
                    .iter_mut()
                    .zip(&mut self.queues)
                    .zip(&mut per_shard);
                let first = jobs.next();
                for ((shard, q), out) in jobs {
                    s.spawn(move || shard.process(q.drain(..), out));
                }
                if let Some(((shard, q), out)) = first {
                    shard.process(q.drain(..), out);
                }
            });
        }
        let mut events: Vec<AlertEvent> = per_shard.into_iter().flatten().collect();
        events.sort_by(|a, b| {
            a.sort_key()
                .partial_cmp(&b.sort_key())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut stats = ShardStats::default();
        for shard in &mut self.shards {
            stats.add(&shard.take_stats());
        }
        BatchOutput {
            events,
            late: std::mem::take(&mut self.late),
            stats,
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark.current()
    }

    pub fn series_count(&self) -> usize {
        self.shards.iter().map(Shard::series_count).sum()
    }

    pub fn approx_state_bytes(&self) -> usize {
        self.shards.iter().map(Shard::approx_state_bytes).sum()
    }

    /// The largest state of one series, in bytes (approximate, see `approx_state_bytes`).
    pub fn max_state_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(Shard::max_state_bytes)
            .max()
            .unwrap_or(0)
    }

    /// Snapshot of all state (call between batches: queues must be empty).
    pub fn snapshot(&self) -> PipelineSnapshot {
        let mut series: Vec<SeriesSnapshot> =
            self.shards.iter().flat_map(Shard::snapshot).collect();
        series.sort_by(|a, b| a.key.cmp(&b.key));
        PipelineSnapshot {
            watermark: self.watermark,
            delivered_watermark: self.delivered_watermark,
            series,
        }
    }

    /// Replaces all state with a snapshot (the shard count may differ from the one that took it).
    pub fn restore(&mut self, snap: PipelineSnapshot) {
        let ctx = self.shards[0].ctx_arc();
        let n = self.shards.len();
        self.shards = (0..n).map(|_| Shard::new(ctx.clone())).collect();
        self.watermark.max_seen = snap.watermark.max_seen;
        self.delivered_watermark = snap.delivered_watermark;
        for s in snap.series {
            let i = SeriesKey::shard_of(&s.key, n);
            self.shards[i].restore_series(s, snap.delivered_watermark);
        }
    }
}

#[cfg(test)]
mod tests;

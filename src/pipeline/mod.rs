//! The event-time pipeline of one partition: decoding, per-source timelines, sharding by series
//! key, per-series operators and rules.
//!
//! [`Pipeline`] is synchronous and deterministic: the same messages in the same order give the
//! same alert events and rejects, whatever the batching and the shard count (the async side in
//! `processor/` feeds it from NATS).

mod batch_decode;
pub mod checkpoint;
mod config;
pub mod dedup;
pub mod operator;
mod series_table;
mod shard;
pub mod time;

use std::sync::Arc;

pub use config::{MetricOperators, PipelineConfig};
pub use shard::{
    fingerprint, Claim, Emitted, Item, PipelineCtx, PointReject, PredictionScored, SeriesPoint,
    SeriesSnapshot, SeriesView, Shard, ShardOut, ShardStats, TracePoint,
};
pub use time::{SourceId, TimeConfig, Timelines, TimelinesSnapshot, DERIVED_SOURCE};

use crate::ingest::{Decoded, Incoming, IngestConfig, RejectReason};
use crate::rules::RuleSet;
use crate::slo::{SloEngine, SloSnapshot, SloStatus};
use batch_decode::{BatchDecoder, MessageOutcome};
use time::TimeSignal;

/// Below this many items a batch runs on the calling thread: handing shards to the pool costs
/// more than it saves.
const PARALLEL_MIN_ITEMS: usize = 2048;

/// Rejected points of one message for one reason: what a dead letter is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageReject {
    /// Index of the message in its batch.
    pub msg: u32,
    pub reason: RejectReason,
    /// Points of the message rejected for this reason (1 for a message rejected whole).
    pub points: usize,
    /// The first such point's detail.
    pub detail: String,
}

/// Counters of one batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub messages: u64,
    pub ticks: u64,
    /// Valid points decoded (late ones included).
    pub points: u64,
    pub late: u64,
    pub shards: ShardStats,
}

/// A series' claim to its source (see [`Claim`]), with the source's name.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesClaim {
    pub key: Arc<str>,
    pub source: String,
    pub msg: u32,
    pub new: bool,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Alert events, in a deterministic order, each with the message that caused it.
    pub events: Vec<Emitted>,
    /// Rejected points by message and reason, in message order.
    pub rejects: Vec<MessageReject>,
    /// Series created (and, once a day of stream time, every series): for the registry that
    /// spots a series published on subjects of two partitions.
    pub claims: Vec<SeriesClaim>,
    pub stats: BatchStats,
    /// Points evaluated per rule, by rule index (`RuleSet::rules`).
    pub rule_evaluations: Vec<u64>,
    /// Every point of the watched series ([`Pipeline::watch`]), in (series, time) order.
    pub traces: Vec<TracePoint>,
    /// Predictions scored (hits, false alarms, misses), in a deterministic order.
    pub predictions: Vec<PredictionScored>,
}

/// Pipeline state that is not per series, as written to a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineHeader {
    pub timelines: TimelinesSnapshot,
    pub next_sweep_at: i64,
    pub quarantined: Vec<String>,
    pub series: u64,
    /// The SLOs' event counts (absent in checkpoints written before SLOs).
    #[serde(default)]
    pub slo: SloSnapshot,
}

pub struct Pipeline {
    ctx: Arc<PipelineCtx>,
    shards: Vec<Shard>,
    queues: Vec<Vec<Item>>,
    /// Decodes each batch first (the queued items refer to its key buffer); its buffers are
    /// reused, so a point allocates nothing.
    decoder: BatchDecoder,
    time: Timelines,
    sweep_every_ms: i64,
    next_sweep_at: i64,
    /// Sweeps so far: which slot of series renews its registry claims.
    sweeps: usize,
    signals: Vec<TimeSignal>,
    /// The SLOs, fed every admitted point in stream order.
    slo: SloEngine,
    /// A watermark signal of this message reached the SLOs' next minute end.
    slo_due: bool,
    /// This batch's derived points (keys in `derived_keys`, which follow the batch's key
    /// buffer from `derived_base` on).
    derived: Vec<(std::ops::Range<usize>, i64, f64)>,
    derived_keys: String,
    derived_base: usize,
    /// The checkpoint being written alongside the batches: its sink and the bytes of its
    /// preamble and header.
    cut: Option<(checkpoint::FrameSink, usize)>,
}

/// A checkpoint written alongside the batches, complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointWritten {
    pub bytes: usize,
    pub series: u64,
}

/// Every series' registry claim is renewed about this often (stream time); the registry keeps
/// claims a week.
const CLAIM_RENEWAL_MS: i64 = 86_400_000;

impl Pipeline {
    pub fn new(config: &PipelineConfig, ingest: &IngestConfig, rules: RuleSet) -> Self {
        let ctx = Arc::new(PipelineCtx::new(config, rules));
        let slo = SloEngine::with_hasher(&ctx.rules.slos, ctx.series_hasher.clone());
        let n = config.shards.max(1);
        let idle_evict_ms = config.idle_series_evict_secs as i64 * 1000;
        Self {
            decoder: BatchDecoder::new(ingest, &ctx.series_hasher, n),
            shards: (0..n).map(|_| Shard::new(ctx.clone())).collect(),
            ctx,
            queues: vec![Vec::new(); n],
            time: Timelines::new(TimeConfig {
                lateness_ms: ingest.allowed_lateness_ms,
                idle_ms: ingest.source_idle_ms,
                step_ms: config.watermark_step_ms.max(1),
                // Long after its series are evicted (and their alerts ended as stale).
                forget_after_ms: 2 * idle_evict_ms + config.staleness_secs as i64 * 1000,
            }),
            sweep_every_ms: (idle_evict_ms / 4).max(1000),
            next_sweep_at: i64::MIN,
            sweeps: 0,
            signals: Vec::new(),
            slo,
            slo_due: false,
            derived: Vec::new(),
            derived_keys: String::new(),
            derived_base: 0,
            cut: None,
        }
    }

    /// Decodes a batch of stored messages and runs them through the shards, in order.
    pub fn process(&mut self, batch: &[Incoming]) -> BatchOutput {
        let mut rejects = Rejects::default();
        let mut stats = BatchStats::default();
        self.decoder.decode(batch);
        self.derived_keys.clear();
        self.derived_base = self.decoder.keys().len();
        // Taken out while the messages are put in order, so the rest of `self` stays free.
        let mut chunks = std::mem::take(&mut self.decoder.chunks);
        let mut messages = batch.iter().enumerate();
        for chunk in &mut chunks {
            for outcome in chunk.outcomes.drain(..) {
                let (i, m) = messages.next().expect("an outcome per message");
                self.order_message(
                    i as u32,
                    m,
                    outcome,
                    (&mut chunk.decoded, chunk.key_offset),
                    &mut rejects,
                    &mut stats,
                );
            }
        }
        if let Some(first) = chunks.first_mut() {
            first.decoded.keys.push_str(&self.derived_keys);
        }
        self.decoder.chunks = chunks;
        let out = self.run_shards();
        stats.shards = out.stats;
        for r in out.rejects {
            let detail = self.name_sources(r.detail);
            rejects.add(r.msg, r.reason, detail);
        }
        let claims = out
            .claims
            .into_iter()
            .map(|c| SeriesClaim {
                key: c.key,
                source: self.time.name(c.source).to_string(),
                msg: c.msg,
                new: c.new,
            })
            .collect();
        BatchOutput {
            events: out.events,
            rejects: rejects.0.into_values().collect(),
            claims,
            stats,
            rule_evaluations: out.rule_evaluations,
            traces: out.traces,
            predictions: out.predictions,
        }
    }

    /// Puts one decoded message in stream order: its source's clock, sweeps and watermarks, and
    /// its points queued for their shards. `decoded` is its chunk's output, whose keys start at
    /// the given offset of the batch's key buffer.
    fn order_message(
        &mut self,
        msg: u32,
        m: &Incoming,
        outcome: MessageOutcome,
        decoded: (&mut Decoded, usize),
        rejects: &mut Rejects,
        stats: &mut BatchStats,
    ) {
        self.order_points(msg, m, outcome, decoded, rejects, stats);
        if self.slo_due {
            self.slo_due = false;
            self.derive_slo_points(msg);
        }
    }

    /// The SLOs' points of the minutes the partition's watermark has closed, queued behind
    /// message `msg`'s items, then their source's watermark.
    fn derive_slo_points(&mut self, msg: u32) {
        let watermark = self.time.combined_watermark();
        self.derived.clear();
        self.slo
            .advance(watermark, &mut self.derived_keys, &mut self.derived);
        let Some(&(_, last, _)) = self.derived.last() else {
            return;
        };
        let n = self.shards.len();
        for (key, ts, value) in self.derived.drain(..) {
            let hash = self.ctx.series_hash(&self.derived_keys[key.clone()]);
            self.queues[shard_of(hash, n)].push(Item::Point {
                key: key.start + self.derived_base..key.end + self.derived_base,
                hash,
                ts,
                value,
                source: DERIVED_SOURCE,
                msg,
            });
        }
        for q in &mut self.queues {
            q.push(Item::Watermark {
                source: DERIVED_SOURCE,
                at: last,
                msg,
            });
        }
    }

    fn order_points(
        &mut self,
        msg: u32,
        m: &Incoming,
        outcome: MessageOutcome,
        (decoded, key_offset): (&mut Decoded, usize),
        rejects: &mut Rejects,
        stats: &mut BatchStats,
    ) {
        stats.messages += 1;
        self.time.on_message(m.published_ms, &mut self.signals);
        self.flush_signals(msg);
        let t = self.time.stream_time();
        if t >= self.next_sweep_at {
            self.next_sweep_at = t.saturating_add(self.sweep_every_ms);
            let slots = (CLAIM_RENEWAL_MS / self.sweep_every_ms).max(1) as usize;
            let renew = (self.sweeps % slots, slots);
            self.sweeps += 1;
            let watermarks = Arc::new(self.time.delivered_watermarks());
            for q in &mut self.queues {
                q.push(Item::Sweep {
                    watermarks: watermarks.clone(),
                    renew,
                });
            }
        }
        let (source, points, point_rejects) = match outcome {
            MessageOutcome::Tick => {
                stats.ticks += 1;
                return;
            }
            MessageOutcome::Refused(r) => {
                rejects.add(msg, r.reason, r.detail);
                return;
            }
            MessageOutcome::Points {
                source,
                points,
                rejects,
            } => (source, points, rejects),
        };
        for r in &mut decoded.rejects[point_rejects] {
            rejects.add(msg, r.reason, std::mem::take(&mut r.detail));
        }
        let source = self.time.source(&m.subject[source]);
        let n = self.shards.len();
        let slo_active = self.slo.is_active();
        let points = &decoded.points[points];
        for (i, p) in points.iter().enumerate() {
            if slo_active {
                if let Some(ahead) = points.get(i + 4) {
                    self.slo.prefetch(ahead.hash);
                }
            }
            stats.points += 1;
            if let Err(behind) = self.time.admit(source, p.ts) {
                stats.late += 1;
                rejects.add(
                    msg,
                    RejectReason::Late,
                    format!(
                        "point at {} ms is {behind} ms behind source {}'s watermark (allowed lateness {} ms)",
                        p.ts,
                        self.time.name(source),
                        self.decoder.limits().allowed_lateness_ms
                    ),
                );
                continue;
            }
            if slo_active {
                self.slo
                    .observe_hashed(&decoded.keys[p.key.clone()], p.hash, p.ts, p.value);
            }
            self.queues[shard_of(p.hash, n)].push(Item::Point {
                key: p.key.start + key_offset..p.key.end + key_offset,
                hash: p.hash,
                ts: p.ts,
                value: p.value,
                source,
                msg,
            });
        }
        self.time.after_points(source, &mut self.signals);
        self.flush_signals(msg);
    }

    /// Shards name sources by id (`{source:<id>}`); people read names.
    fn name_sources(&self, detail: String) -> String {
        let Some(start) = detail.find("{source:") else {
            return detail;
        };
        let Some(len) = detail[start..].find('}') else {
            return detail;
        };
        let id: Option<SourceId> = detail[start + 8..start + len].parse().ok();
        match id {
            Some(id) => format!(
                "{}{}{}",
                &detail[..start],
                self.time.name(id),
                &detail[start + len + 1..]
            ),
            None => detail,
        }
    }

    /// Queues the time signals gathered so far behind the items of message `msg`.
    fn flush_signals(&mut self, msg: u32) {
        let slo_close = self.slo.next_close();
        for s in self.signals.drain(..) {
            // A forgotten source has no series left anywhere: the shards keep nothing of it.
            if let TimeSignal::Watermark { source, at } = s {
                self.slo_due |= at >= slo_close;
                for q in &mut self.queues {
                    q.push(Item::Watermark { source, at, msg });
                }
            }
        }
    }

    /// Runs every queued item through the shards.
    fn run_shards(&mut self) -> RunOut {
        let total: usize = self.queues.iter().map(Vec::len).sum();
        let keys = self.decoder.keys();
        let mut per_shard: Vec<ShardOut> =
            (0..self.shards.len()).map(|_| Default::default()).collect();
        if self.shards.len() == 1 || total < PARALLEL_MIN_ITEMS {
            for ((shard, q), out) in self
                .shards
                .iter_mut()
                .zip(&mut self.queues)
                .zip(&mut per_shard)
            {
                shard.process(q, keys, out);
            }
        } else {
            // On the persistent rayon pool (no thread started per batch).
            rayon::in_place_scope(|s| {
                let mut jobs = self
                    .shards
                    .iter_mut()
                    .zip(&mut self.queues)
                    .zip(&mut per_shard);
                let first = jobs.next();
                for ((shard, q), out) in jobs {
                    s.spawn(move |_| shard.process(q, keys, out));
                }
                if let Some(((shard, q), out)) = first {
                    shard.process(q, keys, out);
                }
            });
        }
        let mut events = Vec::new();
        let mut rejects = Vec::new();
        let mut claims = Vec::new();
        let mut traces = Vec::new();
        let mut predictions = Vec::new();
        for o in per_shard {
            traces.extend(o.traces);
            predictions.extend(o.predictions);
            events.extend(o.events);
            rejects.extend(o.rejects);
            claims.extend(o.claims);
        }
        events.sort_by(|a, b| {
            (a.msg, a.event.sort_key())
                .partial_cmp(&(b.msg, b.event.sort_key()))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        claims.sort_by(|a, b| (a.msg, &a.key).cmp(&(b.msg, &b.key)));
        // Whatever the shard count, the same first detail per (message, reason).
        rejects.sort_by(|a, b| (a.msg, a.reason, &a.detail).cmp(&(b.msg, b.reason, &b.detail)));
        let mut stats = ShardStats::default();
        let mut rule_evaluations = Vec::new();
        for shard in &mut self.shards {
            stats.add(&shard.take_stats());
            shard.take_evaluations(&mut rule_evaluations);
        }
        traces.sort_by(|a, b| (&a.series, a.ts).cmp(&(&b.series, b.ts)));
        predictions.sort_by(|a, b| {
            (a.msg, &a.series, &a.rule, a.at).cmp(&(b.msg, &b.series, &b.rule, b.at))
        });
        RunOut {
            predictions,
            traces,
            events,
            rejects,
            claims,
            stats,
            rule_evaluations,
        }
    }

    /// What the pipeline knows of one series (canonical key), if it holds it.
    pub fn describe_series(&self, key: &str) -> Option<serde_json::Value> {
        self.shards[self.shard_for(key)].describe(key)
    }

    /// The shard that holds (or would hold) a series.
    fn shard_for(&self, key: &str) -> usize {
        shard_of(self.ctx.series_hash(key), self.shards.len())
    }

    /// Traces every point of these series (canonical keys) into [`BatchOutput::traces`].
    pub fn watch(&mut self, series: Arc<std::collections::HashSet<Arc<str>>>) {
        for shard in &mut self.shards {
            shard.watch(series.clone());
        }
    }

    /// Stream time: the newest store time of the messages seen.
    pub fn stream_time(&self) -> i64 {
        self.time.stream_time()
    }

    /// The watermark of the sources that are not quiet (see [`Timelines::combined_watermark`]).
    pub fn watermark(&self) -> i64 {
        self.time.combined_watermark()
    }

    pub fn source_count(&self) -> usize {
        self.time.source_count()
    }

    pub fn series_count(&self) -> usize {
        self.shards.iter().map(Shard::series_count).sum()
    }

    pub fn quarantined_count(&self) -> usize {
        self.shards.iter().map(Shard::quarantined_count).sum()
    }

    /// True when some alert waits for a timer (a `for`, a `resolve_after` or staleness): stream
    /// time must keep moving, live, for it to fire on time.
    pub fn has_timers(&self) -> bool {
        self.shards.iter().any(Shard::has_timers)
    }

    /// The latest status of every SLO group of this partition.
    pub fn slo_status(&self) -> Vec<SloStatus> {
        self.slo.status()
    }

    /// Minutes the SLOs have closed (it changes when their status does).
    pub fn slo_minutes(&self) -> u64 {
        self.slo.minutes_closed()
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

    /// The state that is not per series (call between batches).
    pub fn header(&self) -> PipelineHeader {
        let mut quarantined: Vec<String> =
            self.shards.iter().flat_map(Shard::quarantined).collect();
        quarantined.sort();
        PipelineHeader {
            timelines: self.time.snapshot(),
            next_sweep_at: self.next_sweep_at,
            quarantined,
            series: self.series_count() as u64,
            slo: self.slo.snapshot(),
        }
    }

    /// Every series' state, shard by shard in key order, borrowed one at a time (call between
    /// batches): a checkpoint streams them out without copying any state.
    pub fn for_each_series(&self, mut f: impl FnMut(SeriesView<'_>)) {
        for shard in &self.shards {
            shard.for_each_series(&mut f);
        }
    }

    /// Begins a checkpoint of the state as it is now (call between batches, with `header` just
    /// taken from [`Pipeline::header`]). Its preamble and header go to `sink` at once; each
    /// series follows as it is now, written before its first change after this call or by a
    /// later [`Pipeline::checkpoint_step`]. Batches go on meanwhile: the partition no longer
    /// waits while all its series are serialised.
    pub fn begin_checkpoint(
        &mut self,
        header: &checkpoint::CheckpointHeader,
        sink: checkpoint::FrameSink,
    ) -> Result<(), checkpoint::CheckpointError> {
        debug_assert!(self.cut.is_none(), "one checkpoint at a time");
        let chunks = checkpoint::start(header)?;
        let bytes = chunks.iter().map(bytes::Bytes::len).sum();
        for chunk in chunks {
            sink(chunk);
        }
        for shard in &mut self.shards {
            shard.begin_cut(sink.clone());
        }
        self.cut = Some((sink, bytes));
        Ok(())
    }

    /// Writes more of the checkpoint begun, until `deadline`. Once every series is written,
    /// ends it and says how it went (an encoding error abandons it, and the sink gets no end
    /// frame); `None` while series remain, or when no checkpoint was begun.
    pub fn checkpoint_step(
        &mut self,
        deadline: std::time::Instant,
    ) -> Option<Result<CheckpointWritten, String>> {
        self.cut.as_ref()?;
        for shard in &mut self.shards {
            if !shard.cut_step(deadline) {
                return None;
            }
        }
        let (sink, mut bytes) = self.cut.take().expect("a checkpoint begun");
        let mut series = 0;
        let mut failed = None;
        for cut in self.shards.iter_mut().filter_map(Shard::end_cut) {
            bytes += cut.bytes;
            series += cut.series;
            failed = failed.or(cut.failed);
        }
        if let Some(e) = failed {
            return Some(Err(e));
        }
        sink(checkpoint::END);
        Some(Ok(CheckpointWritten {
            bytes: bytes + checkpoint::END.len(),
            series,
        }))
    }

    /// True while a checkpoint begun is not complete.
    pub fn checkpoint_pending(&self) -> bool {
        self.cut.is_some()
    }

    /// Gives up the checkpoint begun: the bytes handed over so far lack their end, so a
    /// reader refuses them.
    pub fn abandon_checkpoint(&mut self) {
        self.cut = None;
        for shard in &mut self.shards {
            shard.end_cut();
        }
    }

    /// Starts from a checkpoint's header (drops all state first).
    pub fn restore_header(&mut self, h: PipelineHeader) {
        self.cut = None;
        let n = self.shards.len();
        self.shards = (0..n).map(|_| Shard::new(self.ctx.clone())).collect();
        for key in &h.quarantined {
            let i = self.shard_for(key);
            self.shards[i].restore_quarantined(key);
        }
        self.time.restore(h.timelines);
        self.next_sweep_at = h.next_sweep_at;
        self.slo.restore(h.slo);
    }

    /// Adds series from a checkpoint chunk (after [`Pipeline::restore_header`]); the shard count
    /// may differ from the one that wrote it.
    pub fn restore_series(&mut self, chunk: Vec<SeriesSnapshot>) {
        for s in chunk {
            let i = self.shard_for(&s.key);
            self.shards[i].restore_series(s);
        }
    }
}

/// The shard of a series, from its key's hash: bits the shard's table does not use to place
/// the series (it uses the lowest and the top seven), so each shard's table stays evenly filled.
fn shard_of(hash: u64, shards: usize) -> usize {
    ((hash >> 32) % shards as u64) as usize
}

struct RunOut {
    predictions: Vec<PredictionScored>,
    traces: Vec<TracePoint>,
    events: Vec<Emitted>,
    rejects: Vec<PointReject>,
    claims: Vec<Claim>,
    stats: ShardStats,
    rule_evaluations: Vec<u64>,
}

/// Rejected points by (message, reason), in that order.
#[derive(Default)]
struct Rejects(std::collections::BTreeMap<(u32, RejectReason), MessageReject>);

impl Rejects {
    /// Counts a rejected point into its message's entry for the reason (keeping the first detail).
    fn add(&mut self, msg: u32, reason: RejectReason, detail: String) {
        self.0
            .entry((msg, reason))
            .and_modify(|r| r.points += 1)
            .or_insert(MessageReject {
                msg,
                reason,
                points: 1,
                detail,
            });
    }
}

#[cfg(test)]
mod tests;

//! One shard: the keyed state of the series hashed to it, their operators and rule states, and
//! the event-time timers of those rules. Synchronous; driven only by points and watermarks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use foldhash::fast::RandomState;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::{CutWriter, FrameSink};
use super::operator::{DropReason, Flow, OperatorSpec, OperatorState, PointCtx};
use super::series_table::{Keyed, SeriesTable};
use super::time::SourceId;
use crate::detect::trend::CrossingDirection;
use crate::detect::{AnomalyExplanation, AnomalyState};
use crate::ingest::prefetch::prefetch;
use crate::ingest::RejectReason;
use crate::model::{AlertEvent, AlertStatus, EndReason, SeriesKey};
use crate::rules::prediction::{Outcome, Prediction, PredictionLog};
use crate::rules::{
    Matcher, Op, Rule, RuleSet, RuleState, TemplateCtx, Transition, TransitionKind,
};

use super::PipelineConfig;

/// What every shard shares: operator lists, rules, time settings.
#[derive(Debug)]
pub struct PipelineCtx {
    /// Operator lists: `[0]` is the default; `[i + 1]` serves metrics matching `chain_matchers[i]`.
    pub chains: Vec<Vec<OperatorSpec>>,
    pub chain_matchers: Vec<Matcher>,
    pub rules: RuleSet,
    pub staleness_ms: i64,
    pub idle_ms: i64,
    /// Most series remembered as quarantined (their code panicked); beyond it, a series that
    /// panics is reset but not remembered.
    pub max_quarantined: usize,
    /// Hashes series keys: the pipeline picks a point's shard by it, the shard finds the
    /// series by it (one hash per point). Randomly seeded per pipeline.
    pub series_hasher: RandomState,
    /// Per rule: the index of the first rule of its family (a graded rule's grades, else the
    /// rule itself), so that a point's predictions compare families as numbers.
    family_of: Vec<u32>,
}

impl PipelineCtx {
    pub fn new(config: &PipelineConfig, rules: RuleSet) -> Self {
        let mut chains = vec![config.operators.clone()];
        let mut chain_matchers = Vec::new();
        for mo in &config.metric_operators {
            // Invalid matchers are rejected by `PipelineConfig::problems` before this.
            if let Ok(m) = Matcher::parse(&mo.metric) {
                chain_matchers.push(m);
                chains.push(mo.operators.clone());
            }
        }
        // The last: the series the pipeline derives (SLOs) need their rules only.
        chains.push(Vec::new());
        let family_name = |r: &Rule| r.family.clone().unwrap_or_else(|| r.name.clone());
        let mut first_of: HashMap<String, u32> = HashMap::new();
        let family_of = rules
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| *first_of.entry(family_name(r)).or_insert(i as u32))
            .collect();
        Self {
            chains,
            chain_matchers,
            rules,
            family_of,
            staleness_ms: config.staleness_secs as i64 * 1000,
            idle_ms: config.idle_series_evict_secs as i64 * 1000,
            max_quarantined: config.max_quarantined_series,
            series_hasher: RandomState::default(),
        }
    }

    /// The hash of a canonical series key (see `series_hasher`).
    pub fn series_hash(&self, key: &str) -> u64 {
        self.series_hasher.hash_one(key)
    }

    /// The operator list (none) of the series the pipeline derives itself.
    pub fn derived_chain(&self) -> usize {
        self.chains.len() - 1
    }

    /// Index of the operator list that serves a metric.
    pub fn chain_for(&self, metric: &str) -> usize {
        self.chain_matchers
            .iter()
            .position(|m| m.matches(Some(metric)))
            .map_or(0, |i| i + 1)
    }
}

/// Input of a shard, in stream order. `msg` is the index, in its batch, of the message that
/// caused the item (alert events and rejects are traced back to it).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A point; its series key is `keys[key]` of the key buffer given with the items, and
    /// `hash` is [`PipelineCtx::series_hash`] of it.
    Point {
        key: Range<usize>,
        hash: u64,
        ts: i64,
        value: f64,
        source: SourceId,
        msg: u32,
    },
    /// `source`'s watermark advanced to `at`.
    Watermark { source: SourceId, at: i64, msg: u32 },
    /// Evict series idle for longer than the eviction time on their source's clock (every
    /// source's watermark, by id, is in `watermarks`), and renew the registry claims of the
    /// series in slot `renew.0` of `renew.1` (by key hash), so every series is renewed once per
    /// `renew.1` sweeps without a burst.
    Sweep {
        watermarks: Arc<HashMap<SourceId, i64>>,
        renew: (usize, usize),
    },
}

/// An alert event and the message (index in its batch) that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub msg: u32,
    /// The series (canonical key) the event is about.
    pub series: Arc<str>,
    pub event: AlertEvent,
}

/// One point of a watched series as the operators scored it (backtest plots: the value with
/// the detectors' band, and the forecast at the points that raised an alert event).
#[derive(Debug, Clone, PartialEq)]
pub struct TracePoint {
    pub series: Arc<str>,
    pub ts: i64,
    pub value: f64,
    pub score: f64,
    pub expected: Option<f64>,
    pub band: Option<(f64, f64)>,
    /// The trend forecast (`describe`'s `forecast`) when this point caused alert events.
    pub forecast: Option<serde_json::Value>,
}

/// A point the shard refused, traced to its message.
#[derive(Debug, Clone, PartialEq)]
pub struct PointReject {
    pub msg: u32,
    pub reason: RejectReason,
    pub detail: String,
}

/// A series' claim to its source, for the cross-partition series registry: made when the
/// series is created (`new`), and renewed now and then for every series.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub key: Arc<str>,
    pub source: SourceId,
    /// The message that created the series (for `new` claims).
    pub msg: u32,
    pub new: bool,
}

/// A prediction's outcome, settled by a point of message `msg`.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionScored {
    pub msg: u32,
    pub series: Arc<str>,
    /// The predictive rule; for a miss, the rule as written (a graded rule's family).
    pub rule: String,
    pub outcome: Outcome,
    /// When it was settled (the crossing, or the end of the horizon).
    pub at: i64,
}

/// What a shard produced from a run of items.
#[derive(Debug, Default)]
pub struct ShardOut {
    pub events: Vec<Emitted>,
    pub predictions: Vec<PredictionScored>,
    pub rejects: Vec<PointReject>,
    pub claims: Vec<Claim>,
    pub traces: Vec<TracePoint>,
}

const NO_TIMER: i64 = i64::MAX;

#[derive(Debug, Clone)]
struct RuleSlot {
    rule: u32,
    state: RuleState,
    /// Due time registered in the shard's timer set, or `NO_TIMER`.
    timer: i64,
    /// Predictive rules: their predictions waiting to be scored (16 bytes, in the slot).
    predictions: Option<PredictionLog>,
}

/// Starts loading every cache line of `items`, up to 8 (a point reads all of its series'
/// operator and rule slots; a graded rule alone has a slot per grade).
#[inline]
fn prefetch_lines<T>(items: &[T]) {
    prefetch_bytes(items.as_ptr().cast(), std::mem::size_of_val(items));
}

/// Starts loading the cache lines of `len` bytes at `start`, up to 8.
#[inline]
fn prefetch_bytes(start: *const u8, len: usize) {
    for offset in (0..len.min(8 * 64)).step_by(64) {
        prefetch(start.wrapping_add(offset));
    }
}

/// Keyed state of one series. Every series holds one, so it stays small: fixed-size operator
/// and rule slices, and the latest point without the detectors' per-point detail.
#[derive(Debug, Clone)]
struct SeriesState {
    key: Arc<str>,
    /// Which operator list of the context serves this series.
    chain: u16,
    /// The source (publisher timeline) the series belongs to: its first point's.
    source: SourceId,
    /// The latest accepted point (its ts is the series' last).
    last: LastPoint,
    ops: Box<[OperatorState]>,
    rules: Box<[RuleSlot]>,
    /// The shard's checkpoint epoch when this series was last written to a checkpoint, or was
    /// created: a series whose epoch is behind the shard's belongs to the checkpoint being
    /// written and is not written yet.
    cut: u16,
}

impl SeriesState {
    /// The detectors' state of its anomaly operators.
    fn detector_states(&self) -> impl Iterator<Item = &AnomalyState> {
        self.ops.iter().filter_map(|op| match op {
            OperatorState::Anomaly(a) => Some(&**a),
            _ => None,
        })
    }
}

impl Keyed for SeriesState {
    fn key(&self) -> &str {
        &self.key
    }
}

/// A series as a checkpoint writes it.
fn view<'a>(ctx: &'a PipelineCtx, st: &'a SeriesState) -> SeriesView<'a> {
    SeriesView {
        key: &st.key,
        source: st.source,
        last: &st.last,
        ops: &st.ops,
        rules: RulesView(&st.rules, ctx),
        predictions: PredictionsView(&st.rules, ctx),
    }
}

/// A shard's part of a checkpoint written alongside the batches: the series that existed at
/// the cut, each written once, as it was then.
struct Cut {
    writer: CutWriter,
    /// Series of the cut not written yet.
    pending: usize,
    /// Where the next step resumes its walk of the table (a bucket), and the table's buckets
    /// then.
    cursor: usize,
    buckets: usize,
    /// Series written by the current walk of the table, if it began at the first bucket.
    walk: Option<usize>,
}

impl Cut {
    /// Writes a series of the cut (its epoch is behind the shard's).
    fn write(&mut self, ctx: &PipelineCtx, st: &mut SeriesState, epoch: u16) {
        st.cut = epoch;
        self.writer.write(&view(ctx, st));
        self.pending = self.pending.saturating_sub(1);
        self.walk = self.walk.map(|n| n + 1);
    }
}

/// Writes a series into the checkpoint being written, if it belongs to the cut and is not
/// written yet: called before anything changes or removes it, so the checkpoint holds it as it
/// was at the cut.
#[inline]
fn save_for_cut(cut: &mut Option<Cut>, epoch: u16, ctx: &PipelineCtx, st: &mut SeriesState) {
    if let Some(cut) = cut {
        if st.cut != epoch {
            cut.write(ctx, st, epoch);
        }
    }
}

/// A point on its way into a shard: its series (canonical key and its
/// [`PipelineCtx::series_hash`]), time and value.
#[derive(Debug, Clone, Copy)]
pub struct SeriesPoint<'k> {
    pub key: &'k str,
    pub hash: u64,
    pub ts: i64,
    pub value: f64,
}

/// The latest accepted point as the operators scored it: what an alert event caused by a timer
/// (no point at hand) reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPoint {
    pub ts: i64,
    pub value: f64,
    pub score: f64,
    pub zscore: f64,
    /// The anomaly operator's explanation (boxed: most series have none).
    pub explanation: Option<Box<AnomalyExplanation>>,
}

impl LastPoint {
    fn new(ts: i64) -> Self {
        Self {
            ts,
            value: 0.0,
            score: 0.0,
            zscore: 0.0,
            explanation: None,
        }
    }

    /// Takes `p`'s figures, reusing the explanation's allocation.
    fn set(&mut self, p: &PointCtx) {
        self.ts = p.ts;
        self.value = p.value;
        self.score = p.score;
        self.zscore = p.zscore;
        match (p.anomaly.map(|a| a.explanation), &mut self.explanation) {
            (Some(e), Some(b)) => **b = e,
            (Some(e), None) => self.explanation = Some(Box::new(e)),
            (None, _) => self.explanation = None,
        }
    }

    fn scored(&self) -> Scored<'_> {
        Scored {
            value: self.value,
            score: self.score,
            zscore: self.zscore,
            explanation: self.explanation.as_deref(),
        }
    }
}

/// What an alert event reports of the point behind it.
#[derive(Clone, Copy)]
struct Scored<'a> {
    value: f64,
    score: f64,
    zscore: f64,
    explanation: Option<&'a AnomalyExplanation>,
}

impl<'a> Scored<'a> {
    fn of(p: &'a PointCtx) -> Self {
        Self {
            value: p.value,
            score: p.score,
            zscore: p.zscore,
            explanation: p.anomaly.as_ref().map(|a| &a.explanation),
        }
    }
}

/// A series as stored in a checkpoint: rules by name, so rule files can change between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    pub key: String,
    pub source: SourceId,
    pub last: LastPoint,
    pub ops: Vec<OperatorState>,
    pub rules: Vec<(String, RuleState)>,
    /// Predictive rules' predictions waiting to be scored, by rule name.
    #[serde(default)]
    pub predictions: Vec<(String, PredictionLog)>,
}

/// A series as [`SeriesSnapshot`] writes it, borrowed from the shard: a checkpoint serialises
/// its series one by one between two batches, while the partition waits, so it copies nothing
/// (the bytes are those of the owned snapshot: same fields, same order).
#[derive(Serialize)]
pub struct SeriesView<'a> {
    key: &'a str,
    source: SourceId,
    last: &'a LastPoint,
    ops: &'a [OperatorState],
    rules: RulesView<'a>,
    predictions: PredictionsView<'a>,
}

/// A series' rule states by rule name (`SeriesSnapshot::rules`).
struct RulesView<'a>(&'a [RuleSlot], &'a PipelineCtx);

/// The prediction logs that hold something, by rule name (`SeriesSnapshot::predictions`).
struct PredictionsView<'a>(&'a [RuleSlot], &'a PipelineCtx);

/// The name of the rule a slot serves.
fn rule_name<'a>(ctx: &'a PipelineCtx, slot: &RuleSlot) -> &'a str {
    &ctx.rules.rules[slot.rule as usize].name
}

impl RulesView<'_> {
    fn states(&self) -> impl Iterator<Item = (&str, &RuleState)> {
        self.0.iter().map(|s| (rule_name(self.1, s), &s.state))
    }
}

impl PredictionsView<'_> {
    fn logs(&self) -> impl Iterator<Item = (&str, &PredictionLog)> {
        self.0.iter().filter_map(|s| {
            let log = s.predictions.as_ref()?;
            (*log != PredictionLog::default()).then_some((rule_name(self.1, s), log))
        })
    }
}

impl Serialize for RulesView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.states())
    }
}

impl Serialize for PredictionsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // MessagePack writes a list's length first: count, then write.
        let mut seq = s.serialize_seq(Some(self.logs().count()))?;
        for entry in self.logs() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl SeriesView<'_> {
    /// An owned copy (what a checkpoint reads back).
    pub fn to_snapshot(&self) -> SeriesSnapshot {
        SeriesSnapshot {
            key: self.key.to_string(),
            source: self.source,
            last: self.last.clone(),
            ops: self.ops.to_vec(),
            rules: self
                .rules
                .states()
                .map(|(name, state)| (name.to_string(), *state))
                .collect(),
            predictions: self
                .predictions
                .logs()
                .map(|(name, log)| (name.to_string(), log.clone()))
                .collect(),
        }
    }
}

/// Counters of one shard since the last [`Shard::take_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub points: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub series_created: u64,
    pub series_evicted: u64,
    pub series_quarantined: u64,
}

impl ShardStats {
    pub fn add(&mut self, o: &ShardStats) {
        self.points += o.points;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.series_created += o.series_created;
        self.series_evicted += o.series_evicted;
        self.series_quarantined += o.series_quarantined;
    }
}

/// A timer: (source, due, series key, rule index), ordered by source then due time, so a
/// source's watermark pops exactly its own due timers.
type Timer = (SourceId, i64, Arc<str>, u32);

/// A shard's timers, by source: a source's watermark looks at that source's earliest timer
/// only (one hash lookup and a peek, for every watermark of every source).
#[derive(Default)]
struct Timers {
    by_source: HashMap<SourceId, SourceTimers, foldhash::fast::FixedState>,
    len: usize,
}

/// One source's timers in a shard: (due, series key, rule index), earliest first.
type SourceTimers = BTreeSet<(i64, Arc<str>, u32)>;

impl Timers {
    fn insert(&mut self, (source, due, key, rule): Timer) {
        if self
            .by_source
            .entry(source)
            .or_default()
            .insert((due, key, rule))
        {
            self.len += 1;
        }
    }

    fn remove(&mut self, (source, due, key, rule): &Timer) {
        let Some(set) = self.by_source.get_mut(source) else {
            return;
        };
        if set.remove(&(*due, key.clone(), *rule)) {
            self.len -= 1;
            if set.is_empty() {
                self.by_source.remove(source);
            }
        }
    }

    /// Removes and returns the first timer of `source` due at or before `w`.
    fn pop_due(&mut self, source: SourceId, w: i64) -> Option<Timer> {
        let set = self.by_source.get_mut(&source)?;
        if set.first().is_none_or(|t| t.0 > w) {
            return None;
        }
        let (due, key, rule) = set.pop_first()?;
        self.len -= 1;
        if set.is_empty() {
            self.by_source.remove(&source);
        }
        Some((source, due, key, rule))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct Shard {
    ctx: Arc<PipelineCtx>,
    series: SeriesTable<SeriesState>,
    timers: Timers,
    /// Series whose operator or rule code panicked: their points are refused from then on.
    quarantined: HashSet<Arc<str>, RandomState>,
    stats: ShardStats,
    /// Points evaluated per rule (by rule index) since the last [`Shard::take_evaluations`].
    evaluations: Vec<u64>,
    /// Series whose every point is traced into [`ShardOut::traces`] (backtests).
    watched: Option<Arc<HashSet<Arc<str>>>>,
    /// Checkpoints begun so far (wrapping): see [`SeriesState::cut`].
    epoch: u16,
    /// The checkpoint being written alongside the batches, if one is.
    cut: Option<Cut>,
    /// Whether a series may hold detector state (an anomaly operator in a chain): without one,
    /// prefetching for it would only cost two more table probes per point.
    detectors: bool,
}

impl Shard {
    pub fn new(ctx: Arc<PipelineCtx>) -> Self {
        let rules = ctx.rules.rules.len();
        let detectors = ctx
            .chains
            .iter()
            .flatten()
            .any(|spec| matches!(spec, OperatorSpec::Anomaly(_)));
        Self {
            detectors,
            series: SeriesTable::new(ctx.series_hasher.clone()),
            ctx,
            timers: Timers::default(),
            quarantined: HashSet::default(),
            stats: ShardStats::default(),
            evaluations: vec![0; rules],
            watched: None,
            epoch: 0,
            cut: None,
        }
    }

    /// Traces every point of these series from now on.
    pub fn watch(&mut self, series: Arc<HashSet<Arc<str>>>) {
        self.watched = Some(series);
    }

    /// Adds the points evaluated per rule since the last call into `into` (by rule index),
    /// and starts counting again.
    pub fn take_evaluations(&mut self, into: &mut Vec<u64>) {
        into.resize(into.len().max(self.evaluations.len()), 0);
        for (sum, n) in into.iter_mut().zip(self.evaluations.iter_mut()) {
            *sum += std::mem::take(n);
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub fn take_stats(&mut self) -> ShardStats {
        std::mem::take(&mut self.stats)
    }

    /// What the shard knows of one series now (`None` when it holds no such series): its
    /// latest point as scored, the detectors' view (expected value, band, each detector's
    /// share), a trend forecast, and each rule's phase with, for predictive rules, the time
    /// until the threshold is crossed.
    pub fn describe(&self, key: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        let st = self.series.get(key)?;
        let specs = &self.ctx.chains[st.chain as usize];
        let last = &st.last;
        let detectors = last.explanation.as_ref().map(|e| {
            json!({
                "top": e.top,
                "expected": e.expected,
                "band": e.band.map(|(lo, hi)| [lo, hi]),
                "deviation_sd": e.deviation_sd,
                "contributions": crate::detect::DetectorKind::ALL
                    .iter()
                    .zip(e.contributions)
                    .map(|(k, c)| (k.name().to_string(), c))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            })
        });
        // The anomaly operator's trend: a forecast at a few horizons (seasonality excluded).
        let forecast = specs
            .iter()
            .zip(st.ops.iter())
            .find_map(|(spec, op)| match (spec, op) {
                (OperatorSpec::Anomaly(cfg), OperatorState::Anomaly(a))
                    if a.trend().step_ms > 0.0 =>
                {
                    let t = a.trend();
                    Some(
                        [3_600_000i64, 6 * 3_600_000, 24 * 3_600_000]
                            .iter()
                            .map(|&h| {
                                let points = ((h as f64 / t.step_ms).round() as u32).max(1);
                                let (mean, pm) = cfg.trend.forecast(t, points);
                                json!({"at": last.ts + h, "value": mean, "plus_minus": pm})
                            })
                            .collect::<Vec<_>>(),
                    )
                }
                _ => None,
            });
        let rules: Vec<serde_json::Value> = st
            .rules
            .iter()
            .map(|slot| {
                let rule = &self.ctx.rules.rules[slot.rule as usize];
                let eta = eta(specs, &st.ops, rule);
                json!({
                    "rule": rule.name,
                    "phase": slot.state.phase,
                    "since": (slot.state.phase != crate::rules::Phase::Inactive).then_some(slot.state.active_since),
                    "condition": rule.def.condition,
                    "predicted_crossing": rule.predict_within_ms.map(|within| json!({
                        "threshold": rule.condition.threshold,
                        "within_ms": within,
                        "in_ms": eta.map(|e| e.0),
                        "plus_minus_ms": eta.map(|e| e.1),
                    })),
                })
            })
            .collect();
        let key = SeriesKey(st.key.clone());
        Some(json!({
            "series": key.display(),
            "metric": key.name(),
            "labels": key
                .labels().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "last": {"ts": last.ts, "value": last.value, "score": last.score, "zscore": last.zscore},
            "detectors": detectors,
            "forecast": forecast,
            "rules": rules,
        }))
    }

    /// Processes items in order (their points' keys are in `keys`), appending alert events and
    /// rejects to `out`, and leaves the list empty.
    pub fn process(&mut self, items: &mut Vec<Item>, keys: &str, out: &mut ShardOut) {
        for i in 0..items.len() {
            self.prefetch_ahead(items, i);
            match items[i] {
                Item::Point {
                    ref key,
                    hash,
                    ts,
                    value,
                    source,
                    msg,
                } => {
                    let p = SeriesPoint {
                        key: &keys[key.clone()],
                        hash,
                        ts,
                        value,
                    };
                    match &self.watched {
                        Some(w) if w.contains(p.key) => {
                            let key: Arc<str> = p.key.into();
                            let before = out.events.len();
                            if self.on_point(p, source, msg, out, None) {
                                self.trace(key, out.events.len() > before, out);
                            }
                        }
                        _ => {
                            self.on_point(p, source, msg, out, None);
                        }
                    }
                }
                Item::Watermark { source, at, msg } => self.on_watermark(source, at, msg, out),
                Item::Sweep {
                    ref watermarks,
                    renew: (slot, slots),
                } => {
                    self.evict_idle(watermarks);
                    out.claims.extend(
                        self.series
                            .iter()
                            .filter(|st| SeriesKey::shard_of(&st.key, slots.max(1)) == slot)
                            .map(|st| Claim {
                                key: st.key.clone(),
                                source: st.source,
                                msg: 0,
                                new: false,
                            }),
                    );
                }
            }
        }
        items.clear();
    }

    /// Asks for the memory the points a little ahead of `i` will read, in steps: the table
    /// slot of the point `2 * AHEAD` ahead (its probe reads only the table's control bytes),
    /// then what the slot of the point `AHEAD` ahead points to (its key, operator and rule
    /// states), then the detectors' state behind those. By the time a point is processed its
    /// lines are on their way or in cache. A slot whose control byte matches by chance only
    /// prefetches the wrong lines.
    #[inline]
    fn prefetch_ahead(&self, items: &[Item], i: usize) {
        const AHEAD: usize = 4;
        if let Some(Item::Point { hash, .. }) = items.get(i + 2 * AHEAD) {
            if let Some(st) = self.series.probe(*hash) {
                let at = st as *const SeriesState as *const u8;
                prefetch(at);
                prefetch(at.wrapping_add(64));
            }
        }
        if let Some(Item::Point { hash, .. }) = items.get(i + AHEAD) {
            if let Some(st) = self.series.probe(*hash) {
                prefetch(st.key.as_ptr());
                prefetch_lines(&st.ops);
                prefetch_lines(&st.rules);
            }
        }
        // The detectors' state is two pointers further: its box (now that the operator slots
        // are on their way), then the blocks the box points to, one point ahead.
        if !self.detectors {
            return;
        }
        if let Some(Item::Point { hash, .. }) = items.get(i + AHEAD / 2) {
            if let Some(st) = self.series.probe(*hash) {
                st.detector_states()
                    .for_each(|a| prefetch_lines(std::slice::from_ref(a)));
            }
        }
        if let Some(Item::Point { hash, .. }) = items.get(i + 1) {
            if let Some(st) = self.series.probe(*hash) {
                st.detector_states()
                    .for_each(|a| a.hot_blocks(prefetch_bytes));
            }
        }
    }

    /// Records a watched series' latest point (and its forecast when it caused events).
    fn trace(&self, key: Arc<str>, caused_events: bool, out: &mut ShardOut) {
        let Some(st) = self.series.get(&key) else {
            return;
        };
        let last = &st.last;
        let e = last.explanation.as_deref();
        let forecast = if caused_events {
            self.describe(&key)
                .and_then(|mut d| d.get_mut("forecast").map(serde_json::Value::take))
                .filter(|f| !f.is_null())
        } else {
            None
        };
        out.traces.push(TracePoint {
            series: key,
            ts: last.ts,
            value: last.value,
            score: last.score,
            expected: e.and_then(|e| e.expected),
            band: e.and_then(|e| e.band),
            forecast,
        });
    }

    /// Runs one point through its series' operators and rules; returns whether it was taken
    /// (false when it was dropped or refused) and, when asked, puts the point as the operators
    /// scored it in `scored` (a copy of a few hundred bytes that the pipeline does without). A
    /// panic in operator or rule code quarantines the series (its state is dropped, its later
    /// points refused) and is reported as a reject of this point: the rest of the shard goes on.
    pub fn on_point(
        &mut self,
        kp: SeriesPoint<'_>,
        source: SourceId,
        msg: u32,
        out: &mut ShardOut,
        scored: Option<&mut PointCtx>,
    ) -> bool {
        let Shard {
            ctx,
            series,
            timers,
            stats,
            quarantined,
            evaluations,
            watched: _,
            epoch,
            cut,
            detectors: _,
        } = self;
        stats.points += 1;
        if !quarantined.is_empty() && quarantined.contains(kp.key) {
            out.rejects.push(PointReject {
                msg,
                reason: RejectReason::Quarantined,
                detail: format!(
                    "series {} is quarantined (its processing panicked earlier)",
                    SeriesKey(kp.key.into()).display()
                ),
            });
            return false;
        }
        // One lookup per point on the hot path.
        let st = match series.get_mut_hashed(kp.key, kp.hash) {
            Some(st) if st.source != source => {
                out.rejects.push(PointReject {
                    msg,
                    reason: RejectReason::SeriesConflict,
                    detail: format!(
                        "series {} comes from source {{source:{}}} already: a series must always come from the same subject <domain>.<source>",
                        SeriesKey(st.key.clone()).display(),
                        st.source
                    ),
                });
                return false;
            }
            Some(st) => {
                save_for_cut(cut, *epoch, ctx, st);
                st
            }
            None => {
                stats.series_created += 1;
                let key: Arc<str> = kp.key.into();
                out.claims.push(Claim {
                    key: key.clone(),
                    source,
                    msg,
                    new: true,
                });
                let st = series.insert_new(kp.hash, new_series(ctx, key, source));
                // Created after the cut: not part of the checkpoint being written.
                st.cut = *epoch;
                st
            }
        };
        let before = (out.events.len(), out.predictions.len());
        let result = catch_unwind(AssertUnwindSafe(|| {
            point_through_series(
                ctx,
                st,
                timers,
                stats,
                evaluations,
                kp.ts,
                kp.value,
                msg,
                out,
                scored,
            )
        }));
        match result {
            Ok(p) => p,
            Err(panic) => {
                let key = st.key.clone();
                out.events.truncate(before.0);
                out.predictions.truncate(before.1);
                self.quarantine(&key, msg, &*panic, out);
                false
            }
        }
    }

    fn on_watermark(&mut self, source: SourceId, w: i64, msg: u32, out: &mut ShardOut) {
        let staleness = self.ctx.staleness_ms;
        while let Some((_, due, key, idx)) = self.timers.pop_due(source, w) {
            let before = out.events.len();
            let result = catch_unwind(AssertUnwindSafe(|| {
                let Some(st) = self.series.get_mut(&key) else {
                    return;
                };
                save_for_cut(&mut self.cut, self.epoch, &self.ctx, st);
                let Some(slot) = st
                    .rules
                    .iter_mut()
                    .find(|s| s.rule == idx && s.timer == due)
                else {
                    return;
                };
                slot.timer = NO_TIMER;
                let rule = &self.ctx.rules.rules[idx as usize];
                let eta = eta(&self.ctx.chains[st.chain as usize], &st.ops, rule);
                while let Some(t) = slot.state.advance_to(rule, w, st.last.ts, staleness) {
                    note_prediction(slot, rule, &t, (st.last.ts, st.last.value), eta);
                    out.events.push(Emitted {
                        msg,
                        series: st.key.clone(),
                        event: make_event(rule, &st.key, t, st.last.scored(), eta),
                    });
                }
                reschedule(
                    &mut self.timers,
                    &st.key,
                    st.source,
                    slot,
                    rule,
                    st.last.ts,
                    staleness,
                );
            }));
            if let Err(panic) = result {
                out.events.truncate(before);
                self.quarantine(&key, msg, &*panic, out);
            }
        }
    }

    /// Drops a series whose code panicked and refuses its points from now on.
    fn quarantine(
        &mut self,
        key: &Arc<str>,
        msg: u32,
        panic: &(dyn std::any::Any + Send),
        out: &mut ShardOut,
    ) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        self.series.remove(key);
        if self.quarantined.len() < self.ctx.max_quarantined {
            self.quarantined.insert(key.clone());
        }
        self.stats.series_quarantined += 1;
        out.rejects.push(PointReject {
            msg,
            reason: RejectReason::Panic,
            detail: format!(
                "processing series {} panicked: {what}; the series is quarantined",
                SeriesKey(key.clone()).display()
            ),
        });
    }

    /// Drops series idle for longer than the eviction time on their source's clock that have
    /// no active alert (an alert keeps its state until it resolves).
    fn evict_idle(&mut self, watermarks: &HashMap<SourceId, i64>) {
        let idle = self.ctx.idle_ms;
        let before = self.series.len();
        let (cut, epoch, ctx) = (&mut self.cut, self.epoch, &self.ctx);
        self.series.retain(|st| {
            let w = watermarks.get(&st.source).copied().unwrap_or(i64::MIN);
            let keep = st.last.ts.saturating_add(idle) >= w
                || st.rules.iter().any(|s| s.state.is_active());
            if !keep {
                save_for_cut(cut, epoch, ctx, st);
            }
            keep
        });
        self.stats.series_evicted += (before - self.series.len()) as u64;
    }

    pub fn quarantined_count(&self) -> usize {
        self.quarantined.len()
    }

    /// The shard's series in key order (deterministic checkpoints), borrowed one at a time.
    pub fn for_each_series(&self, f: &mut impl FnMut(SeriesView<'_>)) {
        let mut all: Vec<&SeriesState> = self.series.iter().collect();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        for st in all {
            f(view(&self.ctx, st));
        }
    }

    /// Begins this shard's part of a checkpoint of its state as it is now (see
    /// `Pipeline::begin_checkpoint`).
    pub fn begin_cut(&mut self, sink: FrameSink) {
        debug_assert!(self.cut.is_none(), "one checkpoint at a time");
        self.epoch = self.epoch.wrapping_add(1);
        self.cut = Some(Cut {
            writer: CutWriter::new(sink),
            pending: self.series.len(),
            cursor: 0,
            buckets: 0,
            walk: None,
        });
    }

    /// Writes series of the cut not written yet until `deadline`, bucket by bucket; true once
    /// the cut is complete (every series written and the last frame handed over).
    pub fn cut_step(&mut self, deadline: Instant) -> bool {
        let Some(cut) = self.cut.as_mut() else {
            return true;
        };
        let mut written = 0usize;
        while cut.pending > 0 {
            // A series keeps its bucket until the table starts or ends growing, or rehashes in
            // place (after many removals), or the series moves while the table grows. When the
            // buckets change the walk starts over; a walk that ends with series still pending
            // (one moved past the cursor) starts over too (the series written already are
            // skipped).
            if cut.buckets != self.series.buckets() {
                (cut.buckets, cut.cursor, cut.walk) = (self.series.buckets(), 0, Some(0));
            }
            if cut.cursor >= cut.buckets {
                if cut.walk == Some(0) {
                    // A whole walk found nothing pending: the count is off (not reached).
                    debug_assert_eq!(cut.pending, 0, "a cut's count of pending series is off");
                    cut.pending = 0;
                    break;
                }
                (cut.cursor, cut.walk) = (0, Some(0));
                continue;
            }
            let i = cut.cursor;
            cut.cursor += 1;
            let Some(st) = self.series.bucket_mut(i) else {
                continue;
            };
            if st.cut == self.epoch {
                continue;
            }
            cut.write(&self.ctx, st, self.epoch);
            written += 1;
            if written.is_multiple_of(16) && Instant::now() >= deadline {
                break;
            }
        }
        if cut.pending > 0 {
            return false;
        }
        cut.writer.close();
        true
    }

    /// Ends this shard's part of the checkpoint (complete or abandoned): what it wrote.
    pub fn end_cut(&mut self) -> Option<CutWriter> {
        self.cut.take().map(|c| c.writer)
    }

    /// Quarantined series keys, sorted (for checkpoints).
    pub fn quarantined(&self) -> Vec<String> {
        let mut v: Vec<String> = self.quarantined.iter().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// Restores a quarantined series key from a checkpoint.
    pub fn restore_quarantined(&mut self, key: &str) {
        self.quarantined.insert(key.into());
    }

    /// Adds a series from a checkpoint (rules matched afresh; states kept by rule name).
    pub fn restore_series(&mut self, snap: SeriesSnapshot) {
        let key: Arc<str> = snap.key.into();
        let mut st = new_series(&self.ctx, key.clone(), snap.source);
        st.cut = self.epoch;
        if snap.ops.len() == st.ops.len() {
            st.ops = snap.ops.into_boxed_slice();
        }
        st.last = snap.last;
        for slot in st.rules.iter_mut() {
            let rule = &self.ctx.rules.rules[slot.rule as usize];
            if let Some((_, state)) = snap.rules.iter().find(|(name, _)| *name == rule.name) {
                slot.state = *state;
            }
            if let (Some(log), Some((_, saved))) = (
                slot.predictions.as_mut(),
                snap.predictions.iter().find(|(name, _)| *name == rule.name),
            ) {
                *log = saved.clone();
            }
            reschedule(
                &mut self.timers,
                &key,
                st.source,
                slot,
                rule,
                st.last.ts,
                self.ctx.staleness_ms,
            );
        }
        self.series.insert(st);
    }

    /// True when some timer is waiting (its source's clock must move for it to fire).
    pub fn has_timers(&self) -> bool {
        !self.timers.is_empty()
    }

    /// Bytes of keyed state, approximately (heap plus inline), for the benchmark.
    /// Bytes the shard's state takes: the map's buckets (every bucket, used or not, with its
    /// control byte), the timers, and each series' own allocations.
    pub fn approx_state_bytes(&self) -> usize {
        let table = self.series.buckets() * (std::mem::size_of::<SeriesState>() + 1);
        let timers = self.timers.len() * (std::mem::size_of::<Timer>() + 16)
            + self.timers.by_source.len() * 64;
        table + timers + self.series.iter().map(series_heap_bytes).sum::<usize>()
    }

    /// The largest series: its map entry and its own allocations.
    pub fn max_state_bytes(&self) -> usize {
        self.series
            .iter()
            .map(|st| std::mem::size_of::<SeriesState>() + series_heap_bytes(st))
            .max()
            .unwrap_or(0)
    }
}

/// Bytes a series allocates beyond its table entry: the key (shared by the state and the
/// timers), operator and rule slices, operator heap state, the boxed explanation.
fn series_heap_bytes(st: &SeriesState) -> usize {
    let op_heap: usize = st
        .ops
        .iter()
        .map(|o| match o {
            OperatorState::Anomaly(a) => a.state_bytes(),
            OperatorState::Dedup(d) => d.heap_bytes(),
            OperatorState::Zscore(_) => 0,
        })
        .sum();
    2 * std::mem::size_of::<usize>()
        + st.key.len()
        + std::mem::size_of_val(&*st.ops)
        + op_heap
        + std::mem::size_of_val(&*st.rules)
        + st.last
            .explanation
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<AnomalyExplanation>())
}

/// One point through a series' operators and rules (the part a panic can interrupt).
#[allow(clippy::too_many_arguments)]
fn point_through_series(
    ctx: &PipelineCtx,
    st: &mut SeriesState,
    timers: &mut Timers,
    stats: &mut ShardStats,
    evaluations: &mut [u64],
    ts: i64,
    value: f64,
    msg: u32,
    shard_out: &mut ShardOut,
    scored: Option<&mut PointCtx>,
) -> bool {
    let out = &mut shard_out.events;
    let mut p = PointCtx::new(ts, value);
    let specs = &ctx.chains[st.chain as usize];
    for (spec, op) in specs.iter().zip(st.ops.iter_mut()) {
        if let Flow::Drop(reason) = spec.on_point(op, &mut p) {
            match reason {
                DropReason::Duplicate => stats.duplicates += 1,
                DropReason::OutOfOrder => stats.out_of_order += 1,
            }
            return false;
        }
    }
    let staleness = ctx.staleness_ms;
    // The grades of a graded rule share their threshold: one forecast serves them all.
    let mut last_eta: Option<EtaOf> = None;
    for slot in st.rules.iter_mut() {
        let rule = &ctx.rules.rules[slot.rule as usize];
        if let Some(n) = evaluations.get_mut(slot.rule as usize) {
            *n += 1;
        }
        // The operators have already seen this point, so one forecast serves both steps.
        let eta = match rule.predict_within_ms {
            None => None,
            Some(_) => {
                let k = (rule.condition.threshold.to_bits(), rule.condition.op);
                match last_eta {
                    Some((prev, e)) if prev == k => e,
                    _ => {
                        let e = eta(specs, &st.ops, rule);
                        last_eta = Some((k, e));
                        e
                    }
                }
            }
        };
        // Transitions the previous value was due to cause before this point arrived.
        while let Some(t) = slot.state.advance_to(rule, p.ts, st.last.ts, staleness) {
            note_prediction(slot, rule, &t, (p.ts, st.last.value), eta);
            out.push(Emitted {
                msg,
                series: st.key.clone(),
                event: make_event(rule, &st.key, t, st.last.scored(), eta),
            });
        }
        if let Some(t) = slot.state.on_point(rule, p.ts, holds(rule, &p, eta)) {
            note_prediction(slot, rule, &t, (p.ts, p.value), eta);
            out.push(Emitted {
                msg,
                series: st.key.clone(),
                event: make_event(rule, &st.key, t, Scored::of(&p), eta),
            });
        }
        slot.state.observe(rule, p.value);
        reschedule(timers, &st.key, st.source, slot, rule, p.ts, staleness);
    }
    score_predictions(ctx, st, &p, msg, &mut shard_out.predictions);
    st.last.set(&p);
    if let Some(s) = scored {
        *s = p;
    }
    true
}

/// A predictive rule's alert that fires predicts its crossing: recorded, to be scored. One that
/// fires because the value has already crossed detects, not predicts. It comes true if the
/// value crosses within the rule's horizon, give or take the forecast's stated uncertainty (and
/// at least a tenth of the horizon: a crossing minutes past the promise is not a false alarm).
/// `(at, value)`: the point the forecast `eta` was made at (its crossing time counts from there).
fn note_prediction(
    slot: &mut RuleSlot,
    rule: &Rule,
    t: &Transition,
    (at, value): (i64, f64),
    eta: Option<(i64, i64)>,
) {
    let (Some(log), Some(within), TransitionKind::Firing, Some((mean, plus_minus))) = (
        slot.predictions.as_mut(),
        rule.predict_within_ms,
        t.kind,
        eta,
    ) else {
        return;
    };
    if rule.condition.holds(value, 0.0, 0.0) {
        return;
    }
    log.predicted(Prediction {
        made_at: t.at,
        predicted_at: at.saturating_add(mean),
        until: t
            .at
            .saturating_add(within)
            .saturating_add(plus_minus.max(within / 10)),
    });
}

/// The predictions of the series' predictive rules that point `p` settles; a crossing that no
/// rule of its family had predicted is a miss of the family.
fn score_predictions(
    ctx: &PipelineCtx,
    st: &mut SeriesState,
    p: &PointCtx,
    msg: u32,
    out: &mut Vec<PredictionScored>,
) {
    // The grades of a family are consecutive rules (and slots): one family at a time (by the
    // index of its first rule), its crossing and whether a grade had predicted it. Nothing is
    // allocated per point.
    let mut family: Option<(u32, bool, bool)> = None;
    let mut settled = Vec::new();
    let miss = |f: Option<(u32, bool, bool)>, out: &mut Vec<PredictionScored>| {
        if let Some((first, true, false)) = f {
            let rule = &ctx.rules.rules[first as usize];
            out.push(PredictionScored {
                msg,
                series: st.key.clone(),
                rule: rule.family.as_deref().unwrap_or(&rule.name).to_string(),
                outcome: Outcome::Miss,
                at: p.ts,
            });
        }
    };
    for slot in st.rules.iter_mut() {
        let Some(log) = slot.predictions.as_mut() else {
            continue;
        };
        let rule = &ctx.rules.rules[slot.rule as usize];
        let crossed = rule.condition.holds(p.value, 0.0, 0.0);
        let (edge, covered) = log.on_point(p.ts, crossed, &mut settled);
        for (outcome, at) in settled.drain(..) {
            out.push(PredictionScored {
                msg,
                series: st.key.clone(),
                rule: rule.name.clone(),
                outcome,
                at,
            });
        }
        let first = ctx.family_of[slot.rule as usize];
        match &mut family {
            Some(f) if f.0 == first => {
                f.1 |= edge;
                f.2 |= covered;
            }
            _ => {
                miss(family.take(), out);
                family = Some((first, edge, covered));
            }
        }
    }
    miss(family, out);
}

fn new_series(ctx: &PipelineCtx, key: Arc<str>, source: SourceId) -> SeriesState {
    let series = SeriesKey(key.clone());
    let chain = if source == super::DERIVED_SOURCE {
        ctx.derived_chain()
    } else {
        ctx.chain_for(series.name())
    };
    let rules = ctx
        .rules
        .matching(&series)
        .into_iter()
        .map(|rule| RuleSlot {
            rule,
            state: RuleState::default(),
            timer: NO_TIMER,
            predictions: ctx.rules.rules[rule as usize]
                .predict_within_ms
                .map(|_| PredictionLog::default()),
        })
        .collect();
    SeriesState {
        key,
        chain: chain as u16,
        source,
        last: LastPoint::new(i64::MIN / 2),
        ops: ctx.chains[chain]
            .iter()
            .map(OperatorSpec::new_state)
            .collect(),
        rules,
        cut: 0,
    }
}

fn reschedule(
    timers: &mut Timers,
    key: &Arc<str>,
    source: SourceId,
    slot: &mut RuleSlot,
    rule: &Rule,
    last_ts: i64,
    staleness_ms: i64,
) {
    let due = slot
        .state
        .next_due(rule, last_ts, staleness_ms)
        .unwrap_or(NO_TIMER);
    // A due that moved later (a firing series' staleness, pushed back by every point) keeps
    // its registered timer: when that fires, the state finds nothing due yet and the timer is
    // registered again at the new due. Most points then touch no timer at all.
    if due == slot.timer || (slot.timer != NO_TIMER && due != NO_TIMER && due > slot.timer) {
        return;
    }
    if slot.timer != NO_TIMER {
        timers.remove(&(source, slot.timer, key.clone(), slot.rule));
    }
    if due != NO_TIMER {
        timers.insert((source, due, key.clone(), slot.rule));
    }
    slot.timer = due;
}

/// A forecast's time to a threshold, by (threshold bits, operator).
type EtaOf = ((u64, Op), Option<(i64, i64)>);

/// Stable 16-hex-digit fingerprint of a rule on a series.
pub fn fingerprint(rule: &str, series_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0u8]);
    h.update(series_key.as_bytes());
    let digest = h.finalize();
    hex::encode(&digest[..8])
}

/// Predicted (mean, ±) ms until a predictive rule's threshold is crossed, from the series'
/// trend state; `None` for other rules or without the `anomaly` operator.
fn eta(specs: &[OperatorSpec], ops: &[OperatorState], rule: &Rule) -> Option<(i64, i64)> {
    rule.predict_within_ms?;
    let direction = match rule.condition.op {
        Op::Gt | Op::Ge => CrossingDirection::Up,
        Op::Lt | Op::Le => CrossingDirection::Down,
        _ => return None,
    };
    specs
        .iter()
        .zip(ops)
        .find_map(|(spec, state)| match (spec, state) {
            (OperatorSpec::Anomaly(cfg), OperatorState::Anomaly(st)) => cfg
                .trend
                .time_until_crossing(st.trend(), rule.condition.threshold, direction),
            _ => None,
        })
}

/// Whether a rule's condition holds for a point; a predictive rule also holds when the
/// forecast crosses its threshold within the horizon.
fn holds(rule: &Rule, p: &PointCtx, eta: Option<(i64, i64)>) -> bool {
    let now = rule
        .condition
        .holds_with(p.value, p.score, p.zscore, p.anomaly_flag());
    match (rule.predict_within_ms, rule.predict_after_ms) {
        // A later grade of a graded rule: the crossing is predicted in its band only (one that
        // has happened belongs to the first grade).
        (Some(within), Some(after)) => {
            !now && matches!(eta, Some((mean, _)) if mean > after && mean <= within)
        }
        (Some(within), None) => now || matches!(eta, Some((mean, _)) if mean <= within),
        _ => now,
    }
}

fn make_event(
    rule: &Rule,
    key: &Arc<str>,
    t: Transition,
    p: Scored<'_>,
    eta: Option<(i64, i64)>,
) -> AlertEvent {
    let (value, score, zscore) = (p.value, p.score, p.zscore);
    let explanation = p.explanation;
    let series = SeriesKey(key.clone());
    let fp = fingerprint(&rule.name, key);
    let mut labels: BTreeMap<String, String> = series
        .labels()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.insert("metric".into(), series.name().to_string());
    labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let status = match t.kind {
        TransitionKind::Pending => AlertStatus::Pending,
        TransitionKind::Firing => AlertStatus::Firing,
        TransitionKind::Resolved => AlertStatus::Resolved,
        TransitionKind::Cancelled => AlertStatus::Cancelled,
    };
    let ctx = TemplateCtx {
        series: &series,
        rule: &rule.name,
        value,
        score,
        zscore,
        threshold: rule.condition.threshold,
        expected: explanation.and_then(|e| e.expected),
        band: explanation.and_then(|e| e.band),
        detector: explanation.and_then(|e| e.top).map(|d| d.name()),
        deviation: explanation.map(|e| e.deviation_sd).unwrap_or(zscore),
        since_ms: explanation.and_then(|e| e.since_ms),
        at_ms: t.at,
        eta,
        status: status.token(),
        peak: t.peak,
        duration_ms: t.at - t.starts_at,
    };
    // `<key>_resolved` / `<key>_cancelled` stand in for `<key>` when the alert ends so.
    let ending = format!("_{}", status.token());
    let annotations = rule
        .annotations
        .iter()
        .filter(|(k, _)| !k.ends_with("_resolved") && !k.ends_with("_cancelled"))
        .map(|(k, tpl)| {
            let by_status = format!("{k}{ending}");
            let tpl = rule
                .annotations
                .iter()
                .find(|(other, _)| *other == by_status)
                .map(|(_, t)| t)
                .unwrap_or(tpl);
            (k.clone(), tpl.render(&ctx))
        })
        .collect();
    let end_reason = match status {
        AlertStatus::Resolved | AlertStatus::Cancelled if t.stale => Some(EndReason::Stale),
        AlertStatus::Resolved | AlertStatus::Cancelled => Some(EndReason::Condition),
        _ => None,
    };
    AlertEvent {
        id: format!("{fp}-{}", t.starts_at),
        fingerprint: fp,
        rule: rule.name.clone(),
        priority: rule.priority,
        status,
        labels,
        annotations,
        value,
        score,
        starts_at: t.starts_at,
        ends_at: matches!(status, AlertStatus::Resolved | AlertStatus::Cancelled).then_some(t.at),
        end_reason,
        event_time: t.at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::operator::AnomalyDetail;

    #[test]
    fn a_graded_rules_grades_share_the_family_of_its_first_grade() {
        let mut rules = RuleSet::default();
        rules
            .add_file(
                "t.yaml",
                "rules:\n  - name: cpu_high\n    metric: cpu\n    condition: value > 90\n    priority: P2\n  - name: disk_full\n    metric: disk\n    condition: value > 90\n    grades: { P1: 6h, P2: 1d, P3: 3d }\n  - name: mem_full\n    metric: mem\n    condition: value > 95\n    priority: P3\n    predicted_crossing_within: 1h\n",
            )
            .unwrap();
        let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        let ctx = PipelineCtx::new(&PipelineConfig::default(), rules);
        // Each rule's family by its first rule: the three grades of disk_full are one family.
        assert_eq!(ctx.family_of, [0, 1, 1, 1, 4]);
    }

    #[test]
    fn the_last_point_keeps_the_explanation_only_while_the_detectors_give_one() {
        let mut last = LastPoint::new(0);
        let explanation = AnomalyExplanation {
            expected: Some(42.0),
            deviation_sd: 5.0,
            ..Default::default()
        };
        let mut p = PointCtx::new(1_000, 99.0);
        p.score = 0.9;
        p.anomaly = Some(AnomalyDetail {
            alert: true,
            raw_score: 0.95,
            detector_scores: [0.0; crate::detect::DETECTORS],
            explanation,
        });
        last.set(&p);
        let seen = last.scored();
        assert_eq!((seen.value, seen.score), (99.0, 0.9));
        assert_eq!(seen.explanation, Some(&explanation));
        assert_eq!(last.ts, 1_000);

        let plain = PointCtx::new(2_000, 1.0);
        last.set(&plain);
        assert_eq!(last.scored().explanation, None);
        assert_eq!(last.ts, 2_000);
    }
}

//! Event time per source, and the stream time that moves it when a source goes quiet.
//!
//! Every publisher has its own clock and lag, so each *source* (the `<domain>.<source>` tokens of
//! a metric subject) is judged on its own timeline, the way stream processors keep one watermark
//! per input split:
//!
//! - **Stream time** `T` is the largest JetStream store time (`published_ms`) of the partition's
//!   messages so far. It is part of the stream, so replay sees exactly what live saw. When a
//!   partition is quiet, its owner stores *tick* messages, so `T` follows the wall clock live.
//! - A source's **watermark** is `E − lateness` while it sends (`E` = the largest event time it
//!   has sent), and runs on with stream time once it has been quiet for `idle`:
//!   `W = E + max(0, T − A − idle) − lateness`, where `A` is the stream time of its last message.
//!   A source that publishes 3 minutes behind is judged against its own 3-minute-old clock; a
//!   point stamped ahead by a skewed clock moves only its own source.
//! - A point older than its source's watermark is **late**: counted, logged and dead-lettered.
//!   Timers of a series fire when its source's watermark passes them, so a `for` elapses (and a
//!   stale series resolves) within `idle + lateness` of wall time even when the data stops.
//!
//! Pure and deterministic: every decision depends only on the stream's content and order.

use std::collections::HashMap;

use foldhash::fast::{FixedState, RandomState};
use serde::{Deserialize, Serialize};

/// Dense id of a source within one partition's pipeline (never reused).
pub type SourceId = u32;

/// The source of the series the pipeline derives itself (SLOs): not a publisher, so not in the
/// timelines; the pipeline moves its watermark as it writes the points.
pub const DERIVED_SOURCE: SourceId = SourceId::MAX;
/// Its name in messages.
pub const DERIVED_SOURCE_NAME: &str = "prismwatch.slo";

/// Settings of the timelines, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeConfig {
    /// How far behind its source's newest event time a point may be and still count.
    pub lateness_ms: i64,
    /// Stream time a source may stay quiet before its watermark runs on with stream time.
    pub idle_ms: i64,
    /// Watermarks reach the shards when they moved at least this much (event time).
    pub step_ms: i64,
    /// A source quiet for this long (stream time) is forgotten.
    pub forget_after_ms: i64,
}

/// One source's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceClock {
    pub id: SourceId,
    pub name: String,
    /// Largest event time admitted from this source (`i64::MIN` before its first point).
    pub max_event: i64,
    /// Stream time of its last message.
    pub last_arrival: i64,
    /// The watermark last delivered to the shards.
    pub delivered: i64,
}

impl SourceClock {
    /// The watermark at stream time `t`.
    fn watermark(&self, cfg: &TimeConfig, t: i64) -> i64 {
        if self.max_event == i64::MIN {
            return i64::MIN;
        }
        let quiet = t
            .saturating_sub(self.last_arrival)
            .saturating_sub(cfg.idle_ms);
        self.max_event
            .saturating_add(quiet.max(0))
            .saturating_sub(cfg.lateness_ms)
    }
}

/// What the timelines tell the shards after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSignal {
    /// Source `source`'s watermark reached `at`: its timers due by then fire.
    Watermark { source: SourceId, at: i64 },
    /// The source is forgotten (quiet for `forget_after_ms`); so are its per-shard clocks.
    Forget { source: SourceId },
}

/// The timelines of one partition: stream time and every source's clock.
#[derive(Debug, Clone)]
pub struct Timelines {
    cfg: TimeConfig,
    stream_time: i64,
    /// Randomly seeded: source names come from publishers' subjects.
    by_name: HashMap<Box<str>, SourceId, RandomState>,
    /// Clocks by id (a map: ids are not reused when sources are forgotten).
    clocks: HashMap<SourceId, SourceClock, FixedState>,
    next_id: SourceId,
    /// Stream time of the next sweep over quiet sources.
    next_sweep: i64,
    /// The last source looked up by name.
    last: Option<(Box<str>, SourceId)>,
}

/// Timelines as stored in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinesSnapshot {
    pub stream_time: i64,
    pub next_id: SourceId,
    pub next_sweep: i64,
    /// Sorted by id.
    pub sources: Vec<SourceClock>,
}

impl Timelines {
    pub fn new(cfg: TimeConfig) -> Self {
        Self {
            cfg,
            stream_time: i64::MIN,
            by_name: HashMap::default(),
            clocks: HashMap::default(),
            next_id: 0,
            next_sweep: i64::MIN,
            last: None,
        }
    }

    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }

    pub fn source_count(&self) -> usize {
        self.clocks.len()
    }

    /// A message stored at `published_ms` arrived: stream time moves (never back). Sweeps the
    /// quiet sources each `step_ms` of stream time, so their watermarks move without data.
    pub fn on_message(&mut self, published_ms: i64, out: &mut Vec<TimeSignal>) {
        self.stream_time = self.stream_time.max(published_ms);
        if self.stream_time < self.next_sweep {
            return;
        }
        self.next_sweep = self.stream_time.saturating_add(self.cfg.step_ms);
        let t = self.stream_time;
        let mut forget = Vec::new();
        let mut ids: Vec<SourceId> = self.clocks.keys().copied().collect();
        // Deterministic signal order whatever the map's iteration order.
        ids.sort_unstable();
        for id in ids {
            let clock = self.clocks.get_mut(&id).expect("listed id");
            if t.saturating_sub(clock.last_arrival) > self.cfg.forget_after_ms {
                forget.push((id, clock.name.clone()));
                continue;
            }
            deliver(&self.cfg, clock, t, out);
        }
        for (id, name) in forget {
            self.clocks.remove(&id);
            self.by_name.remove(name.as_str());
            self.last = None;
            out.push(TimeSignal::Forget { source: id });
        }
    }

    /// The source of a message from `name` (created on first sight); its last arrival is now.
    pub fn source(&mut self, name: &str) -> SourceId {
        let t = self.stream_time;
        // Messages come in runs from one source: a one-entry cache spares the hash lookup.
        if let Some((last, id)) = &self.last {
            if **last == *name {
                if let Some(c) = self.clocks.get_mut(id) {
                    c.last_arrival = t;
                    return *id;
                }
            }
        }
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.by_name.insert(name.into(), id);
                self.clocks.insert(
                    id,
                    SourceClock {
                        id,
                        name: name.to_string(),
                        max_event: i64::MIN,
                        last_arrival: t,
                        delivered: i64::MIN,
                    },
                );
                id
            }
        };
        if let Some(c) = self.clocks.get_mut(&id) {
            c.last_arrival = t;
        }
        self.last = Some((name.into(), id));
        id
    }

    /// The watermark of `source` now.
    pub fn watermark(&self, source: SourceId) -> i64 {
        self.clocks
            .get(&source)
            .map_or(i64::MIN, |c| c.watermark(&self.cfg, self.stream_time))
    }

    /// Admits a point at event time `ts` from `source`, or returns how far (ms) it is behind the
    /// source's watermark when it is late.
    #[inline]
    pub fn admit(&mut self, source: SourceId, ts: i64) -> Result<(), i64> {
        let t = self.stream_time;
        let cfg = self.cfg;
        let Some(c) = self.clocks.get_mut(&source) else {
            return Ok(());
        };
        let w = c.watermark(&cfg, t);
        if ts < w {
            return Err(w - ts);
        }
        c.max_event = c.max_event.max(ts);
        Ok(())
    }

    /// After a message's points: the source's watermark, if it moved a step since last delivered.
    pub fn after_points(&mut self, source: SourceId, out: &mut Vec<TimeSignal>) {
        let t = self.stream_time;
        if let Some(c) = self.clocks.get_mut(&source) {
            deliver(&self.cfg, c, t, out);
        }
    }

    /// The lowest watermark of the sources that are not quiet, else stream time − lateness: what
    /// the partition as a whole has reached (reported as a gauge; timers use their own source's).
    pub fn combined_watermark(&self) -> i64 {
        let t = self.stream_time;
        self.clocks
            .values()
            .filter(|c| t.saturating_sub(c.last_arrival) <= self.cfg.idle_ms)
            .map(|c| c.watermark(&self.cfg, t))
            .min()
            .unwrap_or_else(|| t.saturating_sub(self.cfg.lateness_ms))
    }

    /// Every source's watermark as last delivered to the shards, by id.
    pub fn delivered_watermarks(&self) -> HashMap<SourceId, i64> {
        self.clocks
            .iter()
            .map(|(id, c)| (*id, c.delivered))
            .collect()
    }

    /// The source's name, for logs and dead letters.
    pub fn name(&self, source: SourceId) -> &str {
        if source == DERIVED_SOURCE {
            return DERIVED_SOURCE_NAME;
        }
        self.clocks.get(&source).map_or("?", |c| c.name.as_str())
    }

    pub fn snapshot(&self) -> TimelinesSnapshot {
        let mut sources: Vec<SourceClock> = self.clocks.values().cloned().collect();
        sources.sort_by_key(|c| c.id);
        TimelinesSnapshot {
            stream_time: self.stream_time,
            next_id: self.next_id,
            next_sweep: self.next_sweep,
            sources,
        }
    }

    pub fn restore(&mut self, snap: TimelinesSnapshot) {
        self.stream_time = snap.stream_time;
        self.next_id = snap.next_id;
        self.next_sweep = snap.next_sweep;
        self.by_name = snap
            .sources
            .iter()
            .map(|c| (c.name.as_str().into(), c.id))
            .collect();
        self.clocks = snap.sources.into_iter().map(|c| (c.id, c)).collect();
        self.last = None;
    }
}

fn deliver(cfg: &TimeConfig, clock: &mut SourceClock, t: i64, out: &mut Vec<TimeSignal>) {
    let w = clock.watermark(cfg, t);
    if w != i64::MIN && w >= clock.delivered.saturating_add(cfg.step_ms) {
        clock.delivered = w;
        out.push(TimeSignal::Watermark {
            source: clock.id,
            at: w,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1000;
    const MIN: i64 = 60 * SEC;
    const T0: i64 = 1_764_000_000_000;

    fn timelines() -> Timelines {
        Timelines::new(TimeConfig {
            lateness_ms: 5 * SEC,
            idle_ms: 5 * SEC,
            step_ms: SEC,
            forget_after_ms: 60 * MIN,
        })
    }

    /// One message from `source` stored at `at` with points at `ts`; returns the late ones.
    fn message(tl: &mut Timelines, source: &str, at: i64, ts: &[i64]) -> Vec<i64> {
        let mut signals = Vec::new();
        tl.on_message(at, &mut signals);
        let id = tl.source(source);
        let late = ts.iter().copied().filter(|&t| tl.admit(id, t).is_err());
        let late = late.collect();
        tl.after_points(id, &mut signals);
        late
    }

    #[test]
    fn a_lagging_source_is_judged_on_its_own_clock() {
        let mut tl = timelines();
        for i in 0..100 {
            let now = T0 + i * SEC;
            // "fast" publishes in real time, "slow" three minutes behind.
            assert!(message(&mut tl, "exchange.fast", now, &[now]).is_empty());
            let late = message(&mut tl, "exchange.slow", now, &[now - 3 * MIN]);
            assert!(late.is_empty(), "slow source's point at {i} was late");
        }
        let slow = tl.source("exchange.slow");
        assert_eq!(tl.watermark(slow), T0 + 99 * SEC - 3 * MIN - 5 * SEC);
    }

    #[test]
    fn a_skewed_clock_moves_only_its_own_source() {
        let mut tl = timelines();
        message(&mut tl, "host.a", T0, &[T0]);
        // One point four minutes ahead on host.b.
        message(&mut tl, "host.b", T0, &[T0 + 4 * MIN]);
        for i in 1..60 {
            let now = T0 + i * SEC;
            assert!(message(&mut tl, "host.a", now, &[now]).is_empty());
        }
        // host.b's own real-time points are now behind its skewed clock.
        assert_eq!(
            message(&mut tl, "host.b", T0 + 60 * SEC, &[T0 + 60 * SEC]).len(),
            1
        );
    }

    #[test]
    fn a_quiet_source_runs_on_with_stream_time_and_late_points_are_named() {
        let mut tl = timelines();
        message(&mut tl, "exchange.okx", T0, &[T0]);
        let okx = tl.source("exchange.okx");
        assert_eq!(tl.watermark(okx), T0 - 5 * SEC);
        // Stream time moves (other partitions' ticks): nothing from okx for 65 s.
        let mut signals = Vec::new();
        for s in 1..=65 {
            tl.on_message(T0 + s * SEC, &mut signals);
        }
        // Quiet for 65 s, idle after 5: its clock moved 60 s.
        assert_eq!(tl.watermark(okx), T0 + 60 * SEC - 5 * SEC);
        assert!(signals.contains(&TimeSignal::Watermark {
            source: okx,
            at: T0 + 55 * SEC
        }));
        // A point from before that is late by how much it is behind.
        assert_eq!(tl.admit(okx, T0 + 50 * SEC), Err(5 * SEC));
        assert_eq!(tl.admit(okx, T0 + 55 * SEC), Ok(()));
    }

    #[test]
    fn batches_within_idle_plus_lateness_are_never_late() {
        let mut tl = timelines();
        // A collector that sends 10 s of points every 10 s.
        for b in 0..30 {
            let sent = T0 + (b + 1) * 10 * SEC;
            let ts: Vec<i64> = (0..10).map(|i| T0 + b * 10 * SEC + i * SEC).collect();
            for s in 1..10 {
                let mut signals = Vec::new();
                tl.on_message(sent - 10 * SEC + s * SEC, &mut signals);
            }
            assert!(message(&mut tl, "exchange.batcher", sent, &ts).is_empty());
        }
    }

    #[test]
    fn quiet_sources_are_forgotten_and_snapshots_restore() {
        let mut tl = timelines();
        message(&mut tl, "a.b", T0, &[T0]);
        message(&mut tl, "c.d", T0, &[T0]);
        let snap = tl.snapshot();
        let mut copy = timelines();
        copy.restore(snap.clone());
        assert_eq!(copy.snapshot(), snap);
        let mut signals = Vec::new();
        tl.on_message(T0 + 61 * MIN, &mut signals);
        assert_eq!(tl.source_count(), 0);
        assert!(signals.contains(&TimeSignal::Forget { source: 0 }));
        // A forgotten source that comes back is a new one.
        assert_eq!(tl.source("a.b"), 2);
    }

    #[test]
    fn combined_watermark_ignores_quiet_sources() {
        let mut tl = timelines();
        message(&mut tl, "a.b", T0, &[T0 - 10 * MIN]);
        message(&mut tl, "c.d", T0, &[T0]);
        assert_eq!(tl.combined_watermark(), T0 - 10 * MIN - 5 * SEC);
        for s in 1..=20 {
            message(&mut tl, "c.d", T0 + s * SEC, &[T0 + s * SEC]);
        }
        // a.b has been quiet longer than idle: it no longer holds the partition back.
        assert_eq!(tl.combined_watermark(), T0 + 20 * SEC - 5 * SEC);
    }
}

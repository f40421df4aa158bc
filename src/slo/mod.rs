//! SLO evaluation on event time: the points of every objective's SLI series are counted into
//! per-minute good and total events, and each time the partition's watermark closes a minute,
//! every SLO group derives its burn rates, multi-window burn rates, error budget left and score
//! as points of series of its own (`crate::rules::slo::series`). The pipeline runs those points
//! through the shards like any other, so the generated burn-rate rules alert on them.
//!
//! Synchronous and deterministic: the same points and watermarks in the same order give the
//! same derived points, whatever the batching. The SLO is counted across series, so all of an
//! SLO group's SLI series must reach one partition (one `<domain>.<source>` subject, or a
//! `group_by` that follows it).

mod history;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use hashbrown::HashTable;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use history::{Counts, EventHistory};

use crate::model::SeriesKey;
use crate::rules::slo::{series, window_label, Role, Sli, Slo, MINUTE_MS};

/// Groups one SLO may have: beyond, new label values are refused (and counted), so hostile or
/// runaway label values cannot grow the state without bound.
pub const MAX_GROUPS_PER_SLO: usize = 1000;
/// SLI series whose last point is remembered (duplicates, counter increases); beyond, the
/// memory is cleared at once (counters then miss one increase each).
pub const MAX_REMEMBERED_SERIES: usize = 100_000;
/// After a gap in the watermark, derived points are written for at most this many of the
/// minutes it closes at once (the older ones are counted, not written): hours of silence do not
/// turn into a flood of points.
pub const MAX_MINUTES_WRITTEN_AT_ONCE: i64 = 360;

/// One SLI series an objective reads, by metric name.
#[derive(Debug, Clone)]
struct Target {
    slo: usize,
    objective: usize,
    role: Role,
    /// The SLO's matchers and the selector's, which a series must match.
    matchers: Vec<(String, crate::rules::Matcher)>,
}

/// A group's key: (SLO index, its `group_by` label values).
type GroupKey = (usize, Vec<String>);

/// What the engine remembers of an SLI series: its key and last point, and the group (an index
/// into [`SloEngine::slab`]) each target of its metric counts it into (`None`: it does not match
/// the target), resolved once.
struct Seen {
    key: Box<str>,
    ts: i64,
    value: f64,
    groups: Box<[Option<u32>]>,
}

/// The value of label `name` in canonical series key `key`, without allocating.
fn label_in<'k>(key: &'k str, name: &str) -> Option<&'k str> {
    key.split('\u{1f}')
        .skip(1)
        .filter_map(|pair| pair.split_once('\u{1e}'))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The latest state of one objective of one group (for `/metrics` and the status API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectiveStatus {
    pub objective: String,
    /// Burn rate per window label (`5m`, `1h`...).
    pub burn_rates: Vec<(String, f64)>,
    pub error_budget_remaining: f64,
    /// Good events over the period / all, `None` without an event.
    pub attained: Option<f64>,
}

/// The latest state of one SLO group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    pub slo: String,
    /// The group's `group_by` labels.
    pub group: Vec<(String, String)>,
    pub score: f64,
    pub weight: f64,
    /// End of the last closed minute the status is of.
    pub at: i64,
    pub objectives: Vec<ObjectiveStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ObjectiveState {
    name: String,
    /// Minutes not closed yet, by minute index.
    open: BTreeMap<i64, Counts>,
    history: EventHistory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    slo: String,
    labels: Vec<(String, String)>,
    objectives: Vec<ObjectiveState>,
}

/// The engine's state as written to a checkpoint: groups by SLO and objective names, so rule
/// files can change between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SloSnapshot {
    closed_until: Option<i64>,
    groups: Vec<Group>,
    /// (series key, last point's time, last value) of the SLI series.
    last_points: Vec<(String, i64, f64)>,
}

/// Counters of what the engine did not count normally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SloStats {
    /// Points for a minute already closed, counted into the oldest open minute.
    pub late_points: u64,
    /// Series refused a new group at [`MAX_GROUPS_PER_SLO`] (counted at their first point).
    pub refused_points: u64,
    /// Points at or before their series' last point's time (redeliveries): not counted again.
    pub repeated_points: u64,
}

/// The SLOs of one partition's pipeline.
pub struct SloEngine {
    slos: Arc<[Slo]>,
    /// Looked up for every point: a fast hash (the keys are the SLO files' metric names).
    by_metric: HashMap<String, Arc<[Target]>, foldhash::fast::RandomState>,
    /// Index into `slab` by (SLO index, group label values): the order minutes close in.
    groups: BTreeMap<GroupKey, usize>,
    /// The groups; a point finds its group by index, without comparing label values.
    slab: Vec<Group>,
    /// End of the last closed minute (ms), `None` before the first SLI point.
    closed_until: Option<i64>,
    /// By series key, one hash and one probe per SLI point. Randomly seeded: series keys come
    /// from publishers.
    last_points: HashTable<Seen>,
    hasher: foldhash::fast::RandomState,
    status: BTreeMap<GroupKey, SloStatus>,
    /// Minutes closed by this engine (not checkpointed: it tells a status change).
    minutes_closed: u64,
    pub stats: SloStats,
}

impl SloEngine {
    pub fn new(slos: &[Slo]) -> Self {
        Self::with_hasher(slos, Default::default())
    }

    /// An engine whose series table hashes keys with `hasher`: the pipeline's series hasher,
    /// so a point's hash, computed once, serves here too ([`SloEngine::observe_hashed`]).
    pub fn with_hasher(slos: &[Slo], hasher: foldhash::fast::RandomState) -> Self {
        let mut by_metric: HashMap<String, Vec<Target>> = HashMap::new();
        for (si, slo) in slos.iter().enumerate() {
            for (oi, o) in slo.objectives.iter().enumerate() {
                for (s, role) in o.sli.selectors() {
                    by_metric.entry(s.metric.clone()).or_default().push(Target {
                        slo: si,
                        objective: oi,
                        role,
                        matchers: slo.matchers.iter().chain(&s.matchers).cloned().collect(),
                    });
                }
            }
        }
        Self {
            slos: slos.to_vec().into(),
            by_metric: by_metric.into_iter().map(|(k, v)| (k, v.into())).collect(),
            groups: BTreeMap::new(),
            slab: Vec::new(),
            closed_until: None,
            last_points: HashTable::new(),
            hasher,
            status: BTreeMap::new(),
            minutes_closed: 0,
            stats: SloStats::default(),
        }
    }

    /// True when there is an SLO to evaluate.
    #[inline]
    pub fn is_active(&self) -> bool {
        !self.by_metric.is_empty()
    }

    /// The watermark at which the next minute closes (`i64::MAX` before any SLI point).
    #[inline]
    pub fn next_close(&self) -> i64 {
        match self.closed_until {
            Some(t) => t.saturating_add(MINUTE_MS),
            None => i64::MAX,
        }
    }

    /// The group each of `targets` counts series `key` into (created on first sight, up to
    /// [`MAX_GROUPS_PER_SLO`] per SLO), or `None` where the series does not match.
    fn resolve(&mut self, key: &str, targets: &[Target]) -> Box<[Option<u32>]> {
        let Self {
            slos,
            groups,
            slab,
            stats,
            ..
        } = self;
        resolve_groups(slos, groups, slab, stats, key, targets)
    }

    /// Starts loading the remembered point of the series whose hash is `hash` (see
    /// [`SloEngine::observe_hashed`]), if the engine may hold it: the pipeline calls this a few
    /// points ahead.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(seen) = self.last_points.find(hash, |_| true) {
            crate::ingest::prefetch::prefetch(seen);
        }
    }

    /// Counts an admitted point of series `key` (canonical) into the objectives it feeds. A
    /// series of an SLI metric costs a map lookup per point, and nothing is allocated but on its
    /// first point.
    pub fn observe(&mut self, key: &str, ts: i64, value: f64) {
        let hash = self.hasher.hash_one(key);
        self.observe_hashed(key, hash, ts, value);
    }

    /// As [`SloEngine::observe`], with `hash` = the engine's hasher's hash of `key` (in the
    /// pipeline: the point's series hash, computed once for the shards and here).
    pub fn observe_hashed(&mut self, key: &str, hash: u64, ts: i64, value: f64) {
        debug_assert_eq!(hash, self.hasher.hash_one(key));
        let name = match memchr::memchr(0x1f, key.as_bytes()) {
            Some(end) => &key[..end],
            None => key,
        };
        let Self {
            slos,
            by_metric,
            groups,
            slab,
            closed_until,
            last_points,
            hasher,
            stats,
            ..
        } = self;
        let Some(targets) = by_metric.get(name) else {
            return;
        };
        if !value.is_finite() {
            return;
        }
        // The previous point of the series: a redelivered or older point counts once, and a
        // counter's increase is measured from it.
        let previous = match last_points.find_mut(hash, |s| *s.key == *key) {
            Some(seen) if ts <= seen.ts => {
                stats.repeated_points += 1;
                return;
            }
            Some(seen) => {
                let p = seen.value;
                seen.ts = ts;
                seen.value = value;
                Some(p)
            }
            None => {
                let groups = resolve_groups(slos, groups, slab, stats, key, targets);
                if last_points.len() >= MAX_REMEMBERED_SERIES {
                    last_points.clear();
                }
                let seen = Seen {
                    key: key.into(),
                    ts,
                    value,
                    groups,
                };
                last_points.insert_unique(hash, seen, |s| hasher.hash_one(&*s.key));
                None
            }
        };
        // Found again with the hash at hand (the entry is in cache now).
        let Some(seen) = last_points.find(hash, |s| *s.key == *key) else {
            return;
        };
        let minute = ts.div_euclid(MINUTE_MS);
        let first_open = closed_until.map(|t| t / MINUTE_MS);
        let mut counted = false;
        for (t, gkey) in targets.iter().zip(seen.groups.iter()) {
            let Some(gkey) = gkey else {
                continue;
            };
            let objective = &slos[t.slo].objectives[t.objective];
            let increase = || match previous {
                None => 0.0,
                Some(p) if value >= p => value - p,
                // A reset: the counter started again from 0.
                Some(_) => value,
            };
            let counts = match (t.role, &objective.sli) {
                (Role::Sample, Sli::Samples { good, .. }) => Counts {
                    good: if good.holds(value, 0.0, 0.0) {
                        1.0
                    } else {
                        0.0
                    },
                    total: 1.0,
                },
                (Role::ErrorPercent, _) => Counts {
                    good: 1.0 - (value / 100.0).clamp(0.0, 1.0),
                    total: 1.0,
                },
                (Role::TotalCounter, Sli::Counters { bad, .. }) => {
                    let inc = increase();
                    // Counting bad events: every event is good until a bad one says otherwise.
                    Counts {
                        good: if bad.is_some() { inc } else { 0.0 },
                        total: inc,
                    }
                }
                (Role::GoodCounter, _) => Counts {
                    good: increase(),
                    total: 0.0,
                },
                (Role::BadCounter, _) => Counts {
                    good: -increase(),
                    total: 0.0,
                },
                _ => continue,
            };
            let Some(group) = slab.get_mut(*gkey as usize) else {
                continue;
            };
            let minute = match first_open {
                Some(open) if minute < open => {
                    stats.late_points += 1;
                    open
                }
                _ => minute,
            };
            group.objectives[t.objective]
                .open
                .entry(minute)
                .or_default()
                .add(counts);
            counted = true;
        }
        if counted && closed_until.is_none() {
            // Minutes are closed from the first one with events on.
            (*closed_until) = Some(minute * MINUTE_MS);
        }
    }

    /// Closes the minutes that end at or before `watermark`; each closed minute's derived
    /// points go to `out` as (key range in `keys`, time, value), in a deterministic order.
    pub fn advance(
        &mut self,
        watermark: i64,
        keys: &mut String,
        out: &mut Vec<(Range<usize>, i64, f64)>,
    ) {
        let Some(mut closed) = self.closed_until else {
            return;
        };
        let target = watermark.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS);
        let write_from = target - MAX_MINUTES_WRITTEN_AT_ONCE * MINUTE_MS;
        while closed < target {
            let minute = closed / MINUTE_MS;
            let end = closed + MINUTE_MS;
            for (gkey, &i) in &self.groups {
                let group = &mut self.slab[i];
                for o in &mut group.objectives {
                    let counts = o.open.remove(&minute).unwrap_or_default();
                    o.history.close_minute(minute, counts);
                }
                if end > write_from {
                    let slo = &self.slos[gkey.0];
                    let status = derive(slo, group, end, keys, out);
                    self.status.insert(gkey.clone(), status);
                }
            }
            closed = end;
            self.minutes_closed += 1;
        }
        self.closed_until = Some(closed);
    }

    /// Minutes closed since the engine was made.
    pub fn minutes_closed(&self) -> u64 {
        self.minutes_closed
    }

    /// The latest status of every SLO group, by SLO then group.
    pub fn status(&self) -> Vec<SloStatus> {
        self.status.values().cloned().collect()
    }

    pub fn snapshot(&self) -> SloSnapshot {
        let mut last_points: Vec<(String, i64, f64)> = self
            .last_points
            .iter()
            .map(|seen| (seen.key.to_string(), seen.ts, seen.value))
            .collect();
        last_points.sort_by(|a, b| a.0.cmp(&b.0));
        SloSnapshot {
            closed_until: self.closed_until,
            groups: self
                .groups
                .values()
                .map(|&i| self.slab[i].clone())
                .collect(),
            last_points,
        }
    }

    /// Takes a checkpoint's state: groups of SLOs and objectives that still exist (by name),
    /// resized to their current windows and period.
    pub fn restore(&mut self, snap: SloSnapshot) {
        self.closed_until = snap.closed_until;
        self.groups.clear();
        self.slab.clear();
        self.status.clear();
        for g in snap.groups {
            let Some(si) = self.slos.iter().position(|s| s.name == g.slo) else {
                continue;
            };
            let slo = &self.slos[si];
            let mut fresh = new_group(slo, g.labels.clone());
            for o in &mut fresh.objectives {
                if let Some(old) = g.objectives.iter().find(|x| x.name == o.name) {
                    let mut kept = old.clone();
                    kept.history
                        .resize(slo.longest_window_minutes(), period_hours(slo));
                    track_windows(slo, &mut kept.history);
                    *o = kept;
                }
            }
            let values = g.labels.iter().map(|(_, v)| v.clone()).collect();
            self.slab.push(fresh);
            self.groups.insert((si, values), self.slab.len() - 1);
        }
        // Which groups each series feeds is resolved again, under the SLOs now loaded.
        self.last_points.clear();
        for (k, ts, value) in snap.last_points {
            let name = k.split('\u{1f}').next().unwrap_or_default();
            let Some(targets) = self.by_metric.get(name).cloned() else {
                continue;
            };
            let groups = self.resolve(&k, &targets);
            let hash = self.hasher.hash_one(&*k);
            let hasher = &self.hasher;
            let seen = Seen {
                key: k.into_boxed_str(),
                ts,
                value,
                groups,
            };
            self.last_points
                .insert_unique(hash, seen, |s| hasher.hash_one(&*s.key));
        }
    }
}

/// The group each of `targets` counts series `key` into (created on first sight, up to
/// [`MAX_GROUPS_PER_SLO`] per SLO), or `None` where the series does not match.
fn resolve_groups(
    slos: &[Slo],
    groups: &mut BTreeMap<GroupKey, usize>,
    slab: &mut Vec<Group>,
    stats: &mut SloStats,
    key: &str,
    targets: &[Target],
) -> Box<[Option<u32>]> {
    targets
        .iter()
        .map(|t| {
            if !t.matchers.iter().all(|(l, m)| m.matches(label_in(key, l))) {
                return None;
            }
            let slo = &slos[t.slo];
            let values: Vec<String> = slo
                .group_by
                .iter()
                .map(|l| label_in(key, l).unwrap_or_default().to_string())
                .collect();
            let gkey = (t.slo, values);
            if let Some(&i) = groups.get(&gkey) {
                return Some(i as u32);
            }
            let count = groups
                .range((t.slo, Vec::new())..)
                .take_while(|((s, _), _)| *s == t.slo)
                .count();
            if count >= MAX_GROUPS_PER_SLO {
                stats.refused_points += 1;
                return None;
            }
            let labels = slo
                .group_by
                .iter()
                .cloned()
                .zip(gkey.1.iter().cloned())
                .collect();
            slab.push(new_group(slo, labels));
            groups.insert(gkey, slab.len() - 1);
            Some((slab.len() - 1) as u32)
        })
        .collect()
}

fn period_hours(slo: &Slo) -> usize {
    (slo.period_ms / 3_600_000) as usize
}

fn new_group(slo: &Slo, labels: Vec<(String, String)>) -> Group {
    Group {
        slo: slo.name.clone(),
        labels,
        objectives: slo
            .objectives
            .iter()
            .map(|o| {
                let mut history =
                    EventHistory::new(slo.longest_window_minutes(), period_hours(slo));
                track_windows(slo, &mut history);
                ObjectiveState {
                    name: o.name.clone(),
                    open: BTreeMap::new(),
                    history,
                }
            })
            .collect(),
    }
}

/// Running sums for every window the SLO reads each minute.
fn track_windows(slo: &Slo, history: &mut EventHistory) {
    for w in &slo.windows_ms {
        history.track((w / MINUTE_MS) as usize);
    }
}

/// Where derived points go: their keys one after the other in `keys`, and (key range, time,
/// value) in `points`.
struct Writer<'a> {
    keys: &'a mut String,
    points: &'a mut Vec<(Range<usize>, i64, f64)>,
    group: &'a [(String, String)],
    ts: i64,
}

impl Writer<'_> {
    /// Appends one point of series `name` with the group's labels and `extra`.
    fn push(&mut self, name: &str, extra: &[(&str, &str)], value: f64) {
        let mut labels: Vec<(&str, &str)> = self
            .group
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .collect();
        labels.sort_unstable();
        let start = self.keys.len();
        SeriesKey::append_canonical(self.keys, name, labels);
        self.points.push((start..self.keys.len(), self.ts, value));
    }
}

/// The derived points of one group at the end `end` of a closed minute, and its status.
fn derive(
    slo: &Slo,
    group: &Group,
    end: i64,
    keys: &mut String,
    out: &mut Vec<(Range<usize>, i64, f64)>,
) -> SloStatus {
    let mut score: f64 = 100.0;
    let mut objectives = Vec::new();
    let mut w = Writer {
        keys,
        points: out,
        group: &group.labels,
        ts: end,
    };
    for (o, st) in slo.objectives.iter().zip(&group.objectives) {
        let allowed = 1.0 - o.target;
        // A window (or period) the history does not fill yet counts its missing minutes as
        // good: a new SLO does not page on the few minutes it has seen.
        let spent = |(counts, covered): (Counts, usize), minutes: usize| {
            counts.bad_share() * covered as f64 / minutes.max(1) as f64 / allowed
        };
        let burn = |window: i64| {
            let minutes = (window / MINUTE_MS) as usize;
            spent(st.history.last_minutes(minutes), minutes)
        };
        let mut burn_rates = Vec::new();
        for &window in &slo.windows_ms {
            let label = window_label(window);
            let b = burn(window);
            w.push(
                series::BURN_RATE,
                &[
                    ("slo", &slo.name),
                    ("objective", &o.name),
                    ("window", &label),
                ],
                b,
            );
            burn_rates.push((label, b));
        }
        for a in &slo.alerts {
            w.push(
                series::MULTIWINDOW_BURN_RATE,
                &[
                    ("slo", &slo.name),
                    ("objective", &o.name),
                    ("alert", &a.name),
                ],
                burn(a.long_ms).min(burn(a.short_ms)),
            );
        }
        let period = st.history.period();
        let remaining = 1.0 - spent(period, (slo.period_ms / MINUTE_MS) as usize);
        w.push(
            series::ERROR_BUDGET_REMAINING,
            &[("slo", &slo.name), ("objective", &o.name)],
            remaining,
        );
        let fastest = &slo.alerts[0];
        score = score.min(100.0 * (1.0 - burn(fastest.long_ms) / fastest.factor).clamp(0.0, 1.0));
        objectives.push(ObjectiveStatus {
            objective: o.name.clone(),
            burn_rates,
            error_budget_remaining: remaining,
            attained: (period.0.total > 0.0).then(|| 1.0 - period.0.bad_share()),
        });
    }
    w.push(series::SCORE, &[("slo", &slo.name)], score);
    SloStatus {
        slo: slo.name.clone(),
        group: group.labels.clone(),
        score,
        weight: slo.weight,
        at: end,
        objectives,
    }
}

/// The overall experience score of SLO statuses: the mean of their scores weighted by their
/// SLOs' weights (100 without any).
pub fn experience_score(statuses: &[SloStatus]) -> f64 {
    let weight: f64 = statuses.iter().map(|s| s.weight).sum();
    if weight <= 0.0 {
        return 100.0;
    }
    statuses.iter().map(|s| s.score * s.weight).sum::<f64>() / weight
}

#[cfg(test)]
mod tests;

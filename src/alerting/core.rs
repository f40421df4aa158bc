//! The alert manager's state machine: pure and synchronous. Inputs are alert events, commands,
//! delivery outcomes and the passing of (wall) time, each with the manager's `now`; outputs are
//! [`Effects`]: records to store and notifications to publish. The async shell (`mod.rs`)
//! stores and publishes them, so tests drive it on virtual time.
//!
//! Grouping follows Alertmanager: an alert that starts firing joins one group per route that
//! takes it (keyed by the route and its `group_by` labels); a new group waits `group_wait`, then
//! flushes every `group_interval`; a flush notifies when an alert joined the firing set, when
//! the firing alerts all resolved, when resolved alerts are new (with `send_resolved`), or when
//! `repeat_interval` passed since the last notification, and then forgets its resolved alerts.
//! On top of it: acknowledged alerts are not repeated (an ack that expires re-notifies),
//! silenced and inhibited alerts are left out, a flapping alert is notified once as flapping,
//! and an alert storm collapses a receiver's notifications into summaries.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::alert::{AlertSource, ManagedAlert};
use super::command::{Command, CommandBody, ExternalAlert, Reply};
use super::config::{AlertingConfig, Routing, StormScope};
use super::silence::{Silence, Silences};
use crate::model::{
    AckInfo, AlertEvent, AlertStatus, DeliveryOutcome, EndReason, Notification, NotificationKind,
    NotifiedAlert, Priority, StormSummary,
};

/// What one step produced: records to store (`None` = delete) and notifications to publish
/// (before the records: a restart then re-computes the same notification ids).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    pub alerts: BTreeMap<String, Option<ManagedAlert>>,
    pub silences: BTreeMap<String, Option<Silence>>,
    pub logs: BTreeMap<String, Option<LogEntry>>,
    pub meta: BTreeMap<String, Option<serde_json::Value>>,
    pub notifications: Vec<Notification>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.silences.is_empty()
            && self.logs.is_empty()
            && self.meta.is_empty()
            && self.notifications.is_empty()
    }
}

/// What a group last told its receiver (Alertmanager's notification log), stored per group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub group: String,
    pub receiver: String,
    pub group_key: String,
    /// Notifications sent so far (the next one's sequence is this + 1).
    pub seq: u64,
    /// Fingerprints of the firing and resolved alerts of the last notification.
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    pub last_sent_at: i64,
    /// The group's first flush: later flushes come every `group_interval` from it.
    pub first_flush_at: i64,
}

/// An aggregation group.
#[derive(Debug, Clone)]
struct Group {
    route: usize,
    receiver: String,
    key: String,
    labels: BTreeMap<String, String>,
    /// Fingerprints.
    members: BTreeSet<String>,
    next_flush: i64,
    /// Notify at the next flush even without a change (an ack expired, an alert started
    /// flapping).
    force: bool,
}

/// Flap tracking of one fingerprint (stored as `flap.<fingerprint>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapState {
    /// Manager times of its recent starts and ends.
    pub changes: VecDeque<i64>,
    pub flapping: bool,
    pub since: i64,
}

/// A storm on one receiver (or `*`: every receiver), stored as `storm.<receiver>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormState {
    pub active: bool,
    pub started_at: i64,
    pub last_summary_at: i64,
    /// Summaries sent in this storm.
    pub summaries: u64,
    pub alerts: usize,
    pub by_rule: BTreeMap<String, usize>,
    pub by_priority: BTreeMap<String, usize>,
    pub by_exchange: BTreeMap<String, usize>,
    /// The first alerts of the storm (ids), for the summary.
    pub first: Vec<String>,
}

/// Timers, lazily checked: each says when to look again, not that something is due then.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Flush(String),
    AckExpiry(String),
    ExternalEnd(String),
    FlapStable(String),
    Storms,
    Silences,
    Gc,
}

/// How often ended alerts past their retention are removed.
const GC_EVERY_MS: i64 = 60_000;
/// Alerts a storm summary lists.
const STORM_TOP: usize = 10;

pub struct Manager {
    cfg: AlertingConfig,
    routing: Routing,
    alerts: HashMap<String, ManagedAlert>,
    /// Fingerprint → its current (latest) alert id.
    current: HashMap<String, String>,
    silences: Silences,
    groups: BTreeMap<String, Group>,
    nflog: BTreeMap<String, LogEntry>,
    flaps: HashMap<String, FlapState>,
    storms: BTreeMap<String, StormState>,
    /// Per receiver (and `*`): (manager time, alert id) of alerts that started firing recently.
    starts: BTreeMap<String, VecDeque<(i64, String)>>,
    timers: BTreeSet<(i64, Timer)>,
    fx: Effects,
}

fn hash16(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

fn rank(s: AlertStatus) -> u8 {
    match s {
        AlertStatus::Pending => 0,
        AlertStatus::Firing => 1,
        AlertStatus::Resolved | AlertStatus::Cancelled => 2,
    }
}

impl Manager {
    pub fn new(cfg: AlertingConfig, routing: Routing) -> Self {
        let mut m = Manager {
            cfg,
            routing,
            alerts: HashMap::new(),
            current: HashMap::new(),
            silences: Silences::default(),
            groups: BTreeMap::new(),
            nflog: BTreeMap::new(),
            flaps: HashMap::new(),
            storms: BTreeMap::new(),
            starts: BTreeMap::new(),
            timers: BTreeSet::new(),
            fx: Effects::default(),
        };
        m.timers.insert((i64::MIN, Timer::Gc));
        m
    }

    /// Rebuilds the state from what the store holds (a restart or a takeover): alerts,
    /// silences, notification logs and the flap and storm records. Group timings follow from
    /// the logs and the alerts' times, so a group waits and repeats exactly as it would have.
    pub fn restore(
        &mut self,
        alerts: Vec<ManagedAlert>,
        silences: Vec<Silence>,
        logs: Vec<LogEntry>,
        meta: Vec<(String, serde_json::Value)>,
        now: i64,
    ) {
        for s in silences {
            let _ = self.silences.insert(s);
        }
        self.timers.insert((now, Timer::Silences));
        for l in logs {
            self.nflog.insert(l.group.clone(), l);
        }
        for (k, v) in meta {
            if let Some(fp) = k.strip_prefix("flap.") {
                if let Ok(f) = serde_json::from_value::<FlapState>(v) {
                    self.flaps.insert(fp.to_string(), f);
                }
            } else if let Some(r) = k.strip_prefix("storm.") {
                if let Ok(s) = serde_json::from_value::<StormState>(v) {
                    self.storms.insert(r.to_string(), s);
                }
            }
        }
        let mut sorted = alerts;
        sorted.sort_by(|a, b| (a.starts_at, &a.id).cmp(&(b.starts_at, &b.id)));
        for a in sorted {
            let newer = self
                .current
                .get(&a.fingerprint)
                .and_then(|id| self.alerts.get(id))
                .is_none_or(|c| c.starts_at <= a.starts_at);
            if newer {
                self.current.insert(a.fingerprint.clone(), a.id.clone());
            }
            self.alerts.insert(a.id.clone(), a);
        }
        // Re-derive what follows from the alerts: inhibition sources, groups, timers, storms.
        let ids = self.current_in_firing_order();
        for id in ids {
            let a = self.alerts[&id].clone();
            let notified_firing = self
                .nflog
                .values()
                .any(|l| l.firing.contains(&a.fingerprint));
            if a.status == AlertStatus::Firing {
                self.routing
                    .inhibitor
                    .set_firing(&a.fingerprint, &a.labels, true);
            }
            if a.status == AlertStatus::Firing
                || (a.status == AlertStatus::Resolved && notified_firing)
                || self.flaps.get(&a.fingerprint).is_some_and(|f| f.flapping)
            {
                self.join_groups(&a, a.fired_at.unwrap_or(a.received_at), now);
            }
            if let (Some(ack), AlertStatus::Firing) = (&a.ack, a.status) {
                if let Some(t) = ack.expires_at {
                    self.timers.insert((t, Timer::AckExpiry(id.clone())));
                }
            }
            if let Some(t) = a.expires_at.filter(|_| a.is_active()) {
                self.timers.insert((t, Timer::ExternalEnd(id.clone())));
            }
            if let Some(f) = a.fired_at {
                if now - f < self.cfg.storm.window_secs as i64 * 1000 {
                    for r in self.receivers_of(&a.labels) {
                        self.starts.entry(r).or_default().push_back((f, id.clone()));
                    }
                    self.starts
                        .entry("*".into())
                        .or_default()
                        .push_back((f, id.clone()));
                }
            }
        }
        for q in self.starts.values_mut() {
            q.make_contiguous().sort();
        }
        for (fp, f) in &self.flaps {
            if f.flapping {
                let last = f.changes.back().copied().unwrap_or(f.since);
                self.timers.insert((
                    last + self.cfg.flapping.stable_secs as i64 * 1000,
                    Timer::FlapStable(fp.clone()),
                ));
            }
        }
        self.timers.insert((now, Timer::Storms));
        // Restoring changes nothing that must be stored.
        self.fx = Effects::default();
    }

    /// The current alert ids, the earliest to fire first: a rebuilt group then starts from
    /// its first alert, as it did.
    fn current_in_firing_order(&self) -> Vec<String> {
        let mut ids: Vec<(i64, String)> = self
            .current
            .values()
            .map(|id| {
                let a = &self.alerts[id];
                (a.fired_at.unwrap_or(a.received_at), id.clone())
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Takes the effects gathered since the last call.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    fn dirty(&mut self, id: &str) {
        if let Some(a) = self.alerts.get(id) {
            self.fx.alerts.insert(id.to_string(), Some(a.clone()));
        }
    }

    fn receivers_of(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.routing.receivers_of(labels)
    }

    // ----- inputs -----------------------------------------------------------------------

    /// An alert event from the processor (idempotent: a redelivered or older transition is
    /// ignored).
    pub fn on_event(&mut self, e: &AlertEvent, now: i64) {
        let (prev, known) = match self.alerts.get(&e.id) {
            Some(a) => (a.status, true),
            None => (AlertStatus::Pending, false),
        };
        if known && rank(e.status) <= rank(prev) {
            return;
        }
        if !known {
            let a = ManagedAlert::from_event(e, now);
            self.alerts.insert(e.id.clone(), a);
        }
        let is_current = {
            let cur = self
                .current
                .get(&e.fingerprint)
                .and_then(|id| self.alerts.get(id));
            cur.is_none_or(|c| c.starts_at <= e.starts_at)
        };
        // A newer episode replaces an older one that is still listed in groups.
        if is_current {
            if let Some(old) = self.current.insert(e.fingerprint.clone(), e.id.clone()) {
                if old != e.id {
                    if let Some(o) = self.alerts.get(&old) {
                        if o.status == AlertStatus::Firing {
                            self.routing
                                .inhibitor
                                .set_firing(&e.fingerprint, &o.labels, false);
                        }
                    }
                }
            }
        }
        {
            let a = self.alerts.get_mut(&e.id).expect("inserted");
            a.status = e.status;
            a.value = e.value;
            a.annotations = e.annotations.clone();
            a.ends_at = e.ends_at;
            a.end_reason = e.end_reason;
            a.updated_at = now;
            let what = match (e.status, e.end_reason) {
                (AlertStatus::Resolved, Some(EndReason::Stale)) => {
                    "resolved (data stale)".to_string()
                }
                (s, _) => s.token().to_string(),
            };
            a.log(now, what, "processor");
        }
        if is_current {
            match e.status {
                AlertStatus::Firing => self.fired(&e.id, now),
                AlertStatus::Resolved => self.ended(&e.id, now),
                AlertStatus::Cancelled | AlertStatus::Pending => {}
            }
        }
        self.dirty(&e.id);
    }

    /// An alert (by id) started firing.
    fn fired(&mut self, id: &str, now: i64) {
        let a = {
            let a = self.alerts.get_mut(id).expect("known");
            a.fired_at = Some(now);
            a.clone()
        };
        self.routing
            .inhibitor
            .set_firing(&a.fingerprint, &a.labels, true);
        self.flap_change(&a.fingerprint, now);
        self.join_groups(&a, now, now);
        // Storm accounting (flapping alerts do not feed a storm: they are already one line).
        if !self.is_flapping(&a.fingerprint) {
            for r in self
                .receivers_of(&a.labels)
                .into_iter()
                .chain(["*".to_string()])
            {
                self.starts
                    .entry(r.clone())
                    .or_default()
                    .push_back((now, id.to_string()));
                if let Some(s) = self.storms.get_mut(&r).filter(|s| s.active) {
                    count_into(s, &a);
                    let k = format!("storm.{r}");
                    let v = serde_json::to_value(&*s).ok();
                    self.fx.meta.insert(k, v);
                }
            }
            self.check_storms(now);
        }
    }

    /// An alert (by id) stopped firing (resolved).
    fn ended(&mut self, id: &str, now: i64) {
        let a = self.alerts[id].clone();
        self.routing
            .inhibitor
            .set_firing(&a.fingerprint, &a.labels, false);
        self.flap_change(&a.fingerprint, now);
        // A prompt route flushes the resolution now instead of at its next interval.
        let gids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.contains(&a.fingerprint))
            .map(|(k, _)| k.clone())
            .collect();
        for gid in gids {
            let g = self.groups.get_mut(&gid).expect("listed");
            let route = self.routing.routes.get(g.route);
            if route.resolve_promptly && self.nflog.contains_key(&gid) && g.next_flush > now {
                g.next_flush = now;
                self.timers.insert((now, Timer::Flush(gid)));
            }
        }
    }

    fn join_groups(&mut self, a: &ManagedAlert, created: i64, now: i64) {
        for idx in self.routing.routes.matching(&a.labels) {
            let route = self.routing.routes.get(idx);
            let labels = route.group_labels(&a.labels);
            let key = format!(
                "{}:{{{}}}",
                route.path,
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let gid = hash16(&[&route.receiver, &key]);
            if !self.groups.contains_key(&gid) {
                // A group that flushed before (a restart) keeps its rhythm; a new one waits.
                let next_flush = match self.nflog.get(&gid) {
                    Some(l) if l.first_flush_at > 0 => {
                        let gi = route.group_interval_ms;
                        let k = ((now - l.first_flush_at).max(0) + gi - 1) / gi;
                        l.first_flush_at + k.max(1) * gi
                    }
                    _ => created + route.group_wait_ms,
                };
                self.timers.insert((next_flush, Timer::Flush(gid.clone())));
                self.groups.insert(
                    gid.clone(),
                    Group {
                        route: idx,
                        receiver: route.receiver.clone(),
                        key,
                        labels,
                        members: BTreeSet::new(),
                        next_flush,
                        force: false,
                    },
                );
            }
            self.groups
                .get_mut(&gid)
                .expect("present")
                .members
                .insert(a.fingerprint.clone());
        }
    }

    /// A command; returns its reply (the shell also handles `RulesReload`).
    pub fn on_command(&mut self, c: &Command, now: i64) -> Reply {
        let who = c.principal.as_str();
        let result: Result<(String, serde_json::Value), String> = match &c.body {
            CommandBody::Ack {
                alert,
                comment,
                expires_at,
            } => self.ack(alert, who, comment, *expires_at, now),
            CommandBody::Unack { alert } => self.unack(alert, who, now),
            CommandBody::Resolve { alert, comment } => self.resolve(alert, who, comment, now),
            CommandBody::SilenceCreate {
                id,
                matchers,
                starts_at,
                ends_at,
                comment,
                created_by,
            } => {
                let s = Silence {
                    id: id
                        .clone()
                        .unwrap_or_else(|| super::silence::new_id(&c.request_id)),
                    matchers: matchers.clone(),
                    starts_at: starts_at.unwrap_or(now),
                    ends_at: *ends_at,
                    created_by: created_by
                        .clone()
                        .filter(|c| !c.trim().is_empty())
                        .unwrap_or_else(|| who.to_string()),
                    comment: comment.clone(),
                    updated_at: now,
                };
                self.create_silence(s, now)
            }
            CommandBody::SilenceExpire { id } => self.expire_silence(id, who, now),
            CommandBody::AlertExternal { alerts } => {
                let ids: Vec<String> = alerts.iter().map(|a| self.external(a, now)).collect();
                Ok((
                    format!("{} alert(s) received", ids.len()),
                    serde_json::json!({ "alerts": ids }),
                ))
            }
            CommandBody::RulesReload => Ok(("reload requested".into(), serde_json::Value::Null)),
        };
        let (ok, message, result) = match result {
            Ok((m, r)) => (true, m, r),
            Err(m) => (false, m, serde_json::Value::Null),
        };
        Reply {
            request_id: c.request_id.clone(),
            kind: c.body.kind().to_string(),
            principal: c.principal.clone(),
            ok,
            message,
            result,
            at: now,
        }
    }

    /// The alert an id or fingerprint names (a fingerprint: its current episode), or the
    /// error every command gives when there is none.
    fn find(&self, alert: &str) -> Result<String, String> {
        if self.alerts.contains_key(alert) {
            Ok(alert.to_string())
        } else {
            self.current
                .get(alert)
                .cloned()
                .ok_or_else(|| format!("no alert {alert:?} (unknown id or fingerprint)"))
        }
    }

    fn ack(
        &mut self,
        alert: &str,
        who: &str,
        comment: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(String, serde_json::Value), String> {
        let id = self.find(alert)?;
        let a = self.alerts.get_mut(&id).expect("found");
        if !a.is_active() {
            return Err(format!(
                "alert {id} is {} since {}: only a pending or firing alert can be acknowledged",
                a.status.token(),
                a.ends_at.unwrap_or(a.updated_at)
            ));
        }
        if let Some(t) = expires_at.filter(|t| *t <= now) {
            return Err(format!(
                "the acknowledgement would expire in the past ({t})"
            ));
        }
        a.ack = Some(AckInfo {
            by: who.to_string(),
            at: now,
            comment: comment.to_string(),
            expires_at,
        });
        a.log(
            now,
            format!(
                "acknowledged{}",
                if comment.is_empty() {
                    String::new()
                } else {
                    format!(": {comment}")
                }
            ),
            who,
        );
        if let Some(t) = expires_at {
            self.timers.insert((t, Timer::AckExpiry(id.clone())));
        }
        self.dirty(&id);
        Ok((
            format!("alert {id} acknowledged"),
            serde_json::json!({ "alert": id }),
        ))
    }

    fn unack(
        &mut self,
        alert: &str,
        who: &str,
        now: i64,
    ) -> Result<(String, serde_json::Value), String> {
        let id = self.find(alert)?;
        let a = self.alerts.get_mut(&id).expect("found");
        if a.ack.take().is_none() {
            return Err(format!("alert {id} is not acknowledged"));
        }
        a.log(now, "acknowledgement withdrawn", who);
        self.dirty(&id);
        Ok((
            format!("alert {id} no longer acknowledged"),
            serde_json::json!({ "alert": id }),
        ))
    }

    fn resolve(
        &mut self,
        alert: &str,
        who: &str,
        comment: &str,
        now: i64,
    ) -> Result<(String, serde_json::Value), String> {
        let id = self.find(alert)?;
        let a = self.alerts.get(&id).expect("found");
        if !a.is_active() {
            return Err(format!("alert {id} is already {}", a.status.token()));
        }
        if a.source == AlertSource::Rule {
            return Err(format!(
                "alert {id} is evaluated by rule {}: the processor still sees its condition hold (last value {}); it resolves when the condition is false for the rule's resolve_after, or silence it",
                a.rule, a.value
            ));
        }
        self.end_external(
            &id,
            now,
            &format!(
                "resolved by hand{}",
                if comment.is_empty() {
                    String::new()
                } else {
                    format!(": {comment}")
                }
            ),
            who,
        );
        Ok((
            format!("alert {id} resolved"),
            serde_json::json!({ "alert": id }),
        ))
    }

    fn create_silence(
        &mut self,
        s: Silence,
        now: i64,
    ) -> Result<(String, serde_json::Value), String> {
        s.validate()?;
        if s.ends_at <= now {
            return Err("the silence would end in the past".into());
        }
        let id = s.id.clone();
        self.silences.insert(s.clone())?;
        self.fx.silences.insert(id.clone(), Some(s.clone()));
        self.timers.insert((s.starts_at, Timer::Silences));
        self.timers.insert((s.ends_at, Timer::Silences));
        let muted = self.refresh_muting(now);
        Ok((
            format!(
                "silence {id} created ({}), {muted} alert(s) muted now",
                s.state(now).as_str()
            ),
            serde_json::json!({ "silence_id": id }),
        ))
    }

    fn expire_silence(
        &mut self,
        id: &str,
        who: &str,
        now: i64,
    ) -> Result<(String, serde_json::Value), String> {
        let mut s = self
            .silences
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no silence {id:?}"))?;
        if s.state(now) == super::silence::SilenceState::Expired {
            return Err(format!("silence {id} has already expired"));
        }
        s.ends_at = now;
        if s.starts_at > now {
            s.starts_at = now;
        }
        s.updated_at = now;
        s.comment = format!("{} (expired by {who})", s.comment)
            .trim()
            .to_string();
        self.silences.insert(s.clone())?;
        self.fx.silences.insert(id.to_string(), Some(s));
        self.refresh_muting(now);
        Ok((
            format!("silence {id} expired"),
            serde_json::json!({ "silence_id": id }),
        ))
    }

    /// Recomputes `silenced_by` / `inhibited_by` of the active alerts; returns how many are
    /// muted.
    fn refresh_muting(&mut self, now: i64) -> usize {
        let mut ids: Vec<String> = self
            .current
            .values()
            .filter(|id| self.alerts.get(*id).is_some_and(ManagedAlert::is_active))
            .cloned()
            .collect();
        ids.sort();
        let mut muted = 0;
        for id in ids {
            if self.update_muting(&id, now) {
                muted += 1;
            }
        }
        muted
    }

    /// Updates one alert's muting; returns whether it is muted.
    fn update_muting(&mut self, id: &str, now: i64) -> bool {
        let Some(a) = self.alerts.get(id) else {
            return false;
        };
        let silenced = self.silences.silencing(&a.labels, now);
        let inhibited: Vec<String> = self
            .routing
            .inhibitor
            .inhibited_by(&a.fingerprint, &a.labels)
            .into_iter()
            .map(|(rule, fp)| format!("{rule}:{fp}"))
            .collect();
        let muted = !silenced.is_empty() || !inhibited.is_empty();
        if a.silenced_by != silenced || a.inhibited_by != inhibited {
            let a = self.alerts.get_mut(id).expect("present");
            let what = match (silenced.is_empty(), inhibited.is_empty()) {
                (false, _) => format!("silenced by {}", silenced.join(", ")),
                (true, false) => format!("inhibited by {}", inhibited.join(", ")),
                (true, true) => "no longer silenced or inhibited".to_string(),
            };
            a.silenced_by = silenced;
            a.inhibited_by = inhibited;
            a.log(now, what, "manager");
            self.dirty(id);
        }
        muted
    }

    /// An alert from outside; returns its id.
    fn external(&mut self, x: &ExternalAlert, now: i64) -> String {
        let fp = hash16(
            &x.labels
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                .collect::<Vec<_>>(),
        );
        let priority = x
            .priority
            .unwrap_or_else(|| priority_from_labels(&x.labels));
        let ends = x.ends_at;
        // Sent again while it fires: the same alert, its end moved.
        if let Some(id) = self.current.get(&fp).cloned() {
            let active = self.alerts.get(&id).is_some_and(|a| a.is_active());
            if active {
                if ends.is_some_and(|t| t <= now) {
                    self.end_external(
                        &id,
                        ends.unwrap_or(now).min(now),
                        "resolved by its source",
                        "external",
                    );
                } else {
                    let expires =
                        ends.unwrap_or(now + self.cfg.external_resolve_timeout_secs as i64 * 1000);
                    let a = self.alerts.get_mut(&id).expect("present");
                    a.expires_at = Some(expires);
                    a.annotations = x.annotations.clone();
                    a.updated_at = now;
                    self.timers
                        .insert((expires, Timer::ExternalEnd(id.clone())));
                    self.dirty(&id);
                }
                return id;
            }
        }
        if ends.is_some_and(|t| t <= now) {
            // Resolved before we ever saw it firing: nothing to tell anyone.
            return String::new();
        }
        let starts = x.starts_at.unwrap_or(now);
        let id = format!("{fp}-{starts}");
        let mut labels = x.labels.clone();
        labels
            .entry("priority".into())
            .or_insert_with(|| priority.to_string());
        let rule = labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| "external".into());
        labels
            .entry("alertname".into())
            .or_insert_with(|| rule.clone());
        let expires = ends.unwrap_or(now + self.cfg.external_resolve_timeout_secs as i64 * 1000);
        let mut a = ManagedAlert {
            id: id.clone(),
            fingerprint: fp.clone(),
            rule,
            priority,
            status: AlertStatus::Firing,
            source: AlertSource::External,
            labels,
            annotations: x.annotations.clone(),
            value: 0.0,
            starts_at: starts,
            ends_at: None,
            end_reason: None,
            generator_url: x.generator_url.clone(),
            received_at: now,
            fired_at: None,
            updated_at: now,
            expires_at: Some(expires),
            ack: None,
            silenced_by: Vec::new(),
            inhibited_by: Vec::new(),
            flapping: false,
            notifications: BTreeMap::new(),
            history: Vec::new(),
        };
        a.log(now, "firing", "external");
        self.alerts.insert(id.clone(), a);
        self.current.insert(fp, id.clone());
        self.timers
            .insert((expires, Timer::ExternalEnd(id.clone())));
        self.fired(&id, now);
        self.dirty(&id);
        id
    }

    fn end_external(&mut self, id: &str, at: i64, what: &str, who: &str) {
        {
            let a = self.alerts.get_mut(id).expect("present");
            a.status = AlertStatus::Resolved;
            a.ends_at = Some(at);
            a.end_reason = Some(EndReason::Condition);
            a.expires_at = None;
            a.updated_at = at;
            a.log(at, what, who);
        }
        if self
            .current
            .get(&self.alerts[id].fingerprint)
            .map(String::as_str)
            == Some(id)
        {
            self.ended(id, at);
        }
        self.dirty(id);
    }

    /// A notifier's report: recorded in the alerts' notification history.
    pub fn on_outcome(&mut self, o: &DeliveryOutcome, now: i64) {
        for id in &o.alert_ids {
            let Some(a) = self.alerts.get_mut(id) else {
                continue;
            };
            let r = a.notifications.entry(o.receiver.clone()).or_default();
            r.outcome = o.outcome.clone();
            r.outcome_at = Some(o.at);
            r.attempts = o.attempts;
            let what = if o.error.is_empty() {
                format!(
                    "{} to {} after {} attempt(s)",
                    o.outcome, o.receiver, o.attempts
                )
            } else {
                format!(
                    "{} to {} after {} attempt(s): {}",
                    o.outcome, o.receiver, o.attempts, o.error
                )
            };
            a.log(now, what, "notifier");
            self.dirty(id);
        }
    }

    /// New routes and inhibition rules (a reload): groups are rebuilt from the active alerts,
    /// keeping the rhythm of the groups that still exist.
    pub fn set_routing(&mut self, routing: Routing, now: i64) {
        let old = std::mem::take(&mut self.groups);
        self.routing = routing;
        let ids = self.current_in_firing_order();
        for id in &ids {
            let a = &self.alerts[id];
            if a.status == AlertStatus::Firing {
                self.routing
                    .inhibitor
                    .set_firing(&a.fingerprint, &a.labels, true);
            }
        }
        for id in ids {
            let a = self.alerts[&id].clone();
            let in_a_group = old.values().any(|g| g.members.contains(&a.fingerprint));
            if a.status == AlertStatus::Firing || in_a_group {
                self.join_groups(&a, a.fired_at.unwrap_or(now), now);
            }
        }
        for (gid, g) in self.groups.iter_mut() {
            if let Some(o) = old.get(gid) {
                g.next_flush = o.next_flush;
                g.force = o.force;
            }
        }
        self.refresh_muting(now);
    }

    /// A reload removed rules: their active alerts end (nothing evaluates them any more), with
    /// the reason recorded. Returns how many ended.
    pub fn end_removed_rules(&mut self, rules: &crate::rules::RuleSet, now: i64) -> usize {
        let names: BTreeSet<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        let mut ids: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.source == AlertSource::Rule && a.is_active())
            .filter(|a| !names.contains(a.rule.as_str()))
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        for id in &ids {
            let firing = {
                let a = self.alerts.get_mut(id).expect("listed");
                let firing = a.status == AlertStatus::Firing;
                a.status = if firing {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Cancelled
                };
                a.ends_at = Some(now);
                a.end_reason = Some(EndReason::Removed);
                a.updated_at = now;
                a.log(
                    now,
                    format!("ended: rule {} removed by a reload", a.rule),
                    "manager",
                );
                firing
            };
            let current = self
                .current
                .get(&self.alerts[id].fingerprint)
                .is_some_and(|c| c == id);
            if firing && current {
                self.ended(id, now);
            }
            self.dirty(id);
        }
        ids.len()
    }

    // ----- time -------------------------------------------------------------------------

    /// When `on_time` next has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Applies everything due at or before `now`: flushes, ack expiries, external alerts'
    /// ends, silences starting or ending, flapping ending, storms, retention.
    pub fn on_time(&mut self, now: i64) {
        while let Some((t, timer)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Flush(gid) => {
                    if self.groups.get(&gid).is_some_and(|g| g.next_flush <= now) {
                        self.flush(&gid, now);
                    }
                }
                Timer::AckExpiry(id) => self.ack_expired(&id, now),
                Timer::ExternalEnd(id) => {
                    let due = self
                        .alerts
                        .get(&id)
                        .and_then(|a| a.expires_at.filter(|_| a.is_active()))
                        .is_some_and(|e| e <= now);
                    if due {
                        let at = self.alerts[&id].expires_at.unwrap_or(now);
                        self.end_external(
                            &id,
                            at,
                            "resolved: not sent again before it ended",
                            "external",
                        );
                    }
                }
                Timer::FlapStable(fp) => self.flap_check(&fp, now),
                Timer::Storms => self.check_storms(now),
                Timer::Silences => {
                    self.refresh_muting(now);
                    if let Some(t) = self.silences.next_change(now) {
                        self.timers.insert((t, Timer::Silences));
                    }
                }
                Timer::Gc => {
                    self.gc(now);
                    self.timers.insert((now + GC_EVERY_MS, Timer::Gc));
                }
            }
        }
    }

    fn ack_expired(&mut self, id: &str, now: i64) {
        let Some(a) = self.alerts.get_mut(id) else {
            return;
        };
        let due = a
            .ack
            .as_ref()
            .and_then(|x| x.expires_at)
            .is_some_and(|t| t <= now);
        if !due {
            return;
        }
        a.ack = None;
        a.log(now, "acknowledgement expired", "manager");
        let fp = a.fingerprint.clone();
        let firing = a.status == AlertStatus::Firing;
        self.dirty(id);
        if firing {
            // Still firing: tell the receivers again at the next flush.
            for g in self.groups.values_mut().filter(|g| g.members.contains(&fp)) {
                g.force = true;
            }
        }
    }

    fn is_flapping(&self, fp: &str) -> bool {
        self.flaps.get(fp).is_some_and(|f| f.flapping)
    }

    /// A start or end of `fp` at `now`: counts towards flapping.
    fn flap_change(&mut self, fp: &str, now: i64) {
        if !self.cfg.flapping.enabled {
            return;
        }
        let window = self.cfg.flapping.window_secs as i64 * 1000;
        let f = self.flaps.entry(fp.to_string()).or_default();
        f.changes.push_back(now);
        while f.changes.front().is_some_and(|t| *t <= now - window) {
            f.changes.pop_front();
        }
        let mut started = false;
        if !f.flapping && f.changes.len() > self.cfg.flapping.max_changes {
            f.flapping = true;
            f.since = now;
            started = true;
        }
        let flapping = f.flapping;
        let v = serde_json::to_value(&*f).ok();
        if flapping || f.changes.len() > 1 {
            self.fx.meta.insert(format!("flap.{fp}"), v);
        }
        if flapping {
            self.timers.insert((
                now + self.cfg.flapping.stable_secs as i64 * 1000,
                Timer::FlapStable(fp.to_string()),
            ));
        }
        if started {
            if let Some(id) = self.current.get(fp).cloned() {
                let a = self.alerts.get_mut(&id).expect("current");
                a.flapping = true;
                a.log(
                    now,
                    "flapping: notified once, not on each change, until stable",
                    "manager",
                );
                self.dirty(&id);
            }
            for g in self.groups.values_mut().filter(|g| g.members.contains(fp)) {
                g.force = true;
            }
        }
    }

    /// Flapping ends once `fp` has been stable for `stable_secs`.
    fn flap_check(&mut self, fp: &str, now: i64) {
        let stable = self.cfg.flapping.stable_secs as i64 * 1000;
        let Some(f) = self.flaps.get_mut(fp) else {
            return;
        };
        if !f.flapping || f.changes.back().is_some_and(|t| now - *t < stable) {
            return;
        }
        f.flapping = false;
        f.changes.clear();
        self.fx.meta.insert(format!("flap.{fp}"), None);
        self.flaps.remove(fp);
        if let Some(id) = self.current.get(fp).cloned() {
            let a = self.alerts.get_mut(&id).expect("current");
            a.flapping = false;
            a.log(now, "stable again: no longer flapping", "manager");
            self.dirty(&id);
        }
    }

    /// Starts, re-summarises and ends storms.
    fn check_storms(&mut self, now: i64) {
        if !self.cfg.storm.enabled {
            return;
        }
        let window = self.cfg.storm.window_secs as i64 * 1000;
        let max = self.cfg.storm.max_alerts;
        let keys: Vec<String> = match self.cfg.storm.scope {
            StormScope::Global => vec!["*".into()],
            StormScope::Receiver => self.starts.keys().filter(|k| *k != "*").cloned().collect(),
        };
        let mut next: Option<i64> = None;
        for key in keys {
            let q = self.starts.entry(key.clone()).or_default();
            while q.front().is_some_and(|(t, _)| *t <= now - window) {
                q.pop_front();
            }
            // Runs on every alert start: count, and look at the ids only when a storm begins.
            let in_window = q.len();
            if let Some((t, _)) = q.front() {
                next = Some(next.map_or(t + window, |n: i64| n.min(t + window)));
            }
            let state = self.storms.entry(key.clone()).or_default();
            let mut summary = None;
            if !state.active && in_window > max {
                *state = StormState {
                    active: true,
                    started_at: now,
                    ..Default::default()
                };
                for (_, id) in q.iter() {
                    if let Some(a) = self.alerts.get(id) {
                        count_into(state, a);
                    }
                }
                summary = Some(NotificationKind::Storm);
            } else if state.active && in_window <= max / 2 {
                summary = Some(NotificationKind::StormOver);
            } else if state.active
                && now >= state.last_summary_at + self.cfg.storm.summary_interval_secs as i64 * 1000
            {
                summary = Some(NotificationKind::Storm);
            }
            if let Some(kind) = summary {
                self.storm_summary(&key, kind, now);
            }
            if let Some(s) = self.storms.get(&key) {
                if s.active {
                    let t = s.last_summary_at + self.cfg.storm.summary_interval_secs as i64 * 1000;
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        if let Some(t) = next {
            self.timers.insert((t.max(now + 1), Timer::Storms));
        }
    }

    fn storm_summary(&mut self, key: &str, kind: NotificationKind, now: i64) {
        let receivers: Vec<String> = if key == "*" {
            self.routing
                .routes
                .receivers()
                .into_iter()
                .map(String::from)
                .collect()
        } else {
            vec![key.to_string()]
        };
        let state = self.storms.get_mut(key).expect("present");
        state.summaries += 1;
        state.last_summary_at = now;
        let seq = state.summaries;
        let summary = StormSummary {
            alerts: state.alerts,
            window_secs: self.cfg.storm.window_secs,
            started_at: state.started_at,
            ended_at: (kind == NotificationKind::StormOver).then_some(now),
            by_rule: state.by_rule.clone(),
            by_priority: state.by_priority.clone(),
            by_exchange: state.by_exchange.clone(),
        };
        let first = state.first.clone();
        let started_at = state.started_at;
        if kind == NotificationKind::StormOver {
            state.active = false;
        }
        let v = serde_json::to_value(&*state).ok();
        self.fx.meta.insert(format!("storm.{key}"), v);
        let listed: Vec<NotifiedAlert> = first
            .iter()
            .filter_map(|id| self.alerts.get(id))
            .map(|a| notified(a, a.status == AlertStatus::Firing, now))
            .collect();
        let priority = listed
            .iter()
            .map(|a| a.priority)
            .min()
            .unwrap_or(Priority::P3);
        for r in receivers {
            let tag = if kind == NotificationKind::StormOver {
                "over"
            } else {
                "storm"
            };
            self.fx.notifications.push(Notification {
                id: format!("{r}.storm-{started_at}.{tag}-{seq}"),
                kind,
                receiver: r.clone(),
                status: if kind == NotificationKind::StormOver {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                },
                priority,
                group_key: format!("storm:{key}"),
                group_labels: BTreeMap::new(),
                common_labels: BTreeMap::new(),
                common_annotations: BTreeMap::new(),
                alerts: listed.clone(),
                truncated: summary.alerts.saturating_sub(listed.len()),
                storm: Some(summary.clone()),
                created_at: now,
                sequence: seq,
            });
        }
    }

    fn storm_on(&self, receiver: &str) -> bool {
        self.storms.get(receiver).is_some_and(|s| s.active)
            || self.storms.get("*").is_some_and(|s| s.active)
    }

    /// One flush of group `gid` (Alertmanager's dedup rules, plus acks, flapping and storms).
    fn flush(&mut self, gid: &str, now: i64) {
        let Some(g) = self.groups.get(gid).cloned() else {
            return;
        };
        let route = self.routing.routes.get(g.route).clone();
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        for fp in &g.members {
            let Some(id) = self.current.get(fp).cloned() else {
                continue;
            };
            if self.update_muting(&id, now) {
                continue;
            }
            let a = &self.alerts[&id];
            if self.is_flapping(fp) || a.status == AlertStatus::Firing {
                firing.push(id);
            } else if a.status == AlertStatus::Resolved {
                resolved.push(id);
            }
        }
        let fps = |ids: &[String]| -> BTreeSet<String> {
            ids.iter()
                .map(|id| self.alerts[id].fingerprint.clone())
                .collect()
        };
        let (firing_set, resolved_set) = (fps(&firing), fps(&resolved));
        let mut log = self.nflog.get(gid).cloned().unwrap_or_else(|| LogEntry {
            group: gid.to_string(),
            receiver: g.receiver.clone(),
            group_key: g.key.clone(),
            ..Default::default()
        });
        let unacked = firing.iter().any(|id| !self.alerts[id].is_acked(now));
        let send = if log.seq == 0 {
            !firing.is_empty()
        } else if !firing_set.is_subset(&log.firing) {
            true
        } else if firing.is_empty() {
            !log.firing.is_empty()
        } else if route.send_resolved && !resolved_set.is_subset(&log.resolved) {
            true
        } else {
            g.force || (unacked && log.last_sent_at + route.repeat_interval_ms <= now)
        };
        if send {
            log.seq += 1;
            log.firing = firing_set;
            log.resolved = resolved_set;
            log.last_sent_at = now;
            let listed: Vec<String> = if route.send_resolved {
                firing.iter().chain(resolved.iter()).cloned().collect()
            } else {
                firing.clone()
            };
            let held = self.storm_on(&g.receiver);
            if !listed.is_empty() {
                let n = self.notification(gid, &g, &log, &listed, now);
                for a in &n.alerts {
                    let r = self
                        .alerts
                        .get_mut(&a.id)
                        .expect("listed")
                        .notifications
                        .entry(g.receiver.clone())
                        .or_default();
                    r.sent += 1;
                    r.last_notification = n.id.clone();
                    r.last_sent_at = now;
                    r.last_status = Some(a.status);
                }
                for a in &n.alerts {
                    let what = if held {
                        format!("not sent to {}: alert storm (summarised)", g.receiver)
                    } else {
                        format!("notified {} ({}, {})", g.receiver, a.status.token(), n.id)
                    };
                    self.alerts
                        .get_mut(&a.id)
                        .expect("listed")
                        .log(now, what, "manager");
                    self.dirty(&a.id);
                }
                if !held {
                    self.fx.notifications.push(n);
                }
            }
        }
        if log.first_flush_at == 0 {
            log.first_flush_at = now;
        }
        // Resolved alerts leave the group once flushed (flapping ones stay: they are shown as
        // firing until stable).
        let keep: BTreeSet<String> = g
            .members
            .iter()
            .filter(|fp| {
                self.is_flapping(fp)
                    || self
                        .current
                        .get(*fp)
                        .and_then(|id| self.alerts.get(id))
                        .is_some_and(|a| a.status == AlertStatus::Firing)
            })
            .cloned()
            .collect();
        if keep.is_empty() {
            self.groups.remove(gid);
            if log.firing.is_empty()
                || !send && firing.is_empty() && log.firing.is_subset(&BTreeSet::new())
            {
                self.nflog.remove(gid);
                self.fx.logs.insert(gid.to_string(), None);
            } else {
                self.fx.logs.insert(gid.to_string(), Some(log.clone()));
                self.nflog.insert(gid.to_string(), log);
            }
        } else {
            let group = self.groups.get_mut(gid).expect("present");
            group.members = keep;
            group.force = false;
            group.next_flush = now + route.group_interval_ms;
            self.timers
                .insert((group.next_flush, Timer::Flush(gid.to_string())));
            self.fx.logs.insert(gid.to_string(), Some(log.clone()));
            self.nflog.insert(gid.to_string(), log);
        }
    }

    fn notification(
        &self,
        gid: &str,
        g: &Group,
        log: &LogEntry,
        ids: &[String],
        now: i64,
    ) -> Notification {
        let mut alerts: Vec<&ManagedAlert> = ids.iter().map(|id| &self.alerts[id]).collect();
        // Firing first, then by priority and start.
        alerts.sort_by(|a, b| {
            (
                a.status != AlertStatus::Firing,
                a.priority,
                a.starts_at,
                &a.id,
            )
                .cmp(&(
                    b.status != AlertStatus::Firing,
                    b.priority,
                    b.starts_at,
                    &b.id,
                ))
        });
        let max = self.cfg.max_alerts_per_notification;
        let truncated = alerts.len().saturating_sub(max);
        alerts.truncate(max);
        let listed: Vec<NotifiedAlert> = alerts
            .iter()
            .map(|a| notified(a, self.is_flapping(&a.fingerprint), now))
            .collect();
        let common = |f: &dyn Fn(&NotifiedAlert) -> &BTreeMap<String, String>| {
            let mut c = listed.first().map(|a| f(a).clone()).unwrap_or_default();
            for a in &listed[1..] {
                c.retain(|k, v| f(a).get(k) == Some(v));
            }
            c
        };
        let status = if listed.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        Notification {
            id: format!("{}.{gid}.{}", g.receiver, log.seq),
            kind: NotificationKind::Group,
            receiver: g.receiver.clone(),
            status,
            priority: listed
                .iter()
                .map(|a| a.priority)
                .min()
                .unwrap_or(Priority::P4),
            group_key: g.key.clone(),
            group_labels: g.labels.clone(),
            common_labels: common(&|a| &a.labels),
            common_annotations: common(&|a| &a.annotations),
            alerts: listed,
            truncated,
            storm: None,
            created_at: now,
            sequence: log.seq,
        }
    }

    /// Removes ended alerts and expired silences past their retention, and the oldest ended
    /// alerts beyond `max_alerts`.
    fn gc(&mut self, now: i64) {
        let keep_ms = self.cfg.resolved_retention_secs as i64 * 1000;
        let in_groups: BTreeSet<&String> = self
            .groups
            .values()
            .flat_map(|g| g.members.iter())
            .collect();
        let mut ended: Vec<(i64, String)> = self
            .alerts
            .values()
            .filter(|a| !a.is_active())
            .filter(|a| {
                !(in_groups.contains(&a.fingerprint)
                    && self.current.get(&a.fingerprint) == Some(&a.id))
            })
            .map(|a| {
                (
                    a.ends_at.unwrap_or(a.updated_at).max(a.updated_at),
                    a.id.clone(),
                )
            })
            .collect();
        ended.sort();
        let over = self.alerts.len().saturating_sub(self.cfg.max_alerts);
        let mut drop: Vec<String> = ended
            .iter()
            .enumerate()
            .filter(|(i, (t, _))| *i < over || *t + keep_ms <= now)
            .map(|(_, (_, id))| id.clone())
            .collect();
        drop.sort();
        for id in drop {
            if let Some(a) = self.alerts.remove(&id) {
                if self.current.get(&a.fingerprint) == Some(&id) {
                    self.current.remove(&a.fingerprint);
                }
                self.fx.alerts.insert(id, None);
            }
        }
        // Expired silences are kept as long as ended alerts (Alertmanager shows them too).
        let expired: Vec<String> = self
            .silences
            .iter()
            .filter(|s| s.ends_at + keep_ms <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.silences.remove(&id);
            self.fx.silences.insert(id, None);
        }
    }

    // ----- reads (API, metrics, tests) -------------------------------------------------------

    pub fn alert(&self, id: &str) -> Option<&ManagedAlert> {
        self.find(id).ok().and_then(|id| self.alerts.get(&id))
    }

    pub fn alerts(&self) -> impl Iterator<Item = &ManagedAlert> {
        self.alerts.values()
    }

    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.iter()
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Counts for the metrics: (alerts by status and priority, silences active, muted alerts,
    /// flapping alerts, receivers in a storm, alerts over the limit).
    pub fn gauges(&self, now: i64) -> Gauges {
        let mut g = Gauges::default();
        for a in self.alerts.values() {
            *g.alerts
                .entry((a.status.token(), a.priority.token()))
                .or_default() += 1;
            if a.is_active() && !a.silenced_by.is_empty() {
                g.silenced += 1;
            }
            if a.is_active() && !a.inhibited_by.is_empty() {
                g.inhibited += 1;
            }
        }
        g.silences_active = self
            .silences
            .iter()
            .filter(|s| s.state(now) == super::silence::SilenceState::Active)
            .count();
        g.flapping = self.flaps.values().filter(|f| f.flapping).count();
        g.storms = self.storms.values().filter(|s| s.active).count();
        g.over_limit = self.alerts.len().saturating_sub(self.cfg.max_alerts);
        g.groups = self.groups.len();
        g
    }
}

/// Gauges the shell exports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Gauges {
    pub alerts: BTreeMap<(&'static str, &'static str), usize>,
    pub silences_active: usize,
    pub silenced: usize,
    pub inhibited: usize,
    pub flapping: usize,
    pub storms: usize,
    pub over_limit: usize,
    pub groups: usize,
}

fn count_into(s: &mut StormState, a: &ManagedAlert) {
    s.alerts += 1;
    *s.by_rule.entry(a.rule.clone()).or_default() += 1;
    *s.by_priority.entry(a.priority.to_string()).or_default() += 1;
    if let Some(ex) = a.labels.get("exchange") {
        *s.by_exchange.entry(ex.clone()).or_default() += 1;
    }
    if s.first.len() < STORM_TOP {
        s.first.push(a.id.clone());
    }
}

fn notified(a: &ManagedAlert, flapping: bool, now: i64) -> NotifiedAlert {
    NotifiedAlert {
        id: a.id.clone(),
        fingerprint: a.fingerprint.clone(),
        rule: a.rule.clone(),
        priority: a.priority,
        status: if flapping {
            AlertStatus::Firing
        } else {
            a.status
        },
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        value: a.value,
        starts_at: a.starts_at,
        ends_at: if flapping { None } else { a.ends_at },
        acknowledged: a.ack.clone().filter(|_| a.is_acked(now)),
        flapping,
        generator_url: a.generator_url.clone(),
    }
}

/// P1..P4 from an external alert's labels: `priority`, else `severity`.
pub fn priority_from_labels(labels: &BTreeMap<String, String>) -> Priority {
    if let Some(p) = labels.get("priority").and_then(|p| p.parse().ok()) {
        return p;
    }
    match labels
        .get("severity")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("critical") | Some("page") => Priority::P1,
        Some("error") | Some("major") => Priority::P2,
        Some("warning") | Some("minor") => Priority::P3,
        _ => Priority::P4,
    }
}

#[cfg(test)]
mod tests;

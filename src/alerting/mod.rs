//! The alert manager component: alert events from `PRISM_ALERTS`, commands from
//! `PRISM_COMMANDS`, delivery outcomes from `PRISM_NOTIFY` in; alert state, silences and the
//! notification log in KV; notifications to `prism.notify.send.<receiver>` out.
//!
//! One manager of a group is active (it holds the group's lease), the others stand by and take
//! over within seconds of its death: the new active reads the state back from KV and recreates
//! its consumers at the stored cursors (which also cuts off the old one). Every step's
//! notifications are published (with deterministic ids) before its state is stored and its
//! inputs acked, so a crash at any point neither loses nor repeats a notification.
//!
//! | file | its job |
//! |---|---|
//! | `core.rs` | the state machine: grouping, acks, silences, inhibition, storms, flapping (pure) |
//! | `route.rs`, `inhibit.rs`, `silence.rs`, `matchers.rs` | routing tree, inhibition, silences, label matchers |
//! | `alert.rs`, `command.rs` | the stored alert record, commands and replies |
//! | `config.rs` | settings and the routing file |
//! | `store.rs` | the KV buckets |
//! | `client.rs` | sending commands (the CLI, the API) |

pub mod alert;
pub mod client;
pub mod command;
pub mod config;
pub mod core;
pub mod inhibit;
pub mod matchers;
pub mod route;
pub mod silence;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::app::reload::{Definitions, Reloader};
use crate::app::status::StatusHandle;
use crate::bus::lease::{LeaseHandle, Leases};
use crate::config::Config;
use crate::model::{AlertEvent, AlertStatus, DeliveryOutcome, Notification};
use crate::tools::clock;
use crate::{subjects, telemetry};
use command::{Command, Reply, HEADER_REPLY_TO};
use config::Routing;
use store::Store;

pub use config::AlertingConfig;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// NATS could not be reached or answered an error: retried.
    #[error("{0}")]
    Nats(String),
}

impl From<crate::bus::lease::LeaseError> for ManagerError {
    fn from(e: crate::bus::lease::LeaseError) -> Self {
        ManagerError::Nats(e.0)
    }
}

/// How an active period ended.
enum End {
    Stopped,
    LeaseLost,
}

/// Messages of one stream batch: the parsed inputs' sequences and the last message to ack.
const BATCH: usize = 256;

/// With a virtual clock, the manager's time as of its last step (a restart resumes from it).
const VIRTUAL_NOW_KEY: &str = "clock.virtual";

/// Runs the alert manager until `stop`: stands by until it holds the group's lease, then
/// manages; gives the lease back on the way out.
pub async fn run(
    cfg: Config,
    reloader: Arc<Reloader>,
    js: jetstream::Context,
    status: StatusHandle,
    member: String,
    stop: CancellationToken,
) -> Result<(), ManagerError> {
    let acfg = cfg.alerting.clone();
    // The lease bucket (and so its TTL) is shared with the processor.
    let leases = Leases::open(
        &js,
        &acfg.group,
        &member,
        Duration::from_millis(cfg.processor.lease_ttl_ms),
    )
    .await?;
    let store = Store::open(&js).await?;
    let mut reload = reloader.watch();
    let mut routing = routing_of(&reload.borrow_and_update())?;
    status.update(|s| s.manager.enabled = true);
    let renew = Duration::from_millis(cfg.processor.lease_renew_ms)
        .min(leases.ttl / 4)
        .max(Duration::from_millis(100));
    loop {
        // Stand by until the lease is ours.
        let sent = tokio::time::Instant::now();
        let acquired = tokio::select! {
            _ = stop.cancelled() => break,
            r = async {
                let _ = leases.heartbeat().await;
                leases.acquire(0).await
            } => r,
        };
        let rev = match acquired {
            Ok(Some(rev)) => rev,
            Ok(None) => {
                if let Ok(true) = reload.has_changed() {
                    routing = routing_of(&reload.borrow_and_update())?;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(renew) => continue,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "manager cannot reach its lease bucket");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(renew) => continue,
                }
            }
        };
        let (handle, guard) = LeaseHandle::new(0, rev, sent + leases.valid_for());
        tracing::info!(group = %acfg.group, member = %member, "alert manager active");
        status.update(|s| s.manager.active = true);
        metrics::gauge!(telemetry::MANAGER_ACTIVE).set(1.0);
        let keeper = KeepLease {
            leases: &leases,
            handle,
            every: renew,
        };
        let ctx = Active {
            cfg: &cfg,
            js: &js,
            store: &store,
            status: &status,
            stop: &stop,
            reloader: &reloader,
        };
        let end = active(ctx, &mut routing, &mut reload, guard, keeper).await;
        status.update(|s| s.manager.active = false);
        metrics::gauge!(telemetry::MANAGER_ACTIVE).set(0.0);
        match end {
            Ok((End::Stopped, rev)) => {
                leases.release(0, rev).await;
                break;
            }
            Ok((End::LeaseLost, _)) => {
                tracing::warn!("alert manager lease lost: standing by");
            }
            Err((e, rev)) => {
                tracing::error!(error = %e, "alert manager stopped with an error; standing by and retrying");
                leases.release(0, rev).await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
    leases.leave().await;
    Ok(())
}

/// The routing of a definitions set (a manager's process always loads it).
fn routing_of(d: &Definitions) -> Result<Routing, ManagerError> {
    d.routing
        .clone()
        .ok_or_else(|| ManagerError::Nats("no routing loaded for the alert manager".into()))
}

/// What the active loop works with.
struct Active<'a> {
    cfg: &'a Config,
    js: &'a jetstream::Context,
    store: &'a Store,
    status: &'a StatusHandle,
    stop: &'a CancellationToken,
    reloader: &'a Arc<Reloader>,
}

/// Renews the lease from inside the active loop.
struct KeepLease<'a> {
    leases: &'a Leases,
    handle: LeaseHandle,
    every: Duration,
}

/// Manages until stopped or the lease is lost. Returns the lease's revision for release.
async fn active(
    ctx: Active<'_>,
    routing: &mut Routing,
    reload: &mut watch::Receiver<Arc<Definitions>>,
    guard: crate::bus::lease::LeaseGuard,
    mut keep: KeepLease<'_>,
) -> Result<(End, u64), (ManagerError, u64)> {
    let Active {
        cfg,
        js,
        store,
        status,
        stop,
        reloader,
    } = ctx;
    let acfg = &cfg.alerting;
    let virtual_clock = !acfg.virtual_clock_subject.is_empty();
    let mut now = clock::now_ms();
    let rev = |k: &KeepLease| k.handle.revision;
    let loaded = match store.load().await {
        Ok(l) => l,
        Err(e) => return Err((e, rev(&keep))),
    };
    if virtual_clock {
        // Virtual time resumes where the last active manager left it.
        now = loaded
            .meta
            .iter()
            .find(|(k, _)| k == VIRTUAL_NOW_KEY)
            .and_then(|(_, v)| v.as_i64())
            .unwrap_or(0);
    }
    let mut core = core::Manager::new(acfg.clone(), routing.clone());
    let counts = (loaded.alerts.len(), loaded.silences.len());
    core.restore(
        loaded.alerts,
        loaded.silences,
        loaded.logs,
        loaded.meta,
        now,
    );
    tracing::info!(
        alerts = counts.0,
        silences = counts.1,
        "alert manager state restored"
    );
    let group = &acfg.group;
    let open = |stream: &'static str, name: String, filter: &'static str, cursor: &'static str| {
        let js = js.clone();
        let store = store.clone();
        async move {
            let from = store.cursor(cursor).await?;
            recreate(&js, stream, &name, filter, from).await
        }
    };
    let setup = async {
        let alerts = open(
            subjects::ALERTS_STREAM,
            format!("{group}-alerts"),
            "",
            "alerts",
        )
        .await?;
        let commands = open(
            subjects::COMMANDS_STREAM,
            format!("{group}-commands"),
            subjects::COMMANDS_ALL,
            "commands",
        )
        .await?;
        let outcomes = open(
            subjects::NOTIFY_STREAM,
            format!("{group}-outcomes"),
            subjects::NOTIFY_OUTCOME_ALL,
            "outcomes",
        )
        .await?;
        Ok::<_, ManagerError>((alerts, commands, outcomes))
    };
    let (alerts_c, commands_c, outcomes_c) = match setup.await {
        Ok(c) => c,
        Err(e) => return Err((e, rev(&keep))),
    };
    let batches = |c: consumer::PullConsumer| async move {
        c.stream()
            .max_messages_per_batch(BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map(|m| m.ready_chunks(BATCH))
            .map_err(|e| ManagerError::Nats(format!("start consuming: {e}")))
    };
    let (mut alerts, mut commands, mut outcomes) = match async {
        Ok::<_, ManagerError>((
            batches(alerts_c).await?,
            batches(commands_c).await?,
            batches(outcomes_c).await?,
        ))
    }
    .await
    {
        Ok(s) => s,
        Err(e) => return Err((e, rev(&keep))),
    };
    let mut clock_sub = if virtual_clock {
        match js
            .client()
            .subscribe(acfg.virtual_clock_subject.clone())
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                return Err((
                    ManagerError::Nats(format!("subscribe to the virtual clock: {e}")),
                    rev(&keep),
                ))
            }
        }
    } else {
        None
    };
    let mut renew_tick = tokio::time::interval(keep.every);
    let mut gauges_tick = tokio::time::interval(Duration::from_secs(5));
    let mut sweep_tick = tokio::time::interval(store::TOMBSTONE_KEEP / 4);
    let out = Out {
        js: js.clone(),
        store: store.clone(),
        guard: guard.clone(),
        stop: stop.clone(),
        traces: Default::default(),
    };
    // An initial step: anything due already (a restart after a pause) goes out now.
    if !virtual_clock {
        core.on_time(now);
    }
    if let Err(e) = out.commit(core.take_effects()).await {
        return Err((e, rev(&keep)));
    }
    let result: Result<End, ManagerError> = async {
        loop {
            if !virtual_clock {
                now = clock::now_ms();
            }
            let deadline = core.next_deadline().filter(|_| !virtual_clock);
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep(Duration::from_millis((t - clock::now_ms()).max(0) as u64)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(End::Stopped),
                _ = guard.lost() => return Ok(End::LeaseLost),
                _ = renew_tick.tick() => {
                    let sent = tokio::time::Instant::now();
                    let _ = keep.leases.heartbeat().await;
                    match keep.leases.renew(0, keep.handle.revision).await {
                        Ok(Some(rev)) => keep.handle.extend(rev, sent + keep.leases.valid_for()),
                        Ok(None) => keep.handle.lose(),
                        Err(e) => tracing::warn!(error = %e, "manager lease renewal failed"),
                    }
                }
                _ = gauges_tick.tick() => {
                    publish_gauges(&core, now);
                    let g = core.gauges(now);
                    status.update(|s| {
                        s.manager.alerts = g.alerts.values().sum();
                        s.manager.silences_active = g.silences_active;
                    });
                }
                _ = sweep_tick.tick() => {
                    match store.sweep_tombstones(store::TOMBSTONE_KEEP).await {
                        Ok(n) if n > 0 => tracing::debug!(removed = n, "delete markers removed from the manager's buckets"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "could not remove delete markers"),
                    }
                }
                Ok(()) = reload.changed() => {
                    let defs = reload.borrow_and_update().clone();
                    *routing = routing_of(&defs)?;
                    core.set_routing(routing.clone(), now);
                    let removed = core.end_removed_rules(&defs.rules, now);
                    tracing::info!(generation = defs.generation, removed_rule_alerts = removed, "alert manager routes reloaded");
                    out.commit(core.take_effects()).await?;
                }
                _ = sleep => {
                    now = clock::now_ms();
                    core.on_time(now);
                    out.commit(core.take_effects()).await?;
                }
                Some(m) = async { match clock_sub.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
                        if let Some(t) = v["now_ms"].as_i64() {
                            now = now.max(t);
                        }
                    }
                    core.on_time(now);
                    let mut fx = core.take_effects();
                    fx.meta.insert(VIRTUAL_NOW_KEY.to_string(), Some(now.into()));
                    out.commit(fx).await?;
                    if let Some(reply) = m.reply {
                        // The next deadline lets a test step from deadline to deadline.
                        let body = serde_json::json!({ "now_ms": now, "next_ms": core.next_deadline() });
                        let _ = js.client().publish(reply, body.to_string().into()).await;
                    }
                }
                chunk = alerts.next() => {
                    let Some(chunk) = chunk else { return Err(ManagerError::Nats("the alert stream's consumer ended".into())) };
                    let (last, seq) = last_of(&chunk);
                    for m in chunk.iter().flatten() {
                        match serde_json::from_slice::<AlertEvent>(&m.payload) {
                            Ok(e) => {
                                out.trace_received(&e, m.headers.as_ref());
                                core.on_event(&e, now)
                            }
                            Err(e) => tracing::warn!(subject = %m.subject, error = %e, "undecodable alert event skipped"),
                        }
                    }
                    out.commit(core.take_effects()).await?;
                    out.advance("alerts", seq, last).await?;
                }
                chunk = commands.next() => {
                    let Some(chunk) = chunk else { return Err(ManagerError::Nats("the command stream's consumer ended".into())) };
                    let (last, seq) = last_of(&chunk);
                    let mut replies = Vec::new();
                    for m in chunk.iter().flatten() {
                        let reply_to = m.headers.as_ref().and_then(|h| h.get(HEADER_REPLY_TO)).map(|v| v.to_string());
                        let reply = match serde_json::from_slice::<Command>(&m.payload) {
                            Ok(c) if matches!(c.body, command::CommandBody::RulesReload) => {
                                // Validated here, answered, then every other process reloads
                                // (this one's components see the new set through the watch).
                                let (ok, message) = match reloader.reload(&format!("command from {}", c.principal)) {
                                    Ok(m) => {
                                        reloader.broadcast(&js.client()).await;
                                        (true, m)
                                    }
                                    Err(m) => (false, m),
                                };
                                tracing::info!(kind = "rules.reload", principal = %c.principal, request = %c.request_id, ok, message = %message, "command");
                                Reply {
                                    request_id: c.request_id.clone(),
                                    kind: c.body.kind().to_string(),
                                    principal: c.principal.clone(),
                                    ok,
                                    message,
                                    result: serde_json::Value::Null,
                                    at: now,
                                }
                            }
                            Ok(c) => {
                                let r = core.on_command(&c, now);
                                tracing::info!(kind = %r.kind, principal = %r.principal, request = %r.request_id, ok = r.ok, message = %r.message, "command");
                                r
                            }
                            Err(e) => Reply {
                                request_id: m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.to_string()).unwrap_or_default(),
                                kind: m.subject.trim_start_matches("prism.cmd.").to_string(),
                                principal: String::new(),
                                ok: false,
                                message: format!("not a valid command: {e}"),
                                result: serde_json::Value::Null,
                                at: now,
                            },
                        };
                        metrics::counter!(telemetry::MANAGER_COMMANDS, "kind" => reply.kind.clone(), "result" => if reply.ok { "ok" } else { "refused" }).increment(1);
                        replies.push((reply_to, reply));
                    }
                    out.commit(core.take_effects()).await?;
                    out.answer(replies).await;
                    out.advance("commands", seq, last).await?;
                }
                chunk = outcomes.next() => {
                    let Some(chunk) = chunk else { return Err(ManagerError::Nats("the outcome stream's consumer ended".into())) };
                    let (last, seq) = last_of(&chunk);
                    for m in chunk.iter().flatten() {
                        if let Ok(o) = serde_json::from_slice::<DeliveryOutcome>(&m.payload) {
                            metrics::counter!(telemetry::MANAGER_DELIVERIES, "receiver" => o.receiver.clone(), "outcome" => o.outcome.clone()).increment(1);
                            core.on_outcome(&o, now);
                        }
                    }
                    out.commit(core.take_effects()).await?;
                    out.advance("outcomes", seq, last).await?;
                }
            }
        }
    }
    .await;
    let rev = keep.handle.revision;
    match result {
        Ok(end) => Ok((end, rev)),
        Err(e) => Err((e, rev)),
    }
}

/// The last message of a chunk (to ack) and its stream sequence.
fn last_of(
    chunk: &[Result<jetstream::Message, consumer::pull::MessagesError>],
) -> (Option<jetstream::Message>, u64) {
    let last = chunk.iter().rev().find_map(|m| m.as_ref().ok()).cloned();
    let seq = last
        .as_ref()
        .and_then(|m| m.info().ok().map(|i| i.stream_sequence))
        .unwrap_or(0);
    (last, seq)
}

/// Replaces a consumer with one starting after `cursor` (0 = the stream's start), which also
/// cuts off a previous active manager's pulls.
async fn recreate(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    filter: &str,
    cursor: u64,
) -> Result<consumer::PullConsumer, ManagerError> {
    let s = js
        .get_stream(stream)
        .await
        .map_err(|e| ManagerError::Nats(format!("look up stream {stream}: {e}")))?;
    let _ = s.delete_consumer(name).await;
    s.create_consumer(consumer::pull::Config {
        durable_name: Some(name.to_string()),
        description: Some("PrismWatch alert manager".into()),
        ack_policy: consumer::AckPolicy::All,
        filter_subject: filter.to_string(),
        deliver_policy: if cursor == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: cursor + 1,
            }
        },
        ..Default::default()
    })
    .await
    .map_err(|e| ManagerError::Nats(format!("create consumer {name}: {e}")))
}

/// Where a step's effects go.
struct Out {
    js: jetstream::Context,
    store: Store,
    guard: crate::bus::lease::LeaseGuard,
    stop: CancellationToken,
    /// Sampled alerts' trace contexts (`traceparent` of their receive span), by alert id, for
    /// their notifications; bounded (cleared when full: traces are best effort).
    traces: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Sampled alerts whose trace context is remembered at most.
const MAX_TRACED_ALERTS: usize = 10_000;

impl Out {
    /// The receive span of a sampled alert event (its message carries `traceparent`).
    fn trace_received(&self, e: &AlertEvent, headers: Option<&HeaderMap>) {
        use opentelemetry::KeyValue;
        let Some(tp) = crate::trace::step_from_headers(
            headers,
            "prismwatch.manager.receive",
            opentelemetry::trace::SpanKind::Consumer,
            vec![
                KeyValue::new("prismwatch.alert.id", e.id.clone()),
                KeyValue::new("prismwatch.rule", e.rule.clone()),
                KeyValue::new("prismwatch.alert.status", e.status.token()),
            ],
        ) else {
            return;
        };
        let mut t = self.traces.lock().expect("traces lock");
        if t.len() >= MAX_TRACED_ALERTS {
            t.clear();
        }
        t.insert(e.id.clone(), tp);
    }

    /// The `traceparent` a notification carries: a span under its first sampled alert's.
    fn trace_notification(&self, n: &Notification) -> Option<String> {
        if !crate::trace::enabled() {
            return None;
        }
        let parent = {
            let t = self.traces.lock().expect("traces lock");
            n.alerts.iter().find_map(|a| t.get(&a.id).cloned())?
        };
        crate::trace::step(
            &crate::trace::context_of(&parent)?,
            "prismwatch.manager.notify",
            opentelemetry::trace::SpanKind::Producer,
            vec![
                opentelemetry::KeyValue::new("prismwatch.receiver", n.receiver.clone()),
                opentelemetry::KeyValue::new("prismwatch.notification.id", n.id.clone()),
                opentelemetry::KeyValue::new("prismwatch.alerts", n.alerts.len() as i64),
            ],
        )
    }

    /// Publishes the notifications (each awaited for its stream ack, retried while NATS is
    /// away), then stores the records. Only while the lease holds.
    async fn commit(&self, fx: core::Effects) -> Result<(), ManagerError> {
        if fx.is_empty() {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(50);
        let mut pending: Vec<&Notification> = fx.notifications.iter().collect();
        while !pending.is_empty() {
            if self.guard.wait_valid(&self.stop).await.is_err() {
                return Err(ManagerError::Nats("lease lapsed while publishing".into()));
            }
            let mut acks = Vec::new();
            for n in &pending {
                let mut h = HeaderMap::new();
                h.insert("Nats-Msg-Id", n.id.as_str());
                h.insert(subjects::HEADER_CONTENT_TYPE, "application/json");
                if let Some(tp) = self.trace_notification(n) {
                    h.insert(crate::trace::HEADER, tp.as_str());
                }
                let body = serde_json::to_vec(n).expect("notifications serialise");
                acks.push(
                    self.js
                        .publish_with_headers(subjects::notify_subject(&n.receiver), h, body.into())
                        .await,
                );
            }
            let mut retry = Vec::new();
            for (n, a) in pending.into_iter().zip(acks) {
                let ok = match a {
                    Ok(f) => f.await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    metrics::counter!(telemetry::MANAGER_NOTIFICATIONS, "receiver" => n.receiver.clone(), "kind" => format!("{:?}", n.kind).to_lowercase()).increment(1);
                } else {
                    retry.push(n);
                }
            }
            pending = retry;
            if !pending.is_empty() {
                tracing::warn!(
                    count = pending.len(),
                    "notifications not stored yet; retrying"
                );
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(ManagerError::Nats("stopped while publishing".into())),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        // Tests: die between publishing a step's notifications and storing its state, the
        // worst moment (the restarted manager publishes them again with the same ids).
        #[cfg(feature = "fault-injection")]
        if !fx.notifications.is_empty()
            && std::env::var_os("PRISMWATCH_FAULT_ABORT_AFTER_NOTIFY").is_some()
        {
            std::process::abort();
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.apply(&fx).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "alert manager state not stored yet; retrying");
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(e),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records how far a stream is applied and acks it.
    async fn advance(
        &self,
        cursor: &str,
        seq: u64,
        last: Option<jetstream::Message>,
    ) -> Result<(), ManagerError> {
        if seq > 0 {
            self.store.set_cursor(cursor, seq).await?;
        }
        if let Some(m) = last {
            let _ = m.ack_with(AckKind::Ack).await;
        }
        Ok(())
    }

    /// Sends each command's result to its requester and to the audit log.
    async fn answer(&self, replies: Vec<(Option<String>, Reply)>) {
        for (to, r) in replies {
            if let Some(to) = to {
                let body = serde_json::to_vec(&r).expect("replies serialise");
                let _ = self.js.client().publish(to, body.into()).await;
            }
            client::store_result(&self.js, &r).await;
        }
    }
}

fn publish_gauges(core: &core::Manager, now: i64) {
    let g = core.gauges(now);
    for status in AlertStatus::ALL {
        for p in crate::model::Priority::ALL {
            let n = g
                .alerts
                .get(&(status.token(), p.token()))
                .copied()
                .unwrap_or(0);
            metrics::gauge!(telemetry::MANAGER_ALERTS, "status" => status.token(), "priority" => p.token()).set(n as f64);
        }
    }
    metrics::gauge!(telemetry::MANAGER_SILENCES_ACTIVE).set(g.silences_active as f64);
    metrics::gauge!(telemetry::MANAGER_SILENCED).set(g.silenced as f64);
    metrics::gauge!(telemetry::MANAGER_INHIBITED).set(g.inhibited as f64);
    metrics::gauge!(telemetry::MANAGER_FLAPPING).set(g.flapping as f64);
    metrics::gauge!(telemetry::MANAGER_STORMS).set(g.storms as f64);
    metrics::gauge!(telemetry::MANAGER_OVER_LIMIT).set(g.over_limit as f64);
    metrics::gauge!(telemetry::MANAGER_GROUPS).set(g.groups as f64);
}

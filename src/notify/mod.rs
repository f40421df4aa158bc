//! Notifier workers: notifications from `PRISM_NOTIFY` (`prism.notify.send.<receiver>`) out to
//! email, Slack, DingTalk, webhooks, PagerDuty and Telegram.
//!
//! Every worker (any number of processes) pulls from one durable consumer, so each
//! notification goes to one worker; it is acked only once every channel of its receiver
//! delivered it or it was dead-lettered (`prism.notify.dead.<receiver>`), and its outcome is
//! published for the alert manager (`prism.notify.outcome.<receiver>`). A worker that dies
//! mid-delivery leaves the notification unacked: another worker delivers it after
//! `notify.ack_wait_secs` (the at-least-once window). Channels without a rate limit deliver
//! concurrently; a rate-limited channel (its limit shared by every worker through KV) has a
//! lane: one message at a time, and what queued while the lane waited goes out merged into one
//! message. Transient errors are retried with backoff until `notify.retry_deadline_secs`.

pub mod channel;
pub mod config;
mod ratelimit;
pub mod retry;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, AckKind};
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::app::reload::Definitions;
use crate::app::status::StatusHandle;
use crate::config::Config;
use crate::model::{AlertStatus, DeliveryOutcome, Notification, NotificationKind};
use crate::subjects;
use crate::telemetry;
use crate::tools::clock;
use channel::{Ctx, Failure};
pub use config::{ChannelConfig, NotifyConfig, ReceiverDef};
use ratelimit::RateLimits;

/// Header on a re-sent dead letter: deliver to this channel only (`<receiver>.<kind>.<i>`).
pub const HEADER_ONLY_CHANNEL: &str = "Prism-Only-Channel";
/// Headers on dead letters.
pub const HEADER_ERROR: &str = "Prism-Error";
pub const HEADER_ATTEMPTS: &str = "Prism-Attempts";
pub const HEADER_CHANNEL: &str = "Prism-Channel";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NATS: {0}")]
    Nats(String),
}

/// How one channel's delivery of one notification ended.
#[derive(Debug, Clone)]
struct ChannelResult {
    key: String,
    delivered: bool,
    attempts: u32,
    error: String,
}

/// Work for a lane: a notification and who waits for its result.
struct Job {
    notification: Notification,
    channel: ChannelConfig,
    done: oneshot::Sender<ChannelResult>,
}

#[derive(Default)]
struct Lane {
    pending: Vec<Job>,
    running: bool,
}

/// What every delivery task of a worker shares.
struct Shared {
    cfg: NotifyConfig,
    http: reqwest::Client,
    rates: RateLimits,
    lanes: Mutex<HashMap<String, Lane>>,
    /// Requests to services in flight at once (`notify.concurrency`).
    sends: tokio::sync::Semaphore,
}

/// Notifications in flight per process, per unit of `notify.concurrency`: most of them may be
/// waiting in a rate-limited lane (cheap), so many more than the concurrent sends; this keeps
/// one slow or rate-limited receiver from holding up the others.
const IN_FLIGHT_PER_SEND: usize = 64;

/// Runs a notifier worker until `stop`.
pub async fn run(
    cfg: Config,
    defs: watch::Receiver<Arc<Definitions>>,
    js: jetstream::Context,
    status: StatusHandle,
    stop: CancellationToken,
) -> Result<(), NotifyError> {
    let ncfg = cfg.notify.clone();
    let nats = |e: &dyn std::fmt::Display| NotifyError::Nats(e.to_string());
    let stream = js
        .get_stream(&cfg.streams.notify.name)
        .await
        .map_err(|e| nats(&e))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &ncfg.consumer_name,
            consumer::pull::Config {
                durable_name: Some(ncfg.consumer_name.clone()),
                description: Some("PrismWatch notifier workers (shared)".into()),
                filter_subject: subjects::NOTIFY_SEND_ALL.into(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(ncfg.ack_wait_secs),
                max_deliver: -1,
                max_ack_pending: (ncfg.concurrency * IN_FLIGHT_PER_SEND) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats(&e))?;
    let shared = Arc::new(Shared {
        http: channel::http_client(),
        rates: RateLimits::open(&js).await.map_err(NotifyError::Nats)?,
        cfg: ncfg.clone(),
        lanes: Mutex::default(),
        sends: tokio::sync::Semaphore::new(ncfg.concurrency),
    });
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(ncfg.concurrency * 4)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| nats(&e))?;
    status.update(|s| s.notify.running = true);
    tracing::info!(consumer = %ncfg.consumer_name, "notifier worker started");
    let permits = Arc::new(tokio::sync::Semaphore::new(
        ncfg.concurrency * IN_FLIGHT_PER_SEND,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("never closed"),
        };
        let m = tokio::select! {
            _ = stop.cancelled() => break,
            m = messages.next() => m,
        };
        let m = match m {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "notification consumer");
                continue;
            }
            None => return Err(NotifyError::Nats("notification consumer ended".into())),
        };
        while tasks.try_join_next().is_some() {}
        let receivers = receivers_of(&defs.borrow());
        let (js, shared, stop) = (js.clone(), shared.clone(), stop.clone());
        tasks.spawn(async move {
            handle(m, receivers, &js, &shared, &stop).await;
            drop(permit);
        });
    }
    status.update(|s| s.notify.running = false);
    // In-flight deliveries stop with the token: their notifications stay unacked, for
    // another worker (or this one, restarted) to deliver.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

fn receivers_of(defs: &Definitions) -> Arc<BTreeMap<String, ReceiverDef>> {
    Arc::new(
        defs.routing
            .as_ref()
            .map(|r| {
                r.receivers
                    .iter()
                    .map(|d| (d.name.clone(), d.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The channels of a receiver, each with its key `<receiver>.<kind>.<i>`.
pub fn keyed_channels(r: &ReceiverDef) -> Vec<(String, ChannelConfig)> {
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    r.channels()
        .into_iter()
        .map(|c| {
            let i = counts.entry(c.kind()).or_default();
            let key = format!("{}.{}.{i}", r.name, c.kind());
            *i += 1;
            (key, c)
        })
        .collect()
}

/// One notification: deliver on each channel (through its lane), keep the message alive
/// meanwhile, dead-letter what failed, publish the outcome, ack.
async fn handle(
    m: jetstream::Message,
    receivers: Arc<BTreeMap<String, ReceiverDef>>,
    js: &jetstream::Context,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) {
    let only = m
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_ONLY_CHANNEL))
        .map(|v| v.to_string());
    let n: Notification = match serde_json::from_slice(&m.payload) {
        Ok(n) => n,
        Err(e) => {
            let receiver = m
                .subject
                .rsplit('.')
                .next()
                .unwrap_or("unknown")
                .to_string();
            dead_letter(
                js,
                &m,
                &receiver,
                "-",
                &format!("not a notification: {e}"),
                0,
            )
            .await;
            let _ = m.double_ack().await;
            return;
        }
    };
    let Some(receiver) = receivers.get(&n.receiver) else {
        let error = format!("no receiver {:?} in the routing file", n.receiver);
        tracing::error!(notification = %n.id, %error, "notification dead-lettered");
        dead_letter(js, &m, &n.receiver, "-", &error, 0).await;
        finish(
            js,
            &m,
            &n,
            vec![ChannelResult {
                key: "-".into(),
                delivered: false,
                attempts: 0,
                error,
            }],
        )
        .await;
        return;
    };
    let span = crate::trace::open_from_headers(
        m.headers.as_ref(),
        "prismwatch.notify.deliver",
        vec![
            opentelemetry::KeyValue::new("prismwatch.receiver", n.receiver.clone()),
            opentelemetry::KeyValue::new("prismwatch.notification.id", n.id.clone()),
        ],
    );
    let mut waits = Vec::new();
    for (key, ch) in keyed_channels(receiver) {
        if only.as_ref().is_some_and(|o| *o != key) || !channel::wants(&ch, &n) {
            continue;
        }
        let (tx, rx) = oneshot::channel();
        submit(
            shared,
            key.clone(),
            Job {
                notification: n.clone(),
                channel: ch,
                done: tx,
            },
        );
        waits.push((key, rx));
    }
    // Keep the message ours while the lanes work (they may wait for rate limits or retry).
    let progress_every = Duration::from_secs(shared.cfg.ack_wait_secs) / 3;
    let all = futures::future::join_all(waits.into_iter().map(|(key, rx)| async move {
        rx.await.unwrap_or(ChannelResult {
            key,
            delivered: false,
            attempts: 0,
            error: "delivery abandoned".into(),
        })
    }));
    tokio::pin!(all);
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = tokio::time::sleep(progress_every) => { let _ = m.ack_with(AckKind::Progress).await; }
            _ = stop.cancelled() => return, // unacked: redelivered to a worker that runs
        }
    };
    if let Some(span) = span {
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| !r.delivered)
            .map(|r| r.key.as_str())
            .collect();
        span.end(
            vec![
                opentelemetry::KeyValue::new("prismwatch.channels", results.len() as i64),
                opentelemetry::KeyValue::new(
                    "prismwatch.delivered",
                    results.iter().filter(|r| r.delivered).count() as i64,
                ),
            ],
            (!failed.is_empty())
                .then(|| format!("not delivered on {}", failed.join(", ")))
                .as_deref(),
        );
    }
    if results.iter().any(|r| r.error == "delivery abandoned") {
        return;
    }
    for r in results.iter().filter(|r| !r.delivered) {
        dead_letter(js, &m, &n.receiver, &r.key, &r.error, r.attempts).await;
    }
    finish(js, &m, &n, results).await;
}

/// Publishes the outcome, then acks.
async fn finish(
    js: &jetstream::Context,
    m: &jetstream::Message,
    n: &Notification,
    results: Vec<ChannelResult>,
) {
    let delivered = results.iter().all(|r| r.delivered);
    let outcome = DeliveryOutcome {
        notification_id: n.id.clone(),
        receiver: n.receiver.clone(),
        outcome: if delivered {
            "delivered"
        } else {
            "dead_lettered"
        }
        .into(),
        attempts: results.iter().map(|r| r.attempts).max().unwrap_or(0),
        at: clock::now_ms(),
        alert_ids: n.alerts.iter().map(|a| a.id.clone()).collect(),
        error: results
            .iter()
            .filter(|r| !r.delivered)
            .map(|r| format!("{}: {}", r.key, r.error))
            .collect::<Vec<_>>()
            .join("; "),
    };
    // One outcome per stored notification message: a redelivery of it is deduplicated, a
    // re-sent dead letter (a new message) reports again.
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("outcome-{}-{seq}", n.id).as_str());
    let body = serde_json::to_vec(&outcome).expect("serialises");
    if let Err(e) = publish(js, subjects::outcome_subject(&n.receiver), h, body).await {
        tracing::warn!(notification = %n.id, error = %e, "could not publish the delivery outcome");
    }
    if let Err(e) = m.double_ack().await {
        tracing::warn!(notification = %n.id, error = %e, "ack failed: the notification will be delivered again");
    }
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    h: async_nats::HeaderMap,
    body: Vec<u8>,
) -> Result<(), String> {
    js.publish_with_headers(subject, h, body.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn dead_letter(
    js: &jetstream::Context,
    m: &jetstream::Message,
    receiver: &str,
    key: &str,
    error: &str,
    attempts: u32,
) {
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("dead-{seq}-{key}").as_str());
    h.insert(
        HEADER_ERROR,
        error.chars().take(1000).collect::<String>().as_str(),
    );
    h.insert(HEADER_ATTEMPTS, attempts.to_string().as_str());
    h.insert(HEADER_CHANNEL, key);
    h.insert(subjects::HEADER_ORIGINAL_SEQUENCE, seq.to_string().as_str());
    h.insert(subjects::HEADER_CONTENT_TYPE, "application/json");
    metrics::counter!(telemetry::NOTIFY_DEAD_LETTERS, "receiver" => receiver.to_string())
        .increment(1);
    tracing::error!(%receiver, channel = %key, attempts, %error, "notification dead-lettered");
    if let Err(e) = publish(
        js,
        subjects::notify_dead_subject(receiver),
        h,
        m.payload.to_vec(),
    )
    .await
    {
        tracing::error!(error = %e, "could not store the dead letter");
    }
}

/// Delivers a job: at once when its channel has no rate limit (deliveries run concurrently),
/// else through the channel's lane (one message at a time, what queued merged).
fn submit(shared: &Arc<Shared>, key: String, job: Job) {
    if job.channel.rate_limit().is_none() {
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = deliver(&shared, &key, &job.channel, &job.notification).await;
            let _ = job.done.send(result);
        });
        return;
    }
    let mut lanes = shared.lanes.lock().unwrap();
    let lane = lanes.entry(key.clone()).or_default();
    lane.pending.push(job);
    if !lane.running {
        lane.running = true;
        let shared = shared.clone();
        tokio::spawn(async move { run_lane(shared, key).await });
    }
}

/// A lane: takes everything queued, merges it into one message, delivers it (rate limit,
/// retries), reports to each waiter; again until nothing is queued.
async fn run_lane(shared: Arc<Shared>, key: String) {
    loop {
        let jobs: Vec<Job> = {
            let mut lanes = shared.lanes.lock().unwrap();
            let lane = lanes.get_mut(&key).expect("a running lane exists");
            if lane.pending.is_empty() {
                lane.running = false;
                return;
            }
            std::mem::take(&mut lane.pending)
        };
        let channel = jobs[0].channel.clone();
        let notifications: Vec<&Notification> = jobs.iter().map(|j| &j.notification).collect();
        let merged = merge(&notifications);
        if jobs.len() > 1 {
            metrics::counter!(telemetry::NOTIFY_MERGED, "channel" => channel.kind())
                .increment(jobs.len() as u64 - 1);
        }
        let result = deliver(&shared, &key, &channel, &merged).await;
        for j in jobs {
            let _ = j.done.send(result.clone());
        }
    }
}

/// Delivers one message on one channel: waits for a rate-limit slot before each attempt,
/// retries transient failures with backoff until the deadline.
async fn deliver(
    shared: &Shared,
    key: &str,
    ch: &ChannelConfig,
    n: &Notification,
) -> ChannelResult {
    let cfg = &shared.cfg;
    let started = Instant::now();
    let deadline = Duration::from_secs(cfg.retry_deadline_secs);
    let receiver = n.receiver.clone();
    let mut attempts = 0;
    loop {
        if let Some((messages, per_ms)) = ch.rate_limit() {
            // 10 % slack: the service counts arrivals, we count sends; latency jitter must not
            // push a message into the service's next-to-full window.
            let per_ms = per_ms + per_ms / 10;
            loop {
                match shared
                    .rates
                    .try_take(key, messages, per_ms, clock::now_ms())
                    .await
                {
                    Ok(Ok(())) => break,
                    Ok(Err(wait)) => tokio::time::sleep(wait).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limit store unavailable: sending anyway");
                        break;
                    }
                }
            }
        }
        attempts += 1;
        let ctx = Ctx {
            http: &shared.http,
            cfg,
            now_ms: clock::now_ms(),
        };
        let result = {
            let _send = shared.sends.acquire().await.expect("never closed");
            channel::send(ch, n, &ctx).await
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(f) if f.transient => "transient_error",
            Err(_) => "permanent_error",
        };
        metrics::counter!(telemetry::NOTIFY_ATTEMPTS, "receiver" => receiver.clone(), "channel" => ch.kind(), "outcome" => label).increment(1);
        let failure: Failure = match result {
            Ok(answer) => {
                metrics::counter!(telemetry::NOTIFY_DELIVERIES, "receiver" => receiver.clone(), "channel" => ch.kind(), "outcome" => "delivered").increment(1);
                tracing::debug!(channel = %key, notification = %n.id, attempts, %answer, "delivered");
                return ChannelResult {
                    key: key.to_string(),
                    delivered: true,
                    attempts,
                    error: String::new(),
                };
            }
            Err(f) => f,
        };
        let wait = retry::next_wait(
            attempts,
            failure.retry_after,
            Duration::from_millis(cfg.retry_initial_ms),
            Duration::from_millis(cfg.retry_max_ms),
            rand::random::<f64>(),
        );
        if !failure.transient || !retry::within(started.elapsed(), wait, deadline) {
            metrics::counter!(telemetry::NOTIFY_DELIVERIES, "receiver" => receiver.clone(), "channel" => ch.kind(), "outcome" => "dead_lettered").increment(1);
            let why = if failure.transient {
                "retries exhausted: "
            } else {
                ""
            };
            return ChannelResult {
                key: key.to_string(),
                delivered: false,
                attempts,
                error: format!("{why}{}", failure.message),
            };
        }
        tracing::warn!(channel = %key, notification = %n.id, attempts, wait_ms = wait.as_millis() as u64, error = %failure.message, "delivery failed, retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Several notifications for one channel as one message (what queued while a rate limit held
/// the lane): every alert listed, counts added, the highest priority.
pub fn merge(ns: &[&Notification]) -> Notification {
    if ns.len() == 1 {
        return ns[0].clone();
    }
    let first = ns[0];
    let mut out = first.clone();
    out.id = format!("{}+{}", first.id, ns.len() - 1);
    out.kind = if ns.iter().all(|n| n.kind == first.kind) {
        first.kind
    } else {
        NotificationKind::Group
    };
    out.status = if ns.iter().any(|n| n.status == AlertStatus::Firing) {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    out.priority = ns
        .iter()
        .map(|n| n.priority)
        .min()
        .unwrap_or(first.priority);
    out.group_key = format!("merged: {} notifications", ns.len());
    out.group_labels = BTreeMap::new();
    out.common_labels = first.common_labels.clone();
    out.common_annotations = first.common_annotations.clone();
    for n in &ns[1..] {
        out.common_labels
            .retain(|k, v| n.common_labels.get(k) == Some(v));
        out.common_annotations
            .retain(|k, v| n.common_annotations.get(k) == Some(v));
    }
    out.alerts = ns.iter().flat_map(|n| n.alerts.iter().cloned()).collect();
    out.truncated = ns.iter().map(|n| n.truncated).sum();
    out.created_at = ns
        .iter()
        .map(|n| n.created_at)
        .max()
        .unwrap_or(first.created_at);
    if out.kind != NotificationKind::Storm && out.kind != NotificationKind::StormOver {
        out.storm = None;
    }
    out
}

/// Sends a test notification on every channel of `receiver`, once each, and returns each
/// channel's answer (`prismwatch notify test`).
pub async fn test_receiver(
    cfg: &NotifyConfig,
    receiver: &ReceiverDef,
) -> Vec<(String, Result<String, String>)> {
    let http = channel::http_client();
    let now = clock::now_ms();
    let n = test_notification(&receiver.name, now);
    let mut out = Vec::new();
    for (key, ch) in keyed_channels(receiver) {
        let ctx = Ctx {
            http: &http,
            cfg,
            now_ms: clock::now_ms(),
        };
        let r = channel::send(&ch, &n, &ctx).await.map_err(|f| {
            format!(
                "{} ({})",
                f.message,
                if f.transient {
                    "transient"
                } else {
                    "permanent"
                }
            )
        });
        out.push((key, r));
    }
    out
}

/// What `notify test` sends.
pub fn test_notification(receiver: &str, now: i64) -> Notification {
    let labels: BTreeMap<String, String> = [
        ("alertname", "prismwatch_test"),
        ("priority", "P4"),
        ("service", "prismwatch"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Notification {
        id: format!("{receiver}.test.{now}"),
        kind: NotificationKind::Test,
        receiver: receiver.to_string(),
        status: AlertStatus::Firing,
        priority: crate::model::Priority::P4,
        group_key: "{}:{alertname=\"prismwatch_test\"}".into(),
        group_labels: [("alertname".to_string(), "prismwatch_test".to_string())].into(),
        common_labels: labels.clone(),
        common_annotations: Default::default(),
        alerts: vec![crate::model::NotifiedAlert {
            id: format!("test-{now}"),
            fingerprint: "0000000000000000".into(),
            rule: "prismwatch_test".into(),
            priority: crate::model::Priority::P4,
            status: AlertStatus::Firing,
            labels,
            annotations: [(
                "summary".to_string(),
                "A test notification from PrismWatch: this receiver works".to_string(),
            )]
            .into(),
            value: 0.0,
            starts_at: now,
            ends_at: None,
            acknowledged: None,
            flapping: false,
            generator_url: String::new(),
        }],
        truncated: 0,
        storm: None,
        created_at: now,
        sequence: 1,
    }
}

//! The alert manager under test: a real nats-server, the manager in this process (or as child
//! processes to kill -9), inputs published as the processor and the CLI would publish them, and
//! virtual time moved by requests on a clock subject (the manager answers once the step's
//! notifications and state are stored).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use prismwatch::alerting::command::{CommandBody, Reply};
use prismwatch::alerting::{client, AlertingConfig};
use prismwatch::app::Component;
use prismwatch::config::Config;
use prismwatch::model::{AlertEvent, AlertStatus, Notification, Priority};
use prismwatch::subjects;

use super::{fresh, read_stream_filtered, NatsServer, RunningApp, T0};

/// The virtual clock's subject in these tests.
pub const CLOCK: &str = "test.manager.clock";
pub const MANAGER_GROUP: &str = "prismwatch-manager";

/// Settings for a manager under test: virtual time (leases are the processor's: short in tests).
pub fn alerting(routing_file: &str) -> AlertingConfig {
    AlertingConfig {
        routing_file: routing_file.into(),
        virtual_clock_subject: CLOCK.into(),
        ..Default::default()
    }
}

/// The same as environment variables, for a child `prismwatch run --only manager`.
pub fn alerting_env(routing_file: &str) -> Vec<(String, String)> {
    vec![
        (
            "PRISMWATCH__ALERTING__ROUTING_FILE".into(),
            routing_file.into(),
        ),
        (
            "PRISMWATCH__ALERTING__VIRTUAL_CLOCK_SUBJECT".into(),
            CLOCK.into(),
        ),
    ]
}

/// A notification as the tests compare them: when (s after T0), to whom, what, and which
/// alerts with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at_s: i64,
    pub receiver: String,
    pub kind: String,
    pub alerts: Vec<(String, String)>,
}

pub fn seen(n: &Notification) -> Seen {
    Seen {
        at_s: (n.created_at - T0) / 1000,
        receiver: n.receiver.clone(),
        kind: format!("{:?}", n.kind).to_lowercase(),
        alerts: n
            .alerts
            .iter()
            .map(|a| (a.rule.clone(), a.status.token().to_string()))
            .collect(),
    }
}

/// Inputs and the clock of one scenario.
pub struct Driver {
    pub js: jetstream::Context,
    pub cfg: Config,
    /// Virtual seconds after T0.
    pub now_s: i64,
    last_alert_seq: u64,
}

impl Driver {
    pub fn new(js: jetstream::Context, cfg: Config) -> Driver {
        Driver {
            js,
            cfg,
            now_s: 0,
            last_alert_seq: 0,
        }
    }

    /// Publishes an alert event as the processor would (JetStream, deterministic msg id).
    pub async fn event(&mut self, e: &AlertEvent) {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", e.msg_id().as_str());
        let ack = self
            .js
            .publish_with_headers(
                subjects::alert_subject(e.priority, e.status, &e.rule),
                h,
                serde_json::to_vec(e).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        self.last_alert_seq = self.last_alert_seq.max(ack.sequence);
    }

    /// A firing event at the current virtual time; returns it (to resolve it later).
    pub async fn fire(
        &mut self,
        rule: &str,
        priority: Priority,
        labels: &[(&str, &str)],
    ) -> AlertEvent {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let fp = format!(
            "{:016x}",
            labels.iter().fold(rule.len() as u64, |h, (k, v)| h
                .wrapping_mul(1_000_003)
                .wrapping_add(fxhash(k) ^ fxhash(v).rotate_left(7)))
                ^ fxhash(rule)
        );
        let t = T0 + self.now_s * 1000;
        let e = AlertEvent {
            id: format!("{fp}-{t}"),
            fingerprint: fp,
            rule: rule.into(),
            priority,
            status: AlertStatus::Firing,
            labels,
            annotations: BTreeMap::from([("summary".to_string(), format!("{rule} fires"))]),
            value: 1.0,
            score: 0.0,
            starts_at: t,
            ends_at: None,
            end_reason: None,
            event_time: t,
        };
        self.event(&e).await;
        e
    }

    /// The resolved event of `e`, now.
    pub async fn resolve(&mut self, e: &AlertEvent) {
        let t = T0 + self.now_s * 1000;
        let r = AlertEvent {
            status: AlertStatus::Resolved,
            ends_at: Some(t),
            end_reason: Some(prismwatch::model::EndReason::Condition),
            event_time: t,
            ..e.clone()
        };
        self.event(&r).await;
    }

    /// Waits until the active manager has applied (stored and acked) every alert event
    /// published so far.
    pub async fn settle(&self) {
        let name = format!("{}-alerts", self.cfg.alerting.group);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = self.js.get_stream(subjects::ALERTS_STREAM).await {
                if let Ok(mut c) = s.get_consumer::<consumer::pull::Config>(&name).await {
                    if let Ok(i) = c.info().await {
                        if i.ack_floor.stream_sequence >= self.last_alert_seq
                            && i.num_ack_pending == 0
                        {
                            return;
                        }
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the manager did not apply the alert events within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves virtual time to `s` seconds after T0, waking the manager at each of its
    /// deadlines on the way (as wall time would), then at `s`.
    pub async fn advance_to(&mut self, s: i64) {
        self.settle().await;
        let target = T0 + s * 1000;
        loop {
            let next = self.tick().await;
            let now = T0 + self.now_s * 1000;
            if now >= target {
                return;
            }
            let step = next.filter(|t| *t > now && *t < target).unwrap_or(target);
            // Whole seconds: the scripts' times are.
            self.now_s = (step - T0 + 999) / 1000;
        }
    }

    /// One clock request at the current virtual time, retried until an active manager
    /// answers (at start, and while a standby takes over); returns the manager's next
    /// deadline.
    pub async fn tick(&self) -> Option<i64> {
        let body = serde_json::json!({ "now_ms": T0 + self.now_s * 1000 }).to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let req = tokio::time::timeout(
                Duration::from_secs(2),
                self.js.client().request(CLOCK, body.clone().into()),
            )
            .await;
            if let Ok(Ok(m)) = req {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                return v["next_ms"].as_i64();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no active manager answered the clock within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A command as the CLI sends it, answered by the active manager.
    pub async fn command(&self, body: CommandBody) -> Reply {
        client::send(&self.js, "test:sre", body, Duration::from_secs(20))
            .await
            .unwrap()
    }

    /// Every notification stored on PRISM_NOTIFY, in order.
    pub async fn notifications(&self) -> Vec<Notification> {
        read_stream_filtered(&self.js, subjects::NOTIFY_STREAM, subjects::NOTIFY_SEND_ALL)
            .await
            .into_iter()
            .map(|(_, _, p)| serde_json::from_slice(&p).unwrap())
            .collect()
    }

    pub async fn seen(&self) -> Vec<Seen> {
        self.notifications().await.iter().map(seen).collect()
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A scenario's server, routing file and in-process manager.
pub struct Scenario {
    pub srv: NatsServer,
    pub dir: tempfile::TempDir,
    pub app: Option<RunningApp>,
    pub d: Driver,
}

impl Scenario {
    /// A fresh server and a manager with `routing` (and `tweak` applied to its settings),
    /// answering the clock at T0.
    pub async fn start(routing: &str, tweak: impl FnOnce(&mut AlertingConfig)) -> Scenario {
        Self::start_with(routing, |cfg| tweak(&mut cfg.alerting)).await
    }

    /// The same, with `tweak` applied to the whole configuration.
    pub async fn start_with(routing: &str, tweak: impl FnOnce(&mut Config)) -> Scenario {
        let (srv, mut cfg, js) = fresh().await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routing.yaml");
        std::fs::write(&file, routing).unwrap();
        cfg.alerting = alerting(&file.display().to_string());
        tweak(&mut cfg);
        let app =
            RunningApp::start_with(cfg.clone(), super::test_rules(), vec![Component::Manager]);
        let d = Driver::new(js, cfg);
        d.tick().await;
        Scenario {
            srv,
            dir,
            app: Some(app),
            d,
        }
    }

    pub fn routing_file(&self) -> std::path::PathBuf {
        self.dir.path().join("routing.yaml")
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.unwrap();
        }
    }
}

//! Notifier workers against real servers on loopback: every channel's message checked against
//! its service's documented format (the DingTalk signature verified in Python with DingTalk's
//! algorithm, mail received by a real SMTP server), then faults: 500s, timeouts, 429 with
//! Retry-After, DingTalk errcodes, SMTP 4xx/5xx and connection refused, each ending delivered
//! or dead-lettered; `notify retry` re-sends a dead letter after a fix.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::channels::{eventually, Fakes, Smtp};
use common::{fresh, read_stream_filtered, RunningApp};
use prismwatch::app::Component;
use prismwatch::config::Config;
use prismwatch::model::{
    AlertStatus, DeliveryOutcome, Notification, NotificationKind, NotifiedAlert, Priority,
};
use prismwatch::subjects;

fn alert(i: usize, status: AlertStatus) -> NotifiedAlert {
    NotifiedAlert {
        id: format!("{i:016x}-1764000000000"),
        fingerprint: format!("{i:016x}"),
        rule: "disk_full".into(),
        priority: Priority::P1,
        status,
        labels: [
            ("alertname", "disk_full"),
            ("priority", "P1"),
            ("service", "storage <east> & co"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        annotations: [(
            "summary".to_string(),
            format!("Disk {}% on storage", 90 + i),
        )]
        .into(),
        value: 90.0 + i as f64,
        starts_at: 1_764_000_000_000,
        ends_at: (status == AlertStatus::Resolved).then_some(1_764_000_300_000),
        acknowledged: None,
        flapping: false,
        generator_url: String::new(),
    }
}

pub fn notification(receiver: &str, seq: u64, alerts: Vec<NotifiedAlert>) -> Notification {
    Notification {
        id: format!("{receiver}.0123abcd.{seq}"),
        kind: NotificationKind::Group,
        receiver: receiver.into(),
        status: if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        },
        priority: Priority::P1,
        group_key: "{}/{priority=~\"P1\"}:{alertname=\"disk_full\"}".into(),
        group_labels: [("alertname".to_string(), "disk_full".to_string())].into(),
        common_labels: [("alertname".to_string(), "disk_full".to_string())].into(),
        common_annotations: BTreeMap::new(),
        alerts,
        truncated: 0,
        storm: None,
        created_at: prismwatch::tools::clock::now_ms(),
        sequence: seq,
    }
}

/// Publishes as the alert manager does.
pub async fn publish(js: &async_nats::jetstream::Context, n: &Notification) {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", n.id.as_str());
    js.publish_with_headers(
        subjects::notify_subject(&n.receiver),
        h,
        serde_json::to_vec(n).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

pub async fn outcomes(js: &async_nats::jetstream::Context) -> Vec<DeliveryOutcome> {
    read_stream_filtered(js, subjects::NOTIFY_STREAM, subjects::NOTIFY_OUTCOME_ALL)
        .await
        .into_iter()
        .map(|(_, _, p)| serde_json::from_slice(&p).unwrap())
        .collect()
}

async fn outcome_of(js: &async_nats::jetstream::Context, id: &str) -> DeliveryOutcome {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(o) = outcomes(js)
            .await
            .into_iter()
            .rev()
            .find(|o| o.notification_id == id)
        {
            return o;
        }
        assert!(std::time::Instant::now() < deadline, "no outcome for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A secret in a file of the test's folder: `{file: path}`.
fn secret(dir: &std::path::Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    format!("{{file: {}}}", p.display())
}

struct Setup {
    _server: common::NatsServer,
    js: async_nats::jetstream::Context,
    cfg: Config,
    dir: tempfile::TempDir,
    app: Option<RunningApp>,
}

async fn setup(receivers: &str, tweak: impl FnOnce(&mut Config)) -> Setup {
    let (server, mut cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(
        &routing,
        format!(
            "route: {{receiver: {}}}\nreceivers:\n{receivers}",
            first_name(receivers)
        ),
    )
    .unwrap();
    cfg.alerting.routing_file = routing;
    cfg.notify.retry_initial_ms = 100;
    cfg.notify.retry_max_ms = 400;
    cfg.notify.retry_deadline_secs = 4;
    cfg.notify.timeout_ms = 1_000;
    cfg.notify.ack_wait_secs = 5;
    cfg.notify.external_url = "https://prismwatch.example".into();
    tweak(&mut cfg);
    let app = RunningApp::start_with(cfg.clone(), common::test_rules(), vec![Component::Notify]);
    Setup {
        _server: server,
        js,
        cfg,
        dir,
        app: Some(app),
    }
}

fn first_name(receivers: &str) -> String {
    receivers
        .split("name: ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_delivers_a_message_its_service_accepts() {
    let fakes = Fakes::start(20, 60.0);
    let smtp = Smtp::start(Some(("alerts", "mail-pass")));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let receivers = format!(
        r#"  - name: oncall
    webhook_configs:
      - url: {wh}
        hmac_secret: {whs}
        headers: {{X-Team: sre}}
    slack_configs:
      - url: {sl}
    dingtalk_configs:
      - url: {dt}
        secret: {dts}
        at_mobiles: ["13800000000"]
        language: zh
    pagerduty_configs:
      - routing_key: {pdk}
        url: {pd}
    telegram_configs:
      - bot_token: {tgt}
        chat_id: "-1001234567890"
        api_url: {tg}
    email_configs:
      - to: [ops@example.org, "Oncall <oncall@example.org>"]
        from: "PrismWatch <alerts@prismwatch.example>"
        smarthost: 127.0.0.1:{port}
        security: plain
        username: alerts
        password: {mp}
"#,
        wh = secret(d, "whu", &fakes.url("/webhook/a")),
        whs = secret(d, "wh", "s3cret"),
        sl = secret(d, "sl", &fakes.url("/slack/a")),
        dt = secret(d, "dt", &fakes.url("/dingtalk/a?access_token=tok")),
        dts = secret(d, "dts", common::channels::DINGTALK_SECRET),
        pdk = secret(d, "pdk", "0123456789abcdef0123456789abcdef"),
        pd = fakes.url("/pagerduty/a"),
        tgt = secret(d, "tgt", "123:abc"),
        tg = fakes.url("/telegram"),
        port = smtp.port,
        mp = secret(d, "mp", "mail-pass"),
    );
    let mut s = setup(&receivers, |_| {}).await;
    let n = notification(
        "oncall",
        1,
        vec![
            alert(1, AlertStatus::Firing),
            alert(2, AlertStatus::Resolved),
        ],
    );
    publish(&s.js, &n).await;
    let o = outcome_of(&s.js, &n.id).await;
    assert_eq!(o.outcome, "delivered", "{o:?}");
    assert_eq!(o.attempts, 1);
    assert_eq!(
        o.alert_ids,
        vec![n.alerts[0].id.clone(), n.alerts[1].id.clone()]
    );

    let reqs = fakes.requests().await;
    for r in &reqs {
        assert!(
            r["problem"].is_null(),
            "{} refused: {}",
            r["path"],
            r["problem"]
        );
    }
    // Webhook: Alertmanager's v4 (checked by the receiver), idempotency key, HMAC signature.
    let wh = fakes.requests_to("/webhook/a").await;
    assert_eq!(wh.len(), 1);
    let h = &wh[0]["headers"];
    assert_eq!(h["idempotency-key"], n.id.as_str());
    assert_eq!(h["x-team"], "sre");
    let body = wh[0]["body"].as_str().unwrap();
    assert_eq!(
        h["x-prismwatch-signature"],
        prismwatch::notify::channel::webhook_signature("s3cret", body.as_bytes()).as_str()
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["receiver"], "oncall");
    assert_eq!(v["alerts"][0]["labels"]["service"], "storage <east> & co");
    assert!(body.contains("storage \\u003ceast\\u003e \\u0026 co"));
    assert_eq!(v["alerts"][1]["endsAt"], "2025-11-24T16:05:00Z");
    // Slack: Block Kit, priority colour, labels as fields, a link, the text fallback.
    let sl = fakes.requests_to("/slack/a").await;
    assert_eq!(sl.len(), 1);
    let v: serde_json::Value = serde_json::from_str(sl[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["attachments"][0]["color"], "#D00000");
    assert_eq!(v["text"], "[FIRING:1] P1 disk_full");
    assert_eq!(
        v["blocks"][1]["fields"][0]["text"],
        "*service*\nstorage <east> & co"
    );
    assert!(sl[0]["body"]
        .as_str()
        .unwrap()
        .contains("https://prismwatch.example/alerts/"));
    // DingTalk: signature verified by the robot, markdown in Chinese, @ the on-call for P1.
    let dt = fakes.requests_to("/dingtalk/a").await;
    assert_eq!(dt.len(), 1);
    assert_eq!(dt[0]["errcode"], 0, "{}", dt[0]);
    let v: serde_json::Value = serde_json::from_str(dt[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["msgtype"], "markdown");
    assert_eq!(v["markdown"]["title"], "[告警:1] P1 disk_full");
    assert!(v["markdown"]["text"]
        .as_str()
        .unwrap()
        .contains("@13800000000"));
    assert_eq!(v["at"]["atMobiles"][0], "13800000000");
    // PagerDuty: one event per alert, dedup_key = alert id: trigger, resolve.
    let pd = fakes.requests_to("/pagerduty/a").await;
    let events: Vec<(String, String)> = pd
        .iter()
        .map(|r| {
            let e: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            (
                e["event_action"].as_str().unwrap().to_string(),
                e["dedup_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("trigger".to_string(), n.alerts[0].id.clone()),
            ("resolve".to_string(), n.alerts[1].id.clone())
        ]
    );
    // Telegram: HTML the API accepts (checked), values escaped.
    let tg = fakes.requests_to("/telegram/bot123:abc/sendMessage").await;
    assert_eq!(tg.len(), 1);
    assert!(tg[0]["body"]
        .as_str()
        .unwrap()
        .contains("storage &lt;east&gt; &amp; co"));
    // Email: one mail to both recipients, text and HTML parts, authenticated.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m.starts_with("X-Envelope-From: alerts@prismwatch.example\r\nX-Envelope-To: ops@example.org, oncall@example.org"), "{m}");
    assert!(m.contains("Subject: [FIRING:1] P1 disk_full"), "{m}");
    assert!(m.contains("multipart/alternative"));
    assert!(m.contains("Content-Type: text/plain"));
    assert!(m.contains("Content-Type: text/html"));
    s.app.take().unwrap().stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_end_delivered_after_retries_or_dead_lettered() {
    let fakes = Fakes::start(20, 60.0);
    let smtp = Smtp::start(None);
    let closed = common::free_listen_addr();
    let receivers = format!(
        r#"  - name: wh
    webhook_configs: [{{url: {{env: PW_TEST_WH}}}}]
  - name: sl
    slack_configs: [{{url: {{env: PW_TEST_SL}}}}]
  - name: dt
    dingtalk_configs: [{{url: {{env: PW_TEST_DT}}, secret: {{env: PW_TEST_DTS}}}}]
  - name: dtbad
    dingtalk_configs: [{{url: {{env: PW_TEST_DTB}}, secret: {{env: PW_TEST_DTS}}}}]
  - name: pd
    pagerduty_configs: [{{routing_key: {{env: PW_TEST_DTS}}, url: {pd}}}]
  - name: tg
    telegram_configs: [{{bot_token: {{env: PW_TEST_TG}}, chat_id: "@ops", api_url: {base}/telegram}}]
  - name: mailtemp
    email_configs: [{{to: [tempfail@example.org], from: a@b.c, smarthost: "127.0.0.1:{port}", security: plain}}]
  - name: mailperm
    email_configs: [{{to: [permfail@example.org], from: a@b.c, smarthost: "127.0.0.1:{port}", security: plain}}]
  - name: mailrefused
    email_configs: [{{to: [ops@example.org], from: a@b.c, smarthost: "{closed}", security: plain}}]
"#,
        pd = fakes.url("/pagerduty/a"),
        base = fakes.base,
        port = smtp.port,
    );
    // Set before the app starts (and never changed: tests in this file run in one process).
    std::env::set_var("PW_TEST_WH", fakes.url("/webhook/a"));
    std::env::set_var("PW_TEST_SL", fakes.url("/slack/a"));
    std::env::set_var("PW_TEST_DT", fakes.url("/dingtalk/a?access_token=t"));
    std::env::set_var("PW_TEST_DTB", fakes.url("/dingtalk/b?access_token=t"));
    std::env::set_var("PW_TEST_DTS", common::channels::DINGTALK_SECRET);
    std::env::set_var("PW_TEST_TG", "42:tok");
    fakes
        .script("/webhook/a", &["500", "timeout:2", "ok"])
        .await;
    fakes.script("/slack/a", &["429:1", "ok"]).await;
    fakes.script("/dingtalk/a", &["errcode:130101", "ok"]).await;
    fakes.script("/dingtalk/b", &["errcode:310000"]).await;
    fakes.script("/pagerduty/a", &["500", "ok"]).await;
    fakes
        .script("/telegram/bot42:tok/sendMessage", &["429:1", "ok"])
        .await;
    let listen = common::free_listen_addr();
    let l = listen.clone();
    let s = setup(&receivers, move |cfg| cfg.http.listen = l).await;
    let names = [
        "wh",
        "sl",
        "dt",
        "dtbad",
        "pd",
        "tg",
        "mailtemp",
        "mailperm",
        "mailrefused",
    ];
    for name in names {
        publish(
            &s.js,
            &notification(name, 1, vec![alert(1, AlertStatus::Firing)]),
        )
        .await;
    }
    let mut got = BTreeMap::new();
    for name in names {
        let o = outcome_of(&s.js, &format!("{name}.0123abcd.1")).await;
        got.insert(name, (o.outcome.clone(), o.attempts, o.error.clone()));
    }
    let expect =
        |name: &str, outcome: &str, attempts: std::ops::RangeInclusive<u32>, error: &str| {
            let (o, a, e) = &got[name];
            assert_eq!(o, outcome, "{name}: {got:?}");
            assert!(attempts.contains(a), "{name}: {a} attempts: {got:?}");
            assert!(e.contains(error), "{name}: {e:?}");
        };
    expect("wh", "delivered", 3..=3, ""); // 500, timeout, ok
    expect("sl", "delivered", 2..=2, ""); // 429 Retry-After: 1, ok
    expect("dt", "delivered", 2..=2, ""); // errcode 130101 (too fast), ok
    expect("dtbad", "dead_lettered", 1..=1, "errcode 310000");
    expect("pd", "delivered", 2..=2, "");
    expect("tg", "delivered", 2..=2, "");
    expect("mailtemp", "dead_lettered", 3..=40, "retries exhausted");
    expect("mailperm", "dead_lettered", 1..=1, "550");
    expect("mailrefused", "dead_lettered", 3..=40, "retries exhausted");
    // Retry-After honoured: Slack's second try came at least 1 s after the 429.
    let sl = fakes.requests_to("/slack/a").await;
    let gap = sl[1]["time"].as_f64().unwrap() - sl[0]["time"].as_f64().unwrap();
    assert!(
        gap >= 0.99,
        "Slack retried after {gap} s despite Retry-After: 1"
    );
    // Dead letters carry the error, the attempts and the channel.
    let dead = read_stream_filtered(
        &s.js,
        subjects::NOTIFY_DEAD_STREAM,
        subjects::NOTIFY_DEAD_ALL,
    )
    .await;
    let mut dead_subjects: Vec<&str> = dead.iter().map(|(s, _, _)| s.as_str()).collect();
    dead_subjects.sort();
    assert_eq!(
        dead_subjects,
        vec![
            "prism.notify.dead.dtbad",
            "prism.notify.dead.mailperm",
            "prism.notify.dead.mailrefused",
            "prism.notify.dead.mailtemp",
        ]
    );
    assert_eq!(dead.len(), 4);

    // Every attempt and outcome is on /metrics, by receiver, channel and outcome.
    let (_, page) = common::http_get(&listen, "/metrics").await;
    for (name, labels, value) in [
        (
            "prismwatch_notify_attempts_total",
            r#"channel="webhook",outcome="transient_error",receiver="wh""#,
            2,
        ),
        (
            "prismwatch_notify_attempts_total",
            r#"channel="webhook",outcome="ok",receiver="wh""#,
            1,
        ),
        (
            "prismwatch_notify_deliveries_total",
            r#"channel="webhook",outcome="delivered",receiver="wh""#,
            1,
        ),
        (
            "prismwatch_notify_deliveries_total",
            r#"channel="dingtalk",outcome="dead_lettered",receiver="dtbad""#,
            1,
        ),
        (
            "prismwatch_notify_attempts_total",
            r#"channel="email",outcome="permanent_error",receiver="mailperm""#,
            1,
        ),
        (
            "prismwatch_notify_dead_letters_total",
            r#"receiver="mailperm""#,
            1,
        ),
    ] {
        let line = page
            .lines()
            .find(|l| l.starts_with(name) && labels.split(',').all(|kv| l.contains(kv)))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} not on /metrics:\n{page}"));
        assert!(line.ends_with(&format!(" {value}")), "{line}");
    }

    // After a fix (the robot's keyword added): `notify retry` re-sends it, and it is delivered.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .args(["notify", "retry", "--receiver", "dtbad"])
        .envs(common::env_for(&s.cfg.nats.url))
        .env(
            "PRISMWATCH_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/prismwatch.yaml"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "re-sent 1 dead-lettered notification(s)"
    );
    eventually("the re-sent dead letter delivered", 30, || async {
        outcomes(&s.js)
            .await
            .iter()
            .any(|o| o.receiver == "dtbad" && o.outcome == "delivered")
    })
    .await;
    let left = read_stream_filtered(
        &s.js,
        subjects::NOTIFY_DEAD_STREAM,
        subjects::NOTIFY_DEAD_ALL,
    )
    .await;
    assert_eq!(left.len(), 3);
    let _ = s.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_prints_each_channels_answer() {
    let fakes = Fakes::start(20, 60.0);
    fakes.script("/dingtalk/t", &["errcode:310000"]).await;
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(
        &routing,
        format!(
            "route: {{receiver: ops}}\nreceivers:\n  - name: ops\n    webhook_configs: [{{url: {wh}}}]\n    dingtalk_configs: [{{url: {dt}, secret: {s}}}]\n",
            wh = secret(dir.path(), "wh", &fakes.url("/webhook/t")),
            dt = secret(dir.path(), "dt", &fakes.url("/dingtalk/t?access_token=x")),
            s = secret(dir.path(), "s", common::channels::DINGTALK_SECRET),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .args(["notify", "test", "ops"])
        .env(
            "PRISMWATCH_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/prismwatch.yaml"),
        )
        .env("PRISMWATCH__ALERTING__ROUTING_FILE", &routing)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            "ops.dingtalk.0: FAILED: DingTalk errcode 310000: scripted (permanent)",
            "ops.webhook.0: delivered: HTTP 200",
        ]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 channel(s) failed"));
    // The test notification says what it is.
    let wh = fakes.requests_to("/webhook/t").await;
    let v: serde_json::Value = serde_json::from_str(wh[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["alerts"][0]["labels"]["alertname"], "prismwatch_test");
    // An unknown receiver is named with the ones there are.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .args(["notify", "test", "nobody"])
        .env(
            "PRISMWATCH_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/prismwatch.yaml"),
        )
        .env("PRISMWATCH__ALERTING__ROUTING_FILE", &routing)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no receiver \"nobody\" (receivers: ops)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_goes_from_the_manager_to_the_receiver_and_its_delivery_is_in_its_history() {
    let fakes = Fakes::start(20, 60.0);
    let dir = tempfile::tempdir().unwrap();
    let routing = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: {}}}]\n",
        secret(dir.path(), "wh", &fakes.url("/webhook/m"))
    );
    let mut s = common::manager::Scenario::start(&routing, |_| {}).await;
    let mut cfg = s.d.cfg.clone();
    cfg.alerting.routing_file = s.routing_file();
    let notifier = RunningApp::start_with(cfg, common::test_rules(), vec![Component::Notify]);
    let e =
        s.d.fire("disk_full", Priority::P1, &[("service", "storage")])
            .await;
    s.d.advance_to(31).await;
    eventually("the webhook", 30, || async {
        fakes.requests_to("/webhook/m").await.len() == 1
    })
    .await;
    let req = &fakes.requests_to("/webhook/m").await[0];
    let v: serde_json::Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["alerts"][0]["labels"]["alertname"], "disk_full");
    assert_eq!(v["receiver"], "hook");
    // The outcome reaches the manager: the alert's record says who got it, when, how.
    let js = s.d.js.clone();
    let id = e.id.clone();
    eventually("the delivery in the alert's record", 30, || {
        let (js, id) = (js.clone(), id.clone());
        async move {
            prismwatch::alerting::client::alerts(&js)
                .await
                .unwrap()
                .into_iter()
                .find(|a| a.id == id)
                .and_then(|a| a.notifications.get("hook").cloned())
                .is_some_and(|r| r.outcome == "delivered" && r.attempts == 1)
        }
    })
    .await;
    notifier.stop().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_and_implicit_tls_with_a_private_ca() {
    use common::channels::SmtpTls;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let starttls = Smtp::start_tls(Some(("alerts", "pw")), SmtpTls::StartTls(c, k));
    let implicit = Smtp::start_tls(None, SmtpTls::Wrapper(c, k));
    let untrusted = Smtp::start_tls(None, SmtpTls::StartTls(c, k));
    let receivers = format!(
        r#"  - name: starttls
    email_configs: [{{to: [ops@example.org], from: a@example.org, smarthost: "localhost:{p1}", security: starttls, ca_file: {c}, username: alerts, password: {pw}}}]
  - name: implicit
    email_configs: [{{to: [ops@example.org], from: a@example.org, smarthost: "localhost:{p2}", security: tls, ca_file: {c}}}]
  - name: untrusted
    email_configs: [{{to: [ops@example.org], from: a@example.org, smarthost: "localhost:{p3}", security: starttls}}]
"#,
        p1 = starttls.port,
        p2 = implicit.port,
        p3 = untrusted.port,
        pw = secret(dir.path(), "pw", "pw"),
    );
    let s = setup(&receivers, |cfg| cfg.notify.retry_deadline_secs = 1).await;
    for name in ["starttls", "implicit", "untrusted"] {
        publish(
            &s.js,
            &notification(name, 1, vec![alert(1, AlertStatus::Firing)]),
        )
        .await;
    }
    assert_eq!(
        outcome_of(&s.js, "starttls.0123abcd.1").await.outcome,
        "delivered"
    );
    assert_eq!(
        outcome_of(&s.js, "implicit.0123abcd.1").await.outcome,
        "delivered"
    );
    assert_eq!(starttls.mails().len(), 1);
    assert_eq!(implicit.mails().len(), 1);
    // A certificate the notifier does not trust is not sent to.
    let o = outcome_of(&s.js, "untrusted.0123abcd.1").await;
    assert_eq!(o.outcome, "dead_lettered");
    assert!(
        o.error.to_lowercase().contains("certificate"),
        "{}",
        o.error
    );
    assert!(untrusted.mails().is_empty());
}

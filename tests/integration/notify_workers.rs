//! Notifier workers as `prismwatch run --only notify` processes: kill -9 of one of three
//! mid-delivery loses nothing (duplicates counted, each within the at-least-once window), and
//! a storm of 1,000 alerts to one DingTalk robot stays within its limit and loses none.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::channels::{Fakes, DINGTALK_SECRET};
use common::{fresh, read_stream_filtered, ChildProcessor};
use prismwatch::model::{
    AlertStatus, DeliveryOutcome, Notification, NotificationKind, NotifiedAlert, Priority,
};
use prismwatch::subjects;

fn notification(receiver: &str, i: usize) -> Notification {
    let id = format!("{i:016x}-1764000000000");
    Notification {
        id: format!("{receiver}.{i:08x}.1"),
        kind: NotificationKind::Group,
        receiver: receiver.into(),
        status: AlertStatus::Firing,
        priority: Priority::P2,
        group_key: format!("{{}}:{{alertname=\"r{i}\"}}"),
        group_labels: BTreeMap::new(),
        common_labels: BTreeMap::new(),
        common_annotations: BTreeMap::new(),
        alerts: vec![NotifiedAlert {
            id,
            fingerprint: format!("{i:016x}"),
            rule: format!("r{i}"),
            priority: Priority::P2,
            status: AlertStatus::Firing,
            labels: [("exchange".to_string(), "binance".to_string())].into(),
            annotations: BTreeMap::new(),
            value: 1.0,
            starts_at: 1_764_000_000_000,
            ends_at: None,
            acknowledged: None,
            flapping: false,
            generator_url: String::new(),
        }],
        truncated: 0,
        storm: None,
        created_at: 1_764_000_000_000,
        sequence: 1,
    }
}

async fn publish_all(js: &async_nats::jetstream::Context, ns: &[Notification]) {
    let mut acks = Vec::new();
    for n in ns {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", n.id.as_str());
        acks.push(
            js.publish_with_headers(
                subjects::notify_subject(&n.receiver),
                h,
                serde_json::to_vec(n).unwrap().into(),
            )
            .await
            .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn delivered(js: &async_nats::jetstream::Context) -> BTreeMap<String, DeliveryOutcome> {
    read_stream_filtered(js, subjects::NOTIFY_STREAM, subjects::NOTIFY_OUTCOME_ALL)
        .await
        .into_iter()
        .map(|(_, _, p)| serde_json::from_slice::<DeliveryOutcome>(&p).unwrap())
        .filter(|o| o.outcome == "delivered")
        .map(|o| (o.notification_id.clone(), o))
        .collect()
}

/// Waits (bounded) until `n` notifications were delivered; shows `worker`'s log if not.
async fn wait_all_delivered(
    js: &async_nats::jetstream::Context,
    n: usize,
    secs: u64,
    worker: &ChildProcessor,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = delivered(js).await.len();
        if d == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{d} of {n} delivered; log: {}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn workers(url: &str, routing: &str, n: usize, dir: &std::path::Path) -> Vec<ChildProcessor> {
    (0..n)
        .map(|i| {
            ChildProcessor::spawn_with(
                url,
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules"),
                &["--only", "notify"],
                &[
                    ("PRISMWATCH__ALERTING__ROUTING_FILE", routing),
                    ("PRISMWATCH__NOTIFY__ACK_WAIT_SECS", "3"),
                    ("PRISMWATCH__NOTIFY__RETRY_INITIAL_MS", "100"),
                    ("PRISMWATCH__NOTIFY__RETRY_MAX_MS", "500"),
                    ("PRISMWATCH__NOTIFY__CONCURRENCY", "8"),
                ],
                Some(dir.join(format!("worker-{i}.log"))),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_three_workers_mid_delivery_loses_nothing() {
    let (server, _cfg, js) = fresh().await;
    let fakes = Fakes::start(20, 60.0);
    // Each delivery takes 100 ms at the receiver: kill -9 lands mid-delivery.
    let slow: Vec<&str> = vec!["timeout:0.1"; 1_000];
    fakes.script("/webhook/w", &slow).await;
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(
        &routing,
        format!(
            "route: {{receiver: wh}}\nreceivers:\n  - name: wh\n    webhook_configs: [{{url: {{file: {}}}}}]\n",
            {
                let p = dir.path().join("url");
                std::fs::write(&p, fakes.url("/webhook/w")).unwrap();
                p.display().to_string()
            }
        ),
    )
    .unwrap();
    let mut procs = workers(&server.url(), routing.to_str().unwrap(), 3, dir.path());
    let ns: Vec<Notification> = (0..150).map(|i| notification("wh", i)).collect();
    publish_all(&js, &ns).await;
    // Kill one once deliveries are under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fakes.requests_to("/webhook/w").await.len() < 30 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    procs[0].kill();
    wait_all_delivered(&js, ns.len(), 60, &procs[1]).await;
    let took = killed_at.elapsed();
    // Every notification reached the receiver; duplicates are the killed worker's in-flight
    // ones, delivered again after the ack wait (3 s here).
    let reqs = fakes.requests_to("/webhook/w").await;
    let mut by_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &reqs {
        by_key
            .entry(
                r["headers"]["idempotency-key"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
            .or_default()
            .push(r["time"].as_f64().unwrap());
    }
    for n in &ns {
        assert!(
            by_key.contains_key(&n.id),
            "{} never reached the receiver",
            n.id
        );
    }
    let duplicates: usize = by_key.values().map(|t| t.len() - 1).sum();
    let worst_gap = by_key
        .values()
        .filter(|t| t.len() > 1)
        .map(|t| t[t.len() - 1] - t[0])
        .fold(0.0, f64::max);
    println!(
        "kill -9 of 1 of 3 workers: {} notifications, {} requests, {duplicates} duplicates (the killed worker had up to {} sends in flight), worst gap between copies {worst_gap:.2} s, all delivered {:.1} s after the kill",
        ns.len(),
        reqs.len(),
        8,
        took.as_secs_f64()
    );
    // Only what the killed worker had sent (at most its 8 concurrent sends) or delivered but
    // not yet acked comes again.
    assert!(
        duplicates <= 16,
        "{duplicates} duplicates: more than one worker's in-flight"
    );
    // The window: the ack wait (3 s) plus one delivery and a pull's latency.
    assert!(
        worst_gap < 3.0 + 2.0,
        "a duplicate came {worst_gap} s after the first copy"
    );
    for p in procs.iter_mut().skip(1) {
        assert!(p.terminate(Duration::from_secs(10)).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_to_one_dingtalk_robot_stays_within_its_limit_and_loses_nothing() {
    let (server, _cfg, js) = fresh().await;
    // The robot's limit scaled down from 20 per minute to 20 per 3 s, so the test is short.
    let fakes = Fakes::start(20, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    let url = dir.path().join("url");
    std::fs::write(&url, fakes.url("/dingtalk/robot?access_token=t")).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, DINGTALK_SECRET).unwrap();
    std::fs::write(
        &routing,
        format!(
            r#"route: {{receiver: dt}}
receivers:
  - name: dt
    dingtalk_configs:
      - url: {{file: {}}}
        secret: {{file: {}}}
        rate_limit: {{messages: 20, per: 3s}}
        templates:
          body: "ids={{% for a in alerts %}}{{{{ a.id[:16] }}}},{{% endfor %}} more={{{{ truncated }}}}"
"#,
            url.display(),
            secret.display()
        ),
    )
    .unwrap();
    // Two workers: the limit must hold across both.
    let mut procs = workers(&server.url(), routing.to_str().unwrap(), 2, dir.path());
    let ns: Vec<Notification> = (0..1_000).map(|i| notification("dt", i)).collect();
    publish_all(&js, &ns).await;
    wait_all_delivered(&js, ns.len(), 90, &procs[0]).await;
    let reqs = fakes.requests_to("/dingtalk/robot").await;
    let refused: Vec<_> = reqs.iter().filter(|r| r["errcode"] != 0).collect();
    assert!(refused.is_empty(), "the robot refused: {refused:?}");
    // No 3-second window held more than 20 messages.
    let times: Vec<f64> = reqs.iter().map(|r| r["time"].as_f64().unwrap()).collect();
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u < t + 3.0).count();
        assert!(within <= 20, "{within} messages within 3 s from {t}");
    }
    // Every alert was in a message, listed or counted.
    let mut listed = std::collections::BTreeSet::new();
    let mut counted = 0;
    for r in &reqs {
        let v: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let text = v["markdown"]["text"].as_str().unwrap();
        let ids = text
            .split("ids=")
            .nth(1)
            .unwrap()
            .split(" more=")
            .next()
            .unwrap();
        listed.extend(ids.split(',').filter(|s| !s.is_empty()).map(String::from));
        counted += text
            .rsplit("more=")
            .next()
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap();
    }
    println!(
        "storm: 1000 alerts to one robot in {} messages ({} listed, {} counted)",
        reqs.len(),
        listed.len(),
        counted
    );
    assert_eq!(listed.len() + counted, 1_000);
    assert!(reqs.len() < 100, "{} messages: not merged", reqs.len());
    for p in &mut procs {
        assert!(p.terminate(Duration::from_secs(10)).is_some());
    }
}

//! Every publisher on its own timeline, against a real nats-server: a publisher 3 minutes behind
//! and a clock 4 minutes ahead change nothing for the others; late points are dead-lettered
//! with their source and lag; a series that goes quiet still fires at `for` (and resolves as
//! stale) in wall time; a series sent on a second subject is refused and said so.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use prismwatch::model::{AlertEvent, AlertStatus, EndReason, MetricPoint};
use prismwatch::tools::clock;

fn labelled(name: &str, label: (&str, &str), ts: i64, value: f64) -> MetricPoint {
    MetricPoint {
        name: name.into(),
        labels: BTreeMap::from([(label.0.to_string(), label.1.to_string())]),
        value,
        timestamp: ts,
    }
}

fn of<'a>(events: &'a [AlertEvent], rule: &str) -> Vec<&'a AlertEvent> {
    events.iter().filter(|e| e.rule == rule).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_publisher_and_a_skewed_clock_each_stay_on_their_own_timeline() {
    let (_srv, cfg, js) = fresh().await;
    let app = RunningApp::start(
        cfg.clone(),
        prismwatch::rules::load_rules(&cfg.rules.paths).unwrap(),
    );
    let now = clock::now_ms();
    let sec = 1000;

    // okx's collector is live.
    for k in 0..3 {
        let ts = now - 2 * sec + k * sec;
        publish(
            &js,
            &[labelled(
                "exchange_connection_status",
                ("exchange", "okx"),
                ts,
                1.0,
            )],
            1,
        )
        .await;
    }
    // One host's clock is 4 minutes ahead (inside max_future_ms).
    publish(
        &js,
        &[labelled(
            "cpu_usage_percent",
            ("host", "skewed"),
            now + 4 * 60 * sec,
            20.0,
        )],
        1,
    )
    .await;
    // binance's collector publishes 3 minutes behind: its connection is down for 2 minutes.
    let a0 = now - 3 * 60 * sec;
    let down: Vec<MetricPoint> = (0..120)
        .map(|k| {
            labelled(
                "exchange_connection_status",
                ("exchange", "binance"),
                a0 + k * sec,
                0.0,
            )
        })
        .collect();
    publish(&js, &down, 10).await;
    // storage's disk is above 90 % for 150 s, in real time.
    let d0 = now - 150 * sec;
    let disk: Vec<MetricPoint> = (0..=150)
        .map(|k| {
            labelled(
                "disk_usage_percent",
                ("service", "storage"),
                d0 + k * sec,
                95.0,
            )
        })
        .collect();
    publish(&js, &disk, 10).await;

    wait_for("both alerts to fire", Duration::from_secs(30), || async {
        let ev = alert_events(&js).await;
        ev.iter()
            .any(|e| e.rule == "exchange_disconnected" && e.status == AlertStatus::Firing)
            && ev
                .iter()
                .any(|e| e.rule == "disk_full" && e.status == AlertStatus::Firing)
    })
    .await;
    let events = alert_events(&js).await;
    let disconnected = of(&events, "exchange_disconnected");
    assert_eq!(disconnected[0].status, AlertStatus::Pending);
    assert_eq!(disconnected[0].starts_at, a0);
    assert_eq!(disconnected[1].status, AlertStatus::Firing);
    assert_eq!(
        disconnected[1].event_time,
        a0 + 60 * sec,
        "fired at for: 1m on binance's own clock"
    );
    assert_eq!(disconnected[1].labels["exchange"], "binance");
    let disk_full: Vec<_> = of(&events, "disk_full")
        .into_iter()
        .filter(|e| e.status == AlertStatus::Firing)
        .collect();
    assert_eq!(disk_full[0].event_time, d0 + 60 * sec);
    // Nothing was late.
    assert!(dead_letters(&js).await.is_empty());

    // A point behind binance's own watermark is late: dead-lettered, naming source and lag.
    publish(
        &js,
        &[labelled(
            "exchange_connection_status",
            ("exchange", "binance"),
            a0 + 30 * sec,
            1.0,
        )],
        1,
    )
    .await;
    wait_for("the late dead letter", Duration::from_secs(10), || async {
        !dead_letters(&js).await.is_empty()
    })
    .await;
    let dead = dead_letters(&js).await;
    assert_eq!(dead.len(), 1);
    let (reason, headers, payload) = &dead[0];
    assert_eq!(reason, "late");
    let detail = headers.get("Prism-Reject-Detail").unwrap().to_string();
    assert!(
        detail.contains("exchange.binance") && detail.contains("ms behind"),
        "{detail}"
    );
    assert_eq!(
        headers.get("Prism-Original-Subject").unwrap().as_str(),
        "prism.metrics.exchange.binance.exchange_connection_status"
    );
    assert!(!payload.is_empty(), "the original bytes are kept");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_series_fires_at_for_and_resolves_as_stale_in_wall_time() {
    let srv = server();
    let mut cfg = config(&srv);
    cfg.ingest.allowed_lateness_ms = 1000;
    cfg.ingest.source_idle_ms = 1000;
    cfg.pipeline.staleness_secs = 6;
    let js = js(&srv).await;
    declare(&js, &cfg).await;
    let app = RunningApp::start(
        cfg.clone(),
        rules("rules:\n  - name: disk_full\n    metric: disk_usage_percent\n    condition: value > 90\n    for: 3s\n    priority: P1\n"),
    );
    // One point, then nothing at all.
    let t0 = clock::now_ms();
    publish(
        &js,
        &[labelled("disk_usage_percent", ("service", "db"), t0, 95.0)],
        1,
    )
    .await;
    let started = std::time::Instant::now();
    wait_for("the stale resolution", Duration::from_secs(30), || async {
        alert_events(&js).await.len() >= 3
    })
    .await;
    let waited = started.elapsed();
    let events = alert_events(&js).await;
    let seen: Vec<(AlertStatus, i64, Option<EndReason>)> = events
        .iter()
        .map(|e| (e.status, e.event_time - t0, e.end_reason))
        .collect();
    assert_eq!(
        seen,
        [
            (AlertStatus::Pending, 0, None),
            (AlertStatus::Firing, 3000, None),
            (AlertStatus::Resolved, 6000, Some(EndReason::Stale)),
        ]
    );
    // Driven by the partition's ticks: within seconds of the wall-clock moment, with no data.
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_sent_on_a_second_subject_is_refused_and_said_so() {
    let (_srv, cfg, js) = fresh().await;
    let app = RunningApp::start(cfg.clone(), test_rules());
    let now = clock::now_ms();
    let p = point("market_data_delay_seconds", "binance", now, 1.0);
    publish_to(
        &js,
        "prism.metrics.exchange.binance.market_data_delay_seconds",
        &p,
    )
    .await;
    // The same series again, from other sources: some hash to the same partition (refused
    // there), others to other partitions (reported by the series registry).
    let others = [
        "exchange.all",
        "exchange.binance2",
        "exchange.collector-b",
        "market.x",
        "ops.y",
    ];
    let partitions: std::collections::BTreeSet<u32> = others
        .iter()
        .map(|s| partition_of(&js, s))
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .collect();
    assert!(
        partitions.len() > 1,
        "the test needs sources in several partitions"
    );
    for source in others {
        let mut q = p.clone();
        q.timestamp = now + 1000;
        publish_to(
            &js,
            &format!("prism.metrics.{source}.market_data_delay_seconds"),
            &q,
        )
        .await;
    }
    wait_for(
        "a conflict report per other source",
        Duration::from_secs(20),
        || async {
            dead_letters(&js)
                .await
                .iter()
                .filter(|(r, _, _)| r == "series_conflict")
                .count()
                >= others.len()
        },
    )
    .await;
    let conflicts: Vec<_> = dead_letters(&js)
        .await
        .into_iter()
        .filter(|(r, _, _)| r == "series_conflict")
        .collect();
    let subjects: std::collections::BTreeSet<String> = conflicts
        .iter()
        .map(|(_, h, _)| h.get("Prism-Original-Subject").unwrap().to_string())
        .collect();
    assert_eq!(subjects.len(), others.len(), "{subjects:?}");
    assert!(
        conflicts.iter().any(|(_, h, _)| h
            .get("Prism-Reject-Detail")
            .unwrap()
            .as_str()
            .contains("(another partition)")),
        "the series registry reported nothing"
    );
    for (_, h, _) in &conflicts {
        let detail = h.get("Prism-Reject-Detail").unwrap().to_string();
        // The first source the series came from, in its partition or (registry) in another.
        assert!(
            detail.contains("exchange=\"binance\"") && detail.contains("comes from source"),
            "{detail}"
        );
    }
    app.stop().await.unwrap();
}

async fn publish_to(js: &async_nats::jetstream::Context, subject: &str, p: &MetricPoint) {
    js.publish(
        subject.to_string(),
        rmp_serde::to_vec_named(p).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// The partition the stream stores a source's messages in (published once to find out).
async fn partition_of(js: &async_nats::jetstream::Context, source: &str) -> u32 {
    let ack = js
        .publish(format!("prism.metrics.{source}.probe"), "[]".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = js.get_stream("PRISM_METRICS").await.unwrap();
    let m = stream.get_raw_message(ack.sequence).await.unwrap();
    prismwatch::subjects::parse_stored(&m.subject)
        .and_then(|s| s.partition)
        .unwrap()
}

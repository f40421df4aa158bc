//! Recovery without loss or re-pages, and faults, against a real nats-server: a deleted or
//! corrupt checkpoint (with PRISM_ALERTS' duplicate window long past), a 1 MiB message with one
//! bad point, a panic on one series, nats-server killed and restarted mid-stream, a processor
//! started before its server, and SIGTERM in every state.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, object_store};
use common::*;
use prismwatch::model::MetricPoint;
use prismwatch::tools::clock;

/// The scenario run to completion, then the app stopped; returns PRISM_ALERTS' messages.
async fn run_once(cfg: &prismwatch::config::Config, js: &jetstream::Context) -> Vec<String> {
    process_all(cfg, test_rules()).await;
    msg_ids(js).await
}

async fn msg_ids(js: &jetstream::Context) -> Vec<String> {
    read_stream(js, "PRISM_ALERTS")
        .await
        .into_iter()
        .map(|(_, h, _)| h.unwrap().get("Nats-Msg-Id").unwrap().to_string())
        .collect()
}

async fn checkpoint_store(js: &jetstream::Context) -> object_store::ObjectStore {
    js.get_object_store("PRISM_CHECKPOINTS").await.unwrap()
}

/// A config whose PRISM_ALERTS duplicate window is 1 s: after a pause, only the processor's
/// own check can keep re-processed alerts from being published again.
fn short_window(srv: &NatsServer) -> prismwatch::config::Config {
    let mut cfg = config(srv);
    cfg.streams.alerts.duplicate_window_secs = 1;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_checkpoint_rebuilds_state_without_publishing_old_alerts_again() {
    let srv = server();
    let cfg = short_window(&srv);
    let js = js(&srv).await;
    declare(&js, &cfg).await;
    publish(&js, &scenario(), 3).await;
    let before = run_once(&cfg, &js).await;
    assert_eq!(before.len(), 7);

    // Every checkpoint gone, and the duplicate window long past.
    let store = checkpoint_store(&js).await;
    for p in 0..4 {
        let _ = store.delete(format!("{GROUP}-{p}")).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    process_all(&cfg, test_rules()).await;
    assert_eq!(
        msg_ids(&js).await,
        before,
        "old alerts were published again"
    );

    // Now the consumers too: the processor has to read PRISM_ALERTS to know what it published.
    let stream = js.get_stream("PRISM_METRICS").await.unwrap();
    for p in 0..4 {
        let _ = store.delete(format!("{GROUP}-{p}")).await;
        let _ = stream.delete_consumer(&format!("{GROUP}-{p}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    process_all(&cfg, test_rules()).await;
    assert_eq!(
        msg_ids(&js).await,
        before,
        "old alerts were published again"
    );

    // New data after the rebuild is processed on the rebuilt state: the rate spike's alert
    // resolved long ago; a new binance excursion pages.
    let t = scenario().last().unwrap().timestamp;
    let more: Vec<MetricPoint> = (1..=60)
        .map(|i| {
            point(
                "market_data_delay_seconds",
                "binance",
                t + i * 10 * SEC,
                9.0,
            )
        })
        .collect();
    publish(&js, &more, 1).await;
    process_all(&cfg, test_rules()).await;
    let after = alert_events(&js).await;
    assert_eq!(after.len(), 9, "{:?}", summary(&after));
    assert_eq!(
        summary(&after[7..]),
        vec![
            (
                "md_delay".into(),
                "binance".into(),
                "pending".into(),
                t + 10 * SEC
            ),
            (
                "md_delay".into(),
                "binance".into(),
                "firing".into(),
                t + 310 * SEC
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_ignored_said_so_and_nothing_is_published_again() {
    let srv = server();
    let mut cfg = short_window(&srv);
    cfg.http.listen = free_listen_addr();
    let js = js(&srv).await;
    declare(&js, &cfg).await;
    publish(&js, &scenario(), 3).await;
    let before = run_once(&cfg, &js).await;

    let store = checkpoint_store(&js).await;
    let mut corrupted = 0;
    for p in 0..4 {
        let name = format!("{GROUP}-{p}");
        if store.info(&name).await.is_ok() {
            store
                .put(
                    name.as_str(),
                    &mut &b"PWCP\x03\x00\x00\x00\xff\xff\xff\x7fgarbage"[..],
                )
                .await
                .unwrap();
            corrupted += 1;
        }
    }
    assert!(corrupted > 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let since = clock::now_ms() - 5;
    let app = RunningApp::start(cfg.clone(), test_rules());
    wait_consumed_since(&js, GROUP, since, Duration::from_secs(60)).await;
    let (_, metrics) = http_get(&cfg.http.listen, "/metrics").await;
    app.stop().await.unwrap();
    assert_eq!(msg_ids(&js).await, before);
    let unreadable = metrics
        .lines()
        .find(|l| l.starts_with("prismwatch_pipeline_checkpoints_unreadable_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(unreadable as usize, corrupted, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_message_with_one_bad_point_is_dead_lettered_by_reference_and_nothing_stalls() {
    let (_srv, cfg, js) = fresh().await;
    let app = RunningApp::start(
        cfg.clone(),
        rules("rules:\n  - name: hot\n    metric: temperature\n    condition: value > 100\n    priority: P1\n"),
    );
    let now = clock::now_ms();
    let max_payload = js.client().server_info().max_payload;
    let label = "x".repeat(200);
    let make = |n: usize| -> Vec<MetricPoint> {
        (0..n)
            .map(|i| MetricPoint {
                name: "temperature".into(),
                labels: BTreeMap::from([
                    ("host".to_string(), format!("h{i:05}")),
                    ("pad".to_string(), label.clone()),
                ]),
                value: 20.0,
                timestamp: now,
            })
            .collect()
    };
    // As many points as fit in one message just under the server's max_payload.
    let per_point = rmp_serde::to_vec_named(&make(100)).unwrap().len() / 100;
    let mut points = make((max_payload - 1024) / per_point);
    points[10].value = f64::NAN;
    points[3000].value = 150.0; // fires
    let payload = rmp_serde::to_vec_named(&points).unwrap();
    assert!(
        payload.len() > max_payload - 2048 && payload.len() <= max_payload,
        "payload {} bytes, max_payload {max_payload}",
        payload.len()
    );
    let big = js
        .publish(
            "prism.metrics.host.many.temperature",
            payload.clone().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Then an ordinary message: it must not wait behind the big one.
    publish(
        &js,
        &[MetricPoint {
            name: "temperature".into(),
            labels: BTreeMap::from([("host".to_string(), "after".to_string())]),
            value: 120.0,
            timestamp: now,
        }],
        1,
    )
    .await;
    wait_for("both alerts", Duration::from_secs(30), || async {
        alert_events(&js).await.len() >= 2
    })
    .await;
    let hosts: BTreeSet<String> = alert_events(&js)
        .await
        .iter()
        .map(|e| e.labels["host"].clone())
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["h03000".to_string(), "after".to_string()])
    );
    let dead = dead_letters(&js).await;
    assert_eq!(dead.len(), 1);
    let (reason, h, body) = &dead[0];
    assert_eq!(reason, "non_finite_value");
    assert!(body.is_empty(), "a reference, not the bytes");
    assert_eq!(
        h.get("Prism-Payload-Omitted").unwrap().as_str(),
        payload.len().to_string()
    );
    assert_eq!(
        h.get("Prism-Original-Stream").unwrap().as_str(),
        "PRISM_METRICS"
    );
    let seq: u64 = h
        .get("Prism-Original-Sequence")
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    assert_eq!(seq, big.sequence);
    // The reference leads to the original.
    let original = js
        .get_stream("PRISM_METRICS")
        .await
        .unwrap()
        .get_raw_message(seq)
        .await
        .unwrap();
    assert_eq!(original.payload, payload);
    app.stop().await.unwrap();
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_one_series_quarantines_it_the_rest_goes_on_and_restarts_do_not_crash() {
    use prismwatch::pipeline::operator::FAULT_PANIC_VALUE;
    let (_srv, cfg, js) = fresh().await;
    let mut points = scenario();
    // The poison point sits among the others; later points of its series follow.
    let i = points.len() / 3;
    let ts = points[i].timestamp;
    points.insert(
        i,
        point("market_data_delay_seconds", "poison", ts, FAULT_PANIC_VALUE),
    );
    points.push(point(
        "market_data_delay_seconds",
        "poison",
        ts + 100_000_000,
        1.0,
    ));
    publish(&js, &points, 1).await;
    let app = RunningApp::start(cfg.clone(), test_rules());
    wait_consumed(&js, GROUP, Duration::from_secs(60)).await;
    assert!(!app.is_finished(), "the processor must keep running");
    // Restarting (from the checkpoint, or re-processing) does not crash either.
    app.stop().await.unwrap();
    let since = clock::now_ms() - 5;
    let app = RunningApp::start(cfg.clone(), test_rules());
    publish(
        &js,
        &[point(
            "market_data_delay_seconds",
            "poison",
            ts + 200_000_000,
            1.0,
        )],
        1,
    )
    .await;
    wait_consumed_since(&js, GROUP, since, Duration::from_secs(60)).await;
    app.stop().await.unwrap();

    // Every other series gave exactly its events.
    let reference = {
        let (_srv, cfg, js) = fresh().await;
        publish(&js, &scenario(), 1).await;
        process_all(&cfg, test_rules()).await;
        alert_events(&js).await
    };
    assert_eq!(sorted(alert_events(&js).await), sorted(reference));
    let reasons: Vec<String> = dead_letters(&js)
        .await
        .into_iter()
        .map(|(r, _, _)| r)
        .collect();
    assert_eq!(reasons, ["panic", "quarantined", "quarantined"]);
    let detail = dead_letters(&js).await[0]
        .1
        .get("Prism-Reject-Detail")
        .unwrap()
        .to_string();
    assert!(
        detail.contains("injected fault") && detail.contains("poison"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    let points = scenario();
    let reference = {
        let (_srv, cfg, js) = fresh().await;
        publish(&js, &points, 1).await;
        process_all(&cfg, test_rules()).await;
        alert_events(&js).await
    };

    let mut srv = server();
    let cfg = config(&srv);
    let js = js(&srv).await;
    declare(&js, &cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    let rules_path = rules_file(&dir, TEST_RULES);
    let mut processor = ChildProcessor::spawn(&srv.url(), &rules_path, &[], Some(log.clone()));
    let half = points.len() / 2;
    publish(&js, &points[..half], 1).await;
    // Mid-stream: the server dies (SIGKILL) and comes back with the same store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    srv.restart();
    let js = js_at(&srv.url()).await;
    publish(&js, &points[half..], 1).await;
    wait_consumed(&js, GROUP, Duration::from_secs(120)).await;
    let after = alert_events(&js).await;
    let ids: Vec<String> = after.iter().map(|e| e.msg_id()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate alert events");
    assert_eq!(sorted(after), sorted(reference));
    // It reconnected by itself: the same process did it all.
    assert!(processor.terminate(Duration::from_secs(10)).is_some());
    let text = processor.log();
    assert!(
        text.contains("nats connection") && text.contains("connected=false"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_started_before_its_server_waits_says_so_and_then_works() {
    let (port, store) = NatsServer::reserve();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    let rules_path = rules_file(&dir, TEST_RULES);
    let processor = ChildProcessor::spawn(&url, &rules_path, &[], Some(log));
    wait_for("the waiting log line", Duration::from_secs(10), || async {
        processor.log().contains("waiting for NATS")
    })
    .await;
    let text = processor.log();
    assert!(
        text.contains(&url) && text.contains("retry_in_ms"),
        "{text}"
    );

    let srv = NatsServer::start_on(port, store);
    let js = js(&srv).await;
    let cfg = config(&srv);
    wait_for(
        "the processor to declare the streams",
        Duration::from_secs(20),
        || async { js.get_stream("PRISM_METRICS").await.is_ok() },
    )
    .await;
    declare(&js, &cfg).await;
    publish(&js, &scenario(), 3).await;
    wait_consumed(&js, GROUP, Duration::from_secs(60)).await;
    assert_eq!(alert_events(&js).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_processor_within_seconds_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let rules_path = rules_file(&dir, TEST_RULES);

    // Waiting for a server that is not there.
    let (port, store) = NatsServer::reserve();
    let url = format!("nats://127.0.0.1:{port}");
    let mut p = ChildProcessor::spawn(&url, &rules_path, &[], Some(dir.path().join("a.log")));
    wait_for("the waiting log line", Duration::from_secs(10), || async {
        p.log().contains("waiting for NATS")
    })
    .await;
    let t = Instant::now();
    let status = p
        .terminate(Duration::from_secs(5))
        .expect("stopped within 5 s");
    assert!(status.success(), "{status:?}");
    eprintln!("stopped while waiting for NATS in {:?}", t.elapsed());

    // Running normally, with work in flight.
    let mut srv = NatsServer::start_on(port, store);
    let js = js(&srv).await;
    declare(&js, &config(&srv)).await;
    let mut p = ChildProcessor::spawn(&url, &rules_path, &[], Some(dir.path().join("b.log")));
    publish(&js, &scenario(), 1).await;
    let t = Instant::now();
    let status = p
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("not stopped within 10 s:\n{}", p.log()));
    assert!(status.success(), "{status:?}\n{}", p.log());
    eprintln!("stopped while running in {:?}", t.elapsed());

    // While NATS is gone mid-stream (publishes and acks cannot complete).
    let mut p = ChildProcessor::spawn(&url, &rules_path, &[], Some(dir.path().join("c.log")));
    wait_for("partitions taken", Duration::from_secs(20), || async {
        p.log().contains("partition taken over")
    })
    .await;
    srv.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let status = p
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("not stopped within 10 s:\n{}", p.log()));
    eprintln!("stopped with NATS down in {:?}: {status:?}", t.elapsed());
}

/// While PRISM_ALERTS cannot store (its subjects moved away: every alert publish is refused as
/// "no stream", a transient failure), the processor keeps pulling, processing and sending, but
/// acks no message before the events of every message up to it are stored: each partition's
/// ack floor stays below the first message whose events were stored only once the stream came
/// back. Then every event is stored once, as in an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_acked_before_the_alert_events_up_to_it_are_stored() {
    let reference = {
        let (_srv, cfg, js) = fresh().await;
        publish(&js, &scenario(), 1).await;
        run_once(&cfg, &js).await
    };
    assert_eq!(reference.len(), 7);

    let (_srv, mut cfg, js) = fresh().await;
    cfg.http.listen = free_listen_addr();
    let app = RunningApp::start(cfg.clone(), test_rules());
    let metrics = js.get_stream("PRISM_METRICS").await.unwrap();
    channels::eventually("every partition's consumer is created", 30, || async {
        let mut all = true;
        for p in 0..4 {
            all &= metrics.consumer_info(format!("{GROUP}-{p}")).await.is_ok();
        }
        all
    })
    .await;
    let mut alerts = js.get_stream("PRISM_ALERTS").await.unwrap();
    let configured = alerts.info().await.unwrap().config.clone();
    let away = jetstream::stream::Config {
        subjects: vec!["prism.nowhere.>".into()],
        ..configured.clone()
    };
    js.update_stream(&away).await.unwrap();
    publish(&js, &scenario(), 1).await;

    // The events fail and are retried; meanwhile, the ack floors.
    channels::eventually("an alert publish is retried", 30, || async {
        let (_, m) = http_get(&cfg.http.listen, "/metrics").await;
        m.lines()
            .any(|l| l.starts_with("prismwatch_alerts_publish_retries_total") && !l.ends_with(" 0"))
    })
    .await;
    let mut floors = BTreeMap::<u32, u64>::new();
    let mut delivered = BTreeMap::<u32, u64>::new();
    let sampling = Instant::now() + Duration::from_secs(1);
    while Instant::now() < sampling {
        for p in 0..4u32 {
            let info = metrics.consumer_info(format!("{GROUP}-{p}")).await.unwrap();
            let floor = floors.entry(p).or_default();
            *floor = (*floor).max(info.ack_floor.stream_sequence);
            let d = delivered.entry(p).or_default();
            *d = (*d).max(info.delivered.stream_sequence);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    js.update_stream(&configured).await.unwrap();
    wait_consumed(&js, GROUP, Duration::from_secs(60)).await;
    app.stop().await.unwrap();

    // The same events, each alert's in the same order (partitions interleave as they go).
    let per_alert = |ids: &[String]| {
        let mut by = BTreeMap::<String, Vec<String>>::new();
        for id in ids {
            let alert = id.rsplit_once('-').unwrap().0.to_string();
            by.entry(alert).or_default().push(id.clone());
        }
        by
    };
    let stored = msg_ids(&js).await;
    assert_eq!(stored.len(), reference.len(), "{stored:?}");
    assert_eq!(
        per_alert(&stored),
        per_alert(&reference),
        "events lost, repeated or reordered"
    );
    // Every event was stored after the stream came back; the first one's message per partition.
    let mut first_unstored = BTreeMap::<u32, u64>::new();
    for (_, headers, _) in read_stream(&js, "PRISM_ALERTS").await {
        let source = headers
            .unwrap()
            .get("Prism-Source-Message")
            .unwrap()
            .to_string();
        let (p, seq) = source.split_once(':').unwrap();
        let seq: u64 = seq.parse().unwrap();
        let first = first_unstored.entry(p.parse().unwrap()).or_insert(seq);
        *first = (*first).min(seq);
    }
    for (p, first) in &first_unstored {
        assert!(
            floors[p] < *first,
            "partition {p} acked through {} while the events of message {first} were not stored",
            floors[p]
        );
    }
    // The partitions did go on pulling past the message they waited on.
    assert!(
        first_unstored
            .iter()
            .any(|(p, first)| delivered[p] > *first),
        "no partition pulled past its first waiting message: {delivered:?} {first_unstored:?}"
    );
}

/// An alert storm larger than the client allows stream acks outstanding (5,000): 6,000 events
/// from one message are all stored and the message acked; the processor does not wait for
/// itself (its sends waiting for ack permits that only its own later awaits would free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_storm_larger_than_the_acks_the_client_allows_outstanding_is_all_stored() {
    let (_srv, cfg, js) = fresh().await;
    let now = clock::now_ms();
    let storm: Vec<MetricPoint> = (0..6000)
        .map(|i| MetricPoint {
            name: "queue_depth".into(),
            labels: BTreeMap::from([("host".to_string(), format!("h{i:05}"))]),
            value: 1.0,
            timestamp: now,
        })
        .collect();
    publish(&js, &storm, storm.len()).await;
    let app = RunningApp::start(
        cfg.clone(),
        rules("rules:\n  - name: queue_up\n    metric: queue_depth\n    condition: value > 0\n    priority: P2\n"),
    );
    wait_consumed(&js, GROUP, Duration::from_secs(60)).await;
    app.stop().await.unwrap();
    let events = alert_events(&js).await;
    let hosts: BTreeSet<_> = events
        .iter()
        .filter(|e| e.rule == "queue_up")
        .map(|e| e.labels["host"].clone())
        .collect();
    assert_eq!(events.len(), 6000);
    assert_eq!(hosts.len(), 6000);
}

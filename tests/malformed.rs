//! Malformed, hostile and oversized messages: rejected with the right reason counted (on the
//! Prometheus endpoint), dead-lettered with the reason in a header, and the consumer keeps going.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use common::*;
use prismwatch::model::MetricPoint;
use prismwatch::rules::RuleSet;

fn counter(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_dead_lettered_and_do_not_stall() {
    let srv = server();
    let mut cfg = config(&srv);
    cfg.ingest.max_message_bytes = 4096;
    cfg.http.listen = free_listen_addr();
    let mut rules = RuleSet::default();
    rules
        .add_file(
            "hot.yaml",
            "rules:\n  - name: hot\n    metric: temperature\n    condition: value > 100\n    priority: P1\n",
        )
        .unwrap();
    let js = js(&srv).await;
    declare(&js, &cfg).await;

    let now = prismwatch::tools::clock::now_ms();
    let good = |v: f64, ts: i64| MetricPoint {
        name: "temperature".into(),
        labels: BTreeMap::from([("host".to_string(), "h1".to_string())]),
        value: v,
        timestamp: ts,
    };
    let raw = |subject: &str, payload: Vec<u8>| (subject.to_string(), payload);
    let mut many_labels = good(1.0, now);
    for i in 0..50 {
        many_labels.labels.insert(format!("l{i}"), "x".into());
    }
    let big: Vec<MetricPoint> = (0..200).map(|i| good(1.0, now - 1000 + i)).collect();
    let cases: Vec<((String, Vec<u8>), &str)> = vec![
        (
            raw(
                "prism.metrics.host.h1.temperature",
                b"\xc1\x00\xffnot msgpack".to_vec(),
            ),
            "decode_error",
        ),
        (
            raw(
                "prism.metrics.host.h1.temperature",
                b"{\"name\": \"temperature\", \"value\": ".to_vec(),
            ),
            "decode_error",
        ),
        (
            raw(
                "prism.metrics.host.h1.temperature",
                rmp_serde::to_vec_named(&good(f64::NAN, now)).unwrap(),
            ),
            "non_finite_value",
        ),
        (
            raw(
                "prism.metrics.host.h1.temperature",
                serde_json::to_vec(&good(1.0, now + 3_600_000)).unwrap(),
            ),
            "future_timestamp",
        ),
        (
            raw(
                "prism.metrics.host.h1.temperature",
                serde_json::to_vec(&many_labels).unwrap(),
            ),
            "too_many_labels",
        ),
        (
            raw(
                "prism.metrics.host.h1.temperature",
                serde_json::to_vec(&big).unwrap(),
            ),
            "oversized",
        ),
        (
            raw(
                "prism.metrics.host.h1.bad",
                br#"{"name":"bad name!","value":1,"timestamp":5}"#.to_vec(),
            ),
            "invalid_name",
        ),
        (raw("prism.metrics.host.h1.x", b"".to_vec()), "empty"),
    ];
    for ((subject, payload), _) in &cases {
        js.publish(subject.clone(), payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // A batch with one bad point among good ones: the good ones are processed.
    let mixed = rmp_serde::to_vec_named(&vec![
        good(1.0, now - 500),
        good(f64::INFINITY, now - 400),
        good(150.0, now - 300),
    ])
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    js.publish_with_headers("prism.metrics.host.h1.temperature", headers, mixed.into())
        .await
        .unwrap()
        .await
        .unwrap();

    let app = RunningApp::start(cfg.clone(), rules);
    wait_consumed(&js, &cfg.ingest.consumer_name, Duration::from_secs(30)).await;

    // The valid point after all the garbage fired its alert.
    let events = alert_events(&js).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].rule, "hot");
    assert_eq!(events[0].value, 150.0);

    // Every bad message is in the dead-letter stream with its reason.
    let dead = read_stream(&js, "PRISM_DEADLETTER").await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|(_, h, _)| {
            h.as_ref()
                .unwrap()
                .get("Prism-Reject-Reason")
                .unwrap()
                .to_string()
        })
        .collect();
    let mut expected: Vec<String> = cases.iter().map(|(_, r)| r.to_string()).collect();
    expected.push("non_finite_value".into());
    assert_eq!(reasons, expected);
    for ((subject, h, payload), ((orig_subject, orig_payload), reason)) in dead.iter().zip(&cases) {
        assert_eq!(subject, &format!("prism.deadletter.metrics.{reason}"));
        assert_eq!(
            h.as_ref()
                .unwrap()
                .get("Prism-Original-Subject")
                .unwrap()
                .as_str(),
            orig_subject
        );
        assert_eq!(
            &payload[..],
            &orig_payload[..],
            "the original bytes are kept"
        );
    }
    let mixed_dl = dead.last().unwrap().1.as_ref().unwrap();
    assert!(
        mixed_dl
            .get("Prism-Reject-Detail")
            .unwrap()
            .as_str()
            .contains("f64")
            || mixed_dl
                .get("Prism-Reject-Detail")
                .unwrap()
                .as_str()
                .contains("inf")
    );

    // Counted by reason on /metrics.
    let (_, text) = http_get(&cfg.http.listen, "/metrics").await;
    let rejected = |r: &str| {
        counter(
            &text,
            &format!("prismwatch_ingest_points_rejected_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(rejected("decode_error"), 2.0);
    assert_eq!(rejected("non_finite_value"), 2.0);
    for r in [
        "future_timestamp",
        "too_many_labels",
        "oversized",
        "invalid_name",
        "empty",
    ] {
        assert_eq!(rejected(r), 1.0, "{r}\n{text}");
    }
    assert_eq!(
        counter(&text, "prismwatch_ingest_messages_deadlettered_total"),
        9.0
    );
    assert_eq!(
        counter(&text, "prismwatch_ingest_messages_received_total"),
        9.0
    );
    assert_eq!(
        counter(&text, "prismwatch_ingest_points_received_total"),
        2.0
    );
    assert_eq!(
        counter(
            &text,
            "prismwatch_alerts_events_total{priority=\"p1\",status=\"firing\"}"
        ),
        1.0
    );
    app.stop().await.unwrap();
}

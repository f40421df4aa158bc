//! The NATS contract in subjects/ agrees with the code: names, subjects, retention, reasons, schemas.

use std::collections::BTreeSet;

use prismwatch::config::Config;
use prismwatch::ingest::RejectReason;
use prismwatch::model::{AlertEvent, AlertStatus, MetricPoint, Priority};
use prismwatch::subjects;
use serde_json::Value;

fn catalog() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/subjects/catalog.yaml"
    ))
    .unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("{value} not in catalog"))
}

fn secs(s: &Value) -> u64 {
    humantime::parse_duration(s.as_str().unwrap())
        .unwrap()
        .as_secs()
}

#[test]
fn streams_subjects_and_buckets_match_the_code_and_defaults() {
    let c = catalog();
    let cfg = Config::default();
    for s in [
        &cfg.streams.metrics,
        &cfg.streams.alerts,
        &cfg.streams.deadletter,
    ] {
        let entry = find(&c["streams"], "name", &s.name);
        let subjects: Vec<String> = entry["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().into())
            .collect();
        assert_eq!(subjects, s.subjects, "{}", s.name);
        assert_eq!(secs(&entry["max_age"]), s.max_age_secs, "{}", s.name);
        assert_eq!(
            secs(&entry["duplicate_window"]),
            s.duplicate_window_secs,
            "{}",
            s.name
        );
    }
    assert_eq!(
        find(&c["subjects"], "id", "metrics")["filter"],
        subjects::METRICS_ALL
    );
    assert_eq!(
        find(&c["subjects"], "id", "metrics")["stream"],
        subjects::METRICS_STREAM
    );
    assert_eq!(
        find(&c["subjects"], "id", "alerts")["filter"],
        subjects::ALERTS_ALL
    );
    assert_eq!(
        find(&c["subjects"], "id", "alerts")["stream"],
        subjects::ALERTS_STREAM
    );
    assert_eq!(
        find(&c["subjects"], "id", "deadletter_metrics")["filter"],
        subjects::DEADLETTER_ALL
    );
    assert_eq!(
        find(&c["subjects"], "id", "deadletter_metrics")["stream"],
        subjects::DEADLETTER_STREAM
    );
    let consumer = find(
        &c["consumers"],
        "name",
        &format!("{}-<partition>", subjects::PROCESSOR_CONSUMER),
    );
    assert_eq!(consumer["stream"], subjects::METRICS_STREAM);
    assert_eq!(consumer["ack_policy"], "all");
    assert_eq!(
        consumer["filter_subject"],
        subjects::partition_filter(0).replace(".0.", ".<partition>.")
    );
    assert_eq!(
        prismwatch::processor::consumer_name(&cfg.ingest.consumer_name, 3),
        format!("{}-3", subjects::PROCESSOR_CONSUMER)
    );
    assert_eq!(cfg.ingest.consumer_name, subjects::PROCESSOR_CONSUMER);
    find(&c["object_stores"], "name", subjects::CHECKPOINT_BUCKET);
    let leases = find(&c["kv_buckets"], "name", subjects::LEASE_BUCKET);
    assert_eq!(leases["history"], 1);
    let series = find(&c["kv_buckets"], "name", subjects::SERIES_BUCKET);
    assert_eq!(secs(&series["max_age"]), 7 * 86_400);
    assert_eq!(prismwatch::processor::series_id("x").len(), 24);

    // Partitioning: the stored subjects, the transform and the ticks.
    let stored = find(&c["subjects"], "id", "metrics_stored");
    assert_eq!(
        stored["filter"],
        format!("{}.>", subjects::PARTITION_PREFIX)
    );
    assert_eq!(stored["stream"], subjects::METRICS_STREAM);
    let (src, dest) = subjects::partition_transform(cfg.streams.partitions);
    let documented = find(&c["streams"], "name", subjects::METRICS_STREAM)["subject_transform"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        documented.starts_with(&format!(
            "{src} -> {}",
            dest.replace(
                &format!("partition({},", cfg.streams.partitions),
                "partition(N,"
            )
        )),
        "{documented}"
    );
    assert!(documented.contains(&format!("{} by default", cfg.streams.partitions)));
    assert!(stored["note"].as_str().unwrap().contains(&src));
    let ticks = find(&c["subjects"], "id", "ticks");
    assert_eq!(ticks["filter"], subjects::TICKS_ALL);
    assert_eq!(
        subjects::tick_subject(7),
        subjects::TICKS_ALL.replace('*', "7")
    );

    // Subject patterns and their tokens.
    let alerts = find(&c["subjects"], "id", "alerts");
    assert_eq!(alerts["pattern"], "prism.alerts.<priority>.<status>.<rule>");
    let tokens = |s: &Value| -> BTreeSet<String> {
        s.as_str()
            .unwrap()
            .split('|')
            .map(|t| t.trim().to_string())
            .collect()
    };
    assert_eq!(
        tokens(&alerts["tokens"]["priority"]),
        Priority::ALL
            .iter()
            .map(|p| p.token().to_string())
            .collect()
    );
    assert_eq!(
        tokens(&alerts["tokens"]["status"]),
        AlertStatus::ALL
            .iter()
            .map(|s| s.token().to_string())
            .collect()
    );
    let dl = find(&c["subjects"], "id", "deadletter_metrics");
    assert_eq!(
        tokens(&dl["tokens"]["reason"]),
        RejectReason::ALL
            .iter()
            .map(|r| r.as_str().to_string())
            .collect()
    );
    assert_eq!(
        subjects::metric_subject("exchange", "binance", "x"),
        "prism.metrics.exchange.binance.x"
    );
    for h in [
        subjects::HEADER_REJECT_REASON,
        subjects::HEADER_REJECT_DETAIL,
        subjects::HEADER_REJECTED_POINTS,
        subjects::HEADER_ORIGINAL_SUBJECT,
        subjects::HEADER_ORIGINAL_STREAM,
        subjects::HEADER_ORIGINAL_SEQUENCE,
        subjects::HEADER_PAYLOAD_OMITTED,
        subjects::HEADER_CONTENT_TYPE,
    ] {
        assert!(dl["headers"][h].is_string(), "{h} not documented");
    }
    assert!(alerts["headers"][subjects::HEADER_SOURCE_MESSAGE].is_string());
}

#[test]
fn schemas_match_the_types() {
    let alert: Value =
        serde_json::from_str(include_str!("../subjects/schemas/alert-event.schema.json")).unwrap();
    let props: BTreeSet<String> = alert["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let event = AlertEvent {
        id: "x".into(),
        fingerprint: "0123456789abcdef".into(),
        rule: "r".into(),
        priority: Priority::P1,
        status: AlertStatus::Firing,
        labels: Default::default(),
        annotations: Default::default(),
        value: 1.0,
        score: 0.5,
        starts_at: 1,
        ends_at: None,
        end_reason: None,
        event_time: 1,
    };
    let v = serde_json::to_value(&event).unwrap();
    let keys: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, props);
    let metric: Value = serde_json::from_str(include_str!(
        "../subjects/schemas/metric-message.schema.json"
    ))
    .unwrap();
    let point_props: BTreeSet<String> = metric["$defs"]["point"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let p = serde_json::to_value(MetricPoint {
        name: "n".into(),
        labels: Default::default(),
        value: 1.0,
        timestamp: 1,
    })
    .unwrap();
    assert_eq!(
        p.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        point_props
    );
    let cfg = Config::default();
    assert_eq!(
        metric["$defs"]["point"]["properties"]["labels"]["maxProperties"],
        cfg.ingest.max_labels
    );
    assert_eq!(
        metric["oneOf"][1]["maxItems"],
        cfg.ingest.max_points_per_message
    );
}

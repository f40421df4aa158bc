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
    // Every stream the processor and the alert manager declare.
    for s in cfg.streams.all() {
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
    let alert: Value = serde_json::from_str(include_str!(
        "../../subjects/schemas/alert-event.schema.json"
    ))
    .unwrap();
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
        "../../subjects/schemas/metric-message.schema.json"
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

/// The keys a value serialises to.
fn keys_of<T: serde::Serialize>(v: &T) -> BTreeSet<String> {
    serde_json::to_value(v)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn schema(name: &str) -> Value {
    let path = format!("{}/subjects/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn properties(v: &Value) -> BTreeSet<String> {
    v["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn alert_manager_streams_subjects_and_buckets_match_the_code() {
    let c = catalog();
    for (id, filter, stream) in [
        (
            "commands",
            subjects::COMMANDS_ALL,
            subjects::COMMANDS_STREAM,
        ),
        ("audit", subjects::AUDIT_ALL, subjects::COMMANDS_STREAM),
        (
            "notify_send",
            subjects::NOTIFY_SEND_ALL,
            subjects::NOTIFY_STREAM,
        ),
        (
            "notify_outcome",
            subjects::NOTIFY_OUTCOME_ALL,
            subjects::NOTIFY_STREAM,
        ),
        (
            "notify_dead",
            subjects::NOTIFY_DEAD_ALL,
            subjects::NOTIFY_DEAD_STREAM,
        ),
    ] {
        let s = find(&c["subjects"], "id", id);
        assert_eq!(s["filter"], filter, "{id}");
        assert_eq!(s["stream"], stream, "{id}");
    }
    assert_eq!(
        find(&c["subjects"], "id", "reload")["filter"],
        subjects::RELOAD_SUBJECT
    );
    // Every command kind is documented as a subject token, and is the schema's kind.
    use prismwatch::alerting::command::CommandBody;
    let kinds = [
        CommandBody::Ack {
            alert: "a".into(),
            comment: String::new(),
            expires_at: None,
        },
        CommandBody::Unack { alert: "a".into() },
        CommandBody::Resolve {
            alert: "a".into(),
            comment: String::new(),
        },
        CommandBody::SilenceCreate {
            id: None,
            matchers: vec![],
            starts_at: None,
            ends_at: 0,
            comment: String::new(),
            created_by: None,
        },
        CommandBody::SilenceExpire { id: "s".into() },
        CommandBody::AlertExternal { alerts: vec![] },
        CommandBody::RulesReload,
    ];
    let documented: BTreeSet<String> = find(&c["subjects"], "id", "commands")["tokens"]["kind"]
        .as_str()
        .unwrap()
        .split('|')
        .map(|t| t.trim().to_string())
        .collect();
    let command_schema = schema("command.schema.json");
    let schema_kinds: BTreeSet<String> = command_schema["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for k in &kinds {
        assert!(documented.contains(k.kind()), "{} not in catalog", k.kind());
        let tag = serde_json::to_value(k).unwrap()["kind"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(tag, k.kind().replace('.', "_"));
        assert!(schema_kinds.contains(&tag), "{tag} not in the schema");
    }
    assert_eq!(documented.len(), kinds.len());
    assert_eq!(schema_kinds.len(), kinds.len());

    let group = prismwatch::alerting::config::AlertingConfig::default().group;
    assert_eq!(group, "prismwatch-manager");
    for (name, stream) in [
        ("<manager group>-alerts", subjects::ALERTS_STREAM),
        ("<manager group>-commands", subjects::COMMANDS_STREAM),
        ("<manager group>-outcomes", subjects::NOTIFY_STREAM),
    ] {
        assert_eq!(find(&c["consumers"], "name", name)["stream"], stream);
    }
    let notify = find(&c["consumers"], "name", subjects::NOTIFY_CONSUMER);
    assert_eq!(notify["stream"], subjects::NOTIFY_STREAM);
    assert_eq!(notify["filter_subject"], subjects::NOTIFY_SEND_ALL);
    assert_eq!(
        Config::default().notify.consumer_name,
        subjects::NOTIFY_CONSUMER
    );
    let dead = find(&c["subjects"], "id", "notify_dead");
    for h in [
        prismwatch::notify::HEADER_ERROR,
        prismwatch::notify::HEADER_ATTEMPTS,
        prismwatch::notify::HEADER_CHANNEL,
    ] {
        assert!(dead["headers"][h].is_string(), "{h} not documented");
    }
    assert!(find(&c["subjects"], "id", "notify_send")["headers"]
        [prismwatch::notify::HEADER_ONLY_CHANNEL]
        .is_string());
    for b in [
        subjects::ALERT_STATE_BUCKET,
        subjects::SILENCE_BUCKET,
        subjects::NOTIFY_LOG_BUCKET,
        subjects::MANAGER_BUCKET,
        subjects::NOTIFY_RATE_BUCKET,
        subjects::RULE_STATS_BUCKET,
        subjects::CAPACITY_BUCKET,
    ] {
        assert_eq!(find(&c["kv_buckets"], "name", b)["history"], 1, "{b}");
    }
}

#[test]
fn alert_manager_schemas_match_the_types() {
    use prismwatch::alerting::alert::{AlertSource, HistoryEntry, ManagedAlert, NotifyRecord};
    use prismwatch::alerting::command::{Command, CommandBody, ExternalAlert, Reply};
    use prismwatch::alerting::matchers::MatcherDef;
    use prismwatch::alerting::silence::Silence;
    use prismwatch::model::{
        AckInfo, DeliveryOutcome, Notification, NotificationKind, NotifiedAlert, StormSummary,
    };

    // Every optional field set, so every key appears.
    let ack = AckInfo {
        by: "ana".into(),
        at: 1,
        comment: "on it".into(),
        expires_at: Some(2),
    };
    let alert = NotifiedAlert {
        id: "a".into(),
        fingerprint: "f".into(),
        rule: "r".into(),
        priority: Priority::P1,
        status: AlertStatus::Firing,
        labels: Default::default(),
        annotations: Default::default(),
        value: 1.0,
        starts_at: 1,
        ends_at: None,
        acknowledged: Some(ack.clone()),
        flapping: false,
        generator_url: "http://x".into(),
    };
    let storm = StormSummary {
        alerts: 60,
        window_secs: 60,
        started_at: 1,
        ended_at: Some(2),
        by_rule: Default::default(),
        by_priority: Default::default(),
        by_exchange: Default::default(),
    };
    let n = Notification {
        id: "slack.abc.1".into(),
        kind: NotificationKind::Storm,
        receiver: "slack".into(),
        status: AlertStatus::Firing,
        priority: Priority::P1,
        group_key: "g".into(),
        group_labels: Default::default(),
        common_labels: Default::default(),
        common_annotations: Default::default(),
        alerts: vec![alert.clone()],
        truncated: 0,
        storm: Some(storm.clone()),
        created_at: 1,
        sequence: 1,
    };
    let ns = schema("notification.schema.json");
    assert_eq!(keys_of(&n), properties(&ns));
    assert_eq!(keys_of(&alert), properties(&ns["$defs"]["alert"]));
    assert_eq!(keys_of(&storm), properties(&ns["$defs"]["storm"]));
    assert_eq!(keys_of(&ack), properties(&ns["$defs"]["ack"]));
    let kinds: BTreeSet<String> = ns["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    for k in [
        NotificationKind::Group,
        NotificationKind::Storm,
        NotificationKind::StormOver,
        NotificationKind::Test,
    ] {
        assert!(kinds.contains(serde_json::to_value(k).unwrap().as_str().unwrap()));
    }

    let outcome = DeliveryOutcome {
        notification_id: "n".into(),
        receiver: "r".into(),
        outcome: "dead_lettered".into(),
        attempts: 3,
        at: 1,
        alert_ids: vec![],
        error: "HTTP 500".into(),
    };
    assert_eq!(
        keys_of(&outcome),
        properties(&schema("delivery-outcome.schema.json"))
    );

    let reply = Reply {
        request_id: "q".into(),
        kind: "ack".into(),
        principal: "p".into(),
        ok: true,
        message: "m".into(),
        result: serde_json::json!({"id": "x"}),
        at: 1,
    };
    assert_eq!(
        keys_of(&reply),
        properties(&schema("command-reply.schema.json"))
    );

    // Commands: the envelope plus each kind's own fields, as the schema's branches list them.
    let cs = schema("command.schema.json");
    let matcher = MatcherDef {
        name: "exchange".into(),
        value: "binance".into(),
        is_regex: false,
        is_equal: true,
    };
    assert_eq!(keys_of(&matcher), properties(&cs["$defs"]["matcher"]));
    let ext = ExternalAlert {
        labels: Default::default(),
        annotations: Default::default(),
        starts_at: Some(1),
        ends_at: Some(2),
        generator_url: "g".into(),
        priority: Some(Priority::P2),
    };
    assert_eq!(keys_of(&ext), properties(&cs["$defs"]["external_alert"]));
    let bodies = [
        CommandBody::Ack {
            alert: "a".into(),
            comment: "c".into(),
            expires_at: Some(1),
        },
        CommandBody::Unack { alert: "a".into() },
        CommandBody::Resolve {
            alert: "a".into(),
            comment: "c".into(),
        },
        CommandBody::SilenceCreate {
            id: Some("s".into()),
            matchers: vec![matcher.clone()],
            starts_at: Some(1),
            ends_at: 2,
            comment: "c".into(),
            created_by: Some("alice".into()),
        },
        CommandBody::SilenceExpire { id: "s".into() },
        CommandBody::AlertExternal {
            alerts: vec![ext.clone()],
        },
        CommandBody::RulesReload,
    ];
    let envelope = properties(&cs);
    let branches = cs["oneOf"].as_array().unwrap();
    for body in bodies {
        let c = Command {
            request_id: "q".into(),
            principal: "p".into(),
            at: 1,
            body: body.clone(),
        };
        let tag = serde_json::to_value(&body).unwrap()["kind"].clone();
        let branch = branches
            .iter()
            .find(|b| b["properties"]["kind"]["const"] == tag)
            .unwrap_or_else(|| panic!("no schema branch for {tag}"));
        let mut expected = envelope.clone();
        expected.extend(properties(branch));
        assert_eq!(keys_of(&c), expected, "{tag}");
        // What the schema describes is what the manager reads back.
        let back: Command = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    let managed = ManagedAlert {
        id: "a".into(),
        fingerprint: "f".into(),
        rule: "r".into(),
        priority: Priority::P1,
        status: AlertStatus::Firing,
        source: AlertSource::External,
        labels: Default::default(),
        annotations: Default::default(),
        value: 1.0,
        starts_at: 1,
        ends_at: Some(2),
        end_reason: Some(prismwatch::model::EndReason::Removed),
        generator_url: "g".into(),
        received_at: 1,
        fired_at: Some(1),
        updated_at: 1,
        expires_at: Some(3),
        ack: Some(ack.clone()),
        silenced_by: vec![],
        inhibited_by: vec![],
        flapping: false,
        notifications: [(
            "slack".to_string(),
            NotifyRecord {
                sent: 1,
                last_notification: "n".into(),
                last_sent_at: 1,
                last_status: Some(AlertStatus::Firing),
                outcome: "delivered".into(),
                outcome_at: Some(2),
                attempts: 1,
            },
        )]
        .into(),
        history: vec![HistoryEntry {
            at: 1,
            what: "firing".into(),
            by: "x".into(),
        }],
    };
    let st = schema("alert-state.schema.json");
    assert_eq!(keys_of(&managed), properties(&st));
    assert_eq!(
        keys_of(&managed.notifications["slack"]),
        properties(&st["$defs"]["notify_record"])
    );
    assert_eq!(
        keys_of(&managed.history[0]),
        properties(&st["$defs"]["history"])
    );
    assert_eq!(keys_of(&ack), properties(&st["$defs"]["ack"]));
    let reasons: Vec<Value> = st["properties"]["end_reason"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    for r in ["condition", "stale", "removed"] {
        assert!(reasons.contains(&Value::from(r)), "{r}");
    }

    let silence = Silence {
        id: "s".into(),
        matchers: vec![matcher],
        starts_at: 1,
        ends_at: 2,
        created_by: "p".into(),
        comment: "c".into(),
        updated_at: 1,
    };
    assert_eq!(
        keys_of(&silence),
        properties(&schema("silence.schema.json"))
    );
}

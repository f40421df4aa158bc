use super::*;
use crate::model::{NotificationKind, NotifiedAlert, Priority};

fn alert(id: &str, status: AlertStatus, summary: &str) -> NotifiedAlert {
    NotifiedAlert {
        id: format!("{id}-1764000000000"),
        fingerprint: id.into(),
        rule: "HighLatency".into(),
        priority: Priority::P1,
        status,
        labels: [
            ("alertname".to_string(), "HighLatency".to_string()),
            ("instance".to_string(), "api-1:9090".to_string()),
        ]
        .into(),
        annotations: [("summary".to_string(), summary.to_string())].into(),
        value: 2.5,
        starts_at: 1_764_410_400_123,
        ends_at: (status == AlertStatus::Resolved).then_some(1_764_410_670_000),
        acknowledged: None,
        flapping: false,
        generator_url: "http://prometheus:9090/graph?g0.expr=up&g0.tab=1".into(),
    }
}

fn notification(alerts: Vec<NotifiedAlert>) -> Notification {
    Notification {
        id: "team-ops.1a2b.1".into(),
        kind: NotificationKind::Group,
        receiver: "team-ops".into(),
        status: AlertStatus::Firing,
        priority: Priority::P1,
        group_key: "{}:{alertname=\"HighLatency\"}".into(),
        group_labels: [("alertname".to_string(), "HighLatency".to_string())].into(),
        common_labels: [("alertname".to_string(), "HighLatency".to_string())].into(),
        common_annotations: Default::default(),
        alerts,
        truncated: 0,
        storm: None,
        created_at: 1_764_410_700_000,
        sequence: 1,
    }
}

#[test]
fn dingtalk_signatures_match_the_official_algorithm() {
    // Vectors computed with DingTalk's Python sample (hmac, base64, quote_plus).
    assert_eq!(
        dingtalk::sign(1_700_000_000_000, "this is secret"),
        "sSFWELbV2YwjdDQhWZwTcWlX5BWUx5J6TPpsZmuPii0="
    );
    assert_eq!(
        dingtalk::sign(1_700_000_000_002, "SEC0123456789abcdef"),
        "VGvd0brDJp/nMZtR+XnA3yBIlhowT+TwkRPua0q1/jg="
    );
    let mut url =
        reqwest::Url::parse("https://oapi.dingtalk.com/robot/send?access_token=t").unwrap();
    url.query_pairs_mut()
        .append_pair("sign", "VGvd0brDJp/nMZtR+XnA3yBIlhowT+TwkRPua0q1/jg=");
    assert!(url
        .as_str()
        .ends_with("sign=VGvd0brDJp%2FnMZtR%2BXnA3yBIlhowT%2BTwkRPua0q1%2Fjg%3D"));
}

#[test]
fn dingtalk_errcodes_are_classified() {
    assert_eq!(dingtalk::classify(0, "ok"), None);
    assert!(
        dingtalk::classify(130101, "send too fast")
            .unwrap()
            .transient
    );
    assert!(
        !dingtalk::classify(310000, "sign not match")
            .unwrap()
            .transient
    );
    assert!(
        !dingtalk::classify(300001, "token is not exist")
            .unwrap()
            .transient
    );
}

#[test]
fn webhook_payload_is_alertmanagers_version_4_byte_for_byte() {
    let n = notification(vec![
        alert(
            "1a30ba71cca2921f",
            AlertStatus::Firing,
            "p99 <latency> & more",
        ),
        alert(
            "9d2c4b1e0f7a6c35",
            AlertStatus::Resolved,
            "p99 latency above 2s",
        ),
    ]);
    let body = String::from_utf8(webhook::payload(&n, "http://prismwatch:9464", 0)).unwrap();
    let expected = concat!(
        r#"{"receiver":"team-ops","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"HighLatency","instance":"api-1:9090"},"annotations":{"summary":"p99 \u003clatency\u003e \u0026 more"},"startsAt":"2025-11-29T10:00:00.123Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=up\u0026g0.tab=1","fingerprint":"1a30ba71cca2921f"},"#,
        r#"{"status":"resolved","labels":{"alertname":"HighLatency","instance":"api-1:9090"},"annotations":{"summary":"p99 latency above 2s"},"startsAt":"2025-11-29T10:00:00.123Z","endsAt":"2025-11-29T10:04:30Z","generatorURL":"http://prometheus:9090/graph?g0.expr=up\u0026g0.tab=1","fingerprint":"9d2c4b1e0f7a6c35"}],"#,
        r#""groupLabels":{"alertname":"HighLatency"},"commonLabels":{"alertname":"HighLatency"},"commonAnnotations":{},"externalURL":"http://prismwatch:9464","version":"4","groupKey":"{}:{alertname=\"HighLatency\"}","truncatedAlerts":0}"#,
        "\n"
    );
    assert_eq!(body, expected);
    let cut = String::from_utf8(webhook::payload(&n, "", 1)).unwrap();
    assert!(cut.ends_with("\"truncatedAlerts\":1}\n"));
    // Python: hmac.new(b"s3cret", b"{}", hashlib.sha256).hexdigest()
    assert_eq!(
        webhook::signature("s3cret", b"{}"),
        "sha256=adbde1ce40c89c14215687d5d762a47df6dfaefcfad61e2e86718ffc8498571b"
    );
}

#[test]
fn big_notifications_are_cut_to_the_services_limits_with_a_count() {
    let many: Vec<NotifiedAlert> = (0..400)
        .map(|i| alert(&format!("{i:016x}"), AlertStatus::Firing, &"x".repeat(200)))
        .collect();
    let n = notification(many);
    let cfg = crate::notify::config::NotifyConfig::default();
    let http = http_client();
    let ctx = Ctx {
        http: &http,
        cfg: &cfg,
        now_ms: 0,
    };
    let dt = crate::notify::config::DingTalkConfig {
        url: crate::notify::config::Secret::Env("X".into()),
        secret: None,
        message_type: "markdown".into(),
        at_mobiles: vec!["13800000000".into()],
        common: Default::default(),
    };
    let ch = ChannelConfig::DingTalk(dt.clone());
    let body = dingtalk::message(&dt, &n, &ctx, &ch).unwrap();
    assert!(body.len() <= dingtalk::MAX_BODY, "{}", body.len());
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = v["markdown"]["text"].as_str().unwrap();
    assert!(text.contains("more alerts"), "{text}");
    assert!(text.ends_with("@13800000000"));
    assert_eq!(v["at"]["atMobiles"][0], "13800000000");

    let slack = ChannelConfig::Slack(crate::notify::config::SlackConfig {
        url: crate::notify::config::Secret::Env("X".into()),
        common: Default::default(),
    });
    let m = slack::message(&n, &ctx, &slack).unwrap();
    assert!(m["blocks"].as_array().unwrap().len() <= 50);
    assert_eq!(m["attachments"][0]["color"], "#D00000");
    assert!(!m["text"].as_str().unwrap().is_empty());
}

#[test]
fn dingtalk_action_cards_and_pagerduty_acknowledgements() {
    let mut n = notification(vec![alert(
        "1a30ba71cca2921f",
        AlertStatus::Firing,
        "p99 high",
    )]);
    let cfg = crate::notify::config::NotifyConfig {
        external_url: "https://pw.example".into(),
        ..Default::default()
    };
    let http = http_client();
    let ctx = Ctx {
        http: &http,
        cfg: &cfg,
        now_ms: 0,
    };
    let dt = crate::notify::config::DingTalkConfig {
        url: crate::notify::config::Secret::Env("X".into()),
        secret: None,
        message_type: "action_card".into(),
        at_mobiles: vec![],
        common: Default::default(),
    };
    let body = dingtalk::message(&dt, &n, &ctx, &ChannelConfig::DingTalk(dt.clone())).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["msgtype"], "actionCard");
    assert_eq!(
        v["actionCard"]["singleURL"],
        "https://pw.example/alerts/1a30ba71cca2921f-1764000000000"
    );
    assert_eq!(v["actionCard"]["title"], "[FIRING:1] P1 HighLatency");

    let e = pagerduty::event("k", &n.alerts[0], "");
    assert_eq!(e["event_action"], "trigger");
    assert_eq!(e["payload"]["severity"], "critical");
    assert_eq!(e["payload"]["source"], "api-1:9090"); // the instance label
    n.alerts[0].acknowledged = Some(crate::model::AckInfo {
        by: "ana".into(),
        at: 1,
        comment: String::new(),
        expires_at: None,
    });
    let e = pagerduty::event("k", &n.alerts[0], "");
    assert_eq!(e["event_action"], "acknowledge");
    assert_eq!(e["dedup_key"], "1a30ba71cca2921f-1764000000000");
    assert!(e.get("payload").is_none());
}

//! The exchange-health component against a real nats-server: it reads the exchanges' metrics,
//! publishes each exchange's score, the platform's and the cross-exchange deviations as metrics
//! every event-time minute, and the processor alerts on them with the shipped rules: one
//! exchange lagging its peers loses health and stands out; the others do not.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use prismwatch::app::Component;
use prismwatch::model::{AlertStatus, MetricPoint};

const MIN: i64 = 60_000;
const EXCHANGES: [&str; 3] = ["binance", "okx", "deribit"];

fn point(name: &str, exchange: &str, ts: i64, value: f64) -> MetricPoint {
    MetricPoint {
        name: name.into(),
        labels: [("exchange".to_string(), exchange.to_string())].into(),
        value,
        timestamp: ts,
    }
}

/// Two hours, one point of every input a minute; okx from minute 100 to 115: 8 s behind,
/// 550 ms round trips and half its usual message rate.
fn history(t0: i64) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for m in 0..120 {
        let ts = t0 + m * MIN;
        for (k, ex) in EXCHANGES.iter().enumerate() {
            let lag = *ex == "okx" && (100..115).contains(&m);
            let rate = [1200.0, 900.0, 400.0][k] * if lag { 0.5 } else { 1.0 };
            out.extend([
                point("exchange_connection_status", ex, ts, 1.0),
                point("exchange_message_rate", ex, ts, rate),
                point(
                    "exchange_latency_ms",
                    ex,
                    ts,
                    if lag { 550.0 } else { 45.0 },
                ),
                point("exchange_error_rate_percent", ex, ts, 0.1),
                point(
                    "market_data_delay_seconds",
                    ex,
                    ts,
                    if lag { 8.0 } else { 0.3 },
                ),
            ]);
        }
    }
    out
}

/// The health points published so far, by (series name, labels) → [(minute, value)].
async fn health_points(
    js: &async_nats::jetstream::Context,
    t0: i64,
) -> BTreeMap<(String, Vec<(String, String)>), Vec<(i64, f64)>> {
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (subject, _, payload) in common::read_stream(js, "PRISM_METRICS").await {
        if !subject.contains(".health.") {
            continue;
        }
        // One point is sent as a map, more as an array.
        let points: Vec<MetricPoint> = rmp_serde::from_slice(&payload)
            .or_else(|_| rmp_serde::from_slice(&payload).map(|p| vec![p]))
            .unwrap();
        for p in points {
            let labels = p.labels.into_iter().collect();
            out.entry((p.name, labels))
                .or_default()
                .push(((p.timestamp - t0) / MIN, p.value));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_exchange_loses_health_and_stands_out_from_its_peers() {
    let (_srv, mut cfg, js) = common::fresh().await;
    // Its history lies in the past: publish all of it.
    cfg.health.backfill_minutes = 300;
    let app = common::RunningApp::start_with(
        cfg,
        common::rules(&std::fs::read_to_string("config/rules/health.yaml").unwrap()),
        vec![Component::Processor, Component::Health],
    );
    let t0 = prismwatch::tools::clock::now_ms() / MIN * MIN - 130 * MIN;
    common::publish(&js, &history(t0), 5).await;

    // The last minutes closed (the newest point is minute 119, the grace 30 s).
    common::wait_for(
        "the health of minute 117",
        Duration::from_secs(30),
        || async {
            health_points(&js, t0)
                .await
                .get(&("platform_health_score".to_string(), vec![]))
                .is_some_and(|v| v.iter().any(|(m, _)| *m == 118))
        },
    )
    .await;
    let pts = health_points(&js, t0).await;
    let score = |ex: &str, minute: i64| {
        pts[&(
            "exchange_health_score".to_string(),
            vec![("exchange".to_string(), ex.to_string())],
        )]
            .iter()
            .find(|(m, _)| *m == minute + 1)
            .map(|(_, v)| *v)
            .unwrap()
    };
    // Minute 105, written at its end: okx's delay scores (10 − 8) / 9, its latency
    // (1000 − 550) / 900, its rate half its last hour's median (0.5 → (0.5 − 0.2) / 0.8).
    let okx = 100.0 * (0.3 * 0.375 + 0.2 * 0.5 + 0.2 + 0.3 * 2.0 / 9.0);
    assert!(
        (score("okx", 105) - okx).abs() < 1e-9,
        "{}",
        score("okx", 105)
    );
    assert_eq!(score("okx", 90), 100.0);
    assert_eq!(score("okx", 117), 100.0, "recovered");
    for ex in ["binance", "deribit"] {
        assert_eq!(score(ex, 105), 100.0);
    }
    let deviation = |ex: &str, metric: &str, minute: i64| {
        pts[&(
            "exchange_peer_deviation".to_string(),
            vec![
                ("exchange".to_string(), ex.to_string()),
                ("signal".to_string(), metric.to_string()),
            ],
        )]
            .iter()
            .find(|(m, _)| *m == minute + 1)
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert!(deviation("okx", "market_data_delay_seconds", 105) > 10.0);
    assert!(deviation("binance", "market_data_delay_seconds", 105).abs() < 1.0);
    // Every minute once, however many times the component ran over it.
    let platform = &pts[&("platform_health_score".to_string(), vec![])];
    let minutes: std::collections::BTreeSet<i64> = platform.iter().map(|(m, _)| *m).collect();
    assert_eq!(minutes.len(), platform.len());

    // The processor alerts on the published series with the shipped rules: okx only.
    common::wait_for(
        "exchange_behind_peers to resolve",
        Duration::from_secs(30),
        || async {
            common::alert_events(&js)
                .await
                .iter()
                .any(|e| e.rule == "exchange_behind_peers" && e.status == AlertStatus::Resolved)
        },
    )
    .await;
    let events = common::alert_events(&js).await;
    let firing: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e.status == AlertStatus::Firing)
        .map(|e| {
            (
                e.rule.clone(),
                e.labels.get("exchange").cloned().unwrap_or_default(),
                e.labels.get("signal").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert!(firing.iter().all(|(_, ex, _)| ex == "okx"), "{firing:?}");
    assert!(firing
        .iter()
        .any(|(r, _, s)| r == "exchange_behind_peers" && s == "market_data_delay_seconds"));
    assert!(
        firing.iter().any(|(r, _, _)| r == "exchange_health_low"),
        "{firing:?}"
    );
    app.stop().await.unwrap();
}

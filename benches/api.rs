//! `cargo bench --bench api`: requests/s and latency of the HTTP API with 10 k active alerts,
//! against a real nats-server and alert manager in this process: listing (a page, a filtered
//! list, all 10 k) and acknowledging (each a command the manager applies and answers).

#[path = "../tests/common/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use nats::NatsServer;
use prismwatch::api::config::{ApiKey, Role};
use prismwatch::app::{self, Component};
use prismwatch::config::secret::Secret;
use prismwatch::config::Config;
use prismwatch::model::{AlertEvent, AlertStatus, Priority};
use prismwatch::rules::RuleSet;
use prismwatch::{bus, subjects};

#[derive(Parser)]
#[command(name = "api bench")]
struct Cli {
    #[arg(long, default_value_t = 10_000)]
    alerts: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

const KEY: &str = "bench-operator-key-0123456789";

fn event(i: usize) -> AlertEvent {
    let fingerprint = format!("{i:016x}");
    let labels: BTreeMap<String, String> = [
        ("exchange", format!("ex{}", i % 20)),
        ("service", format!("svc{}", i % 1000)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    AlertEvent {
        id: format!("{fingerprint}-1764000000000"),
        fingerprint,
        rule: format!("r{}", i % 50),
        priority: Priority::ALL[i % 4],
        status: AlertStatus::Firing,
        labels,
        annotations: [("summary".to_string(), format!("bench alert {i}"))].into(),
        value: i as f64,
        score: 1.0,
        starts_at: 1_764_000_000_000,
        ends_at: None,
        end_reason: None,
        event_time: 1_764_000_000_000,
    }
}

/// `n` requests from `clients` concurrent clients; (requests/s, p50 ms, p99 ms).
async fn measure<F, Fut>(n: usize, clients: usize, f: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (f, hist) = (f.clone(), hist.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..n).step_by(clients) {
                let t = Instant::now();
                f(i).await;
                hist.lock()
                    .unwrap()
                    .record(t.elapsed().as_micros() as u64)
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let h = hist.lock().unwrap();
    (
        rate,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let server = NatsServer::start();
            let dir = tempfile::tempdir()?;
            let routing = dir.path().join("routing.yaml");
            std::fs::write(&routing, "route: {receiver: team, group_by: [alertname]}\nreceivers: [{name: team}]\n")?;
            let key = dir.path().join("key");
            std::fs::write(&key, KEY)?;
            let listen = {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                l.local_addr()?.to_string()
            };
            let mut cfg = Config::default();
            cfg.nats.url = server.url();
            cfg.http.listen = listen.clone();
            cfg.alerting.routing_file = routing;
            cfg.alerting.storm.enabled = false;
            cfg.api.keys = vec![ApiKey { name: "bench".into(), role: Role::Operator, key: Secret::File(key) }];
            // The bench measures the API, not its per-client limit.
            cfg.api.rate_limit_per_second = 0;
            let js = jetstream::new(bus::connect(&cfg.nats).await?);
            bus::ensure_streams(&js, &cfg.streams).await?;
            let stop = CancellationToken::new();
            let run = tokio::spawn(app::run(cfg, RuleSet::default(), vec![Component::Manager], stop.clone()));
            // Acks awaited a thousand at a time (the client bounds acks in flight).
            let mut acks = Vec::new();
            for i in 0..cli.alerts {
                let e = event(i);
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", e.msg_id().as_str());
                acks.push(
                    js.publish_with_headers(
                        subjects::alert_subject(e.priority, e.status, &e.rule),
                        h,
                        serde_json::to_vec(&e)?.into(),
                    )
                    .await?,
                );
                if acks.len() == 1_000 || i + 1 == cli.alerts {
                    for a in acks.drain(..) {
                        a.await?;
                    }
                }
            }
            let http = reqwest::Client::new();
            let base = format!("http://{listen}");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let r = http.get(format!("{base}/api/v1/alerts?limit=1")).bearer_auth(KEY).send().await;
                if let Ok(r) = r {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        if v["count"] == cli.alerts {
                            break;
                        }
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "the API never showed {} alerts", cli.alerts);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("## HTTP API with {} active alerts ({} concurrent clients, loopback, a real nats-server and alert manager)", cli.alerts, cli.clients);
            println!("| request | requests/s | p50 | p99 |");
            println!("|---|---|---|---|");
            let get = |path: String| {
                let (http, base) = (http.clone(), base.clone());
                move |_: usize| {
                    let (http, url) = (http.clone(), format!("{base}{path}"));
                    async move {
                        let r = http.get(url).bearer_auth(KEY).send().await.unwrap();
                        assert!(r.status().is_success());
                        r.bytes().await.unwrap();
                    }
                }
            };
            for (name, path, n) in [
                ("list, first page (500)", "/api/v1/alerts".to_string(), 2_000),
                ("list, filtered (P1 on one exchange: 500 match)", "/api/v1/alerts?priority=p1&matchers=exchange%3Dex4".to_string(), 2_000),
                ("list, all 10,000", "/api/v1/alerts?limit=10000".to_string(), 100),
                ("one alert with its history", "/api/v1/alerts/0000000000000007-1764000000000".to_string(), 5_000),
            ] {
                let (rate, p50, p99) = measure(n, cli.clients, get(path)).await;
                println!("| {name} | {rate:.0} | {p50:.2} ms | {p99:.2} ms |");
            }
            let ack = {
                let (http, base, alerts) = (http.clone(), base.clone(), cli.alerts);
                move |i: usize| {
                    let (http, url) = (http.clone(), format!("{base}/api/v1/alerts/{:016x}-1764000000000/ack", i % alerts));
                    async move {
                        let r = http.post(url).bearer_auth(KEY).json(&serde_json::json!({"comment": "bench"})).send().await.unwrap();
                        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                    }
                }
            };
            let (rate, p50, p99) = measure(2_000, cli.clients, ack).await;
            println!("| ack (a command the manager applies, stores and answers) | {rate:.0} | {p50:.2} ms | {p99:.2} ms |");
            stop.cancel();
            run.await??;
            Ok(())
        })
}

//! `prismwatch demo`: a NATS server (the configured one, or a local throw-away one), the
//! processor, and a generator of MarketPrism-like metrics with scripted incidents, accelerated:
//! event time runs `speed` times faster than the wall clock, ending at the present.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{clock, publish, server::LocalNatsServer, tail};
use crate::app::{self, Component};
use crate::bus;
use crate::config::Config;
use crate::ingest::Encoding;
use crate::model::{AlertStatus, MetricPoint};
use crate::rules::RuleSet;

pub const EXCHANGES: [&str; 3] = ["binance", "okx", "deribit"];
pub const SERVICES: [&str; 3] = ["api-gateway", "collector", "storage"];
/// Event time between two samples of every series.
pub const STEP_MS: i64 = 10_000;
/// Length of the scripted scenario, in event-time minutes.
pub const SCENARIO_MINUTES: i64 = 110;

/// The scripted incidents, for humans (printed at start).
pub const SCRIPT: &[&str] = &[
    "min 20-26  binance connection down          -> exchange_disconnected P1 fires after 1m, resolves;",
    "                                               its health score drops to 0: exchange_health_low P2 after 3m",
    "min 35-41  api-gateway memory 91%           -> memory_high P2 fires after 5m, resolves",
    "min 50-54  okx market data 8 s behind       -> pending only: 4m < for 5m, cancelled, no page;",
    "                                               its peers are not: exchange_behind_peers P3 (exchange health)",
    "min 60     deribit message-rate burst       -> message_rate_anomaly P3 (fused detectors), resolves",
    "min 64-67  api-gateway down (service_up 0)  -> SLO burn: slo_api_gateway_availability_page P1 after 1m (and page_slow P2), resolve 5m after",
    "min 60-80  storage disk fills 60% -> 96%    -> disk_full_predicted_p1 (graded: full within 6h) warns ahead, then disk_full P1",
    "min 85-100 collector CPU 90%                -> cpu_high P2 fires after 10m, resolves",
];

/// The PrismWatch processes registered on a server: `<group> member <id>` for each member
/// entry of the lease bucket (processors and alert managers renew them while they run).
async fn running_members(js: &jetstream::Context) -> Vec<String> {
    use futures::StreamExt;
    let Ok(kv) = js.get_key_value(crate::subjects::LEASE_BUCKET).await else {
        return Vec::new();
    };
    let Ok(mut keys) = kv.keys().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(Ok(k)) = keys.next().await {
        if let Some(rest) = k.strip_prefix("member.") {
            if let Some((group, member)) = rest.split_once('.') {
                out.push(format!("{group} member {member}"));
            }
        }
    }
    out
}

/// Deterministic pseudo-noise in [-1, 1] for sample `i` of series `s`.
fn noise(i: i64, s: u64) -> f64 {
    let mut x =
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ s.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}

fn point(name: &str, label: (&str, &str), value: f64, ts: i64) -> MetricPoint {
    let mut labels = BTreeMap::new();
    labels.insert(label.0.to_string(), label.1.to_string());
    MetricPoint {
        name: name.into(),
        labels,
        value: (value * 1000.0).round() / 1000.0,
        timestamp: ts,
    }
}

/// All points of tick `i` (event time `ts`), one batch per exchange and per service.
pub fn tick(i: i64, ts: i64) -> Vec<Vec<MetricPoint>> {
    let minute = i * STEP_MS / 60_000;
    let mut out = Vec::new();
    for (k, ex) in EXCHANGES.iter().enumerate() {
        let s = k as u64 * 16;
        let l = ("exchange", *ex);
        let down = *ex == "binance" && (20..26).contains(&minute);
        let delayed = *ex == "okx" && (50..54).contains(&minute);
        let burst = *ex == "deribit" && minute == 60 && i % 6 == 0;
        let base_rate = [1200.0, 900.0, 400.0][k];
        let rate = if down {
            0.0
        } else if burst {
            base_rate * 4.0
        } else {
            base_rate * (1.0 + 0.02 * noise(i, s))
        };
        out.push(vec![
            point(
                "exchange_connection_status",
                l,
                if down { 0.0 } else { 1.0 },
                ts,
            ),
            point("exchange_message_rate", l, rate, ts),
            point(
                "market_data_delay_seconds",
                l,
                if delayed {
                    8.0 + noise(i, s + 1)
                } else {
                    0.3 + 0.1 * noise(i, s + 1)
                },
                ts,
            ),
            point("exchange_latency_ms", l, 45.0 + 5.0 * noise(i, s + 2), ts),
            point(
                "exchange_error_rate_percent",
                l,
                0.1 + 0.05 * noise(i, s + 3),
                ts,
            ),
        ]);
    }
    for (k, svc) in SERVICES.iter().enumerate() {
        let s = 100 + k as u64 * 16;
        let l = ("service", *svc);
        let mem = if *svc == "api-gateway" && (35..41).contains(&minute) {
            91.0
        } else {
            55.0 + 3.0 * noise(i, s)
        };
        // The storage disk fills steadily from minute 60 and is cleaned up at minute 80.
        let filling = *svc == "storage" && (60..80).contains(&minute);
        let disk = if filling {
            60.0 + 36.0 * (i * STEP_MS - 3_600_000) as f64 / 1_200_000.0 + 0.2 * noise(i, s + 1)
        } else {
            60.0 + 0.5 * noise(i, s + 1)
        };
        let cpu = if *svc == "collector" && (85..100).contains(&minute) {
            90.0
        } else {
            35.0 + 5.0 * noise(i, s + 2)
        };
        let down = *svc == "api-gateway" && (64..67).contains(&minute);
        out.push(vec![
            point("service_up", l, if down { 0.0 } else { 1.0 }, ts),
            point("cpu_usage_percent", l, cpu, ts),
            point("memory_usage_percent", l, mem, ts),
            point("disk_usage_percent", l, disk, ts),
            point("api_error_rate_percent", l, 0.5 + 0.2 * noise(i, s + 3), ts),
            point(
                "api_response_time_ms",
                l,
                120.0 + 20.0 * noise(i, s + 4),
                ts,
            ),
        ]);
    }
    out.push(vec![point(
        "nats_consumer_pending_messages",
        ("consumer", "storage-writer"),
        (50.0 + 40.0 * noise(i, 999)).max(0.0),
        ts,
    )]);
    out
}

/// Runs the demo: returns the count of (firing, resolved) events seen.
pub async fn run(mut cfg: Config, rules: RuleSet, speed: f64) -> anyhow::Result<(usize, usize)> {
    let _local: Option<LocalNatsServer>;
    // A server where PrismWatch already runs is not the demo's: its processors would take the
    // demo's points (dropping them as late, or alerting on them for real).
    let busy = match bus::connect(&cfg.nats).await {
        Ok(client) => {
            let members = running_members(&jetstream::new(client)).await;
            if members.is_empty() {
                None
            } else {
                Some(members)
            }
        }
        Err(e) => Some(vec![format!("no usable server ({e})")]),
    };
    match busy {
        None => {
            println!("using the NATS server at {}", cfg.nats.url);
            _local = None;
        }
        Some(why) => {
            if why.iter().any(|w| w.starts_with("no usable server")) {
                println!("{}: {}; starting a local one", cfg.nats.url, why.join(", "));
            } else {
                println!(
                    "the NATS server at {} is in use by a running PrismWatch ({}): the demo starts a server of its own, so that its metrics and alerts stay out of yours",
                    cfg.nats.url,
                    why.join(", ")
                );
            }
            let server = LocalNatsServer::start()?;
            cfg.nats.url = server.url();
            println!("local nats-server with JetStream at {}", cfg.nats.url);
            _local = Some(server);
        }
    }
    // A processor group of its own, and no HTTP listener (another process may hold its port).
    cfg.ingest.consumer_name = format!("prismwatch-demo-{}", clock::now_ms());
    cfg.http.listen = String::new();
    let client = bus::connect(&cfg.nats).await?;
    let js = jetstream::new(client);
    bus::ensure_streams(&js, &cfg.streams).await?;

    let stop = CancellationToken::new();
    // The health component publishes every minute of the scenario (it lies in the past).
    cfg.health.backfill_minutes = SCENARIO_MINUTES as u64 + 10;
    let processor = tokio::spawn(app::run(
        cfg.clone(),
        rules,
        vec![Component::Processor, Component::Health],
        stop.clone(),
    ));

    let ticks = SCENARIO_MINUTES * 60_000 / STEP_MS;
    let start_ts = clock::now_ms() - ticks * STEP_MS;
    let expected_firing = 12;
    println!("scenario: {SCENARIO_MINUTES} minutes of market-data metrics, {speed}x faster than real time");
    for line in SCRIPT {
        println!("  {line}");
    }
    println!();

    let (seen_tx, mut seen_rx) = watch::channel((0usize, 0usize));
    let tail_js = js.clone();
    let alerts_stream = cfg.streams.alerts.name.clone();
    let filter = crate::subjects::alert_filter(None, None, None);
    let printer = tokio::spawn(async move {
        let (mut firing, mut resolved) = (0, 0);
        let _ = tail::follow(&tail_js, &alerts_stream, &filter, false, |e| {
            println!("{}", tail::format_event(&e));
            match e.status {
                AlertStatus::Firing => firing += 1,
                AlertStatus::Resolved => resolved += 1,
                _ => {}
            }
            let _ = seen_tx.send((firing, resolved));
            true
        })
        .await;
    });

    let tick_wall = Duration::from_secs_f64(STEP_MS as f64 / 1000.0 / speed.max(1.0));
    let mut interval = tokio::time::interval(tick_wall);
    // Tail a little past the scenario so the last resolutions pass the watermark.
    for i in 0..ticks + 12 {
        interval.tick().await;
        let ts = start_ts + i * STEP_MS;
        for batch in tick(i, ts) {
            publish::publish_points(&js, &batch, batch.len(), Encoding::MsgPack, None).await?;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while seen_rx.borrow().1 < expected_firing {
            if seen_rx.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let (firing, resolved) = *seen_rx.borrow();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), processor).await;
    printer.abort();
    println!("\ndemo done: {firing} alerts fired, {resolved} resolved");
    Ok((firing, resolved))
}

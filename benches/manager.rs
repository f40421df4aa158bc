//! `cargo bench --bench manager`: what the alert manager sustains, with the shipped routes plus
//! 100 inhibition rules and 1,000 silences, at 10 k and 100 k active alerts:
//! - the manager's logic alone (routing, grouping, silences, inhibition, timers, the records it
//!   would store serialised), alert creations/s and memory per active alert;
//! - the whole manager against a real nats-server (`prismwatch run --only manager` in this
//!   process): alert events published to PRISM_ALERTS, consumed, state stored in KV; alerts/s
//!   from the first publish to the stored cursor passing the last event.
//!
//! Storm protection is switched off here (it would collapse these bursts into one summary,
//! which is cheaper): the figures are for the per-group path.

#[path = "../tests/common/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use nats::NatsServer as LocalNatsServer;
use prismwatch::alerting::command::{Command, CommandBody};
use prismwatch::alerting::config::Routing;
use prismwatch::alerting::core::Manager;
use prismwatch::alerting::matchers::MatcherDef;
use prismwatch::alerting::AlertingConfig;
use prismwatch::app::{self, Component};
use prismwatch::config::Config;
use prismwatch::model::{AlertEvent, AlertStatus, Priority};
use prismwatch::rules::RuleSet;
use prismwatch::{bus, subjects};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "manager bench", about = "Benchmark the alert manager")]
struct Cli {
    /// Active alert counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    active: Vec<usize>,
    /// New alerts measured on top of each active count.
    #[arg(long, default_value_t = 20_000)]
    measured: usize,
    #[arg(long, default_value_t = 1_000)]
    silences: usize,
    #[arg(long, default_value_t = 100)]
    inhibitions: usize,
    /// Only the manager's logic (no nats-server).
    #[arg(long)]
    core_only: bool,
    /// Internal: measure the logic at this one active count in this fresh process (so its RSS
    /// growth is its own) and print the table row.
    #[arg(long, hide = true)]
    core_one: Option<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const T0: i64 = 1_764_000_000_000;
const RULES: usize = 50;
const EXCHANGES: usize = 20;
const SERVICES: usize = 1_000;
const SYMBOLS: usize = 10_000;

/// The shipped routes plus `n` inhibition rules: each mutes one rule's alerts on an exchange
/// while a source alert fires there.
fn routing_text(n: usize) -> anyhow::Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/routing.yaml");
    let mut doc: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(path)?)?;
    let rules = doc["inhibit_rules"]
        .as_sequence_mut()
        .context("inhibit_rules")?;
    for k in 0..n {
        rules.push(serde_norway::from_str(&format!(
            "{{name: bench_{k}, source_match: {{alertname: inh_src_{k}}}, target_match: {{alertname: r{}}}, equal: [exchange]}}",
            k % RULES
        ))?);
    }
    Ok(serde_norway::to_string(&doc)?)
}

fn priority(i: usize) -> Priority {
    Priority::ALL[i % 4]
}

/// Alert `i`: rule r<i%50> on service svc<i%1000> of exchange ex<i%20>, one in a hundred a
/// source of an inhibition rule.
fn event(i: usize, status: AlertStatus, now: i64) -> AlertEvent {
    let rule = if i % 100 == 7 {
        format!("inh_src_{}", (i / 100) % 100)
    } else {
        format!("r{}", i % RULES)
    };
    let fingerprint = format!("{:016x}", i as u64 ^ 0x5eed_0000_0000_0000);
    let starts_at = T0;
    let labels: BTreeMap<String, String> = [
        ("exchange", format!("ex{}", i % EXCHANGES)),
        ("service", format!("svc{}", i % SERVICES)),
        ("symbol", format!("SYM{}", i % SYMBOLS)),
        ("metric", "bench_metric".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    AlertEvent {
        id: format!("{fingerprint}-{starts_at}"),
        fingerprint,
        rule,
        priority: priority(i),
        status,
        labels,
        annotations: [("summary".to_string(), format!("bench alert {i}"))].into(),
        value: i as f64,
        score: 1.0,
        starts_at,
        ends_at: (status == AlertStatus::Resolved).then_some(now),
        end_reason: None,
        event_time: now,
    }
}

/// Silence `j`: 9 in 10 on one symbol and rule (an equality: found through the label index),
/// 1 in 10 a regex on symbols (checked against every alert); together they mute about 9 % of
/// the alerts.
fn silence_command(j: usize) -> Command {
    let matchers = if j % 10 == 9 {
        vec![
            MatcherDef::parse(&format!("symbol=~SYM{j}[0-9]")).unwrap(),
            MatcherDef::parse("priority=P4").unwrap(),
        ]
    } else {
        vec![
            MatcherDef::parse(&format!("symbol=SYM{j}")).unwrap(),
            MatcherDef::parse(&format!("alertname=r{}", j % RULES)).unwrap(),
        ]
    };
    Command {
        request_id: format!("bench-silence-{j}"),
        principal: "bench".into(),
        at: T0,
        body: CommandBody::SilenceCreate {
            id: None,
            matchers,
            starts_at: None,
            ends_at: T0 + 30 * 86_400_000,
            comment: "bench".into(),
            created_by: None,
        },
    }
}

fn settings() -> AlertingConfig {
    let mut cfg = AlertingConfig::default();
    cfg.storm.max_alerts = usize::MAX / 2;
    cfg.max_alerts = 1_000_000;
    cfg
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Feeds events `from..to` as firing, 1 ms of manager time each, moving timers and serialising
/// what would be stored every 100 events (the shell's step). Returns creations/s and the
/// notifications made.
fn feed(m: &mut Manager, now: &mut i64, from: usize, to: usize) -> (f64, usize) {
    let start = Instant::now();
    let mut notifications = 0;
    let mut bytes = 0usize;
    for i in from..to {
        *now += 1;
        m.on_event(&event(i, AlertStatus::Firing, *now), *now);
        if i % 100 == 99 || i + 1 == to {
            if m.next_deadline().is_some_and(|d| d <= *now) {
                m.on_time(*now);
            }
            let fx = m.take_effects();
            notifications += fx.notifications.len();
            for a in fx.alerts.values().flatten() {
                bytes += serde_json::to_vec(a).unwrap().len();
            }
            for l in fx.logs.values().flatten() {
                bytes += serde_json::to_vec(l).unwrap().len();
            }
            for n in &fx.notifications {
                bytes += serde_json::to_vec(n).unwrap().len();
            }
        }
    }
    std::hint::black_box(bytes);
    (
        (to - from) as f64 / start.elapsed().as_secs_f64(),
        notifications,
    )
}

fn core_bench(cli: &Cli) -> anyhow::Result<()> {
    println!("## Alert manager logic alone (one thread)");
    println!(
        "shipped routes + {} inhibition rules, {} silences; storm protection off; each count in a fresh process\n",
        cli.inhibitions, cli.silences
    );
    println!("| active alerts | creations/s while filling | creations/s at this count | notifications | RSS per active alert |");
    println!("|---|---|---|---|---|");
    for &active in &cli.active {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--core-one", &active.to_string()])
            .args(["--measured", &cli.measured.to_string()])
            .args(["--silences", &cli.silences.to_string()])
            .args(["--inhibitions", &cli.inhibitions.to_string()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "core run at {active}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!();
    Ok(())
}

fn core_one(cli: &Cli, active: usize) -> anyhow::Result<()> {
    let routing = Routing::parse("bench-routing.yaml", &routing_text(cli.inhibitions)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rss0 = rss_bytes();
    let mut m = Manager::new(settings(), routing);
    let mut now = T0;
    for j in 0..cli.silences {
        let r = m.on_command(&silence_command(j), now);
        anyhow::ensure!(r.ok, "silence {j}: {}", r.message);
    }
    m.take_effects();
    let (fill_rate, filled) = feed(&mut m, &mut now, 0, active);
    let rss = rss_bytes().saturating_sub(rss0);
    let (rate, measured) = feed(&mut m, &mut now, active, active + cli.measured);
    // Let every group flush once more, so groups and logs are in the count.
    now += 600_000;
    m.on_time(now);
    let flushed = m.take_effects().notifications.len();
    println!(
        "| {active} | {fill_rate:.0} | {rate:.0} | {} | {:.0} bytes |",
        filled + measured + flushed,
        rss as f64 / active as f64
    );
    Ok(())
}

/// The stored cursor of the manager's PRISM_ALERTS consumer.
async fn cursor(js: &jetstream::Context) -> u64 {
    let Ok(kv) = js.get_key_value(subjects::MANAGER_BUCKET).await else {
        return 0;
    };
    match kv.get("cursor.alerts").await {
        Ok(Some(v)) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

async fn publish_events(
    js: &jetstream::Context,
    from: usize,
    to: usize,
    now: i64,
) -> anyhow::Result<u64> {
    let mut last = 0;
    let mut acks = Vec::with_capacity(1_000);
    for i in from..to {
        let e = event(i, AlertStatus::Firing, now);
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
        if acks.len() == 1_000 || i + 1 == to {
            for a in acks.drain(..) {
                last = last.max(a.await?.sequence);
            }
        }
    }
    Ok(last)
}

async fn wait_cursor(js: &jetstream::Context, seq: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while cursor(js).await < seq {
        anyhow::ensure!(Instant::now() < deadline, "manager did not reach {seq}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn nats_bench(cli: &Cli) -> anyhow::Result<()> {
    println!("## Whole manager against nats-server (events in PRISM_ALERTS, state in KV)");
    println!("| active alerts | alerts/s while filling | alerts/s at this count | records in KV | KV bytes per alert |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let routing_file = dir.path().join("routing.yaml");
    std::fs::write(&routing_file, routing_text(cli.inhibitions)?)?;
    for &active in &cli.active {
        let server = LocalNatsServer::start();
        let mut cfg = Config::default();
        cfg.nats.url = server.url();
        cfg.alerting = AlertingConfig {
            routing_file: routing_file.clone(),
            ..settings()
        };
        let js = jetstream::new(bus::connect(&cfg.nats).await?);
        bus::ensure_streams(&js, &cfg.streams).await?;
        let stop = CancellationToken::new();
        let run = tokio::spawn(app::run(
            cfg.clone(),
            RuleSet::default(),
            vec![Component::Manager],
            stop.clone(),
        ));
        // Silences through the command subject, as the CLI makes them.
        let client = js.client();
        for j in 0..cli.silences {
            let c = silence_command(j);
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", c.request_id.as_str());
            js.publish_with_headers(
                format!("prism.cmd.{}", c.body.kind()),
                h,
                serde_json::to_vec(&c)?.into(),
            )
            .await?
            .await?;
        }
        let now = prismwatch::tools::clock::now_ms();
        let start = Instant::now();
        let last = publish_events(&js, 0, active, now).await?;
        wait_cursor(&js, last).await?;
        let fill = active as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let last = publish_events(&js, active, active + cli.measured, now).await?;
        wait_cursor(&js, last).await?;
        let rate = cli.measured as f64 / start.elapsed().as_secs_f64();
        let mut kv = js
            .get_stream(format!("KV_{}", subjects::ALERT_STATE_BUCKET))
            .await?;
        let state = kv.info().await?.state.clone();
        anyhow::ensure!(
            state.messages >= (active + cli.measured) as u64,
            "only {} alert records stored",
            state.messages
        );
        println!(
            "| {active} | {fill:.0} | {rate:.0} | {} | {:.0} |",
            state.messages,
            state.bytes as f64 / state.messages.max(1) as f64
        );
        stop.cancel();
        run.await??;
        bus::close(&client).await;
        drop(server);
    }
    println!();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(active) = cli.core_one {
        return core_one(&cli, active);
    }
    core_bench(&cli)?;
    if cli.core_only {
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(nats_bench(&cli))
}

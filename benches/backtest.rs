//! `cargo bench --bench backtest`: how fast `prismwatch backtest` runs history, next to the raw
//! replays of the same stream measured in the same run (an ordered consumer, and the backtest's
//! own reader without the evaluation), with the backbone operators (dedup, z-score) and with
//! every detector; and the time to backtest 7 days of the demo's metric set with the shipped
//! config, report included.
//!
//! A fresh nats-server on loopback holds `--days` of the demo's metrics (its 110-minute incident
//! script once a day, every 10 s, one message per exchange or service).

#[path = "../tests/common/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::time::Instant;

use async_nats::jetstream::{self, consumer};
use clap::Parser;
use futures::StreamExt;

use nats::NatsServer;
use prismwatch::alerting::config::Routing;
use prismwatch::backtest::{self, History, Options, TimeRange, Variant};
use prismwatch::bus;
use prismwatch::config::{builtin, Config};
use prismwatch::ingest::Encoding;
use prismwatch::processor::replay;
use prismwatch::rules::RuleSet;
use prismwatch::tools::{demo, publish};

// As in the binary: the allocator is part of what is measured.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "backtest bench")]
struct Cli {
    /// Days of demo metrics in the stream.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// Passes of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// One point per message (the demo's publishers send one message per exchange or service
    /// and tick, 4-5 points).
    #[arg(long)]
    single: bool,
    /// Only the backbone measurement (for profiling).
    #[arg(long)]
    backbone_only: bool,
    /// Shards per partition pipeline (`pipeline.shards`; above 1, decoding and the shards run
    /// on the pool).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn builtin_rules() -> RuleSet {
    let mut rules = RuleSet::default();
    for (name, text) in builtin::RULE_FILES {
        rules.add_file(name, text).expect("built-in rules");
    }
    rules
}

/// The shipped config and rules (every detector on every series), or the backbone operators
/// with the rules they can evaluate.
fn variant(url: &str, backbone: bool, shards: usize) -> Variant {
    let mut config = Config::default();
    config.nats.url = url.to_string();
    config.pipeline.shards = shards;
    let mut rules = builtin_rules();
    if backbone {
        config.pipeline.operators.truncate(2);
        // The shipped per-metric lists run detectors on some metrics: not the backbone.
        config.pipeline.metric_operators.clear();
        let problems: Vec<String> = config
            .pipeline
            .rule_problems(&rules)
            .into_iter()
            .map(|(_, rule, _)| rule)
            .collect();
        rules.rules.retain(|r| !problems.contains(&r.name));
    }
    Variant {
        name: if backbone { "backbone" } else { "shipped" }.into(),
        source: "bench".into(),
        config,
        rules,
        routing: Routing::parse("routing.yaml", builtin::ROUTING).expect("built-in routing"),
    }
}

/// `days` of the demo's metrics ending now, as the messages its publishers send.
fn demo_messages(days: i64, single: bool) -> anyhow::Result<(Vec<publish::OutMessage>, u64)> {
    let ticks_per_day = 86_400_000 / demo::STEP_MS;
    let start = prismwatch::tools::clock::now_ms() - days * 86_400_000;
    let (mut out, mut points) = (Vec::new(), 0u64);
    for i in 0..days * ticks_per_day {
        let ts = start + i * demo::STEP_MS;
        for batch in demo::tick(i % ticks_per_day, ts) {
            points += batch.len() as u64;
            let per_message = if single { 1 } else { batch.len() };
            out.extend(publish::messages(
                &batch,
                per_message,
                Encoding::MsgPack,
                None,
            )?);
        }
    }
    Ok((out, points))
}

/// Seconds an ordered consumer (async-nats' own, as `nats stream view` would read) takes to read
/// the whole stream, doing nothing with the messages.
async fn ordered_replay(
    js: &jetstream::Context,
    cfg: &Config,
    messages: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let consumer = js
        .get_stream(&cfg.streams.metrics.name)
        .await?
        .create_consumer(consumer::pull::OrderedConfig {
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let mut stream = consumer.messages().await?;
    let mut read = 0u64;
    while read < messages {
        let msg = stream
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("ordered replay ended"))??;
        std::hint::black_box(
            msg.info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence,
        );
        read += 1;
    }
    Ok(t.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = NatsServer::start();
    let url = server.url();
    let mut cfg = Config::default();
    cfg.nats.url = url.clone();
    let js = jetstream::new(bus::connect(&cfg.nats).await?);
    bus::ensure_streams(&js, &cfg.streams).await?;
    let t = Instant::now();
    let (demo, points) = demo_messages(cli.days, cli.single)?;
    publish::send(&js, &demo).await?;
    let messages = demo.len() as u64;
    println!(
        "stream: {} days of demo metrics, {messages} messages, {points} points (published in {:.1} s)",
        cli.days,
        t.elapsed().as_secs_f64()
    );
    let history = History::stream(js.clone(), &cfg, TimeRange::default(), (1, None), &[]).await?;
    let backbone = [variant(&url, true, cli.shards)];
    let shipped = [variant(&url, false, cli.shards)];
    // The same messages from memory, as `--input` gives them: the evaluation alone.
    let stored_at = prismwatch::tools::clock::now_ms();
    let in_memory = History::File {
        messages: demo
            .into_iter()
            .enumerate()
            .map(|(i, m)| prismwatch::ingest::Incoming {
                subject: m.subject.into(),
                payload: m.payload.into(),
                content_type: Some(m.content_type.into()),
                stream_seq: i as u64 + 1,
                published_ms: stored_at,
            })
            .collect(),
        describe: "memory".into(),
    };
    for (name, v) in [("backbone", &backbone), ("every detector", &shipped)] {
        if cli.backbone_only && name != "backbone" {
            continue;
        }
        let mut rates = Vec::new();
        for _ in 0..cli.repeats.max(1) {
            let t = Instant::now();
            backtest::evaluate(&in_memory, v, &[], true).await?;
            rates.push(points as f64 / t.elapsed().as_secs_f64());
        }
        println!(
            "evaluation alone (messages from memory, no server), {name}: {:.0} points/s (median of {})",
            median(rates),
            cli.repeats.max(1)
        );
    }

    let (mut ordered, mut raw, mut bb, mut all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for pass in 0..cli.repeats.max(1) {
        ordered.push(points as f64 / ordered_replay(&js, &cfg, messages).await?);

        let t = Instant::now();
        let mut read = 0u64;
        replay::read_range(&js, &cfg, 1, None, &[], |chunk, _| {
            read += chunk.len() as u64;
            Ok(())
        })
        .await?;
        anyhow::ensure!(read == messages, "raw replay read {read} of {messages}");
        raw.push(points as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let e = backtest::evaluate(&history, &backbone, &[], true).await?;
        anyhow::ensure!(e.points == points, "backtest ran {} of {points}", e.points);
        bb.push(points as f64 / t.elapsed().as_secs_f64());

        if cli.backbone_only {
            println!(
                "pass {}: ordered consumer {:.0} points/s, the backtest's reader {:.0}, backbone {:.0}",
                pass + 1,
                ordered[pass],
                raw[pass],
                bb[pass]
            );
            continue;
        }
        let t = Instant::now();
        let e = backtest::evaluate(&history, &shipped, &[], true).await?;
        all.push(points as f64 / t.elapsed().as_secs_f64());
        println!(
            "pass {}: ordered consumer {:.0} points/s, the backtest's reader {:.0}, backbone {:.0}, every detector {:.0} ({} alert events)",
            pass + 1,
            ordered[pass],
            raw[pass],
            bb[pass],
            all[pass],
            e.events[0].len()
        );
    }
    // The VM's speed drifts between passes: each pass's ratio is taken on its own pair.
    let paired = |xs: &[f64], base: &[f64]| {
        if xs.is_empty() {
            0.0
        } else {
            100.0 * median(xs.iter().zip(base).map(|(x, r)| x / r).collect())
        }
    };
    let shares = |xs: &[f64]| (paired(xs, &ordered), paired(xs, &raw));
    if cli.backbone_only {
        let (o, r) = shares(&bb);
        println!(
            "backbone {o:.0} % of the ordered consumer, {r:.0} % of its own reader (medians of paired passes)"
        );
        return Ok(());
    }
    println!();
    println!(
        "| path | points/s (median of {}) | share of the ordered-consumer replay | share of the backtest's reader alone |",
        cli.repeats
    );
    println!("|---|---|---|---|");
    println!(
        "| raw ordered-consumer replay | {:.0} | 100 % | {:.0} % |",
        median(ordered.clone()),
        paired(&ordered, &raw)
    );
    println!(
        "| raw replay by the backtest's reader | {:.0} | {:.0} % | 100 % |",
        median(raw.clone()),
        paired(&raw, &ordered)
    );
    for (name, xs) in [
        ("backtest, backbone operators", &bb),
        ("backtest, every detector (shipped config)", &all),
    ] {
        let (o, r) = shares(xs);
        println!(
            "| {name} | {:.0} | {o:.0} % | {r:.0} % |",
            median(xs.clone())
        );
    }

    // The whole job as a user runs it: the shipped config over the days, then the plots'
    // second read and the HTML page.
    let t = Instant::now();
    let out = backtest::run(
        &history,
        &shipped,
        &Options {
            plots: 30,
            quiet: true,
            ..Default::default()
        },
    )
    .await?;
    let page = backtest::html::render(&out.report)?;
    println!();
    println!(
        "{} days of the demo's metric set, shipped config, report with {} plots: {:.1} s ({} pages, {} alerts, HTML {} KiB)",
        cli.days,
        out.report.series.len(),
        t.elapsed().as_secs_f64(),
        out.report.variants[0].summary.pages,
        out.report.variants[0].summary.alerts,
        page.len() / 1024
    );
    Ok(())
}

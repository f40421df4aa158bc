//! `prismwatch bench`: what the processor sustains against a real nats-server, next to the raw
//! JetStream consume rate of the same messages in the same run; metric-to-alert latency at half
//! the measured maximum; state per series. Prints a report (the README's figures come from it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use super::{clock, publish, server::LocalNatsServer};
use crate::config::Config;
use crate::ingest::{decode_message, Encoding};
use crate::model::{AlertEvent, MetricPoint};
use crate::pipeline::operator::OperatorSpec;
use crate::pipeline::Pipeline;
use crate::rules::{load_rules, RuleSet};
use crate::{bus, runner, subjects};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Messages in the single-point scenario.
    #[arg(long, default_value_t = 300_000)]
    pub single_messages: usize,
    /// Points in the batched scenario (messages of 100 points).
    #[arg(long, default_value_t = 3_000_000)]
    pub batched_points: usize,
    /// Distinct series the points are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Seconds of paced load for the latency measurement.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Series created for the memory measurement.
    #[arg(long, default_value_t = 200_000)]
    pub memory_series: usize,
    /// Series for the every-detector memory measurement.
    #[arg(long, default_value_t = 2_000)]
    pub detector_series: usize,
    /// Points per series for the every-detector memory measurement (detector state grows with
    /// history until its bounds).
    #[arg(long, default_value_t = 3_000)]
    pub detector_points: usize,
    /// Internal: measure memory of one operator set (`backbone` or `all`) in this fresh process
    /// and print one JSON line (the bench runs itself this way, so each heap starts empty).
    #[arg(long, hide = true)]
    pub memory_only: Option<String>,
    /// Only measure latency, at this many messages/s (skips the throughput runs).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Points per message with --latency-rate.
    #[arg(long, default_value_t = 1)]
    pub latency_batch: usize,
}

const STEP_MS: i64 = 10_000;
const METRICS: [&str; 5] = [
    "cpu_usage_percent",
    "memory_usage_percent",
    "disk_usage_percent",
    "api_error_rate_percent",
    "api_response_time_ms",
];

/// Point `j` of series `k`: ordinary values, except that 1 % of the series fill their disk from
/// their 5th point on, so alerts are published during the run too.
fn bench_point(k: usize, j: usize, base: i64) -> MetricPoint {
    let name = METRICS[k % METRICS.len()];
    let wobble = ((k * 31 + j * 17) % 100) as f64 / 100.0;
    let value = match name {
        "disk_usage_percent" if k % 100 == 2 && j >= 5 => 95.0,
        "api_response_time_ms" => 100.0 + 20.0 * wobble,
        _ => 40.0 + 5.0 * wobble,
    };
    let mut labels = BTreeMap::new();
    labels.insert(
        "service".to_string(),
        format!("svc-{:05}", k / METRICS.len()),
    );
    labels.insert("region".to_string(), ["eu", "us", "ap"][k % 3].to_string());
    MetricPoint {
        name: name.to_string(),
        labels,
        value,
        timestamp: base + j as i64 * STEP_MS,
    }
}

fn workload(points: usize, series: usize, base: i64) -> Vec<MetricPoint> {
    (0..points)
        .map(|i| bench_point(i % series, i / series, base))
        .collect()
}

struct Rates {
    raw_msgs_per_s: f64,
    raw_points_per_s: f64,
    proc_msgs_per_s: f64,
    proc_points_per_s: f64,
    alerts: u64,
}

/// The pipeline with only the backbone operators (dedup, z-score), or with every detector too.
fn with_operators(cfg: &Config, all_detectors: bool) -> Config {
    let mut c = cfg.clone();
    c.pipeline.operators = vec![
        OperatorSpec::Dedup(Default::default()),
        OperatorSpec::Zscore(Default::default()),
    ];
    if all_detectors {
        c.pipeline
            .operators
            .push(OperatorSpec::Anomaly(Box::default()));
    }
    c
}

/// Runs the memory measurement of one operator set in a child process (a fresh heap).
fn memory_in_child(which: &str, args: &BenchArgs) -> anyhow::Result<Memory> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--memory-only", which])
        .args(["--memory-series", &args.memory_series.to_string()])
        .args(["--detector-series", &args.detector_series.to_string()])
        .args(["--detector-points", &args.detector_points.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "memory measurement failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Memory {
        rss_per_series: v["rss_per_series"].as_f64().unwrap_or(0.0),
        state_per_series: v["state_per_series"].as_f64().unwrap_or(0.0),
        max_state: v["max_state"].as_u64().unwrap_or(0) as usize,
        ns_per_point: v["ns_per_point"].as_f64().unwrap_or(0.0),
    })
}

pub async fn run(mut cfg: Config, args: BenchArgs) -> anyhow::Result<()> {
    if let Some(which) = &args.memory_only {
        let mut rules = load_rules(&cfg.rules.paths)?;
        rules.rules.retain(|r| r.name != "bench_trigger");
        let m = match which.as_str() {
            "backbone" => {
                memory_and_cpu(&with_operators(&cfg, false), &rules, args.memory_series, 3)
            }
            _ => memory_and_cpu(
                &with_operators(&cfg, true),
                &rules,
                args.detector_series,
                args.detector_points,
            ),
        };
        println!(
            "{}",
            serde_json::json!({"rss_per_series": m.rss_per_series, "state_per_series": m.state_per_series,
                "max_state": m.max_state, "ns_per_point": m.ns_per_point})
        );
        return Ok(());
    }
    let server = LocalNatsServer::start()?;
    cfg.nats.url = server.url();
    cfg.telemetry.metrics_listen = String::new();
    let paths: Vec<_> = cfg.rules.paths.clone();
    let mut rules = load_rules(&paths)?;
    rules.add_file(
        "bench-trigger.yaml",
        "rules:\n  - name: bench_trigger\n    metric: bench_trigger\n    condition: value > 0\n    priority: P1\n",
    )?;
    let js = jetstream::new(bus::connect(&cfg.nats).await?);
    bus::ensure_streams(&js, &cfg.streams).await?;
    println!(
        "# prismwatch bench (nats-server {} on loopback, {} shards, {} series, release build: {})",
        js.client().server_info().version,
        cfg.pipeline.shards,
        args.series,
        !cfg!(debug_assertions)
    );
    let backbone = with_operators(&cfg, false);
    let all = with_operators(&cfg, true);

    // Memory in child processes, each with a fresh heap, so RSS growth is the pipeline's own.
    println!();
    println!("## State per series");
    let m = memory_in_child("backbone", &args)?;
    println!(
        "- backbone operators (dedup, z-score) + default rules, {} series: {:.0} bytes RSS growth/series, {:.0} bytes counted/series; decode+pipeline {:.0} ns/point (one thread, 100-point msgpack messages)",
        args.memory_series, m.rss_per_series, m.state_per_series, m.ns_per_point
    );
    let m = memory_in_child("all", &args)?;
    println!(
        "- every detector on, {} series x {} points: {:.0} bytes RSS growth/series, {:.0} bytes counted/series (max {}); decode+pipeline {:.0} ns/point",
        args.detector_series, args.detector_points, m.rss_per_series, m.state_per_series, m.max_state, m.ns_per_point
    );
    println!();
    println!(
        "## Detector cost (ns/point, one core, {} points of a noisy daily cycle at 1-minute steps)",
        args.detector_points * 10
    );
    for (name, ns) in detector_costs(args.detector_points * 10) {
        println!("- {name}: {ns:.0} ns/point");
    }

    if let Some(rate) = args.latency_rate {
        let hist = latency(
            &js,
            &backbone,
            &rules,
            rate,
            args.latency_secs,
            args.series,
            args.latency_batch,
        )
        .await?;
        print_latency(rate, args.latency_batch, &hist);
        return Ok(());
    }
    for (title, c) in [
        ("backbone operators: dedup, z-score", &backbone),
        ("every detector on: dedup, z-score, anomaly", &all),
    ] {
        let base = clock::now_ms() - 3_600_000 * 24;
        let single = scenario(
            &js,
            c,
            &rules,
            &workload(args.single_messages, args.series, base),
            1,
            "single",
        )
        .await?;
        let batched_base = base + (args.single_messages / args.series) as i64 * STEP_MS + STEP_MS;
        let batched = scenario(
            &js,
            c,
            &rules,
            &workload(args.batched_points, args.series, batched_base),
            100,
            "batched",
        )
        .await?;
        println!();
        println!("## Throughput, {title}");
        println!("| messages | raw JetStream consume (same acking) | processor: ingest, operators, rules, alert publish, ack | ratio | alert events |");
        println!("|---|---|---|---|---|");
        for (name, r) in [("1 point each", &single), ("100 points each", &batched)] {
            println!(
                "| {name} | {:.0} msgs/s = {:.0} points/s | {:.0} msgs/s = {:.0} points/s | {:.0} % | {} |",
                r.raw_msgs_per_s,
                r.raw_points_per_s,
                r.proc_msgs_per_s,
                r.proc_points_per_s,
                100.0 * r.proc_points_per_s / r.raw_points_per_s,
                r.alerts
            );
        }
        if std::ptr::eq(c, &backbone) {
            println!();
            println!("## Metric-to-alert latency, {title}");
            for (r, batch) in [(&single, 1), (&batched, 100)] {
                let rate = r.proc_msgs_per_s / 2.0;
                let hist =
                    latency(&js, c, &rules, rate, args.latency_secs, args.series, batch).await?;
                print_latency(rate, batch, &hist);
            }
        }
    }
    Ok(())
}

/// ns/point of each detector alone (through the fusion, weights of the others at 0), of the
/// z-score and of the whole fused detector, on one core.
fn detector_costs(points: usize) -> Vec<(String, f64)> {
    use crate::detect::{AnomalyConfig, AnomalyState, DetectorKind};
    let series: Vec<(i64, f64)> = (0..points)
        .map(|i| {
            let day = (i % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            let wobble = ((i * 7919) % 1000) as f64 / 1000.0 - 0.5;
            (
                1_700_000_000_000 + i as i64 * 60_000,
                100.0 + 20.0 * day.sin() + 3.0 * wobble,
            )
        })
        .collect();
    let time = |cfg: &AnomalyConfig| {
        let mut st = AnomalyState::default();
        let t = Instant::now();
        let mut acc = 0.0;
        for &(ts, v) in &series {
            acc += cfg.update(&mut st, ts, v).score;
        }
        std::hint::black_box(acc);
        t.elapsed().as_nanos() as f64 / points as f64
    };
    let mut out = Vec::new();
    let z = crate::detect::zscore::ZScoreConfig::default();
    let mut zs = Default::default();
    let t = Instant::now();
    for &(_, v) in &series {
        std::hint::black_box(z.update(&mut zs, v));
    }
    out.push((
        "z-score operator".to_string(),
        t.elapsed().as_nanos() as f64 / points as f64,
    ));
    for kind in DetectorKind::ALL {
        let mut cfg = AnomalyConfig::default();
        let w = &mut cfg.fusion.weights;
        *w = Default::default();
        w.zscore = 0.0;
        w.seasonal = 0.0;
        w.trend = 0.0;
        w.variance = 0.0;
        w.iforest = 0.0;
        match kind {
            DetectorKind::ZScore => w.zscore = 1.0,
            DetectorKind::Seasonal => w.seasonal = 1.0,
            DetectorKind::Trend => w.trend = 1.0,
            DetectorKind::Variance => w.variance = 1.0,
            DetectorKind::IForest => w.iforest = 1.0,
        }
        out.push((
            format!(
                "{} alone (with the seasonal baseline it builds on, fusion included)",
                kind.name()
            ),
            time(&cfg),
        ));
    }
    out.push((
        "fused anomaly operator, default weights".to_string(),
        time(&AnomalyConfig::default()),
    ));
    out
}

fn print_latency(rate: f64, batch: usize, hist: &Histogram<u64>) {
    println!(
        "metric-to-alert latency at {:.0} msgs/s x {batch} points (half the maximum), {} alerts: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        rate,
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
}

/// Publishes the workload, consumes it raw, then with the processor; returns the rates.
async fn scenario(
    js: &jetstream::Context,
    cfg: &Config,
    rules: &RuleSet,
    points: &[MetricPoint],
    batch: usize,
    tag: &str,
) -> anyhow::Result<Rates> {
    let mut stream = js.get_stream(&cfg.streams.metrics.name).await?;
    stream.purge().await?;
    let t = Instant::now();
    let msgs = publish::publish_points(js, points, batch, Encoding::MsgPack, None).await?;
    eprintln!(
        "[{tag}] published {} points in {msgs} messages in {:.1} s",
        points.len(),
        t.elapsed().as_secs_f64()
    );
    let first = stream.info().await?.state.first_sequence;
    let last = stream.info().await?.state.last_sequence;

    // Raw: a durable pull consumer, same batching, ack each message.
    let raw_consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(format!("bench-raw-{tag}-{}", cfg.pipeline.operators.len())),
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: cfg.ingest.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: first,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = raw_consumer
        .stream()
        .max_messages_per_batch(cfg.ingest.max_batch)
        .messages()
        .await?
        .ready_chunks(cfg.ingest.max_batch);
    let t = Instant::now();
    let mut n = 0usize;
    // Same acking as the processor: the last message of each ready chunk (AckPolicy::All).
    while let Some(chunk) = messages.next().await {
        n += chunk.len();
        if let Some(Ok(m)) = chunk.last() {
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if n >= msgs {
            break;
        }
    }
    let raw_secs = t.elapsed().as_secs_f64();
    drop(messages);

    // The processor, in-process, on its own durable consumer.
    let mut pcfg = cfg.clone();
    pcfg.ingest.consumer_name = format!("bench-proc-{tag}-{}", cfg.pipeline.operators.len());
    let alert_count = || async {
        anyhow::Ok(
            js.get_stream(&cfg.streams.alerts.name)
                .await?
                .info()
                .await?
                .state
                .messages,
        )
    };
    let alerts_before = alert_count().await?;
    let (tx, rx) = watch::channel(false);
    let t = Instant::now();
    let task = tokio::spawn(runner::run(pcfg.clone(), rules.clone(), rx));
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Ok(mut c) = stream
            .get_consumer::<consumer::pull::Config>(&pcfg.ingest.consumer_name)
            .await
        {
            if c.info().await?.ack_floor.stream_sequence >= last {
                break;
            }
        }
        if task.is_finished() {
            anyhow::bail!("processor stopped early: {:?}", task.await);
        }
    }
    let proc_secs = t.elapsed().as_secs_f64();
    let _ = tx.send(true);
    task.await??;
    let alerts_after = alert_count().await?;
    let n_points = points.len() as f64;
    let r = Rates {
        raw_msgs_per_s: msgs as f64 / raw_secs,
        raw_points_per_s: n_points / raw_secs,
        proc_msgs_per_s: msgs as f64 / proc_secs,
        proc_points_per_s: n_points / proc_secs,
        alerts: alerts_after - alerts_before,
    };
    eprintln!(
        "[{tag}] raw {:.2} s, processor {:.2} s",
        raw_secs, proc_secs
    );
    Ok(r)
}

/// Paces messages of `batch` points at `rate` messages/s for `secs` while the processor runs
/// live; 100 times a second a message carries a trigger point whose rule fires an alert. Latency = alert event received − trigger published.
async fn latency(
    js: &jetstream::Context,
    cfg: &Config,
    rules: &RuleSet,
    rate: f64,
    secs: u64,
    series: usize,
    batch: usize,
) -> anyhow::Result<Histogram<u64>> {
    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    stream.purge().await?;
    let client = bus::connect(&cfg.nats).await?;
    let mut pcfg = cfg.clone();
    // A consumer (and so a checkpoint) of its own per run, and trigger series of its own.
    pcfg.ingest.consumer_name = format!("bench-latency-{batch}");
    // Series state from the throughput runs is not needed: start fresh.
    let (tx, rx) = watch::channel(false);
    let consumer_name = pcfg.ingest.consumer_name.clone();
    let task = tokio::spawn(runner::run(pcfg, rules.clone(), rx));
    // Wait until the processor's consumer exists, then give it a moment to start pulling.
    while stream
        .get_consumer::<consumer::pull::Config>(&consumer_name)
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut alerts = client
        .subscribe(subjects::alert_filter(
            Some("p1"),
            Some("firing"),
            Some("bench_trigger"),
        ))
        .await?;
    let (s2, h2) = (sent.clone(), hist.clone());
    let receiver = tokio::spawn(async move {
        while let Some(m) = alerts.next().await {
            let now = Instant::now();
            if let Ok(e) = serde_json::from_slice::<AlertEvent>(&m.payload) {
                if let Some(t0) = e
                    .labels
                    .get("trigger")
                    .and_then(|id| s2.lock().unwrap().get(id).copied())
                {
                    let _ = h2.lock().unwrap().record((now - t0).as_micros() as u64);
                }
            }
        }
    });

    // Encode every message first: the pacing loop only publishes, so the generator does not
    // compete with the processor for the two cores.
    let base = clock::now_ms() - 600_000;
    let total = (rate * (secs + 1) as f64) as usize;
    let trigger_every = ((rate / 100.0) as usize).max(1); // one trigger every 10 ms
    let mut prepared = Vec::with_capacity(total);
    let mut triggers = 0usize;
    for m in 0..total {
        let mut points = Vec::with_capacity(batch);
        let mut trigger_id = None;
        for b in 0..batch {
            let n = m * batch + b;
            let ts = base + (n / series) as i64 * 100 + (n % 100) as i64;
            // No triggers in the first second: series creation and warm-up are not latency.
            if b == 0 && m % trigger_every == 0 && m as f64 >= rate {
                triggers += 1;
                let mut labels = BTreeMap::new();
                labels.insert("run".to_string(), format!("b{batch}"));
                labels.insert("trigger".to_string(), triggers.to_string());
                points.push(MetricPoint {
                    name: "bench_trigger".into(),
                    labels,
                    value: 1.0,
                    timestamp: ts,
                });
                trigger_id = Some(triggers.to_string());
            } else {
                let mut p = bench_point(n % series, 0, 0);
                p.timestamp = ts;
                points.push(p);
            }
        }
        let payload = if batch == 1 {
            rmp_serde::to_vec_named(&points[0])?
        } else {
            rmp_serde::to_vec_named(&points)?
        };
        prepared.push((
            publish::subject_for(&points[0]),
            bytes::Bytes::from(payload),
            trigger_id,
        ));
    }
    let per_ms = rate / 1000.0;
    let start = Instant::now();
    let mut sent_count = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent_count < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * 1000.0 * per_ms) as usize).min(total);
        while sent_count < due {
            let (subject, payload, trigger_id) = &prepared[sent_count];
            if let Some(id) = trigger_id {
                sent.lock().unwrap().insert(id.clone(), Instant::now());
            }
            client.publish(subject.clone(), payload.clone()).await?;
            sent_count += 1;
        }
    }
    client.flush().await?;
    // Let the last alerts arrive.
    let wait_until = Instant::now() + Duration::from_secs(5);
    while hist.lock().unwrap().len() < triggers as u64 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tx.send(true);
    let _ = task.await;
    receiver.abort();
    let h = hist.lock().unwrap().clone();
    eprintln!(
        "[latency] sent {sent_count} messages, {triggers} triggers, {} alerts received",
        h.len()
    );
    Ok(h)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

struct Memory {
    rss_per_series: f64,
    state_per_series: f64,
    max_state: usize,
    ns_per_point: f64,
}

/// Memory per series (RSS growth and counted state) and in-process cost per point, after
/// `rounds` points per series.
fn memory_and_cpu(cfg: &Config, rules: &RuleSet, n_series: usize, rounds: usize) -> Memory {
    let mut pcfg = cfg.pipeline.clone();
    pcfg.shards = 1;
    let mut pipeline = Pipeline::new(&pcfg, cfg.ingest.allowed_lateness_ms, rules.clone());
    let base = 1_700_000_000_000;
    let before = rss_bytes();
    let mut elapsed = Duration::ZERO;
    let mut points = 0usize;
    for j in 0..rounds {
        // Encode one round at a time (outside the timed part) to keep the heap small.
        let messages: Vec<Vec<u8>> = (0..n_series.div_ceil(100))
            .map(|m| {
                let pts: Vec<MetricPoint> = (0..100)
                    .map(|i| bench_point((m * 100 + i) % n_series, j, base))
                    .collect();
                rmp_serde::to_vec_named(&pts).expect("encode")
            })
            .collect();
        let published = base + (j as i64 + 1) * STEP_MS;
        let t = Instant::now();
        for m in &messages {
            let decoded = decode_message(m, None, published, &cfg.ingest).expect("valid");
            points += decoded.points.len();
            pipeline.push_message(decoded.points);
            pipeline.run();
        }
        elapsed += t.elapsed();
    }
    let after = rss_bytes();
    let n = pipeline.series_count() as f64;
    Memory {
        rss_per_series: after.saturating_sub(before) as f64 / n,
        state_per_series: pipeline.approx_state_bytes() as f64 / n,
        max_state: pipeline.max_state_bytes(),
        ns_per_point: elapsed.as_nanos() as f64 / points as f64,
    }
}

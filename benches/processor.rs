//! `cargo bench --bench processor`: what the processor sustains against a real nats-server,
//! next to the raw JetStream consume rate of the same messages in the same run; metric-to-alert
//! latency at half the measured maximum; state per series; checkpoint size and time; one and
//! two processes. Prints a report (the README's figures come from it). `-- --help` lists the
//! options.

#[path = "../tests/common/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use clap::{Args, Parser};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use nats::NatsServer as LocalNatsServer;
use prismwatch::app::{self, Component};
use prismwatch::config::Config;
use prismwatch::ingest::{Encoding, Incoming};
use prismwatch::model::{AlertEvent, MetricPoint};
use prismwatch::pipeline::operator::OperatorSpec;
use prismwatch::pipeline::Pipeline;
use prismwatch::rules::{load_rules, RuleSet};
use prismwatch::tools::{clock, publish};
use prismwatch::{bus, processor, subjects};

#[path = "processor/million.rs"]
mod million;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "processor bench",
    about = "Benchmark the processor against local nats-servers"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = prismwatch::config::load(Some(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/prismwatch.yaml"
    ))))?
    .config;
    let mut cfg = cfg;
    cfg.rules.paths = vec![concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules").into()];
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cfg, cli.args))
}

#[derive(Debug, Clone, Args)]
struct BenchArgs {
    /// Messages in the single-point scenario.
    #[arg(long, default_value_t = 400_000)]
    single_messages: usize,
    /// Points in the batched scenario (messages of 100 points).
    #[arg(long, default_value_t = 3_000_000)]
    batched_points: usize,
    /// Distinct series the points are spread over.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Seconds of paced load for the latency measurement, after a first second without
    /// triggers (11 s at a trigger per millisecond: 11,000 triggers).
    #[arg(long, default_value_t = 11)]
    latency_secs: u64,
    /// Milliseconds between two triggers of the latency measurement (each fires an alert).
    #[arg(long, default_value_t = 1)]
    trigger_every_ms: u64,
    /// Series created for the memory measurement.
    #[arg(long, default_value_t = 200_000)]
    memory_series: usize,
    /// Series for the every-detector memory measurement.
    #[arg(long, default_value_t = 2_000)]
    detector_series: usize,
    /// Points per series for the every-detector memory measurement (detector state grows with
    /// history until its bounds).
    #[arg(long, default_value_t = 3_000)]
    detector_points: usize,
    /// Internal: measure memory of one operator set (`backbone` or `all`) in this fresh process
    /// and print one JSON line (the bench runs itself this way, so each heap starts empty).
    #[arg(long, hide = true)]
    memory_only: Option<String>,
    /// Only measure latency, at this many messages/s (skips the throughput runs).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Points per message with --latency-rate.
    #[arg(long, default_value_t = 1)]
    latency_batch: usize,
    /// Consume passes per throughput scenario, alternating raw and processor; the report gives
    /// the medians (single runs on two shared cores vary by ±10 %).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only the single-point runs of the backbone (throughput, live maximum, latency).
    #[arg(long)]
    single_only: bool,
    /// Only the drain throughput (1- and 100-point messages, backbone and every detector).
    #[arg(long)]
    throughput_only: bool,
    /// Only the backbone operators (with `--throughput-only` or `--pipeline-only`: without the
    /// every-detector set).
    #[arg(long)]
    backbone_only: bool,
    /// Trace this share of the messages (OTLP export to a receiver the bench runs on
    /// loopback; needs `--features otlp`): the throughput with tracing on.
    #[arg(long)]
    trace_ratio: Option<f64>,
    /// Series counts for the checkpoint measurement (each in a fresh process).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    checkpoint_series: Vec<usize>,
    /// Only the checkpoint measurement.
    #[arg(long)]
    checkpoints_only: bool,
    /// Only the one-process / two-process comparison.
    #[arg(long)]
    processes_only: bool,
    /// Only the detectors: each one's cost per point and the state per series with the shipped
    /// fused operator.
    #[arg(long)]
    detectors_only: bool,
    /// Only the processor's own work in steady state: decode and pipeline of 100-point messages
    /// on one thread, no broker (the series of one of the bench's partitions).
    #[arg(long)]
    pipeline_only: bool,
    /// Internal: measure one checkpoint of this many series in this fresh process.
    #[arg(long, hide = true)]
    checkpoint_only: Option<usize>,
    /// Internal: run as a processor (`prismwatch run`) against this NATS URL until SIGTERM.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Internal: the processor group of `--serve`.
    #[arg(long, hide = true, default_value = "bench")]
    serve_group: String,
    /// Internal: `--serve` with every detector on.
    #[arg(long, hide = true)]
    serve_detectors: bool,
    /// Internal: the partition count of `--serve` (the stream's).
    #[arg(long, hide = true)]
    serve_partitions: Option<u32>,
    /// Only the memory of this many series with every detector on in a running processor, and
    /// the RSS its checkpoint adds (about 10 minutes and 12 GB of disk for 1,000,000).
    #[arg(long)]
    million_only: Option<usize>,
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

/// A nats-server of its own for one run, so no run inherits another's stored data, consumers
/// or server heap, and the streams the processor uses.
struct Fresh {
    _server: LocalNatsServer,
    js: jetstream::Context,
    /// The run's configuration, pointing at this server.
    cfg: Config,
}

impl Fresh {
    async fn start(cfg: &Config) -> anyhow::Result<Fresh> {
        let server = LocalNatsServer::start();
        let mut cfg = cfg.clone();
        cfg.nats.url = server.url();
        let js = jetstream::new(bus::connect(&cfg.nats).await?);
        bus::ensure_streams(&js, &cfg.streams).await?;
        Ok(Fresh {
            _server: server,
            js,
            cfg,
        })
    }

    /// Closes the run's connection, then (on drop) stops the server.
    async fn close(self) {
        bus::close(&self.js.client()).await;
    }
}

/// Medians over the passes of one scenario.
struct Rates {
    points_per_msg: f64,
    raw_msgs_per_s: f64,
    /// The raw consume split as the processor's is: one consumer per partition, all at once.
    raw_partitioned_msgs_per_s: f64,
    proc_msgs_per_s: f64,
    /// processor / raw of each pair of passes.
    pass_ratios: Vec<f64>,
    /// Alert events of one processor pass.
    alerts: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What reads the metric stream in a latency or live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatencyConsumer {
    /// The processor (`app::run`): alerts are JetStream-published events.
    Processor,
    /// A bare pull consumer with the processor's batching and acking that republishes each
    /// trigger's id on core NATS: what JetStream alone costs, the floor for any processor.
    RawEcho,
}

impl LatencyConsumer {
    fn name(self) -> &'static str {
        match self {
            LatencyConsumer::Processor => "processor",
            LatencyConsumer::RawEcho => "raw JetStream echo",
        }
    }
}

/// Subject the raw echo consumer republishes trigger ids on.
const ECHO_SUBJECT: &str = "bench.echo";

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
    } else {
        // The shipped per-metric lists run detectors on the bench's metrics: not the backbone.
        c.pipeline.metric_operators.clear();
    }
    c
}

/// Runs the memory measurement of one operator set in a child process (a fresh heap).
fn memory_in_child(which: &str, args: &BenchArgs) -> anyhow::Result<Memory> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--memory-only", which])
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

async fn run(mut cfg: Config, args: BenchArgs) -> anyhow::Result<()> {
    // The processor's memory as `prismwatch run` sets it up, for the parts measured in-process
    // (`app::run` sets the same).
    app::huge_pages::apply_or_warn(cfg.pipeline.transparent_huge_pages);
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
    cfg.http.listen = String::new();
    let paths: Vec<_> = cfg.rules.paths.clone();
    let mut rules = load_rules(&paths)?;
    rules.add_file(
        "bench-trigger.yaml",
        "rules:\n  - name: bench_trigger\n    metric: bench_trigger\n    condition: value > 0\n    priority: P1\n",
    )?;
    if let Some(url) = &args.serve {
        let mut c = with_operators(&cfg, args.serve_detectors);
        c.nats.url = url.clone();
        c.ingest.consumer_name = args.serve_group.clone();
        if let Some(p) = args.serve_partitions {
            c.streams.partitions = p;
        }
        let stop = CancellationToken::new();
        app::stop_on_signals(stop.clone());
        return app::run(c, rules, vec![Component::Processor], stop).await;
    }
    if let Some(n) = args.checkpoint_only {
        println!("{}", checkpoint_cost(&cfg, &rules, n).await?);
        return Ok(());
    }
    if args.checkpoints_only {
        return print_checkpoint_costs(&args);
    }
    if let Some(n) = args.million_only {
        return million::run(&cfg, &rules, n).await;
    }
    if args.detectors_only {
        return print_detectors(&args);
    }
    if args.pipeline_only {
        let mut rules = rules.clone();
        rules.rules.retain(|r| r.name != "bench_trigger");
        let sets: &[(&str, bool)] = if args.backbone_only {
            &[("backbone operators", false)]
        } else {
            &[("backbone operators", false), ("every detector on", true)]
        };
        for &(name, all) in sets {
            let per_partition = args.series / cfg.streams.partitions.max(1) as usize;
            let (ns, cp) = steady_ns_per_point(&with_operators(&cfg, all), &rules, per_partition);
            println!(
                "- {name}, {per_partition} series (one partition of {}), 100-point messages: decode+pipeline {ns:.0} ns/point (median of 5 timings of 20 rounds); its checkpoint: the cut paused the pipeline {:.0} µs, its series were written within the next {:.1} ms of batches ({:.2} µs/series), a 100-point message took {:.2} ms at most meanwhile (median {:.2} ms; {:.2} ms before the cut)",
                args.series,
                cp.pause * 1e6,
                cp.written * 1e3,
                cp.written * 1e6 / per_partition as f64,
                cp.slowest_message * 1e3,
                cp.median_message * 1e3,
                cp.message_before * 1e3,
            );
        }
        return Ok(());
    }
    if args.processes_only {
        return print_processes(&cfg, &rules, &args).await;
    }
    let probe = Fresh::start(&cfg).await?;
    let version = probe.js.client().server_info().version;
    probe.close().await;
    println!(
        "# prismwatch bench (nats-server {version} on loopback, a fresh server per run, {} partitions x {} shards, {} series, release build: {})",
        cfg.streams.partitions,
        cfg.pipeline.shards,
        args.series,
        !cfg!(debug_assertions)
    );
    if let Some(ratio) = args.trace_ratio {
        anyhow::ensure!(
            cfg!(feature = "otlp"),
            "--trace-ratio needs --features otlp"
        );
        // A receiver that takes every export and keeps nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        cfg.telemetry.otlp_endpoint = format!("http://{}", listener.local_addr()?);
        cfg.telemetry.trace_sample_ratio = ratio;
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        println!("tracing on: {ratio} of the messages traced, exported over OTLP/HTTP to a receiver on loopback");
    }
    let backbone = with_operators(&cfg, false);
    let all = with_operators(&cfg, true);
    if let Some(rate) = args.latency_rate {
        for consumer in [LatencyConsumer::Processor, LatencyConsumer::RawEcho] {
            let run = latency(&backbone, &rules, consumer, rate, args.latency_batch, &args).await?;
            print_latency(consumer, rate, args.latency_batch, &run);
        }
        return Ok(());
    }
    if !args.throughput_only {
        print_state_and_checkpoints(&args)?;
    }
    let sets: &[(&str, &Config)] = if args.single_only || args.backbone_only {
        &[("backbone operators: dedup, z-score", &backbone)]
    } else {
        &[
            ("backbone operators: dedup, z-score", &backbone),
            ("every detector on: dedup, z-score, anomaly", &all),
        ]
    };
    for &(title, c) in sets {
        let base = clock::now_ms() - 3_600_000 * 24;
        let single = scenario(
            c,
            &rules,
            &workload(args.single_messages, args.series, base),
            1,
            args.repeats,
        )
        .await?;
        let batched_base = base + (args.single_messages / args.series) as i64 * STEP_MS + STEP_MS;
        let batched = if args.single_only {
            None
        } else {
            Some(
                scenario(
                    c,
                    &rules,
                    &workload(args.batched_points, args.series, batched_base),
                    100,
                    args.repeats,
                )
                .await?,
            )
        };
        println!();
        println!(
            "## Throughput, {title} (draining a stored backlog; rates are medians of {} passes, raw and processor alternating)",
            args.repeats
        );
        println!("| messages | raw JetStream consume (same acking) | raw, one consumer per partition at once | processor: ingest, operators, rules, alert publish, ack | processor / raw: median of the paired passes (each pair) | alert events |");
        println!("|---|---|---|---|---|---|");
        for (name, r) in [
            ("1 point each", Some(&single)),
            ("100 points each", batched.as_ref()),
        ] {
            let Some(r) = r else { continue };
            println!(
                "| {name} | {:.0} msgs/s = {:.0} points/s | {:.0} points/s | {:.0} msgs/s = {:.0} points/s | {:.0} % ({}) | {} |",
                r.raw_msgs_per_s,
                r.raw_msgs_per_s * r.points_per_msg,
                r.raw_partitioned_msgs_per_s * r.points_per_msg,
                r.proc_msgs_per_s,
                r.proc_msgs_per_s * r.points_per_msg,
                100.0 * median(r.pass_ratios.clone()),
                r.pass_ratios
                    .iter()
                    .map(|x| format!("{:.0}", 100.0 * x))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.alerts
            );
        }
        if args.throughput_only || !std::ptr::eq(c, &backbone) {
            continue;
        }
        // Live: producers publish while the processor consumes, so the server stores and
        // delivers at once on the same two cores.
        let live_base = batched_base + 3_600_000;
        let mut live = Vec::new();
        for (batch, count) in [(1, args.single_messages), (100, args.batched_points)] {
            if batch > 1 && args.single_only {
                continue;
            }
            let points = workload(count, args.series, live_base);
            let proc = live_rate(c, &rules, &points, batch, LatencyConsumer::Processor).await?;
            let raw = live_rate(c, &rules, &points, batch, LatencyConsumer::RawEcho).await?;
            live.push((batch, raw, proc));
        }
        println!();
        println!("## Live maximum: messages JetStream-published (acks pipelined) while consumed, the way the processor runs in production");
        println!("| messages | raw JetStream consume | processor | processor / raw |");
        println!("|---|---|---|---|");
        for &(batch, raw, proc) in &live {
            println!(
                "| {batch} point{} each | {raw:.0} msgs/s = {:.0} points/s | {proc:.0} msgs/s = {:.0} points/s | {:.0} % |",
                if batch == 1 { "" } else { "s" },
                raw * batch as f64,
                proc * batch as f64,
                100.0 * proc / raw
            );
        }
        println!();
        println!("## Metric-to-alert latency, {title}");
        let mut runs: Vec<(usize, f64, &str)> = live
            .iter()
            .map(|&(batch, _, proc)| (batch, proc / 2.0, "half load: half the live maximum"))
            .collect();
        runs.push((
            1,
            single.proc_msgs_per_s / 2.0,
            "half the single-point drain maximum (more than the live maximum: the server cannot also store that many)",
        ));
        for (batch, rate, what) in runs {
            println!("{what}:");
            for consumer in [LatencyConsumer::Processor, LatencyConsumer::RawEcho] {
                let run = latency(c, &rules, consumer, rate, batch, &args).await?;
                print_latency(consumer, rate, batch, &run);
            }
        }
    }
    if !args.single_only && !args.throughput_only {
        print_processes(&cfg, &rules, &args).await?;
    }
    Ok(())
}

/// State per series, detector costs and checkpoints (the parts of a full run without a
/// throughput or latency measurement).
fn print_state_and_checkpoints(args: &BenchArgs) -> anyhow::Result<()> {
    // Memory in child processes, each with a fresh heap, so RSS growth is the pipeline's own.
    println!();
    println!("## State per series");
    let m = memory_in_child("backbone", args)?;
    println!(
        "- backbone operators (dedup, z-score) + default rules, {} series: {:.0} bytes RSS growth/series, {:.0} bytes counted/series; decode+pipeline {:.0} ns/point (one thread, 100-point msgpack messages)",
        args.memory_series, m.rss_per_series, m.state_per_series, m.ns_per_point
    );
    let m = memory_in_child("all", args)?;
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

    print_checkpoint_costs(args)?;
    Ok(())
}

/// Each detector's cost per point and the state per series with the shipped fused operator.
fn print_detectors(args: &BenchArgs) -> anyhow::Result<()> {
    let m = memory_in_child("all", args)?;
    println!(
        "- every detector on, {} series x {} points: {:.0} bytes RSS growth/series, {:.0} bytes counted/series (max {}); decode+pipeline {:.0} ns/point",
        args.detector_series, args.detector_points, m.rss_per_series, m.state_per_series, m.max_state, m.ns_per_point
    );
    println!(
        "## Detector cost (ns/point, one core, {} points of a noisy daily cycle at 1-minute steps)",
        args.detector_points * 10
    );
    for (name, ns) in detector_costs(args.detector_points * 10) {
        println!("- {name}: {ns:.0} ns/point");
    }
    Ok(())
}

/// Checkpoint size and time for each of `--checkpoint-series`, each in a fresh process.
fn print_checkpoint_costs(args: &BenchArgs) -> anyhow::Result<()> {
    println!();
    println!("## Checkpoints (backbone operators, default rules; one partition's state through a real object store)");
    println!("| series | size | serialise | serialise + write | read + restore | RSS before | RSS rise while writing |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.checkpoint_series {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--checkpoint-only", &n.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "checkpoint measurement of {n} series failed"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mb = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1e6;
        println!(
            "| {n} | {:.1} MB | {:.2} s | {:.2} s | {:.2} s | {:.0} MB | {:.0} MB |",
            mb("bytes"),
            v["serialise_secs"].as_f64().unwrap_or(0.0),
            v["write_secs"].as_f64().unwrap_or(0.0),
            v["read_secs"].as_f64().unwrap_or(0.0),
            mb("rss_before"),
            (v["peak_rss_during_write"].as_f64().unwrap_or(0.0)
                - v["rss_before"].as_f64().unwrap_or(0.0))
            .max(0.0)
                / 1e6,
        );
    }
    Ok(())
}

/// The live maximum with one processor process and with two (the partitions shared), for
/// 1-point and 100-point messages.
async fn print_processes(cfg: &Config, rules: &RuleSet, args: &BenchArgs) -> anyhow::Result<()> {
    println!();
    println!("## One process or two (backbone operators; live maximum: JetStream-published while consumed; processes are `prismwatch run` equivalents sharing {} partitions)", cfg.streams.partitions);
    println!("| messages | 1 process | 2 processes | 2 / 1 |");
    println!("|---|---|---|---|");
    let base = clock::now_ms() - 3_600_000;
    for (batch, count) in [(1, args.single_messages), (100, args.batched_points)] {
        let points = workload(count, args.series, base);
        let mut rates = Vec::new();
        for procs in [1, 2] {
            rates.push(processes_rate(cfg, &points, batch, procs).await?);
        }
        println!(
            "| {batch} point{} each | {:.0} points/s | {:.0} points/s | {:.2} |",
            if batch == 1 { "" } else { "s" },
            rates[0] * batch as f64,
            rates[1] * batch as f64,
            rates[1] / rates[0]
        );
    }
    let _ = rules;
    Ok(())
}

/// Messages/s of `procs` processor processes draining `points` published live, once the
/// processes have shared out the partitions.
async fn processes_rate(
    cfg: &Config,
    points: &[MetricPoint],
    batch: usize,
    procs: usize,
) -> anyhow::Result<f64> {
    let fresh = Fresh::start(cfg).await?;
    let (js, cfg) = (&fresh.js, &fresh.cfg);
    let group = format!("bench-procs-{procs}");
    let mut children: Vec<std::process::Child> = (0..procs)
        .map(|_| {
            std::process::Command::new(std::env::current_exe()?)
                .args(["--serve", &cfg.nats.url, "--serve-group", &group])
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    // Wait until the partitions are shared out: every lease held, by `procs` members.
    let kv = loop {
        if let Ok(kv) = js.get_key_value(subjects::LEASE_BUCKET).await {
            break kv;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut owners = std::collections::BTreeSet::new();
        let mut held = 0;
        for p in 0..cfg.streams.partitions {
            if let Ok(Some(v)) = kv.get(format!("lease.{group}.{p}")).await {
                owners.insert(v);
                held += 1;
            }
        }
        if held == cfg.streams.partitions && owners.len() == procs {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "partitions not shared out in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let prepared = encode(points, batch)?;
    let t = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for (subject, payload) in &prepared {
        acks.push_back(js.publish(subject.clone(), payload.clone()).await?);
        if acks.len() >= 1000 {
            acks.pop_front().expect("an ack").await?;
        }
    }
    for a in acks {
        a.await?;
    }
    let idle = tokio::spawn(std::future::pending::<()>());
    wait_acked(&stream, cfg, &group, &idle).await?;
    let rate = prepared.len() as f64 / t.elapsed().as_secs_f64();
    idle.abort();
    for c in &mut children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    eprintln!("[processes] {procs} x{batch}: {rate:.0} msgs/s");
    fresh.close().await;
    Ok(rate)
}

/// ns/point of each detector alone (through the fusion, weights of the others at 0), of the
/// z-score and of the whole fused detector, on one core.
fn detector_costs(points: usize) -> Vec<(String, f64)> {
    use prismwatch::detect::{AnomalyConfig, AnomalyState, DetectorKind};
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
    let z = prismwatch::detect::zscore::ZScoreConfig::default();
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
        w.drift = 0.0;
        w.art = 0.0;
        match kind {
            DetectorKind::ZScore => w.zscore = 1.0,
            DetectorKind::Seasonal => w.seasonal = 1.0,
            DetectorKind::Trend => w.trend = 1.0,
            DetectorKind::Variance => w.variance = 1.0,
            DetectorKind::IForest => w.iforest = 1.0,
            DetectorKind::Drift => w.drift = 1.0,
            DetectorKind::Art => w.art = 1.0,
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

fn print_latency(consumer: LatencyConsumer, rate: f64, batch: usize, run: &LatencyRun) {
    let hist = &run.hist;
    println!(
        "- {}: {:.0} msgs/s x {batch} points, machine CPU {:.0} % busy, {} of {} triggers alerted: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (from when each trigger was due)",
        consumer.name(),
        rate,
        100.0 * run.cpu_busy,
        hist.len(),
        run.triggers,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
}

/// Publishes the workload once, then drains it `repeats` times with a raw consumer and with the
/// processor, alternating; returns the medians.
async fn scenario(
    cfg: &Config,
    rules: &RuleSet,
    points: &[MetricPoint],
    batch: usize,
    repeats: usize,
) -> anyhow::Result<Rates> {
    let tag = format!("b{batch}-o{}", cfg.pipeline.operators.len());
    let fresh = Fresh::start(cfg).await?;
    let (js, cfg) = (&fresh.js, &fresh.cfg);
    let mut stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let t = Instant::now();
    let msgs = publish::publish_points(js, points, batch, Encoding::MsgPack, None).await?;
    eprintln!(
        "[{tag}] published {} points in {msgs} messages in {:.1} s",
        points.len(),
        t.elapsed().as_secs_f64()
    );
    let first = stream.info().await?.state.first_sequence;
    let last = stream.info().await?.state.last_sequence;
    let (mut raw, mut processed, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut partitioned = Vec::new();
    let mut alerts = None;
    for pass in 0..repeats.max(1) {
        let raw_secs = raw_pass(
            &stream,
            cfg,
            first,
            msgs,
            &format!("bench-raw-{tag}-{pass}"),
        )
        .await?;
        let part_secs =
            raw_partitioned_pass(&stream, cfg, first, &format!("bench-raw-part-{tag}-{pass}"))
                .await?;
        partitioned.push(msgs as f64 / part_secs);
        let before = alert_count(js, cfg).await?;
        let proc_secs = processor_pass(
            &stream,
            cfg,
            rules,
            &format!("bench-proc-{tag}-{pass}"),
            last,
        )
        .await?;
        // Later passes publish the same event ids, which JetStream drops as duplicates.
        alerts.get_or_insert(alert_count(js, cfg).await? - before);
        eprintln!("[{tag}] pass {pass}: raw {raw_secs:.2} s, raw partitioned {part_secs:.2} s, processor {proc_secs:.2} s");
        raw.push(msgs as f64 / raw_secs);
        processed.push(msgs as f64 / proc_secs);
        ratios.push(raw_secs / proc_secs);
    }
    fresh.close().await;
    Ok(Rates {
        points_per_msg: points.len() as f64 / msgs as f64,
        raw_msgs_per_s: median(raw),
        raw_partitioned_msgs_per_s: median(partitioned),
        proc_msgs_per_s: median(processed),
        pass_ratios: ratios,
        alerts: alerts.unwrap_or(0),
    })
}

async fn alert_count(js: &jetstream::Context, cfg: &Config) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(&cfg.streams.alerts.name)
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// The raw consumer's configuration: the processor's acking and in-flight bound.
fn raw_consumer_config(cfg: &Config, name: &str, first: Option<u64>) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: consumer::AckPolicy::All,
        max_ack_pending: cfg.ingest.max_ack_pending,
        deliver_policy: match first {
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            None => consumer::DeliverPolicy::All,
        },
        ..Default::default()
    }
}

/// Seconds a raw durable pull consumer takes to read `msgs` messages from `first`, with the
/// processor's batching and acking (the last message of each ready chunk, AckPolicy::All).
async fn raw_pass(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    first: u64,
    msgs: usize,
    name: &str,
) -> anyhow::Result<f64> {
    // Timed from the consumer's creation, like the processor.
    let t = Instant::now();
    let done = drain(
        stream,
        cfg,
        raw_consumer_config(cfg, name, Some(first)),
        Some(msgs),
    )
    .await?;
    Ok((done - t).as_secs_f64())
}

/// Seconds one raw consumer per partition (filtering `prism.part.<p>.>`, as the processor's
/// do), all at once, take to read the whole stream from `first`, with the same batching and
/// acking as [`raw_pass`].
async fn raw_partitioned_pass(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    first: u64,
    name: &str,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let readers = (0..cfg.streams.partitions).map(|p| {
        let mut config = raw_consumer_config(cfg, &format!("{name}-{p}"), Some(first));
        config.filter_subject = prismwatch::subjects::partition_filter(p);
        drain(stream, cfg, config, None)
    });
    let mut last = t;
    for done in futures::future::join_all(readers).await {
        last = last.max(done?);
    }
    Ok((last - t).as_secs_f64())
}

/// Creates the durable consumer `config` and reads `msgs` messages with it (all it has pending
/// when `None`), acking the last of each ready chunk; returns when the last was acked, then
/// deletes the consumer.
async fn drain(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    config: consumer::pull::Config,
    msgs: Option<usize>,
) -> anyhow::Result<Instant> {
    let name = config.durable_name.clone().unwrap_or_default();
    let consumer: consumer::PullConsumer = stream.create_consumer(config).await?;
    let msgs = msgs.unwrap_or(consumer.cached_info().num_pending as usize);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.ingest.max_batch)
        .messages()
        .await?
        .ready_chunks(cfg.ingest.max_batch);
    let mut n = 0usize;
    while n < msgs {
        let Some(chunk) = messages.next().await else {
            break;
        };
        n += chunk.len();
        if let Some(Ok(m)) = chunk.last() {
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let done = Instant::now();
    drop(messages);
    // Idle consumers still cost the server work per stored message: remove each after its pass.
    stream.delete_consumer(&name).await?;
    Ok(done)
}

/// Seconds the processor (in-process, as a new processor group) takes to process and ack the
/// whole stream, from the creation of its partitions' consumers (its start-up before that,
/// connecting and taking its leases, is not consuming).
async fn processor_pass(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    rules: &RuleSet,
    name: &str,
    _last: u64,
) -> anyhow::Result<f64> {
    let mut pcfg = cfg.clone();
    pcfg.ingest.consumer_name = name.to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app::run(
        pcfg,
        rules.clone(),
        vec![Component::Processor],
        stop.clone(),
    ));
    wait_created(stream, cfg, name, &task).await?;
    let t = Instant::now();
    wait_acked(stream, cfg, name, &task).await?;
    let secs = t.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    delete_group(stream, cfg, name).await?;
    Ok(secs)
}

/// The consumers of a processor group (one per partition), or the one raw consumer `name`.
fn consumers_of(cfg: &Config, name: &str) -> Vec<String> {
    if name.starts_with("bench-raw") || name.starts_with("bench-echo") {
        vec![name.to_string()]
    } else {
        (0..cfg.streams.partitions)
            .map(|p| processor::consumer_name(name, p))
            .collect()
    }
}

async fn delete_group(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    name: &str,
) -> anyhow::Result<()> {
    for c in consumers_of(cfg, name) {
        stream.delete_consumer(&c).await?;
    }
    Ok(())
}

/// Polls (every millisecond) until every consumer of `name` exists.
async fn wait_created<T>(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    name: &str,
    task: &tokio::task::JoinHandle<T>,
) -> anyhow::Result<()> {
    for c in consumers_of(cfg, name) {
        while stream.consumer_info(&c).await.is_err() {
            anyhow::ensure!(!task.is_finished(), "consumer {c} did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// Polls until every consumer of `name` has had everything delivered and acked.
async fn wait_acked<T>(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    name: &str,
    task: &tokio::task::JoinHandle<T>,
) -> anyhow::Result<()> {
    let consumers = consumers_of(cfg, name);
    'poll: loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        anyhow::ensure!(!task.is_finished(), "consumer {name} stopped early");
        for c in &consumers {
            match stream.consumer_info(c).await {
                Ok(i) if i.num_pending == 0 && i.num_ack_pending == 0 => {}
                _ => continue 'poll,
            }
        }
        return Ok(());
    }
}

/// The consumer of a latency or live run, started on the (purged) metric stream under a new
/// consumer (or processor group) name. Stop it with the returned token, then await the task.
async fn start_consumer(
    js: &jetstream::Context,
    cfg: &Config,
    rules: &RuleSet,
    which: LatencyConsumer,
    name: &str,
) -> anyhow::Result<(
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let stop = CancellationToken::new();
    let mut ccfg = cfg.clone();
    ccfg.ingest.consumer_name = name.to_string();
    let task = match which {
        LatencyConsumer::Processor => spawn_isolated(app::run(
            ccfg,
            rules.clone(),
            vec![Component::Processor],
            stop.clone(),
        )),
        LatencyConsumer::RawEcho => {
            let stream = js.get_stream(&cfg.streams.metrics.name).await?;
            let c: consumer::PullConsumer = stream
                .create_consumer(raw_consumer_config(cfg, name, None))
                .await?;
            let stop = stop.clone();
            spawn_isolated(async move {
                // A connection of its own, driven by its own runtime, like the processor's.
                let client = bus::connect(&ccfg.nats).await?;
                let result = raw_echo(client.clone(), c, ccfg.ingest.max_batch, stop).await;
                bus::close(&client).await;
                result
            })
        }
    };
    wait_created(
        &js.get_stream(&cfg.streams.metrics.name).await?,
        cfg,
        name,
        &task,
    )
    .await?;
    // Give it a moment to issue its first pull.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((stop, task))
}

/// Runs a consumer on a runtime of its own (on its own threads, like `prismwatch run` in its own
/// process), so it shares no worker threads with the load generator and the alert subscriber.
fn spawn_isolated<F>(consumer: F) -> tokio::task::JoinHandle<anyhow::Result<()>>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-consumer".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(consumer));
            let _ = tx.send(result);
        })
        .expect("spawn the consumer's thread");
    tokio::spawn(async move {
        rx.await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the consumer's thread panicked")))
    })
}

/// The raw echo consumer (see [`LatencyConsumer::RawEcho`]).
async fn raw_echo(
    client: async_nats::Client,
    consumer: consumer::PullConsumer,
    max_batch: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(max_batch)
        .messages()
        .await?
        .ready_chunks(max_batch);
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            chunk = messages.next() => chunk,
        };
        let Some(chunk) = chunk else { return Ok(()) };
        for m in chunk.iter().flatten() {
            // A trigger is the last point of its message (see `latency`); only messages that
            // hold the label are decoded.
            if memchr::memmem::find(&m.payload, b"trigger").is_some() {
                let last: MetricPoint = match rmp_serde::from_slice::<Vec<MetricPoint>>(&m.payload)
                {
                    Ok(batch) => batch.into_iter().last().context("empty batch")?,
                    Err(_) => rmp_serde::from_slice(&m.payload)?,
                };
                if let Some(id) = last.labels.get("trigger") {
                    client
                        .publish(ECHO_SUBJECT, id.clone().into_bytes().into())
                        .await?;
                }
            }
        }
        if let Some(Ok(m)) = chunk.last() {
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
}

/// Messages of `batch` points with their subjects, encoded up front so publishing costs only
/// the publish.
fn encode(points: &[MetricPoint], batch: usize) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
    points.chunks(batch.max(1)).map(encode_message).collect()
}

/// One message: a lone point as an object, more as an array; its subject is the first point's.
fn encode_message(points: &[MetricPoint]) -> anyhow::Result<(String, bytes::Bytes)> {
    let payload = match points {
        [p] => rmp_serde::to_vec_named(p)?,
        many => rmp_serde::to_vec_named(many)?,
    };
    Ok((publish::subject_for(&points[0]), payload.into()))
}

/// The live maximum: messages/s from the first publish until `which` has acked the last
/// message, while `points` are published in messages of `batch` points with JetStream publish
/// (1,000 acks in flight), so storing and delivering share the machine as in production.
async fn live_rate(
    cfg: &Config,
    rules: &RuleSet,
    points: &[MetricPoint],
    batch: usize,
    which: LatencyConsumer,
) -> anyhow::Result<f64> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The earlier phases leave gigabytes of dirty pages (streams, checkpoints); their writeback
    // lands on the same disk as this run's JetStream store and stalls nats-server for hundreds
    // of milliseconds. Flush them first so the tail measured is ours, not the kernel's.
    let _ = std::process::Command::new("sync").status();
    let fresh = Fresh::start(cfg).await?;
    let (js, cfg) = (&fresh.js, &fresh.cfg);
    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let prepared = encode(points, batch)?;
    let name = match which {
        LatencyConsumer::Processor => format!("bench-live-{run}"),
        LatencyConsumer::RawEcho => format!("bench-echo-live-{run}"),
    };
    let (stop, task) = start_consumer(js, cfg, rules, which, &name).await?;
    let t = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    let mut last = 0;
    for (subject, payload) in &prepared {
        acks.push_back(js.publish(subject.clone(), payload.clone()).await?);
        if acks.len() >= 1000 {
            last = acks.pop_front().expect("an ack").await?.sequence;
        }
    }
    for a in acks {
        last = a.await?.sequence;
    }
    let _ = last;
    wait_acked(&stream, cfg, &name, &task).await?;
    let rate = prepared.len() as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    delete_group(&stream, cfg, &name).await?;
    eprintln!("[live] {} x{batch}: {rate:.0} msgs/s", which.name());
    fresh.close().await;
    Ok(rate)
}

/// Paces messages of `batch` points at `rate` messages/s for `secs` while `which` consumes
/// live; 100 times a second a message carries a trigger point whose rule fires an alert.
/// Latency = alert event (or echo) received − trigger published.
#[allow(clippy::too_many_arguments)]
async fn latency(
    cfg: &Config,
    rules: &RuleSet,
    which: LatencyConsumer,
    rate: f64,
    batch: usize,
    args: &BenchArgs,
) -> anyhow::Result<LatencyRun> {
    let (secs, series) = (args.latency_secs, args.series);
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The earlier phases leave gigabytes of dirty pages (streams, checkpoints); their writeback
    // lands on the same disk as this run's JetStream store and stalls nats-server for hundreds
    // of milliseconds. Flush them first so the tail measured is ours, not the kernel's.
    let _ = std::process::Command::new("sync").status();
    let fresh = Fresh::start(cfg).await?;
    let (js, cfg) = (&fresh.js, &fresh.cfg);
    let stream = js.get_stream(&cfg.streams.metrics.name).await?;
    let client = bus::connect(&cfg.nats).await?;
    // A consumer (and so a checkpoint) of its own per run: series state starts fresh.
    let name = match which {
        LatencyConsumer::Processor => format!("bench-latency-{batch}-{run}"),
        LatencyConsumer::RawEcho => format!("bench-echo-latency-{batch}-{run}"),
    };

    let sent: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut alerts = match which {
        LatencyConsumer::Processor => {
            client
                .subscribe(subjects::alert_filter(
                    Some("p1"),
                    Some("firing"),
                    Some("bench_trigger"),
                ))
                .await?
        }
        LatencyConsumer::RawEcho => client.subscribe(ECHO_SUBJECT).await?,
    };
    let (s2, h2) = (sent.clone(), hist.clone());
    // Slow triggers (over 20 ms) with when they were sent, to tell a stall from a slow path.
    let slow: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let slow2 = slow.clone();
    let receiver = tokio::spawn(async move {
        while let Some(m) = alerts.next().await {
            let now = Instant::now();
            let id = match which {
                LatencyConsumer::Processor => serde_json::from_slice::<AlertEvent>(&m.payload)
                    .ok()
                    .and_then(|e| e.labels.get("trigger").cloned()),
                LatencyConsumer::RawEcho => String::from_utf8(m.payload.to_vec()).ok(),
            };
            if let Some(t0) = id.and_then(|id| s2.lock().unwrap().get(&id).copied()) {
                let _ = h2.lock().unwrap().record((now - t0).as_micros() as u64);
                if now - t0 > Duration::from_millis(20) {
                    slow2.lock().unwrap().push((t0, now - t0));
                }
            }
        }
    });
    // Encode every message first: the pacing loop only publishes, so the generator does not
    // compete with the processor for the two cores.
    let base = clock::now_ms() - 600_000;
    let total = (rate * (secs + 1) as f64) as usize;
    let trigger_every = ((rate * args.trigger_every_ms as f64 / 1000.0) as usize).max(1);
    let mut prepared = Vec::with_capacity(total);
    let mut triggers = 0usize;
    for m in 0..total {
        let mut points = Vec::with_capacity(batch);
        let mut trigger_id = None;
        for b in 0..batch {
            let n = m * batch + b;
            let ts = base + (n / series) as i64 * 100 + (n % 100) as i64;
            // No triggers in the first second: series creation and warm-up are not latency.
            // A trigger is its message's last point: the message's subject (its source) is
            // its first point's, as for the other messages of those series.
            if b == batch - 1 && m % trigger_every == 0 && m as f64 >= rate {
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
        let (subject, payload) = encode_message(&points)?;
        prepared.push((subject, payload, trigger_id));
    }
    let (stop, task) = start_consumer(js, cfg, rules, which, &name).await?;
    let per_ms = rate / 1000.0;
    let cpu = CpuTimes::now();
    let start = Instant::now();
    let start_unix_ms = clock::now_ms();
    let mut sent_count = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent_count < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * 1000.0 * per_ms) as usize).min(total);
        while sent_count < due {
            let (subject, payload, trigger_id) = &prepared[sent_count];
            if let Some(id) = trigger_id {
                // Open loop: latency counts from when the message was due, not from when the
                // generator got round to it, so a stall of the generator (or of anything it
                // waits on) shows in the tail instead of being hidden (coordinated omission).
                let due_at = start + Duration::from_secs_f64(sent_count as f64 / rate);
                sent.lock().unwrap().insert(id.clone(), due_at);
            }
            client.publish(subject.clone(), payload.clone()).await?;
            sent_count += 1;
        }
    }
    client.flush().await?;
    let cpu_busy = cpu.busy_share_since();
    // Let the last alerts arrive.
    let wait_until = Instant::now() + Duration::from_secs(5);
    while hist.lock().unwrap().len() < triggers as u64 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await??;
    delete_group(&stream, cfg, &name).await?;
    receiver.abort();
    bus::close(&client).await;
    fresh.close().await;
    let h = hist.lock().unwrap().clone();
    let slow = slow.lock().unwrap().clone();
    if let Some(&(first, _)) = slow.first() {
        let (last, _) = slow[slow.len() - 1];
        let worst = slow.iter().map(|s| s.1).max().unwrap_or_default();
        eprintln!(
            "[latency] {} triggers over 20 ms, sent from {:.2} s to {:.2} s after the load started, worst {worst:?}",
            slow.len(),
            (first - start).as_secs_f64(),
            (last - start).as_secs_f64(),
        );
        eprintln!(
            "[latency] slow spans (load started at unix {start_unix_ms} ms): {}",
            slow_spans(&slow, start)
        );
    }
    eprintln!(
        "[latency] sent {sent_count} messages, {triggers} triggers, {} alerts received",
        h.len()
    );
    Ok(LatencyRun {
        hist: h,
        cpu_busy,
        triggers,
    })
}

/// Slow triggers grouped into spans of due time (a gap of more than 100 ms starts a new one):
/// one short span with a high worst is a stall; spans all through the run are a queue.
fn slow_spans(slow: &[(Instant, Duration)], start: Instant) -> String {
    let mut sorted = slow.to_vec();
    sorted.sort_by_key(|s| s.0);
    let mut spans: Vec<(Instant, Instant, usize, Duration)> = Vec::new();
    for (at, took) in sorted {
        match spans.last_mut() {
            Some(s) if at - s.1 <= Duration::from_millis(100) => {
                s.1 = at;
                s.2 += 1;
                s.3 = s.3.max(took);
            }
            _ => spans.push((at, at, 1, took)),
        }
    }
    spans
        .iter()
        .map(|(from, to, n, worst)| {
            format!(
                "{:.2}-{:.2} s: {n} (worst {} ms)",
                (*from - start).as_secs_f64(),
                (*to - start).as_secs_f64(),
                worst.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What one latency run measured.
struct LatencyRun {
    /// Trigger-to-alert (or echo) latency, µs.
    hist: Histogram<u64>,
    /// The machine's busy share (all cores, every process) while the load was paced.
    cpu_busy: f64,
    /// Triggers sent (the histogram holds those whose alert arrived).
    triggers: usize,
}

/// The machine's CPU time counters (all cores, in clock ticks), from `/proc/stat`.
#[derive(Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn now() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        CpuTimes {
            busy: total - idle,
            total,
        }
    }

    /// The share of the machine (every core) that was busy since `self`.
    fn busy_share_since(self) -> f64 {
        let now = CpuTimes::now();
        let total = now.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        now.busy.saturating_sub(self.busy) as f64 / total as f64
    }
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
    let mut pipeline = Pipeline::new(&pcfg, &cfg.ingest, rules.clone());
    let base = 1_700_000_000_000;
    let before = rss_bytes();
    let mut elapsed = Duration::ZERO;
    let mut points = 0usize;
    for j in 0..rounds {
        // Encode one round at a time (outside the timed part) to keep the heap small.
        let published = base + (j as i64 + 1) * STEP_MS;
        let messages = bench_round(n_series, j, base, published);
        let t = Instant::now();
        for m in &messages {
            let out = pipeline.process(std::slice::from_ref(m));
            points += out.stats.points as usize;
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

/// What a checkpoint costs the pipeline, in seconds (see [`steady_ns_per_point`]).
struct CheckpointCost {
    /// The cut: the pipeline stops for this long.
    pause: f64,
    /// From the cut until every series is written, batches going on.
    written: f64,
    /// The slowest and the median message (batch) while it was written, and the median
    /// message before the cut.
    slowest_message: f64,
    median_message: f64,
    message_before: f64,
}

/// Decode and pipeline cost per point once every series exists and the caches are warm: 5
/// timings of 20 rounds of every series, each round one batch, after 5 rounds of warm-up; the
/// median. The rounds are encoded before the timing. Then a checkpoint (into frames that are
/// dropped: the pipeline's share of it) as the processor writes one: cut, then written while
/// messages go on one at a time, a step of it after each.
fn steady_ns_per_point(cfg: &Config, rules: &RuleSet, n_series: usize) -> (f64, CheckpointCost) {
    const WARM: usize = 5;
    const ROUNDS: usize = 20;
    const TIMINGS: usize = 5;
    const AFTER: usize = 3;
    let mut pcfg = cfg.pipeline.clone();
    pcfg.shards = 1;
    let mut pipeline = Pipeline::new(&pcfg, &cfg.ingest, rules.clone());
    let base = 1_700_000_000_000;
    let rounds: Vec<Vec<Incoming>> = (0..WARM + ROUNDS * TIMINGS + 2 * AFTER)
        .map(|j| bench_round(n_series, j, base, base + (j as i64 + 1) * STEP_MS))
        .collect();
    let mut rounds = rounds.iter();
    for r in rounds.by_ref().take(WARM) {
        pipeline.process(r);
    }
    let mut timings: Vec<f64> = (0..TIMINGS)
        .map(|_| {
            let (t, mut points) = (Instant::now(), 0u64);
            for r in rounds.by_ref().take(ROUNDS) {
                points += pipeline.process(r).stats.points;
            }
            t.elapsed().as_nanos() as f64 / points as f64
        })
        .collect();
    timings.sort_by(f64::total_cmp);
    // Messages one at a time, as a live partition gets them: first without a checkpoint.
    let mut before = Vec::new();
    for m in rounds.by_ref().take(AFTER).flatten() {
        let t = Instant::now();
        pipeline.process(std::slice::from_ref(m));
        before.push(t.elapsed().as_secs_f64());
    }
    // The cut, as the pipeline thread makes it: the header taken and written, the shards told.
    let cut = Instant::now();
    let header = prismwatch::pipeline::checkpoint::CheckpointHeader {
        partition: 0,
        last_seq: 0,
        written_at_ms: 0,
        pipeline: pipeline.header(),
    };
    pipeline
        .begin_checkpoint(&header, Arc::new(drop))
        .expect("checkpoint header");
    let pause = cut.elapsed().as_secs_f64();
    let (mut during, mut written) = (Vec::new(), None);
    for m in rounds.by_ref().take(AFTER).flatten() {
        let t = Instant::now();
        pipeline.process(std::slice::from_ref(m));
        let done = pipeline.checkpoint_step(Instant::now() + Duration::from_millis(1));
        during.push(t.elapsed().as_secs_f64());
        if let Some(w) = done {
            w.expect("checkpoint written");
            written = Some(cut.elapsed().as_secs_f64());
            break;
        }
    }
    before.sort_by(f64::total_cmp);
    during.sort_by(f64::total_cmp);
    let cost = CheckpointCost {
        pause,
        written: written.expect("a checkpoint is written within three rounds"),
        slowest_message: during[during.len() - 1],
        median_message: during[during.len() / 2],
        message_before: before[before.len() / 2],
    };
    (timings[TIMINGS / 2], cost)
}

/// Round `j` of `n_series` series as stored messages of 100 points; message `m` always holds
/// the same series, on a source of its own.
fn bench_round(n_series: usize, j: usize, base: i64, published: i64) -> Vec<Incoming> {
    (0..n_series.div_ceil(100))
        .map(|m| {
            let pts: Vec<MetricPoint> = (0..100)
                .map(|i| bench_point((m * 100 + i) % n_series, j, base))
                .collect();
            Incoming {
                subject: format!("prism.part.0.bench.m{m}.batch").into(),
                payload: rmp_serde::to_vec_named(&pts).expect("encode").into(),
                content_type: None,
                stream_seq: (j * n_series + m) as u64 + 1,
                published_ms: published,
            }
        })
        .collect()
}

/// Peak RSS of this process so far (VmHWM), bytes.
fn peak_rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Checkpoint cost of `n` series (backbone operators, default rules, 3 points each) through a
/// real object store: serialise + write, and read + restore; sizes and RSS. In its own process.
async fn checkpoint_cost(
    cfg: &Config,
    rules: &RuleSet,
    n: usize,
) -> anyhow::Result<serde_json::Value> {
    let c = with_operators(cfg, false);
    let mut pcfg = c.pipeline.clone();
    pcfg.shards = 1;
    let mut pipeline = Pipeline::new(&pcfg, &c.ingest, rules.clone());
    let base = 1_700_000_000_000;
    for j in 0..3 {
        for m in bench_round(n, j, base, base + (j as i64 + 1) * STEP_MS) {
            pipeline.process(std::slice::from_ref(&m));
        }
    }
    let fresh = Fresh::start(&c).await?;
    let store = processor::CheckpointStore::open(&fresh.js).await?;
    let rss_before = rss_bytes();
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let t = Instant::now();
    // As the processor's pipeline thread writes it: a cut, then steps (no batches here).
    let writer = tokio::task::spawn_blocking(move || {
        let header = prismwatch::pipeline::checkpoint::CheckpointHeader {
            partition: 0,
            last_seq: 1,
            written_at_ms: 0,
            pipeline: pipeline.header(),
        };
        let frames = Arc::new(move |b| {
            let _ = tx.blocking_send(Ok(b));
        });
        pipeline.begin_checkpoint(&header, frames).expect("header");
        loop {
            let step = pipeline.checkpoint_step(Instant::now() + Duration::from_millis(1));
            if let Some(written) = step {
                written.expect("checkpoint written");
                return (pipeline, t.elapsed().as_secs_f64());
            }
        }
    });
    let bytes = store.save("bench-0", rx).await?;
    let write_secs = t.elapsed().as_secs_f64();
    let (_, serialise_secs) = writer.await?;
    let rss_after_write = rss_bytes();
    let peak_write = peak_rss_bytes();
    let t = Instant::now();
    let mut restored = Pipeline::new(&pcfg, &c.ingest, rules.clone());
    let header = store
        .load("bench-0", &mut restored)
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let read_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        restored.series_count() == n && header.last_seq == 1,
        "restore mismatch"
    );
    fresh.close().await;
    Ok(serde_json::json!({
        "series": n, "bytes": bytes, "serialise_secs": serialise_secs, "write_secs": write_secs,
        "read_secs": read_secs, "rss_before": rss_before, "rss_after_write": rss_after_write,
        "peak_rss_during_write": peak_write,
    }))
}

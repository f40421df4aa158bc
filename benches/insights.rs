//! `cargo bench --bench insights [--features otlp]`: what SLOs, exchange health and tracing cost,
//! in process (no NATS): the demo's metric set (MarketPrism's exchanges and services) through
//! the pipeline without and with the shipped SLOs (ns per point, and per SLI point); the
//! exchange-health engine per point; and, built with `otlp`, the per-message cost of the trace
//! sampling decision next to the pipeline's per-message cost.

use std::time::Instant;

use clap::Parser;
use prismwatch::config::builtin;
use prismwatch::health::{HealthConfig, HealthEngine};
use prismwatch::ingest::{Incoming, IngestConfig};
use prismwatch::model::MetricPoint;
use prismwatch::pipeline::{Pipeline, PipelineConfig};
use prismwatch::rules::RuleSet;
use prismwatch::tools::demo;

#[derive(Parser)]
struct Cli {
    /// Demo ticks (10 s each) of history: 8,640 = a day.
    #[arg(long, default_value_t = 8640)]
    ticks: i64,
    /// Passes per measurement; the report gives the median.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rules(files: &[&str]) -> RuleSet {
    let mut set = RuleSet::default();
    for (name, text) in builtin::RULE_FILES {
        if files.contains(name) {
            set.add_file(name, text).unwrap();
        }
    }
    set
}

/// The demo's messages: one per exchange and per service each tick, as the demo publishes them.
fn messages(ticks: i64) -> (Vec<Incoming>, Vec<MetricPoint>) {
    let t0 = 1_764_000_000_000;
    let mut out = Vec::new();
    let mut points = Vec::new();
    for i in 0..ticks {
        let ts = t0 + i * demo::STEP_MS;
        for batch in demo::tick(i % (demo::SCENARIO_MINUTES * 6), ts) {
            let subject = prismwatch::tools::publish::subject_for(&batch[0]);
            let stored = subject.replacen("prism.metrics.", "prism.part.0.", 1);
            out.push(Incoming {
                subject: stored.into(),
                payload: rmp_serde::to_vec_named(&batch).unwrap().into(),
                content_type: None,
                stream_seq: out.len() as u64 + 1,
                published_ms: ts,
            });
            points.extend(batch);
        }
    }
    (out, points)
}

/// ns per point of the pipeline over `msgs` with `rules` (median of passes, fresh pipelines).
fn pipeline_ns(msgs: &[Incoming], points: usize, rules: &RuleSet, repeats: usize) -> f64 {
    let cfg = PipelineConfig::default();
    median(
        (0..repeats)
            .map(|_| {
                let mut p = Pipeline::new(&cfg, &IngestConfig::default(), rules.clone());
                let t = Instant::now();
                for b in msgs.chunks(256) {
                    std::hint::black_box(p.process(b));
                }
                t.elapsed().as_nanos() as f64 / points as f64
            })
            .collect(),
    )
}

fn main() {
    let cli = Cli::parse();
    let (msgs, points) = messages(cli.ticks);
    let n = points.len();
    let sli_names = [
        "service_up",
        "api_response_time_ms",
        "api_error_rate_percent",
        "exchange_connection_status",
        "exchange_latency_ms",
        "exchange_error_rate_percent",
    ];
    let sli_points = points
        .iter()
        .filter(|p| sli_names.contains(&p.name.as_str()))
        .count();
    println!(
        "{} messages, {n} points ({sli_points} SLI points), {} days of the demo's metric set\n",
        msgs.len(),
        cli.ticks as f64 * demo::STEP_MS as f64 / 86_400_000.0
    );
    let without = pipeline_ns(&msgs, n, &rules(&["marketprism.yaml"]), cli.repeats);
    let with = pipeline_ns(
        &msgs,
        n,
        &rules(&["marketprism.yaml", "slos.yaml"]),
        cli.repeats,
    );
    println!("| pipeline (every detector, shipped rules) | ns per point |");
    println!("|---|---|");
    println!("| without SLOs | {without:.0} |");
    println!("| with the shipped SLOs (3 SLOs, 9 objectives, their derived series and 27 rules) | {with:.0} |");
    println!(
        "| SLO cost | {:.0} per point, {:.0} per SLI point ({:+.1} %) |\n",
        with - without,
        (with - without) * n as f64 / sli_points as f64,
        (with / without - 1.0) * 100.0
    );

    // The SLO engine alone: counting every point (one map lookup for a point of no SLI) and
    // closing the minutes, without the derived points' way through the shards.
    let slo_rules = rules(&["slos.yaml"]);
    let keys: Vec<String> = points
        .iter()
        .map(|p| {
            prismwatch::model::SeriesKey::from_parts(&p.name, &p.labels)
                .0
                .to_string()
        })
        .collect();
    let mut derived_per_run = 0;
    let engine = median(
        (0..cli.repeats)
            .map(|_| {
                let mut e = prismwatch::slo::SloEngine::new(&slo_rules.slos);
                let (mut dkeys, mut dpoints) = (String::new(), Vec::new());
                let t = Instant::now();
                for (k, p) in keys.iter().zip(&points) {
                    e.observe(k, p.timestamp, p.value);
                    if p.timestamp - 5_000 >= e.next_close() {
                        e.advance(p.timestamp - 5_000, &mut dkeys, &mut dpoints);
                    }
                }
                derived_per_run = dpoints.len();
                std::hint::black_box(&dpoints);
                t.elapsed().as_nanos() as f64 / n as f64
            })
            .collect(),
    );
    let counting = median(
        (0..cli.repeats)
            .map(|_| {
                let mut e = prismwatch::slo::SloEngine::new(&slo_rules.slos);
                let t = Instant::now();
                for (k, p) in keys.iter().zip(&points) {
                    e.observe(k, p.timestamp, p.value);
                }
                std::hint::black_box(e.next_close());
                t.elapsed().as_nanos() as f64 / n as f64
            })
            .collect(),
    );
    let minutes = cli.ticks as f64 * demo::STEP_MS as f64 / 60_000.0;
    println!(
        "| SLO engine, counting only | {counting:.0} per point; closing a minute and deriving its series: {:.1} µs per group-minute (5 groups) |",
        (engine - counting) * n as f64 / minutes / 5.0 / 1000.0
    );
    println!(
        "| SLO engine alone (counting, minutes closed, series derived) | {engine:.0} per point; {:.0} derived points a minute (5 groups x 28 series), {:.2} per input point of this small metric set |\n",
        derived_per_run as f64 / minutes,
        derived_per_run as f64 / n as f64
    );

    let exchange: Vec<&MetricPoint> = points
        .iter()
        .filter(|p| p.labels.contains_key("exchange"))
        .collect();
    let health = median(
        (0..cli.repeats)
            .map(|_| {
                let mut e = HealthEngine::new(HealthConfig::default());
                let t = Instant::now();
                let mut written = 0;
                for p in &exchange {
                    e.observe(p);
                    written += e.close(e.newest - 30_000).len();
                }
                std::hint::black_box(written);
                t.elapsed().as_nanos() as f64 / exchange.len() as f64
            })
            .collect(),
    );
    println!(
        "| exchange health (scores, components, peer deviations) | {health:.0} ns per exchange point ({} points) |",
        exchange.len()
    );

    #[cfg(feature = "otlp")]
    {
        // Tracing on (to an endpoint nobody listens on: nothing is sampled here anyway): the
        // decision per message is a header lookup and a hash.
        prismwatch::trace::init("http://127.0.0.1:9", 0.0001).unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "application/msgpack");
        let calls = 2_000_000u64;
        let per_msg = median(
            (0..cli.repeats)
                .map(|_| {
                    let t = Instant::now();
                    let mut sampled = 0;
                    for seq in 0..calls {
                        sampled += usize::from(
                            prismwatch::trace::ingest(
                                Some(&headers),
                                "prism.part.0.exchange.binance.batch",
                                seq,
                            )
                            .is_some(),
                        );
                    }
                    std::hint::black_box(sampled);
                    t.elapsed().as_nanos() as f64 / calls as f64
                })
                .collect(),
        );
        let pipeline_per_msg = without * n as f64 / msgs.len() as f64;
        println!(
            "| tracing on (ratio 0.0001): sampling decision | {per_msg:.0} ns per message, {:.2} % of the pipeline's {pipeline_per_msg:.0} ns per message |",
            per_msg / pipeline_per_msg * 100.0
        );
    }
}

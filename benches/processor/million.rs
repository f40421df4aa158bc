//! A million series with every detector on, in a running processor: its RSS, and the RSS its
//! checkpoint adds while it is written.
//!
//! Warming a million series up to their full state through NATS would take hours (the seasonal
//! history alone is 8 days of 1-minute points per series), so the state is grown once and copied:
//! 16 template series are fed 9 days of noisy daily cycles through a real pipeline with every
//! detector (history ring full, season installed, shape categories filled); the bench then writes
//! a checkpoint in which each of the million series holds a copy of one template's state under its
//! own key. A processor in a child process (`prismwatch run`, every detector on) restores it,
//! receives one point for each of the million series through JetStream, and is measured from
//! `/proc`: its RSS once the points are acked, then its peak RSS while its next checkpoint of the
//! million series is written (the peak is reset first through `clear_refs`).

use std::time::{Duration, Instant};

use prismwatch::config::Config;
use prismwatch::ingest::Incoming;
use prismwatch::model::MetricPoint;
use prismwatch::pipeline::checkpoint::{self, CheckpointHeader, CheckpointWriter};
use prismwatch::pipeline::Pipeline;
use prismwatch::rules::RuleSet;
use prismwatch::tools::clock;
use prismwatch::{processor, subjects};
use tokio::io::AsyncReadExt;

use super::{wait_acked, with_operators, Fresh};

const TEMPLATES: usize = 16;
const STEP_MS: i64 = 60_000;
const DAYS: i64 = 9;
const GROUP: &str = "bench-million";
const METRIC: &str = "bench_state_metric";
const SOURCE: &str = "bench-million";

fn point(series: usize, ts: i64, i: i64) -> MetricPoint {
    let day = (ts.rem_euclid(86_400_000)) as f64 / 86_400_000.0 * std::f64::consts::TAU;
    // A deterministic wobble per series and point (no RNG needed for a memory measurement).
    let h = (series as u64 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let wobble = (h >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
    let value = 100.0 + 10.0 * series as f64 + 30.0 * day.sin() + 6.0 * wobble;
    MetricPoint {
        name: METRIC.to_string(),
        labels: [("series".to_string(), format!("{series:07}"))]
            .into_iter()
            .collect(),
        value,
        timestamp: ts,
    }
}

/// Runs the measurement and prints its lines.
pub async fn run(cfg: &Config, rules: &RuleSet, n: usize) -> anyhow::Result<()> {
    let mut c = with_operators(cfg, true);
    c.streams.partitions = 1;
    let fresh = Fresh::start(&c).await?;
    let (js, c) = (&fresh.js, &fresh.cfg);

    // 1. The templates: every detector's state grown to its bounds.
    let t = Instant::now();
    let subject = format!("{}.0.service.{SOURCE}.{METRIC}", subjects::PARTITION_PREFIX);
    let end = clock::now_ms() - STEP_MS;
    let start = end - DAYS * 86_400_000;
    let mut template = Pipeline::new(&c.pipeline, &c.ingest, rules.clone());
    let mut seq = 0u64;
    let mut ts = start;
    let mut i = 0i64;
    while ts <= end {
        let pts: Vec<MetricPoint> = (0..TEMPLATES).map(|s| point(s, ts, i)).collect();
        seq += 1;
        template.process(&[Incoming {
            subject: subject.clone().into(),
            payload: rmp_serde::to_vec_named(&pts)?.into(),
            content_type: None,
            stream_seq: seq,
            published_ms: ts,
        }]);
        ts += STEP_MS;
        i += 1;
    }
    let mut snaps = Vec::new();
    template.for_each_series(|s| snaps.push(s.to_snapshot()));
    snaps.sort_by(|a, b| a.key.cmp(&b.key));
    anyhow::ensure!(snaps.len() == TEMPLATES, "{} template series", snaps.len());
    let counted = template.approx_state_bytes() as f64 / TEMPLATES as f64;
    let largest = template.max_state_bytes();
    eprintln!(
        "[million] {TEMPLATES} templates warmed with {i} points each in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // 2. A checkpoint of `n` series, each a template's state under its own key, streamed.
    let t = Instant::now();
    let store = processor::CheckpointStore::open(js).await?;
    let name = processor::CheckpointStore::object_name(GROUP, 0);
    let header = CheckpointHeader {
        partition: 0,
        last_seq: 0,
        written_at_ms: clock::now_ms(),
        pipeline: prismwatch::pipeline::PipelineHeader {
            series: n as u64,
            ..template.header()
        },
    };
    drop(template);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let mut w = CheckpointWriter::new(&header, |b| {
            let _ = tx.blocking_send(Ok(b));
        })?;
        for k in 0..n {
            let tpl = &snaps[k % TEMPLATES];
            let mut s = tpl.clone();
            s.key = tpl
                .key
                .replace(&format!("{:07}", k % TEMPLATES), &format!("{k:07}"));
            w.series(&s)?;
        }
        Ok(w.finish())
    });
    let bytes = store.save(&name, rx).await?;
    writer.await??;
    eprintln!(
        "[million] checkpoint of {n} series: {:.1} GB in {:.0} s",
        bytes as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );

    // 3. The processor restores it.
    let t = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--serve", &c.nats.url, "--serve-group", GROUP])
        .args(["--serve-detectors", "--serve-partitions", "1"])
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let stream = js.get_stream(&c.streams.metrics.name).await?;
    let consumer = format!("{GROUP}-0");
    let consumer_name = super::consumers_of(c, GROUP)
        .into_iter()
        .next()
        .unwrap_or(consumer);
    while stream.consumer_info(&consumer_name).await.is_err() {
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "the processor exited while restoring"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restored_rss = proc_kb(pid, "VmRSS:")? * 1024;
    eprintln!(
        "[million] restored in {:.0} s, RSS {:.2} GB",
        t.elapsed().as_secs_f64(),
        restored_rss as f64 / 1e9
    );

    // 4. One point for each series, live.
    let t = Instant::now();
    let live_subject = subjects::metric_subject("service", SOURCE, METRIC);
    let mut acks = std::collections::VecDeque::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let pts: Vec<MetricPoint> = chunk.iter().map(|k| point(*k, end + STEP_MS, i)).collect();
        acks.push_back(
            js.publish(live_subject.clone(), rmp_serde::to_vec_named(&pts)?.into())
                .await?,
        );
        if acks.len() >= 1000 {
            acks.pop_front().expect("an ack").await?;
        }
    }
    for a in acks {
        a.await?;
    }
    let idle = tokio::spawn(std::future::pending::<()>());
    wait_acked(&stream, c, GROUP, &idle).await?;
    idle.abort();
    let running_rss = proc_kb(pid, "VmRSS:")? * 1024;
    eprintln!(
        "[million] {n} points processed in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // 5. Its next checkpoint (on its timer), with the peak RSS reset just before.
    let bucket = js.get_object_store(subjects::CHECKPOINT_BUCKET).await?;
    let before = bucket.info(&name).await?.nuid;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let reset_at = time::OffsetDateTime::now_utc();
    let t = Instant::now();
    let info = loop {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "no checkpoint in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        match bucket.info(&name).await {
            Ok(i) if i.nuid != before => break i,
            _ => {}
        }
    };
    // The object is stored when its last chunk is: it must have been written after the reset.
    anyhow::ensure!(
        info.modified.is_some_and(|m| m > reset_at),
        "the checkpoint measured was written before the peak was reset"
    );
    let peak_rss = proc_kb(pid, "VmHWM:")? * 1024;
    let after_rss = proc_kb(pid, "VmRSS:")? * 1024;
    // The checkpoint's header says how many series the processor held.
    let mut obj = bucket.get(&name).await?;
    let mut pre = [0u8; 12];
    obj.read_exact(&mut pre).await?;
    let mut frame = vec![0u8; checkpoint::frame_len(pre[8..12].try_into()?)?];
    obj.read_exact(&mut frame).await?;
    let held = checkpoint::decode_header(&frame)?.pipeline.series;
    drop(obj);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    fresh.close().await;

    anyhow::ensure!(
        held as usize == n,
        "the processor held {held} series, not {n}"
    );
    println!("## {n} series with every detector on, in a running processor (`prismwatch run` in a child process)");
    println!("| state | RSS | per series | checkpoint |");
    println!("|---|---|---|---|");
    println!(
        "| restored, before any point | {:.2} GiB | {:.0} B | {:.2} GB read |",
        gib(restored_rss),
        restored_rss as f64 / n as f64,
        bytes as f64 / 1e9
    );
    println!(
        "| running: one point per series acked | **{:.2} GiB** | {:.0} B | |",
        gib(running_rss),
        running_rss as f64 / n as f64
    );
    println!(
        "| while its checkpoint of {held} series is written | peak {:.2} GiB, **+{:.1} %** | | {:.2} GB written ({:.2} GiB after) |",
        gib(peak_rss),
        (peak_rss as f64 / running_rss as f64 - 1.0) * 100.0,
        info.size as f64 / 1e9,
        gib(after_rss)
    );
    println!("(each series a copy of one of {TEMPLATES} templates warmed with {i} one-minute points: {counted:.0} bytes of state counted per template series, the largest {largest})");
    Ok(())
}

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// A `kB` line of `/proc/PID/status`.
fn proc_kb(pid: u32, field: &str) -> anyhow::Result<usize> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

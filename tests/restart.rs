//! Killing the processor (SIGKILL) mid-stream and restarting it loses no alert event and
//! publishes no duplicate: checked on the contents of PRISM_ALERTS.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use common::*;
use prismwatch::model::MetricPoint;

fn rules_file(dir: &tempfile::TempDir) -> String {
    let p = dir.path().join("rules.yaml");
    std::fs::write(&p, TEST_RULES).unwrap();
    p.display().to_string()
}

/// The processor as a child process, killed (SIGKILL) when dropped, even by a failing test.
struct Processor(Child);

impl Processor {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_processor(srv: &LocalNatsServer, rules: &str) -> Processor {
    let child = Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .arg("run")
        .env("PRISMWATCH__NATS__URL", srv.url())
        .env("PRISMWATCH__TELEMETRY__METRICS_LISTEN", "")
        .env("PRISMWATCH__INGEST__MAX_BATCH", "20")
        // Delivered-but-unacked messages of the killed run come back after ack_wait.
        .env("PRISMWATCH__INGEST__ACK_WAIT_SECS", "2")
        .env("PRISMWATCH__PIPELINE__CHECKPOINT_INTERVAL_MS", "20")
        .env("PRISMWATCH__RULES__PATHS", format!("[{rules}]"))
        .env(
            "PRISMWATCH_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/prismwatch.yaml"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Processor(child)
}

/// The scenario on many exchanges, so processing takes long enough to be interrupted.
fn big_scenario() -> Vec<MetricPoint> {
    let base = scenario();
    let mut out = Vec::new();
    for chunk in base.chunks(3) {
        for copy in 0..8 {
            for p in chunk {
                let mut p = p.clone();
                let ex = format!("{}-{copy}", p.labels["exchange"]);
                p.labels.insert("exchange".into(), ex);
                out.push(p);
            }
        }
    }
    out
}

/// A fresh server whose metrics stream holds `points`, one per message.
async fn server_with(points: &[MetricPoint]) -> (LocalNatsServer, async_nats::jetstream::Context) {
    let srv = server();
    let js = js(&srv).await;
    prismwatch::bus::ensure_streams(&js, &config(&srv).streams)
        .await
        .unwrap();
    publish(&js, points, 1).await;
    (srv, js)
}

async fn ack_floor(js: &async_nats::jetstream::Context) -> Option<u64> {
    let stream = js.get_stream("PRISM_METRICS").await.ok()?;
    let mut c = stream
        .get_consumer::<consumer::pull::Config>("prismwatch-processor")
        .await
        .ok()?;
    Some(c.info().await.ok()?.ack_floor.stream_sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_loses_nothing_and_duplicates_nothing() {
    let points = big_scenario();
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(&dir);

    // Reference: one uninterrupted run.
    let reference = {
        let (srv, js) = server_with(&points).await;
        let mut p = start_processor(&srv, &rules);
        wait_consumed(&js, "prismwatch-processor", Duration::from_secs(120)).await;
        p.kill();
        alert_events(&js).await
    };
    assert!(
        reference.len() >= 8 * 7,
        "reference run produced {} events",
        reference.len()
    );

    let (srv, js) = server_with(&points).await;
    let total = points.len() as u64;
    let mut p = start_processor(&srv, &rules);
    // Kill it with SIGKILL once it is a quarter through.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        match ack_floor(&js).await {
            Some(floor) if floor > total / 4 => break floor,
            _ if Instant::now() > deadline => break 0,
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    p.kill();
    assert!(killed_at > 0, "processor made no progress");
    assert!(
        killed_at < total,
        "killed only after the end ({killed_at} of {total}): input too small"
    );
    let before_restart = alert_events(&js).await.len();
    assert!(
        before_restart < reference.len(),
        "everything was already published before the kill"
    );

    let mut p = start_processor(&srv, &rules);
    wait_consumed(&js, "prismwatch-processor", Duration::from_secs(120)).await;
    p.kill();

    let after = alert_events(&js).await;
    let ids: Vec<String> = after.iter().map(|e| e.msg_id()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "duplicate alert events in PRISM_ALERTS"
    );
    assert_eq!(
        sorted(after),
        sorted(reference),
        "killed at {killed_at} of {total}"
    );
}

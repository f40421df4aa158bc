//! Killing the processor (SIGKILL) mid-stream and restarting it loses no alert event and
//! publishes no duplicate: checked on the contents of PRISM_ALERTS.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use prismwatch::model::MetricPoint;

/// A fresh server whose metrics stream holds `points`, one per message.
async fn server_with(points: &[MetricPoint]) -> (NatsServer, async_nats::jetstream::Context) {
    let srv = server();
    let js = js(&srv).await;
    declare(&js, &config(&srv)).await;
    publish(&js, points, 1).await;
    (srv, js)
}

/// Messages delivered to the group's partition consumers so far.
async fn delivered(js: &async_nats::jetstream::Context) -> u64 {
    let Ok(stream) = js.get_stream("PRISM_METRICS").await else {
        return 0;
    };
    let mut n = 0;
    for p in 0..4 {
        if let Ok(info) = stream.consumer_info(format!("{GROUP}-{p}")).await {
            n += info.ack_floor.consumer_sequence;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_loses_nothing_and_duplicates_nothing() {
    let points = big_scenario();
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(&dir, TEST_RULES);
    let extra = [("PRISMWATCH__INGEST__MAX_BATCH", "20")];

    // Reference: one uninterrupted run.
    let reference = {
        let (srv, js) = server_with(&points).await;
        let mut p = ChildProcessor::spawn(&srv.url(), &rules, &extra, None);
        wait_consumed(&js, GROUP, Duration::from_secs(120)).await;
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
    let mut p = ChildProcessor::spawn(&srv.url(), &rules, &extra, None);
    // Kill it with SIGKILL once it is a quarter through.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let n = delivered(&js).await;
        if n > total / 4 {
            break n;
        }
        assert!(Instant::now() < deadline, "processor made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    p.kill();
    assert!(
        !consumed(&js, GROUP, 4).await,
        "killed only after the end ({killed_at} of {total}): input too small"
    );
    let before_restart = alert_events(&js).await.len();
    assert!(
        before_restart < reference.len(),
        "everything was already published before the kill"
    );

    let since = prismwatch::tools::clock::now_ms() - 5;
    let mut p = ChildProcessor::spawn(&srv.url(), &rules, &extra, None);
    wait_consumed_since(&js, GROUP, since, Duration::from_secs(120)).await;
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

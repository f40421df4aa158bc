//! One writer per partition, scale-out through NATS: several `prismwatch run` processes share
//! the partitions of one nats-server; kill -9 of one moves its partitions to the others within
//! seconds, and PRISM_ALERTS ends with exactly the events of an undisturbed run. Health checks
//! report what a process owns.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use prismwatch::model::AlertEvent;

async fn undisturbed(points: &[prismwatch::model::MetricPoint]) -> Vec<AlertEvent> {
    let (_srv, cfg, js) = fresh().await;
    publish(&js, points, 1).await;
    process_all(&cfg, test_rules()).await;
    alert_events(&js).await
}

/// `n` processes; once they have shared out the partitions, the one owning most is killed
/// (SIGKILL) with the stream half consumed; the rest must take over and finish.
async fn kill_one_of(n: usize) {
    let points = big_scenario();
    let reference = undisturbed(&points).await;
    assert!(reference.len() >= 8 * 7);

    let (srv, _cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let rules_path = rules_file(&dir, TEST_RULES);
    let extra = [("PRISMWATCH__INGEST__MAX_BATCH", "20")];
    let mut procs: Vec<ChildProcessor> = (0..n)
        .map(|i| {
            ChildProcessor::spawn(
                &srv.url(),
                &rules_path,
                &extra,
                Some(dir.path().join(format!("p{i}.log"))),
            )
        })
        .collect();
    // Shared out: every partition owned, by n members.
    wait_for(
        "the partitions to be shared out",
        Duration::from_secs(30),
        || async {
            let owners = lease_owners(&js, GROUP).await;
            owners.len() == 4 && owners.values().collect::<BTreeSet<_>>().len() == n
        },
    )
    .await;
    let before = lease_owners(&js, GROUP).await;
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for m in before.values() {
        *counts.entry(m).or_default() += 1;
    }
    let victim_member = counts
        .iter()
        .max_by_key(|(_, c)| **c)
        .unwrap()
        .0
        .to_string();
    let victim_parts: Vec<u32> = before
        .iter()
        .filter(|(_, m)| **m == victim_member)
        .map(|(p, _)| *p)
        .collect();
    let victim = procs
        .iter()
        .position(|p| p.log().contains(&format!("member={victim_member}")))
        .expect("the victim's log names its member id");

    let half = points.len() / 2;
    publish(&js, &points[..half], 1).await;
    // Under load: the victim dies mid-stream.
    wait_for("progress", Duration::from_secs(30), || async {
        alert_events(&js).await.len() >= reference.len() / 4
    })
    .await;
    procs[victim].kill();
    let killed_at = Instant::now();
    publish(&js, &points[half..], 1).await;
    wait_for(
        "the victim's partitions to move",
        Duration::from_secs(30),
        || async {
            let owners = lease_owners(&js, GROUP).await;
            victim_parts
                .iter()
                .all(|p| owners.get(p).is_some_and(|m| *m != victim_member))
        },
    )
    .await;
    let moved_in = killed_at.elapsed();
    eprintln!("{n} processes: partitions {victim_parts:?} moved {moved_in:?} after kill -9");
    assert!(
        moved_in < Duration::from_secs(10),
        "takeover took {moved_in:?}"
    );
    wait_consumed(&js, GROUP, Duration::from_secs(120)).await;

    let after = alert_events(&js).await;
    let ids: Vec<String> = after.iter().map(|e| e.msg_id()).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "duplicate alert events in PRISM_ALERTS"
    );
    assert_eq!(sorted(after), sorted(reference));
    for p in &mut procs {
        p.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_one_killed_the_other_takes_over_and_nothing_is_lost_or_doubled() {
    kill_one_of(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processors_one_killed_the_others_take_over_and_nothing_is_lost_or_doubled() {
    kill_one_of(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_report_connection_and_partitions() {
    let (srv, mut cfg, _js) = fresh().await;
    cfg.http.listen = free_listen_addr();
    let app = RunningApp::start(cfg.clone(), test_rules());
    // Ready as soon as it joined (a standby owning nothing is ready too): wait until this,
    // the only member, also owns every partition.
    wait_for(
        "ready and owning 4 partitions",
        Duration::from_secs(20),
        || async {
            let (code, body) = http_get(&cfg.http.listen, "/readyz").await;
            code == 200 && body.matches("\"phase\":\"running\"").count() == 4
        },
    )
    .await;
    let (code, body) = http_get(&cfg.http.listen, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["nats"]["connected"], true);
    assert_eq!(v["processor"]["joined"], true);
    assert_eq!(v["processor"]["partitions_total"], 4);
    let owned: Vec<&String> = v["processor"]["partitions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(owned, ["0", "1", "2", "3"]);
    assert_eq!(v["processor"]["partitions"]["0"]["phase"], "running");
    let (code, body) = http_get(&cfg.http.listen, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = http_get(&cfg.http.listen, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("prismwatch_"), "{metrics}");

    // The server goes away: not ready, and it says why; still alive.
    drop(srv);
    wait_for("not ready", Duration::from_secs(20), || async {
        http_get(&cfg.http.listen, "/readyz").await.0 == 503
    })
    .await;
    let (_, body) = http_get(&cfg.http.listen, "/readyz").await;
    assert!(body.contains("not connected to NATS"), "{body}");
    assert_eq!(http_get(&cfg.http.listen, "/healthz").await.0, 200);
    app.stop().await.unwrap();
}

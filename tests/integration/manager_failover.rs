//! The alert manager killed (-9) at the worst moments, and two managers failing over: no
//! notification lost, none duplicated, counted on PRISM_NOTIFY.

use crate::common;

use common::manager::{alerting_env, Driver, MANAGER_GROUP};
use common::{fresh, ChildProcessor};
use prismwatch::model::Priority;

const ROUTING: &str = r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers: [{name: team}]
"#;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules");

/// `prismwatch run --only manager` on virtual time.
fn manager(
    url: &str,
    routing: &str,
    extra: &[(&str, &str)],
    log: &std::path::Path,
) -> ChildProcessor {
    let mut env: Vec<(String, String)> = alerting_env(routing);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ChildProcessor::spawn_with(
        url,
        RULES,
        &["--only", "manager"],
        &env,
        Some(log.to_path_buf()),
    )
}

/// (seconds after T0, notification id) of every stored notification.
async fn sent(d: &Driver) -> Vec<(i64, String)> {
    d.notifications()
        .await
        .iter()
        .map(|n| ((n.created_at - common::T0) / 1000, n.id.clone()))
        .collect()
}

/// The script: two alerts, a first notification after group_wait (30 s), a repeat an hour
/// later (3630 s). `crash` is called at 20 s (inside group_wait) and at 2000 s (inside the
/// repeat cycle).
async fn first_part(d: &mut Driver) {
    d.fire("cpu_high", Priority::P2, &[("exchange", "binance")])
        .await;
    d.advance_to(10).await;
    d.fire("cpu_high", Priority::P2, &[("exchange", "okx")])
        .await;
    d.advance_to(20).await;
}

fn expected(ids: &[(i64, String)]) {
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0].0, 30);
    assert_eq!(ids[1].0, 3_630);
    assert!(
        ids[0].1.ends_with(".1") && ids[1].1.ends_with(".2"),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_group_wait_and_mid_repeat_loses_and_repeats_nothing() {
    let (srv, cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(&routing, ROUTING).unwrap();
    let routing = routing.display().to_string();
    let log = dir.path().join("manager.log");
    let url = srv.url();
    let mut child = manager(&url, &routing, &[], &log);
    let mut d = Driver::new(js, cfg);
    d.tick().await;
    first_part(&mut d).await;
    child.kill();
    let mut child = manager(&url, &routing, &[], &log);
    d.advance_to(2_000).await;
    child.kill();
    let _child = manager(&url, &routing, &[], &log);
    d.advance_to(3_700).await;
    expected(&sent(&d).await);
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_publishing_and_storing_republishes_the_same_ids() {
    // Here, not at the top: the file's other tests build without the feature.
    use futures::StreamExt;
    use std::time::Duration;

    let (srv, cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(&routing, ROUTING).unwrap();
    let routing = routing.display().to_string();
    let url = srv.url();
    // This one aborts right after its first notification is stored on PRISM_NOTIFY, before
    // its state is: the one after it finds the group not notified and flushes it again.
    let log = dir.path().join("first.log");
    let mut first = manager(
        &url,
        &routing,
        &[("PRISMWATCH_FAULT_ABORT_AFTER_NOTIFY", "1")],
        &log,
    );
    let mut d = Driver::new(js.clone(), cfg);
    d.tick().await;
    // Every publish, including those the stream drops as duplicates.
    let mut raw = js
        .client()
        .subscribe(prismwatch::subjects::NOTIFY_SEND_ALL)
        .await
        .unwrap();
    d.fire("cpu_high", Priority::P2, &[("exchange", "binance")])
        .await;
    d.advance_to(29).await;
    d.now_s = 30;
    // The clock request that makes it flush gets no answer: the process aborts.
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        js.client().request(
            common::manager::CLOCK,
            serde_json::json!({ "now_ms": common::T0 + 30_000 })
                .to_string()
                .into(),
        ),
    )
    .await;
    let status = first.terminate(Duration::from_secs(5)).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted by the fault: {}",
        first.log()
    );
    assert_eq!(sent(&d).await.len(), 1, "published before the crash");
    let _second = manager(&url, &routing, &[], &dir.path().join("second.log"));
    d.advance_to(3_700).await;
    let ids = sent(&d).await;
    expected(&ids);
    // Published three times (the first one twice), stored twice.
    let mut ids_published = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), raw.next()).await {
        let n: prismwatch::model::Notification = serde_json::from_slice(&m.payload).unwrap();
        ids_published.push(n.id);
    }
    assert_eq!(ids_published.len(), 3, "{ids_published:?}");
    assert_eq!(ids_published[0], ids_published[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_one_active_the_other_takes_over_after_kill_9() {
    let (srv, cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(&routing, ROUTING).unwrap();
    let routing = routing.display().to_string();
    let url = srv.url();
    let a = manager(&url, &routing, &[], &dir.path().join("a.log"));
    let b = manager(&url, &routing, &[], &dir.path().join("b.log"));
    let mut d = Driver::new(js.clone(), cfg);
    d.tick().await;
    first_part(&mut d).await;
    // Kill the active one (the lease's owner); the other takes over.
    let (mut active, standby) = split_active(&js, a, b).await;
    active.kill();
    d.advance_to(2_000).await;
    // A new standby joins; the active one (the former standby) is killed in turn.
    let c = manager(&url, &routing, &[], &dir.path().join("c.log"));
    let (mut active, _standby) = split_active(&js, standby, c).await;
    active.kill();
    d.advance_to(3_700).await;
    expected(&sent(&d).await);
}

/// (the active manager, the standby) of two, by the owner of the group's lease.
async fn split_active(
    js: &async_nats::jetstream::Context,
    x: ChildProcessor,
    y: ChildProcessor,
) -> (ChildProcessor, ChildProcessor) {
    let owner = common::lease_owners(js, MANAGER_GROUP)
        .await
        .get(&0)
        .cloned()
        .unwrap_or_default();
    // Member ids are `<host>-<pid>-<salt>`.
    if owner.contains(&format!("-{}-", x.pid())) {
        (x, y)
    } else {
        assert!(
            owner.contains(&format!("-{}-", y.pid())),
            "lease owner {owner:?}"
        );
        (y, x)
    }
}

//! Reloading rules and routes: by command (validated, answered, applied by every component)
//! and by SIGHUP; a broken file changes nothing and says why; alerts of unchanged rules carry
//! on, alerts of removed rules end.

use crate::common;

use std::time::Duration;

use common::{fresh, point, publish, wait_consumed_since, wait_for, ChildProcessor, RunningApp};
use prismwatch::alerting::command::CommandBody;
use prismwatch::alerting::{alert::ManagedAlert, client};
use prismwatch::app::Component;
use prismwatch::model::{AlertStatus, EndReason};
use prismwatch::tools::clock;

const TWO_RULES: &str = r#"
rules:
  - name: delay_high
    metric: market_data_delay_seconds
    condition: value > 5
    priority: P2
  - name: delay_very_high
    metric: market_data_delay_seconds
    condition: value > 8
    priority: P1
"#;

fn one_rule() -> String {
    TWO_RULES[..TWO_RULES.find("  - name: delay_very_high").unwrap()].to_string()
}

async fn firing_events(js: &async_nats::jetstream::Context, rule: &str) -> Vec<String> {
    common::alert_events(js)
        .await
        .into_iter()
        .filter(|e| e.rule == rule && e.status == AlertStatus::Firing)
        .map(|e| e.id)
        .collect()
}

async fn managed(js: &async_nats::jetstream::Context, rule: &str) -> Option<ManagedAlert> {
    client::alerts(js)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.rule == rule)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_state_of_unchanged_rules_and_ends_alerts_of_removed_ones() {
    let (_srv, mut cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("rules.yaml");
    std::fs::write(&rules_file, TWO_RULES).unwrap();
    cfg.rules.paths = vec![rules_file.clone()];
    let rules = prismwatch::rules::load_rules(&cfg.rules.paths).unwrap();
    let app = RunningApp::start_with(
        cfg.clone(),
        rules,
        vec![Component::Processor, Component::Manager],
    );

    let t = clock::now_ms() - 60_000;
    let points: Vec<_> = (0..4)
        .map(|i| point("market_data_delay_seconds", "binance", t + i * 10_000, 10.0))
        .collect();
    publish(&js, &points, 1).await;
    wait_for(
        "both rules firing in the manager",
        Duration::from_secs(30),
        || async {
            managed(&js, "delay_high")
                .await
                .is_some_and(|a| a.status == AlertStatus::Firing)
                && managed(&js, "delay_very_high")
                    .await
                    .is_some_and(|a| a.status == AlertStatus::Firing)
        },
    )
    .await;

    // A broken rules file: refused, named, nothing changes.
    std::fs::write(&rules_file, TWO_RULES.replace("value > 8", "value >> 8")).unwrap();
    let r = client::send(
        &js,
        "test:sre",
        CommandBody::RulesReload,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(!r.ok, "{r:?}");
    assert!(
        r.message.contains(&rules_file.display().to_string())
            && r.message.contains("rules[1].condition"),
        "{}",
        r.message
    );
    assert_eq!(
        managed(&js, "delay_very_high").await.unwrap().status,
        AlertStatus::Firing
    );

    // One rule removed: its alert ends (reason: removed); the other keeps its state.
    std::fs::write(&rules_file, one_rule()).unwrap();
    let since = clock::now_ms();
    let r = client::send(
        &js,
        "test:sre",
        CommandBody::RulesReload,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(r.ok && r.message.contains("1 rules"), "{r:?}");
    let more: Vec<_> = (4..8)
        .map(|i| point("market_data_delay_seconds", "binance", t + i * 10_000, 10.0))
        .collect();
    publish(&js, &more, 1).await;
    // Consumers recreated after the reload (the partitions restarted with the new rules) and
    // everything consumed.
    wait_consumed_since(
        &js,
        &cfg.ingest.consumer_name,
        since,
        Duration::from_secs(30),
    )
    .await;
    wait_for(
        "the removed rule's alert ended",
        Duration::from_secs(10),
        || async {
            managed(&js, "delay_very_high")
                .await
                .is_some_and(|a| a.status == AlertStatus::Resolved)
        },
    )
    .await;
    let removed = managed(&js, "delay_very_high").await.unwrap();
    assert_eq!(removed.end_reason, Some(EndReason::Removed));
    assert_eq!(firing_events(&js, "delay_very_high").await.len(), 1);
    // Had the unchanged rule lost its state, it would have fired again with a new id.
    let kept = firing_events(&js, "delay_high").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        managed(&js, "delay_high").await.unwrap().status,
        AlertStatus::Firing
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_broken_file_keeps_the_old_set() {
    let (srv, _cfg, _js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = common::rules_file(&dir, TWO_RULES);
    let routing = dir.path().join("routing.yaml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/routing.yaml"),
        &routing,
    )
    .unwrap();
    let routing_env = routing.display().to_string();
    let log = dir.path().join("run.log");
    let child = ChildProcessor::spawn_with(
        &srv.url(),
        &rules,
        &[],
        &[("PRISMWATCH__ALERTING__ROUTING_FILE", &routing_env)],
        Some(log.clone()),
    );
    for _ in 0..100 {
        if child.log().contains("alert manager active") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        child.log().contains("alert manager active"),
        "{}",
        child.log()
    );
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &child.pid().to_string()])
            .status()
            .unwrap();
    };
    std::fs::write(&routing, "route: {receiver: nobody}\nreceivers: []\n").unwrap();
    hup();
    wait_for("refused", Duration::from_secs(10), || async {
        child.log().contains("reload refused")
    })
    .await;
    let line = child
        .log()
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&routing_env) && line.contains("nobody"),
        "{line}"
    );
    std::fs::write(&rules, one_rule()).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/routing.yaml"),
        &routing,
    )
    .unwrap();
    hup();
    wait_for("reloaded", Duration::from_secs(10), || async {
        child.log().contains("reloaded: 1 rules")
    })
    .await;
    assert!(child.log().contains("SIGHUP"));
    wait_for("partitions restarted", Duration::from_secs(10), || async {
        child
            .log()
            .contains("partition restarting with the reloaded rules")
    })
    .await;
}

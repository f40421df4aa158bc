//! The alert manager against a real nats-server, in the style of Alertmanager's acceptance
//! tests: a script of inputs (alert events as the processor publishes them, commands as the
//! CLI sends them) on virtual time, and the exact notifications expected on PRISM_NOTIFY with
//! their timing.

use crate::common;

use std::collections::BTreeMap;

use common::manager::{Scenario, Seen};
use prismwatch::alerting::command::{CommandBody, ExternalAlert};
use prismwatch::alerting::matchers::MatcherDef;
use prismwatch::model::{NotificationKind, Priority};

const T0: i64 = common::T0;

const ROUTING: &str = r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
inhibit_rules:
  - source_match: { alertname: exchange_disconnected }
    target_match: { alertname: market_data_delay_high }
    equal: [exchange]
receivers: [{name: team}]
"#;

fn at(at_s: i64, alerts: &[(&str, &str)]) -> Seen {
    Seen {
        at_s,
        receiver: "team".into(),
        kind: "group".into(),
        alerts: alerts
            .iter()
            .map(|(r, s)| (r.to_string(), s.to_string()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_waits_then_batches_changes_then_repeats() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    d.fire("cpu", Priority::P2, &[("exchange", "binance")])
        .await;
    d.advance_to(10).await;
    d.fire("cpu", Priority::P2, &[("exchange", "okx")]).await;
    d.advance_to(29).await;
    assert!(d.seen().await.is_empty(), "nothing before group_wait");
    d.advance_to(60).await;
    d.fire("cpu", Priority::P2, &[("exchange", "deribit")])
        .await;
    d.advance_to(3_930).await;
    let three = [("cpu", "firing"), ("cpu", "firing"), ("cpu", "firing")];
    assert_eq!(
        d.seen().await,
        vec![
            at(30, &[("cpu", "firing"), ("cpu", "firing")]),
            // The new alert waits for the group's next interval.
            at(330, &three),
            // Unchanged and unacknowledged: repeated once 1 h passed, on an interval tick.
            at(3_930, &three),
        ]
    );
    let n = d.notifications().await;
    assert_eq!(n.iter().map(|n| n.sequence).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(n.iter().all(|n| n.id.starts_with("team.")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_resolved_inside_group_wait_is_never_notified() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    let e = d
        .fire("cpu", Priority::P2, &[("exchange", "binance")])
        .await;
    d.advance_to(20).await;
    d.resolve(&e).await;
    d.advance_to(4_000).await;
    assert_eq!(d.seen().await, vec![]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_stops_repeats_and_its_expiry_notifies_again() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    let e = d
        .fire("cpu", Priority::P2, &[("exchange", "binance")])
        .await;
    d.advance_to(40).await;
    let r = d
        .command(CommandBody::Ack {
            alert: e.id.clone(),
            comment: "on it".into(),
            expires_at: Some(T0 + 7_500 * 1000),
        })
        .await;
    assert!(r.ok, "{r:?}");
    // Errors say why: an unknown alert; a rule alert resolved by hand.
    let r = d
        .command(CommandBody::Ack {
            alert: "nope".into(),
            comment: String::new(),
            expires_at: None,
        })
        .await;
    assert!(!r.ok && r.message.contains("no alert \"nope\""), "{r:?}");
    let r = d
        .command(CommandBody::Resolve {
            alert: e.id.clone(),
            comment: String::new(),
        })
        .await;
    assert!(
        !r.ok
            && r.message
                .contains("processor still sees its condition hold"),
        "{r:?}"
    );
    d.advance_to(7_000).await;
    assert_eq!(
        d.seen().await,
        vec![at(30, &[("cpu", "firing")])],
        "acknowledged: no repeat"
    );
    // The ack lapses at 7500 s while the alert fires: notified at the next tick.
    d.advance_to(7_600).await;
    assert_eq!(d.seen().await[1], at(7_530, &[("cpu", "firing")]));
    // The state in KV says who acknowledged, and that it expired.
    let a = prismwatch::alerting::client::alerts(&d.js)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.id == e.id)
        .unwrap();
    assert!(a.ack.is_none());
    assert!(a
        .history
        .iter()
        .any(|h| h.what == "acknowledged: on it" && h.by == "test:sre"));
    assert!(a
        .history
        .iter()
        .any(|h| h.what == "acknowledgement expired"));
    assert_eq!(a.notifications["team"].sent, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_mutes_until_it_ends_then_the_firing_alert_goes_out() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    let r = d
        .command(CommandBody::SilenceCreate {
            id: None,
            matchers: vec![MatcherDef::parse("exchange=binance").unwrap()],
            starts_at: Some(T0 + 60 * 1000),
            ends_at: T0 + 1_000 * 1000,
            comment: "maintenance".into(),
            created_by: None,
        })
        .await;
    assert!(r.ok && r.message.contains("(pending)"), "{r:?}");
    d.advance_to(100).await;
    d.fire("cpu", Priority::P2, &[("exchange", "binance")])
        .await;
    d.fire("cpu", Priority::P2, &[("exchange", "okx")]).await;
    d.advance_to(1_500).await;
    assert_eq!(
        d.seen().await,
        vec![
            at(130, &[("cpu", "firing")]),
            // The silence ended at 1000 s: the still-firing binance alert goes out at the
            // group's next tick (130 s + k x 5 min).
            at(1_030, &[("cpu", "firing"), ("cpu", "firing")]),
        ]
    );
    let first = &d.notifications().await[0];
    assert_eq!(first.alerts[0].labels["exchange"], "okx");
    // An empty or match-everything silence is refused.
    let r = d
        .command(CommandBody::SilenceCreate {
            id: None,
            matchers: vec![MatcherDef::parse("exchange=~.*").unwrap()],
            starts_at: None,
            ends_at: T0 + 9_000 * 1000,
            comment: String::new(),
            created_by: None,
        })
        .await;
    assert!(!r.ok, "{r:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inhibition_mutes_targets_with_equal_labels_while_the_source_fires() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    let down = d
        .fire(
            "exchange_disconnected",
            Priority::P1,
            &[("exchange", "binance")],
        )
        .await;
    d.fire(
        "market_data_delay_high",
        Priority::P2,
        &[("exchange", "binance")],
    )
    .await;
    d.fire(
        "market_data_delay_high",
        Priority::P2,
        &[("exchange", "okx")],
    )
    .await;
    d.advance_to(100).await;
    let n = d.notifications().await;
    let delays: Vec<_> = n
        .iter()
        .filter(|n| n.group_labels["alertname"] == "market_data_delay_high")
        .collect();
    assert_eq!(delays.len(), 1);
    assert_eq!(
        delays[0].alerts.len(),
        1,
        "only okx's delay: binance's is inhibited"
    );
    assert_eq!(delays[0].alerts[0].labels["exchange"], "okx");
    // The source resolves: the target goes out at its group's next tick.
    d.resolve(&down).await;
    d.advance_to(400).await;
    let n = d.notifications().await;
    let last = n
        .iter()
        .rfind(|n| n.group_labels["alertname"] == "market_data_delay_high")
        .unwrap();
    assert_eq!((last.created_at - T0) / 1000, 330);
    assert_eq!(last.alerts.len(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_collapses_into_summaries_and_ends_with_one() {
    let routing =
        "route: {receiver: team, group_by: [exchange], group_wait: 5s}\nreceivers: [{name: team}]";
    let mut s = Scenario::start(routing, |a| {
        a.storm.max_alerts = 10;
        a.storm.window_secs = 60;
    })
    .await;
    let d = &mut s.d;
    for i in 0..30 {
        d.advance_to(i).await;
        d.fire("cpu", Priority::P2, &[("exchange", &format!("ex{i}"))])
            .await;
    }
    d.advance_to(200).await;
    let n = d.notifications().await;
    let groups: Vec<i64> = n
        .iter()
        .filter(|n| n.kind == NotificationKind::Group)
        .map(|n| (n.created_at - T0) / 1000)
        .collect();
    assert_eq!(
        groups,
        [5, 6, 7, 8, 9, 10],
        "held back once the storm began"
    );
    let storm = n
        .iter()
        .find(|n| n.kind == NotificationKind::Storm)
        .unwrap();
    assert_eq!((storm.created_at - T0) / 1000, 10);
    assert_eq!(storm.storm.as_ref().unwrap().alerts, 11);
    let over = n
        .iter()
        .find(|n| n.kind == NotificationKind::StormOver)
        .unwrap();
    assert_eq!((over.created_at - T0) / 1000, 84);
    let summary = over.storm.as_ref().unwrap();
    assert_eq!(summary.alerts, 30);
    assert_eq!(summary.by_rule["cpu"], 30);
    assert_eq!(summary.by_priority["P2"], 30);
    assert_eq!(summary.by_exchange.len(), 30);
    assert_eq!(n.len(), 8, "6 groups, the storm and its end: {n:?}");
    // Every alert is recorded.
    let held = prismwatch::alerting::client::alerts(&d.js).await.unwrap();
    assert_eq!(held.len(), 30);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_alert_is_notified_once_as_flapping_until_stable() {
    let mut s = Scenario::start(ROUTING, |a| {
        a.flapping.max_changes = 4;
        a.flapping.window_secs = 600;
        a.flapping.stable_secs = 300;
    })
    .await;
    let d = &mut s.d;
    for k in 0..3 {
        d.advance_to(k * 40).await;
        let e = d
            .fire("cpu", Priority::P2, &[("exchange", "binance")])
            .await;
        d.advance_to(k * 40 + 20).await;
        d.resolve(&e).await;
    }
    d.advance_to(2_000).await;
    assert_eq!(
        d.seen().await,
        vec![
            at(110, &[("cpu", "firing")]),
            at(410, &[("cpu", "resolved")])
        ]
    );
    assert!(d.notifications().await[0].alerts[0].flapping);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_alert_resolves_when_not_sent_again() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    let alert = ExternalAlert {
        labels: BTreeMap::from([
            ("alertname".to_string(), "HostDown".to_string()),
            ("severity".to_string(), "critical".to_string()),
        ]),
        annotations: BTreeMap::new(),
        starts_at: Some(T0),
        ends_at: Some(T0 + 120 * 1000),
        generator_url: "http://prometheus/graph".into(),
        priority: None,
    };
    let r = d
        .command(CommandBody::AlertExternal {
            alerts: vec![alert.clone()],
        })
        .await;
    assert!(r.ok, "{r:?}");
    d.advance_to(100).await;
    let mut again = alert;
    again.ends_at = Some(T0 + 220 * 1000);
    d.command(CommandBody::AlertExternal {
        alerts: vec![again],
    })
    .await;
    d.advance_to(600).await;
    assert_eq!(
        d.seen().await,
        vec![
            at(30, &[("HostDown", "firing")]),
            at(330, &[("HostDown", "resolved")])
        ]
    );
    let n = d.notifications().await;
    assert_eq!(n[0].priority, Priority::P1, "severity critical is P1");
    assert_eq!(n[1].alerts[0].ends_at, Some(T0 + 220 * 1000));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_broken_file_keeps_the_old_routes_and_says_why() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let file = s.routing_file();
    std::fs::write(
        &file,
        ROUTING.replace("group_wait: 30s", "group_wait: soon"),
    )
    .unwrap();
    let r = s.d.command(CommandBody::RulesReload).await;
    assert!(!r.ok, "{r:?}");
    assert!(
        r.message.contains(&file.display().to_string())
            && r.message.contains("route.group_wait")
            && r.message.contains("the previous rules and routes stay"),
        "{}",
        r.message
    );
    // The old routes still work.
    s.d.fire("cpu_high", Priority::P2, &[("exchange", "binance")])
        .await;
    s.d.advance_to(40).await;
    assert_eq!(s.d.seen().await, vec![at(30, &[("cpu_high", "firing")])]);
    // A good file takes effect: a second receiver for P1.
    std::fs::write(
        &file,
        ROUTING
            .replace(
                "  repeat_interval: 1h\n",
                "  repeat_interval: 1h\n  routes:\n    - match: { priority: P1 }\n      receiver: oncall\n",
            )
            .replace("receivers: [{name: team}]", "receivers: [{name: team}, {name: oncall}]"),
    )
    .unwrap();
    let r = s.d.command(CommandBody::RulesReload).await;
    assert!(r.ok && r.message.contains("reloaded"), "{r:?}");
    s.d.fire(
        "exchange_disconnected",
        Priority::P1,
        &[("exchange", "okx")],
    )
    .await;
    s.d.advance_to(100).await;
    let n = s.d.notifications().await;
    assert_eq!(n.last().unwrap().receiver, "oncall");
    assert_eq!((n.last().unwrap().created_at - T0) / 1000, 70);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_in_the_audit_log_with_who_issued_it() {
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let d = &mut s.d;
    let e = d
        .fire("cpu", Priority::P2, &[("exchange", "binance")])
        .await;
    d.advance_to(5).await;
    d.command(CommandBody::Ack {
        alert: e.id,
        comment: String::new(),
        expires_at: None,
    })
    .await;
    d.command(CommandBody::Unack {
        alert: "missing".into(),
    })
    .await;
    let audit = common::read_stream_filtered(&d.js, "PRISM_COMMANDS", "prism.audit.>").await;
    let replies: Vec<prismwatch::alerting::command::Reply> = audit
        .iter()
        .map(|(_, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r.principal == "test:sre"));
    assert_eq!(
        replies
            .iter()
            .map(|r| (r.kind.as_str(), r.ok))
            .collect::<Vec<_>>(),
        [("ack", true), ("unack", false)]
    );
    let asked = common::read_stream_filtered(&d.js, "PRISM_COMMANDS", "prism.cmd.>").await;
    assert_eq!(asked.len(), 2);
    s.stop().await;
}

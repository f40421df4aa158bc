//! Scenario tests of the manager on virtual time, in the style of Alertmanager's acceptance
//! tests: a script of inputs at given times, and the exact notifications expected with their
//! timing.

use super::*;
use crate::alerting::command::CommandBody;
use crate::alerting::matchers::MatcherDef;

const T0: i64 = 1_764_000_000_000;
const S: i64 = 1000;

const ROUTING: &str = r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - match: { alertname: prompt }
      receiver: team
      resolve_promptly: true
inhibit_rules:
  - source_match: { alertname: exchange_disconnected }
    target_match: { alertname: market_data_delay_high }
    equal: [exchange]
receivers: [{name: team}]
"#;

/// A manager driven by a script; notifications are recorded with their (relative) times.
struct Script {
    m: Manager,
    now: i64,
    sent: Vec<(i64, Notification)>,
    stored: Effects,
}

impl Script {
    fn new(routing: &str) -> Self {
        Self::with(AlertingConfig::default(), routing)
    }

    fn with(cfg: AlertingConfig, routing: &str) -> Self {
        Script {
            m: Manager::new(cfg, Routing::parse("r.yaml", routing).unwrap()),
            now: T0,
            sent: Vec::new(),
            stored: Effects::default(),
        }
    }

    fn collect(&mut self) {
        let fx = self.m.take_effects();
        for n in fx.notifications {
            self.sent.push(((self.now - T0) / S, n));
        }
        // What the shell would store, last write wins.
        self.stored.alerts.extend(fx.alerts);
        self.stored.silences.extend(fx.silences);
        self.stored.logs.extend(fx.logs);
        self.stored.meta.extend(fx.meta);
    }

    /// Moves virtual time to `secs` after T0, waking at every deadline on the way.
    fn at(&mut self, secs: i64) -> &mut Self {
        let target = T0 + secs * S;
        while let Some(t) = self.m.next_deadline().filter(|t| *t <= target) {
            self.now = t.max(self.now);
            self.m.on_time(self.now);
            self.collect();
        }
        self.now = target;
        self.m.on_time(self.now);
        self.collect();
        self
    }

    fn event(&mut self, e: AlertEvent) -> &mut Self {
        self.m.on_event(&e, self.now);
        self.collect();
        self
    }

    fn command(&mut self, body: CommandBody) -> Reply {
        let c = Command {
            request_id: format!("req-{}-{}", self.now, self.sent.len()),
            principal: "alice".into(),
            at: self.now,
            body,
        };
        let r = self.m.on_command(&c, self.now);
        self.collect();
        r
    }

    /// (seconds, kind, status, alert ids) of each notification so far; sorted, so that
    /// notifications of one instant and alerts of one notification compare in a fixed order.
    fn log(&self) -> Vec<(i64, NotificationKind, AlertStatus, Vec<String>)> {
        let mut out: Vec<_> = self
            .sent
            .iter()
            .map(|(t, n)| {
                let mut ids: Vec<String> = n
                    .alerts
                    .iter()
                    .map(|a| format!("{}:{}", a.id, a.status.token()))
                    .collect();
                ids.sort();
                (*t, n.kind, n.status, ids)
            })
            .collect();
        out.sort_by(|a, b| (a.0, &a.3).cmp(&(b.0, &b.3)));
        out
    }

    /// Like `log`, with each notification's alerts sorted the same way in the expectation.
    fn expect(&self, mut want: Vec<(i64, NotificationKind, AlertStatus, Vec<String>)>) {
        for w in &mut want {
            w.3.sort();
        }
        want.sort_by(|a, b| (a.0, &a.3).cmp(&(b.0, &b.3)));
        assert_eq!(self.log(), want);
    }
}

fn event(rule: &str, exchange: &str, status: AlertStatus, starts: i64) -> AlertEvent {
    let fp = hash16(&[rule, exchange]);
    AlertEvent {
        id: format!("{fp}-{starts}"),
        fingerprint: fp,
        rule: rule.into(),
        priority: Priority::P2,
        status,
        labels: BTreeMap::from([
            ("exchange".to_string(), exchange.to_string()),
            ("metric".to_string(), "m".to_string()),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), format!("{rule} on {exchange}"))]),
        value: 1.0,
        score: 0.0,
        starts_at: starts,
        ends_at: matches!(status, AlertStatus::Resolved | AlertStatus::Cancelled)
            .then_some(starts + 1),
        end_reason: None,
        event_time: starts,
    }
}

fn firing(rule: &str, ex: &str, starts: i64) -> AlertEvent {
    event(rule, ex, AlertStatus::Firing, starts)
}

fn resolved(rule: &str, ex: &str, starts: i64) -> AlertEvent {
    event(rule, ex, AlertStatus::Resolved, starts)
}

fn id(rule: &str, ex: &str, starts: i64) -> String {
    firing(rule, ex, starts).id
}

fn f(rule: &str, ex: &str, starts: i64) -> String {
    format!("{}:firing", id(rule, ex, starts))
}

fn r(rule: &str, ex: &str, starts: i64) -> String {
    format!("{}:resolved", id(rule, ex, starts))
}

use AlertStatus::{Firing, Resolved};
use NotificationKind::Group as G;

#[test]
fn group_wait_then_group_interval_then_repeat_interval() {
    let mut s = Script::new(ROUTING);
    s.event(firing("cpu", "binance", 1))
        .at(10)
        .event(firing("cpu", "okx", 2));
    s.at(29);
    assert!(s.sent.is_empty(), "nothing before group_wait");
    s.at(60).event(firing("cpu", "deribit", 3));
    s.at(3_930);
    s.expect(vec![
        (
            30,
            G,
            Firing,
            vec![f("cpu", "binance", 1), f("cpu", "okx", 2)],
        ),
        // A new alert in the group goes out at the next group_interval tick.
        (
            330,
            G,
            Firing,
            vec![
                f("cpu", "binance", 1),
                f("cpu", "okx", 2),
                f("cpu", "deribit", 3),
            ],
        ),
        // Nothing changed: repeated once repeat_interval (1h) has passed, on a tick.
        (
            3_930,
            G,
            Firing,
            vec![
                f("cpu", "binance", 1),
                f("cpu", "okx", 2),
                f("cpu", "deribit", 3),
            ],
        ),
    ]);
    // Listed firing first, then by priority and start.
    let listed: Vec<&str> = s.sent[1]
        .1
        .alerts
        .iter()
        .map(|a| a.labels["exchange"].as_str())
        .collect();
    assert_eq!(listed, ["binance", "okx", "deribit"]);
    let n = &s.sent[0].1;
    assert_eq!(n.sequence, 1);
    assert_eq!(
        n.group_labels,
        BTreeMap::from([("alertname".to_string(), "cpu".to_string())])
    );
    assert_eq!(n.common_labels["metric"], "m");
    assert!(!n.common_labels.contains_key("exchange"));
    assert!(n.id.starts_with("team.") && n.id.ends_with(".1"));
    assert_eq!(s.sent[2].1.sequence, 3);
}

#[test]
fn an_alert_resolved_inside_group_wait_is_never_notified() {
    let mut s = Script::new(ROUTING);
    s.event(firing("cpu", "binance", 1))
        .at(20)
        .event(resolved("cpu", "binance", 1));
    s.at(4_000);
    assert!(s.sent.is_empty(), "{:?}", s.log());
}

#[test]
fn resolutions_go_out_at_the_next_interval_or_at_once_when_prompt() {
    let mut s = Script::new(ROUTING);
    s.event(firing("cpu", "binance", 1))
        .event(firing("prompt", "binance", 1));
    s.at(100)
        .event(resolved("cpu", "binance", 1))
        .event(resolved("prompt", "binance", 1));
    s.at(400);
    s.expect(vec![
        (30, G, Firing, vec![f("cpu", "binance", 1)]),
        (30, G, Firing, vec![f("prompt", "binance", 1)]),
        (100, G, Resolved, vec![r("prompt", "binance", 1)]),
        (330, G, Resolved, vec![r("cpu", "binance", 1)]),
    ]);
}

#[test]
fn an_ack_stops_repeats_and_its_expiry_notifies_again() {
    let mut s = Script::new(ROUTING);
    s.event(firing("cpu", "binance", 1)).at(40);
    let reply = s.command(CommandBody::Ack {
        alert: id("cpu", "binance", 1),
        comment: "on it".into(),
        expires_at: Some(T0 + 7_500 * S),
    });
    assert!(reply.ok, "{reply:?}");
    s.at(7_000);
    assert_eq!(
        s.sent.len(),
        1,
        "acknowledged: no repeat at 1h: {:?}",
        s.log()
    );
    // The ack lapses at 7500 s while it still fires: re-notified at the next tick (7530 s).
    s.at(7_600);
    assert_eq!(s.log()[1], (7_530, G, Firing, vec![f("cpu", "binance", 1)]));
    let a = s.m.alert(&id("cpu", "binance", 1)).unwrap();
    assert!(a.ack.is_none());
    assert!(a
        .history
        .iter()
        .any(|h| h.what == "acknowledgement expired"));
    assert!(a
        .history
        .iter()
        .any(|h| h.what == "acknowledged: on it" && h.by == "alice"));
}

#[test]
fn acks_of_unknown_or_ended_alerts_and_hand_resolution_of_rule_alerts_are_refused() {
    let mut s = Script::new(ROUTING);
    let r = s.command(CommandBody::Ack {
        alert: "nope".into(),
        comment: String::new(),
        expires_at: None,
    });
    assert!(
        !r.ok && r.message.contains("no alert \"nope\""),
        "{}",
        r.message
    );
    s.event(firing("cpu", "binance", 1))
        .event(resolved("cpu", "binance", 1));
    let r = s.command(CommandBody::Ack {
        alert: id("cpu", "binance", 1),
        comment: String::new(),
        expires_at: None,
    });
    assert!(!r.ok && r.message.contains("is resolved"), "{}", r.message);
    s.event(firing("cpu", "okx", 5));
    let r = s.command(CommandBody::Resolve {
        alert: id("cpu", "okx", 5),
        comment: String::new(),
    });
    assert!(
        !r.ok
            && r.message
                .contains("processor still sees its condition hold"),
        "{}",
        r.message
    );
    // By fingerprint: the current episode.
    let fp = firing("cpu", "okx", 5).fingerprint;
    let r = s.command(CommandBody::Ack {
        alert: fp,
        comment: String::new(),
        expires_at: None,
    });
    assert!(r.ok, "{}", r.message);
}

#[test]
fn a_silence_mutes_and_its_end_lets_a_firing_alert_through() {
    let mut s = Script::new(ROUTING);
    let reply = s.command(CommandBody::SilenceCreate {
        id: None,
        matchers: vec![MatcherDef::parse("exchange=binance").unwrap()],
        starts_at: None,
        ends_at: T0 + 1_000 * S,
        comment: "maintenance".into(),
        created_by: None,
    });
    assert!(reply.ok, "{reply:?}");
    let sid = reply.result["silence_id"].as_str().unwrap().to_string();
    s.event(firing("cpu", "binance", 1))
        .event(firing("cpu", "okx", 1));
    s.at(1_300);
    s.expect(vec![
        (30, G, Firing, vec![f("cpu", "okx", 1)]),
        // The silence ended at 1000 s: the still-firing binance alert goes out at the next tick.
        (
            1_230,
            G,
            Firing,
            vec![f("cpu", "binance", 1), f("cpu", "okx", 1)],
        ),
    ]);
    let a = s.m.alert(&id("cpu", "binance", 1)).unwrap();
    assert!(a
        .history
        .iter()
        .any(|h| h.what == format!("silenced by {sid}")));
    assert!(a.silenced_by.is_empty());
    // Expiring one by hand.
    let r2 = s.command(CommandBody::SilenceCreate {
        id: None,
        matchers: vec![MatcherDef::parse("exchange=okx").unwrap()],
        starts_at: None,
        ends_at: T0 + 9_000 * S,
        comment: String::new(),
        created_by: None,
    });
    let sid2 = r2.result["silence_id"].as_str().unwrap().to_string();
    assert!(
        s.command(CommandBody::SilenceExpire { id: sid2.clone() })
            .ok
    );
    assert!(
        !s.command(CommandBody::SilenceExpire { id: sid2.clone() })
            .ok
    );
    assert!(s.stored.silences.len() == 2);

    // Expired silences are kept for the resolved retention (1 day), then deleted.
    let expired_at = s.now;
    s.at((expired_at - T0) / S + 86_000);
    assert_eq!(s.m.silences().count(), 2);
    s.at((expired_at - T0) / S + 86_400 + 120);
    assert_eq!(s.m.silences().count(), 0);
    assert_eq!(s.stored.silences[&sid2], None);
    assert_eq!(s.stored.silences[&sid], None);
}

#[test]
fn inhibition_mutes_targets_with_equal_labels_while_the_source_fires() {
    let mut s = Script::new(ROUTING);
    s.event(firing("exchange_disconnected", "binance", 1))
        .event(firing("market_data_delay_high", "binance", 1))
        .event(firing("market_data_delay_high", "okx", 1));
    s.at(100);
    let delays: Vec<_> = s
        .log()
        .into_iter()
        .filter(|(_, _, _, ids)| {
            ids.iter()
                .any(|i| i.starts_with(&id("market_data_delay_high", "okx", 1)[..16]))
        })
        .collect();
    assert_eq!(
        delays,
        vec![(30, G, Firing, vec![f("market_data_delay_high", "okx", 1)])]
    );
    let b =
        s.m.alert(&id("market_data_delay_high", "binance", 1))
            .unwrap();
    assert_eq!(b.inhibited_by.len(), 1);
    // The source resolves: the target is notified at its group's next tick.
    s.event(resolved("exchange_disconnected", "binance", 1))
        .at(400);
    assert!(s.log().iter().any(
        |(t, _, _, ids)| *t == 330 && ids.contains(&f("market_data_delay_high", "binance", 1))
    ));
}

#[test]
fn a_storm_collapses_into_summaries_and_ends_with_one() {
    let mut cfg = AlertingConfig::default();
    cfg.storm.max_alerts = 10;
    cfg.storm.window_secs = 60;
    let mut s = Script::with(
        cfg,
        "route: {receiver: team, group_by: [exchange], group_wait: 5s}\nreceivers: [{name: team}]",
    );
    for i in 0..30 {
        s.at(i).event(firing("cpu", &format!("ex{i}"), i));
    }
    s.at(200);
    let kinds: Vec<(i64, NotificationKind)> = s.sent.iter().map(|(t, n)| (*t, n.kind)).collect();
    // One group per exchange, flushing 5 s after its alert: those of 0..5 s went out; the 11th
    // start (10 s) started the storm and held back every group after.
    assert_eq!(
        kinds
            .iter()
            .filter(|(_, k)| *k == G)
            .map(|(t, _)| *t)
            .collect::<Vec<_>>(),
        [5, 6, 7, 8, 9, 10],
        "{kinds:?}"
    );
    let storm = s
        .sent
        .iter()
        .find(|(_, n)| n.kind == NotificationKind::Storm)
        .unwrap();
    assert_eq!(storm.0, 10);
    assert_eq!(storm.1.storm.as_ref().unwrap().alerts, 11);
    let over = s
        .sent
        .iter()
        .find(|(_, n)| n.kind == NotificationKind::StormOver)
        .unwrap();
    // Five or fewer starts left in the last minute: at 84 s (starts 25..29 s).
    assert_eq!(over.0, 84);
    let summary = over.1.storm.as_ref().unwrap();
    assert_eq!(summary.alerts, 30);
    assert_eq!(summary.by_rule["cpu"], 30);
    assert!(summary.ended_at.is_some());
    // Every alert is recorded, and the held-back ones say why.
    let held = s.m.alert(&id("cpu", "ex20", 20)).unwrap();
    assert!(held.history.iter().any(|h| h.what.contains("alert storm")));
}

#[test]
fn a_flapping_alert_is_notified_once_as_flapping_until_stable() {
    let mut cfg = AlertingConfig::default();
    cfg.flapping.max_changes = 4;
    cfg.flapping.window_secs = 600;
    cfg.flapping.stable_secs = 300;
    let mut s = Script::with(cfg, ROUTING);
    // Fires and resolves every 20 s: 3 episodes = 6 changes.
    for k in 0..3 {
        let t = k * 40;
        s.at(t).event(firing("cpu", "binance", t));
        s.at(t + 20).event(resolved("cpu", "binance", t));
    }
    s.at(2_000);
    // The first two episodes fired and resolved inside group_wait: never notified. The third
    // start (80 s, the fifth change) makes it flapping: notified once, as flapping, at its
    // group's first flush; the resolution at 100 s is not a change while it flaps. Stable from
    // 100 s, it stops flapping at 400 s, and its resolution goes out at the next tick.
    s.expect(vec![
        (110, G, Firing, vec![f("cpu", "binance", 80)]),
        (410, G, Resolved, vec![r("cpu", "binance", 80)]),
    ]);
    assert!(
        s.sent[0].1.alerts[0].flapping,
        "the notification says flapping"
    );
    assert!(!s.m.alert(&id("cpu", "binance", 80)).unwrap().flapping);
}

#[test]
fn external_alerts_resolve_when_not_sent_again() {
    let mut s = Script::new(ROUTING);
    let alert = ExternalAlert {
        labels: BTreeMap::from([
            ("alertname".to_string(), "HostDown".to_string()),
            ("severity".to_string(), "critical".to_string()),
        ]),
        annotations: BTreeMap::new(),
        starts_at: Some(T0),
        ends_at: Some(T0 + 120 * S),
        generator_url: "http://prometheus/graph".into(),
        priority: None,
    };
    let r1 = s.command(CommandBody::AlertExternal {
        alerts: vec![alert.clone()],
    });
    let eid = r1.result["alerts"][0].as_str().unwrap().to_string();
    // Re-sent at 100 s with a later end.
    s.at(100);
    let mut again = alert.clone();
    again.ends_at = Some(T0 + 220 * S);
    s.command(CommandBody::AlertExternal {
        alerts: vec![again],
    });
    s.at(600);
    let a = s.m.alert(&eid).unwrap();
    assert_eq!(a.priority, Priority::P1);
    assert_eq!(a.status, Resolved);
    assert_eq!(a.ends_at, Some(T0 + 220 * S));
    s.expect(vec![
        (30, G, Firing, vec![format!("{eid}:firing")]),
        (330, G, Resolved, vec![format!("{eid}:resolved")]),
    ]);
    // Resolving an external alert by hand is allowed.
    let mut third = alert;
    third.starts_at = Some(T0 + 700 * S);
    third.ends_at = None;
    s.at(700);
    let r3 = s.command(CommandBody::AlertExternal {
        alerts: vec![third],
    });
    let id3 = r3.result["alerts"][0].as_str().unwrap().to_string();
    assert!(
        s.command(CommandBody::Resolve {
            alert: id3.clone(),
            comment: "fixed".into()
        })
        .ok
    );
    assert_eq!(s.m.alert(&id3).unwrap().status, Resolved);
}

#[test]
fn a_restart_mid_group_wait_and_mid_repeat_keeps_the_schedule_and_the_ids() {
    // Reference: no restart.
    let mut a = Script::new(ROUTING);
    a.event(firing("cpu", "binance", 1))
        .at(10)
        .event(firing("cpu", "okx", 1))
        .at(3_700);
    // Restarted at 20 s (inside group_wait) and at 2_000 s (inside the repeat cycle).
    let mut b = Script::new(ROUTING);
    b.event(firing("cpu", "binance", 1))
        .at(10)
        .event(firing("cpu", "okx", 1))
        .at(20);
    for restart_at in [20, 2_000] {
        b.at(restart_at);
        let stored = b.stored.clone();
        let mut fresh = Manager::new(
            AlertingConfig::default(),
            Routing::parse("r.yaml", ROUTING).unwrap(),
        );
        fresh.restore(
            stored.alerts.values().flatten().cloned().collect(),
            stored.silences.values().flatten().cloned().collect(),
            stored.logs.values().flatten().cloned().collect(),
            stored
                .meta
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect(),
            b.now,
        );
        b.m = fresh;
    }
    b.at(3_700);
    let ids = |s: &Script| {
        s.sent
            .iter()
            .map(|(t, n)| (*t, n.id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&b), ids(&a));
    assert_eq!(
        a.sent.len(),
        2,
        "first at 30 s, repeat at 3630 s: {:?}",
        a.log()
    );
}

#[test]
fn redelivered_and_out_of_order_events_change_nothing() {
    let mut a = Script::new(ROUTING);
    a.event(event("cpu", "binance", AlertStatus::Pending, 1))
        .event(firing("cpu", "binance", 1))
        .at(400);
    let mut b = Script::new(ROUTING);
    b.event(event("cpu", "binance", AlertStatus::Pending, 1))
        .event(firing("cpu", "binance", 1))
        .event(event("cpu", "binance", AlertStatus::Pending, 1))
        .event(firing("cpu", "binance", 1))
        .at(400);
    assert_eq!(a.log(), b.log());
}

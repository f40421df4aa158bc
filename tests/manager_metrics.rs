//! The alert manager's state on `/metrics` (a process of its own: the metrics recorder is
//! global, so no other manager in this process can write the same gauges).

mod common;

use std::time::Duration;

use common::manager::Scenario;
use prismwatch::alerting::command::CommandBody;
use prismwatch::alerting::matchers::MatcherDef;
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

/// The value of the sample `name{labels...}` in a Prometheus text page (labels in any order).
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let bare = series.split('{').next() == Some(name);
            bare && labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// A sample: name, labels, value.
type Expected = (&'static str, Vec<(&'static str, &'static str)>, f64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_notifications_silences_and_commands_are_counted() {
    let listen = common::free_listen_addr();
    let l = listen.clone();
    let mut s = Scenario::start_with(ROUTING, move |cfg| cfg.http.listen = l).await;
    let d = &mut s.d;
    let cpu = d
        .fire("cpu", Priority::P1, &[("exchange", "binance")])
        .await;
    d.fire("disk", Priority::P2, &[("exchange", "okx")]).await;
    d.fire("disk", Priority::P2, &[("exchange", "bybit")]).await;
    assert!(
        d.command(CommandBody::SilenceCreate {
            id: None,
            matchers: vec![MatcherDef::parse("exchange=okx").unwrap()],
            starts_at: None,
            ends_at: common::T0 + 3_600_000,
            comment: "maintenance".into(),
            created_by: None,
        })
        .await
        .ok
    );
    d.advance_to(40).await;
    assert!(
        d.command(CommandBody::Ack {
            alert: cpu.id.clone(),
            comment: "on it".into(),
            expires_at: None,
        })
        .await
        .ok
    );
    assert!(
        !d.command(CommandBody::Unack {
            alert: "missing".into()
        })
        .await
        .ok
    );
    // Two groups flushed at 30 s (cpu; disk with bybit only: okx is silenced).
    assert_eq!(d.notifications().await.len(), 2);

    // Gauges are refreshed every 5 s of wall time: wait for them (a bounded poll).
    let want: Vec<Expected> = vec![
        ("prismwatch_manager_active", vec![], 1.0),
        (
            "prismwatch_manager_alerts",
            vec![("status", "firing"), ("priority", "p1")],
            1.0,
        ),
        (
            "prismwatch_manager_alerts",
            vec![("status", "firing"), ("priority", "p2")],
            2.0,
        ),
        ("prismwatch_manager_silences_active", vec![], 1.0),
        ("prismwatch_manager_alerts_silenced", vec![], 1.0),
        ("prismwatch_manager_alerts_inhibited", vec![], 0.0),
        ("prismwatch_manager_groups", vec![], 2.0),
        (
            "prismwatch_manager_notifications_total",
            vec![("receiver", "team"), ("kind", "group")],
            2.0,
        ),
        (
            "prismwatch_manager_commands_total",
            vec![("kind", "ack"), ("result", "ok")],
            1.0,
        ),
        (
            "prismwatch_manager_commands_total",
            vec![("kind", "unack"), ("result", "refused")],
            1.0,
        ),
        (
            "prismwatch_manager_commands_total",
            vec![("kind", "silence.create"), ("result", "ok")],
            1.0,
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (code, page) = common::http_get(&listen, "/metrics").await;
        assert_eq!(code, 200);
        let missing: Vec<_> = want
            .iter()
            .filter(|(n, l, v)| sample(&page, n, l) != Some(*v))
            .collect();
        if missing.is_empty() {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not on /metrics as expected: {missing:?}\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(page.contains("# HELP prismwatch_manager_alerts "));
    s.stop().await;
}

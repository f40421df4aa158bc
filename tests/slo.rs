//! SLO burn-rate alerts on event time, through the pipeline the processor runs: a burn pages at
//! the moment the workbook's arithmetic gives, a short blip does not, a slow burn opens a
//! ticket; the same events whatever the batching, the shards, or a restart from a checkpoint.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use prismwatch::ingest::{Incoming, IngestConfig};
use prismwatch::model::{AlertStatus, MetricPoint, Priority};
use prismwatch::pipeline::{Pipeline, PipelineConfig};
use prismwatch::rules::RuleSet;

const MIN: i64 = 60_000;
/// Minute-aligned start of the history.
const T0: i64 = 1_764_000_000_000 / MIN * MIN;

const SLOS: &str = r#"
slos:
  - name: api
    match: { service: api }
    labels: { team: api }
    objectives:
      availability:
        target_percent: 99.9
        sli: { samples: { metric: service_up, good: "value >= 1" } }
      errors:
        target_percent: 99
        sli: { error_percent: { metric: api_error_rate_percent } }
"#;

fn rules() -> RuleSet {
    let mut set = RuleSet::default();
    set.add_file("slos.yaml", SLOS).unwrap();
    set
}

fn point(name: &str, ts: i64, value: f64) -> MetricPoint {
    let mut labels = BTreeMap::new();
    labels.insert("service".to_string(), "api".to_string());
    MetricPoint {
        name: name.into(),
        labels,
        value,
        timestamp: ts,
    }
}

/// One message a minute from minute 0 to `minutes`, both metrics, stored as measured:
/// `up(minute)` and `errors(minute)` give the values.
fn history(minutes: i64, up: impl Fn(i64) -> f64, errors: impl Fn(i64) -> f64) -> Vec<Incoming> {
    (0..=minutes)
        .map(|m| {
            let ts = T0 + m * MIN;
            let points = [
                point("service_up", ts, up(m)),
                point("api_error_rate_percent", ts, errors(m)),
            ];
            Incoming {
                subject: "prism.part.0.service.api.batch".into(),
                payload: rmp_serde::to_vec_named(&points).unwrap().into(),
                content_type: None,
                stream_seq: m as u64 + 1,
                published_ms: ts,
            }
        })
        .collect()
}

/// (rule, status, event time as minutes from T0, priority) of every event, batches of `batch`
/// messages through a pipeline of `shards` shards.
fn events(
    messages: &[Incoming],
    batch: usize,
    shards: usize,
) -> Vec<(String, AlertStatus, f64, Priority)> {
    let cfg = PipelineConfig {
        shards,
        ..Default::default()
    };
    let mut p = Pipeline::new(&cfg, &IngestConfig::default(), rules());
    messages
        .chunks(batch)
        .flat_map(|b| p.process(b).events)
        .map(|e| summary(&e))
        .collect()
}

/// (rule, status, event time as minutes from T0, priority) of an event.
fn summary(e: &prismwatch::pipeline::Emitted) -> (String, AlertStatus, f64, Priority) {
    (
        e.event.rule.clone(),
        e.event.status,
        (e.event.event_time - T0) as f64 / MIN as f64,
        e.event.priority,
    )
}

fn of(events: &[(String, AlertStatus, f64, Priority)], rule: &str) -> Vec<(AlertStatus, f64)> {
    events
        .iter()
        .filter(|e| e.0 == rule)
        .map(|e| (e.1, e.2))
        .collect()
}

/// Three days and a half of history first: every window, the 3-day one included, is full.
const WARM: i64 = 5040;

#[test]
fn an_error_burn_pages_when_the_hour_has_spent_two_percent_of_the_budget() {
    // 0.1 % errors (burn 0.1 of a 1 % budget), then 20 % (burn 20) from minute WARM on.
    // The 1 h burn reaches 14.4 when (20 t + 0.1 (60 - t)) / 60 >= 14.4, t >= 43.1 minutes:
    // the page fires at the end of the 44th minute; the 5 m window was past 14.4 long before.
    let msgs = history(WARM + 120, |_| 1.0, |m| if m >= WARM { 20.0 } else { 0.1 });
    let ev = events(&msgs, 64, 1);
    let page = of(&ev, "slo_api_errors_page");
    assert_eq!(
        page.first(),
        Some(&(AlertStatus::Firing, (WARM + 44) as f64)),
        "{ev:?}"
    );
    assert!(ev
        .iter()
        .any(|e| e.0 == "slo_api_errors_page" && e.3 == Priority::P1));
    // 6x over 6 h: (20 t + 0.1 (360 - t)) / 360 >= 6, t >= 106.7: minute 107.
    assert_eq!(
        of(&ev, "slo_api_errors_page_slow").first(),
        Some(&(AlertStatus::Firing, (WARM + 107) as f64))
    );
    // Availability was never hurt.
    assert!(of(&ev, "slo_api_availability_page").is_empty(), "{ev:?}");
}

#[test]
fn a_full_outage_pages_after_one_minute_and_resolves_five_minutes_after_it_ends() {
    // Down for 10 minutes: burn 1000 of a 0.1 % budget. The hour has spent 2 % of the budget
    // after 0.864 minutes: the first minute end. When the outage ends, the 5 m window clears
    // 5 minutes later and the page resolves.
    let msgs = history(
        WARM + 60,
        |m| {
            if (WARM..WARM + 10).contains(&m) {
                0.0
            } else {
                1.0
            }
        },
        |_| 0.1,
    );
    let ev = events(&msgs, 64, 1);
    assert_eq!(
        of(&ev, "slo_api_availability_page"),
        [
            (AlertStatus::Firing, (WARM + 1) as f64),
            (AlertStatus::Resolved, (WARM + 15) as f64)
        ],
        "{ev:?}"
    );
}

#[test]
fn a_short_blip_does_not_page() {
    // 20 % errors for 3 minutes: 1 h burn (0.6 + 0.1 × 57 / 100... ) ≈ 1.1, 5 m burn ≈ 12.
    let msgs = history(
        WARM + 60,
        |_| 1.0,
        |m| {
            if (WARM..WARM + 3).contains(&m) {
                20.0
            } else {
                0.1
            }
        },
    );
    let ev = events(&msgs, 64, 1);
    assert!(
        ev.iter().all(|e| !e.0.contains("page")),
        "a 3-minute blip paged: {ev:?}"
    );
}

#[test]
fn a_slow_burn_opens_a_ticket_and_does_not_page() {
    // 1.5 % errors (burn 1.5): the 3-day window reaches 1 when
    // (1.5 t + 0.1 (4320 - t)) / 4320 >= 1, t >= 2777.1 minutes (46.3 h); the 6 h one long before.
    let msgs = history(WARM + 2800, |_| 1.0, |m| if m >= WARM { 1.5 } else { 0.1 });
    let ev = events(&msgs, 256, 1);
    assert_eq!(
        of(&ev, "slo_api_errors_ticket"),
        [(AlertStatus::Firing, (WARM + 2778) as f64)],
        "{ev:?}"
    );
    assert!(ev.iter().all(|e| e.3 == Priority::P3), "{ev:?}");
}

#[test]
fn same_events_whatever_the_batching_the_shards_and_a_restart() {
    let msgs = history(
        WARM + 90,
        |m| {
            if (WARM + 30..WARM + 36).contains(&m) {
                0.0
            } else {
                1.0
            }
        },
        |m| {
            if (WARM..WARM + 50).contains(&m) {
                25.0
            } else {
                0.1
            }
        },
    );
    let reference = events(&msgs, 1, 1);
    assert!(reference.len() >= 4, "{reference:?}");
    assert_eq!(events(&msgs, 7, 3), reference);
    assert_eq!(events(&msgs, 500, 2), reference);

    // Stopped half-way and restored from a checkpoint's header and series.
    let cfg = PipelineConfig::default();
    let mut first = Pipeline::new(&cfg, &IngestConfig::default(), rules());
    let half = msgs.len() - 60;
    let mut got: Vec<_> = msgs[..half]
        .chunks(50)
        .flat_map(|b| first.process(b).events)
        .collect();
    let header = first.header();
    let header: prismwatch::pipeline::PipelineHeader =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&header).unwrap()).unwrap();
    let mut series = Vec::new();
    first.for_each_series(|s| series.push(s.to_snapshot()));
    let mut second = Pipeline::new(&cfg, &IngestConfig::default(), rules());
    second.restore_header(header);
    second.restore_series(series);
    got.extend(
        msgs[half..]
            .chunks(50)
            .flat_map(|b| second.process(b).events),
    );
    let got: Vec<_> = got.iter().map(summary).collect();
    assert_eq!(got, reference);
}

#[test]
fn the_budget_left_and_the_score_follow_the_spend() {
    // 30 minutes down of a 43.2-minute monthly budget (0.1 % of 30 days), within the history.
    let msgs = history(
        WARM + 120,
        |m| {
            if (WARM..WARM + 30).contains(&m) {
                0.0
            } else {
                1.0
            }
        },
        |_| 0.1,
    );
    let mut p = Pipeline::new(
        &PipelineConfig::default(),
        &IngestConfig::default(),
        rules(),
    );
    for b in msgs.chunks(100) {
        p.process(b);
    }
    let status = p.slo_status();
    assert_eq!(status.len(), 1);
    let s = &status[0];
    let availability = s
        .objectives
        .iter()
        .find(|o| o.objective == "availability")
        .unwrap();
    // 30 bad minutes (one sample each) of a 30-day budget of 43.2 minutes: 30.6 % left. The
    // history covers 3.6 days only; the rest of the period counts as good.
    let expected = 1.0 - 30.0 / 43.2;
    assert!(
        (availability.error_budget_remaining - expected).abs() < 1e-9,
        "{} vs {expected}",
        availability.error_budget_remaining
    );
    // The outage ended 90 minutes ago: availability's 1 h window is clean. The score is the
    // worst objective's: errors, burning 0.1 (0.1 % errors of a 1 % budget) of the page's 14.4.
    let errors_score = 100.0 * (1.0 - 0.1 / 14.4);
    assert!((s.score - errors_score).abs() < 1e-9, "{}", s.score);
    assert_eq!(
        prismwatch::slo::experience_score(&status),
        s.score,
        "one SLO: its score"
    );
}

#[test]
fn a_young_slo_judges_its_windows_as_if_the_unseen_minutes_were_good() {
    // 100 % errors for 5 minutes, 10 minutes after the SLO first saw its series. Over a full
    // hour that is a burn of (100 × 5) / 60 / 1 = 8.3: no page. Over the 15 minutes seen it
    // would be 33 and page; the minutes not seen count as good.
    let msgs = history(
        40,
        |_| 1.0,
        |m| if (10..15).contains(&m) { 100.0 } else { 0.0 },
    );
    let ev = events(&msgs, 16, 1);
    assert!(of(&ev, "slo_api_errors_page").is_empty(), "{ev:?}");
    // The same 5 minutes at 100 % availability loss do page: burn 1000 × 5 / 60 = 83.
    let msgs = history(
        40,
        |m| if (10..15).contains(&m) { 0.0 } else { 1.0 },
        |_| 0.0,
    );
    let ev = events(&msgs, 16, 1);
    assert_eq!(
        of(&ev, "slo_api_availability_page").first(),
        Some(&(AlertStatus::Firing, 11.0)),
        "{ev:?}"
    );
}

/// Live, against a real nats-server: the processor pages on the burn and publishes the page; the
/// budget left is a series the API shows and a gauge `/metrics` exports; the status has the
/// experience score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_the_page_is_published_and_the_budget_is_in_the_api_and_metrics() {
    let (_srv, mut cfg, js) = common::fresh().await;
    let api = common::Viewer::configure(&mut cfg);
    let app =
        common::RunningApp::start_with(cfg, rules(), vec![prismwatch::app::Component::Processor]);
    // 90 minutes of history ending now, minute-aligned; down from minute 60 to 65.
    let t0 = prismwatch::tools::clock::now_ms() / MIN * MIN - 90 * MIN;
    let points: Vec<MetricPoint> = (0..90)
        .flat_map(|m| {
            let ts = t0 + m * MIN;
            [
                point(
                    "service_up",
                    ts,
                    if (60..65).contains(&m) { 0.0 } else { 1.0 },
                ),
                point("api_error_rate_percent", ts, 0.1),
            ]
        })
        .collect();
    common::publish(&js, &points, 2).await;

    let page = "slo_api_availability_page";
    common::wait_for(
        "the SLO page to resolve",
        Duration::from_secs(30),
        || async {
            common::alert_events(&js)
                .await
                .iter()
                .any(|e| e.rule == page && e.status == AlertStatus::Resolved)
        },
    )
    .await;
    let events: Vec<_> = common::alert_events(&js)
        .await
        .into_iter()
        .filter(|e| e.rule == page)
        .map(|e| (e.status, (e.event_time - t0) / MIN, e.priority))
        .collect();
    assert_eq!(
        events,
        [
            (AlertStatus::Firing, 61, Priority::P1),
            (AlertStatus::Resolved, 70, Priority::P1)
        ]
    );

    // 5 bad minutes of a 43.2-minute budget.
    let expected = 1.0 - 5.0 / 43.2;
    let body = api
        .json("/api/v1/series?metric=slo_error_budget_remaining&labels=slo=api,objective=availability")
        .await;
    let left = body["last"]["value"].as_f64().unwrap_or(f64::NAN);
    assert!((left - expected).abs() < 1e-9, "{body}");

    let (_, metrics) = api.get("/metrics").await.unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("prismwatch_slo_error_budget_remaining_ratio{")
                && l.contains("objective=\"availability\"")
        })
        .unwrap_or_else(|| panic!("no budget gauge in {metrics}"));
    let gauge: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((gauge - expected).abs() < 1e-9, "{line}");
    assert!(
        metrics.contains("prismwatch_slo_burn_rate{")
            && metrics.contains("prismwatch_slo_experience_score "),
        "{metrics}"
    );
    let status = api.json("/api/v1/status").await;
    let score = status["processor"]["experience_score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&score), "{status}");
    app.stop().await.unwrap();
}

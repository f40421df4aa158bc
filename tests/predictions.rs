//! Failure prediction graded by time to failure and scored when it settles, on event time,
//! through the pipeline the processor runs, with the shipped graded rule: a disk filling over
//! days is predicted P4, then P3, P2 and P1 as its time runs out, and each prediction is a hit
//! when it fills; a climb that stops is a false alarm when each horizon passes; a jump nothing
//! predicted is a miss.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use prismwatch::ingest::{Incoming, IngestConfig};
use prismwatch::model::{AlertStatus, MetricPoint, Priority};
use prismwatch::pipeline::{Pipeline, PipelineConfig, PredictionScored};
use prismwatch::rules::prediction::Outcome;
use prismwatch::rules::RuleSet;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// Well inside the 5-minute staleness.
const STEP: i64 = 2 * MIN;
const T0: i64 = 1_764_000_000_000 / DAY * DAY;

fn rules() -> RuleSet {
    let mut set = RuleSet::default();
    set.add_file(
        "predictions.yaml",
        &std::fs::read_to_string("config/rules/predictions.yaml").unwrap(),
    )
    .unwrap();
    set
}

/// A disk sample every 2 minutes for `days`, its value `f(t)` (t in ms from T0), stored as
/// measured, one point a message (as a collector sends them).
fn disk(days: i64, f: impl Fn(i64) -> f64) -> Vec<Incoming> {
    let points: Vec<MetricPoint> = (0..days * DAY / STEP)
        .map(|i| MetricPoint {
            name: "disk_usage_percent".into(),
            labels: [("service".to_string(), "storage".to_string())].into(),
            value: f(i * STEP),
            timestamp: T0 + i * STEP,
        })
        .collect();
    points
        .chunks(1)
        .enumerate()
        .map(|(i, c)| Incoming {
            subject: "prism.part.0.service.storage.disk_usage_percent".into(),
            payload: rmp_serde::to_vec_named(c).unwrap().into(),
            content_type: None,
            stream_seq: i as u64 + 1,
            published_ms: c.last().unwrap().timestamp,
        })
        .collect()
}

struct Run {
    /// (rule, status, event time from T0, priority)
    events: Vec<(String, AlertStatus, i64, Priority)>,
    predictions: Vec<PredictionScored>,
}

fn run(msgs: &[Incoming]) -> Run {
    let mut p = Pipeline::new(
        &PipelineConfig::default(),
        &IngestConfig::default(),
        rules(),
    );
    let mut out = Run {
        events: Vec::new(),
        predictions: Vec::new(),
    };
    for b in msgs.chunks(64) {
        let o = p.process(b);
        out.events.extend(o.events.into_iter().map(|e| {
            (
                e.event.rule.clone(),
                e.event.status,
                e.event.event_time - T0,
                e.event.priority,
            )
        }));
        out.predictions.extend(o.predictions);
    }
    out
}

fn firings(r: &Run) -> Vec<(String, i64)> {
    r.events
        .iter()
        .filter(|e| e.1 == AlertStatus::Firing)
        .map(|e| (e.0.clone(), e.2))
        .collect()
}

/// Flat at 50 % for two days (the detectors learn the series), then 10 % a day: 90 % is passed
/// 4 days into the climb.
fn filling(t: i64) -> f64 {
    if t < 2 * DAY {
        50.0
    } else {
        50.0 + 10.0 * (t - 2 * DAY) as f64 / DAY as f64
    }
}

#[test]
fn a_filling_disk_is_predicted_p4_to_p1_as_its_time_runs_out_and_every_grade_hits() {
    let r = run(&disk(7, filling));
    let fired = firings(&r);
    let grades: Vec<&str> = fired.iter().map(|(n, _)| n.as_str()).collect();
    // Each grade in turn, one alert each (the previous resolves as the next fires); the last is
    // the P1 that holds once the disk is past 90 %.
    assert_eq!(
        grades,
        [
            "disk_full_predicted_p4",
            "disk_full_predicted_p3",
            "disk_full_predicted_p2",
            "disk_full_predicted_p1"
        ],
        "{fired:?}"
    );
    let at = |g: &str| fired.iter().find(|(n, _)| n == g).unwrap().1;
    let full = 6 * DAY; // 2 days flat + 4 days of climb
                        // Each grade fires once the time left is within its horizon, give or take the trend's
                        // estimate: P3 about 3 days before, P2 1 day, P1 6 hours.
    for (g, left) in [
        ("disk_full_predicted_p3", 3 * DAY),
        ("disk_full_predicted_p2", DAY),
        ("disk_full_predicted_p1", 6 * HOUR),
    ] {
        let lead = full - at(g);
        assert!(
            (lead - left).abs() <= left / 4,
            "{g} fired {} h before full (expected about {} h)",
            lead / HOUR,
            left / HOUR
        );
    }
    // Scored at the crossing: a hit for each grade's prediction, predicted time errors within
    // a few hours; no miss, no false alarm.
    let crossing = T0 + full + STEP; // the first sample above 90 %
    let mut hits = BTreeMap::new();
    for p in &r.predictions {
        match p.outcome {
            Outcome::Hit { error_ms } => {
                assert_eq!(p.at, crossing, "{p:?}");
                hits.insert(p.rule.clone(), error_ms);
            }
            other => panic!("unexpected {other:?}: {:?}", r.predictions),
        }
    }
    assert_eq!(hits.len(), 4, "{:?}", r.predictions);
    // Once the trend has learnt the slope, the predicted time is right to the sample (the
    // crossing is seen at the first sample past 90 %); the P4, made hours into the climb, is
    // further off (today: 3 days late), within its lead time.
    let e = |g: &str| hits[&format!("disk_full_predicted_{g}")].abs();
    for g in ["p1", "p2", "p3"] {
        assert!(e(g) <= STEP, "{hits:?}");
    }
    assert!(e("p4") < 4 * DAY, "{hits:?}");
}

#[test]
fn a_climb_that_stops_is_a_false_alarm_when_each_horizon_passes() {
    // Climbs for a day and a half (to 65 %), then stays there.
    let stops = |t: i64| filling(t.min(2 * DAY + 3 * DAY / 2));
    let r = run(&disk(14, stops));
    let fired = firings(&r);
    assert!(!fired.is_empty(), "the climb was predicted");
    assert!(
        r.predictions
            .iter()
            .all(|p| p.outcome == Outcome::FalseAlarm),
        "{:?}",
        r.predictions
    );
    // One false alarm per firing, settled once its horizon (and the forecast's uncertainty, at
    // least a tenth of the horizon) has passed.
    let horizon = |g: &str| match &g[g.len() - 2..] {
        "p1" => 6 * HOUR,
        "p2" => DAY,
        "p3" => 3 * DAY,
        _ => 7 * DAY,
    };
    let mut got: Vec<(String, i64)> = r
        .predictions
        .iter()
        .map(|p| (p.rule.clone(), p.at - T0))
        .collect();
    got.sort();
    let mut fired = fired.clone();
    fired.sort();
    assert_eq!(got.len(), fired.len(), "{got:?} {fired:?}");
    for ((g, made), (rule, at)) in fired.iter().zip(&got) {
        assert_eq!(g, rule);
        let h = horizon(g);
        assert!(
            *at >= made + h + h / 10,
            "{g} made at {made} settled at {at}, before its horizon"
        );
    }
}

#[test]
fn a_jump_nothing_predicted_is_a_miss_of_the_rule_as_written() {
    // Flat for two days, then full at once.
    let r = run(&disk(
        3,
        |t| if t < 2 * DAY + 6 * HOUR { 50.0 } else { 95.0 },
    ));
    let scored: Vec<(String, Outcome, i64)> = r
        .predictions
        .iter()
        .map(|p| (p.rule.clone(), p.outcome, p.at - T0))
        .collect();
    assert_eq!(
        scored,
        [(
            "disk_full_predicted".to_string(),
            Outcome::Miss,
            2 * DAY + 6 * HOUR
        )]
    );
    // It is the P1 that holds once the disk is past 90 % (for its 5 minutes); no other grade
    // fires.
    assert_eq!(
        firings(&r),
        [(
            "disk_full_predicted_p1".to_string(),
            2 * DAY + 6 * HOUR + 5 * MIN
        )]
    );
}

#[test]
fn a_restart_from_a_checkpoint_scores_the_same() {
    let msgs = disk(7, filling);
    let whole = run(&msgs);
    let cfg = PipelineConfig::default();
    let mut first = Pipeline::new(&cfg, &IngestConfig::default(), rules());
    // Stopped between the P3 and the crossing: its predictions are pending in the checkpoint.
    let half = (5 * DAY / STEP) as usize;
    let mut got: Vec<PredictionScored> = msgs[..half]
        .chunks(64)
        .flat_map(|b| first.process(b).predictions)
        .collect();
    let header: prismwatch::pipeline::PipelineHeader =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&first.header()).unwrap()).unwrap();
    // Each series as a checkpoint writes it (borrowed from the pipeline), and read back; the
    // borrowed view writes exactly the bytes of an owned snapshot.
    let mut series: Vec<prismwatch::pipeline::SeriesSnapshot> = Vec::new();
    first.for_each_series(|s| {
        let bytes = rmp_serde::to_vec_named(&s).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec_named(&s.to_snapshot()).unwrap());
        series.push(rmp_serde::from_slice(&bytes).unwrap());
    });
    assert!(
        series.iter().any(|s| !s.predictions.is_empty()),
        "pending predictions are checkpointed"
    );
    let mut second = Pipeline::new(&cfg, &IngestConfig::default(), rules());
    second.restore_header(header);
    second.restore_series(series);
    got.extend(
        msgs[half..]
            .chunks(64)
            .flat_map(|b| second.process(b).predictions),
    );
    let strip = |v: &[PredictionScored]| -> Vec<(String, Outcome, i64)> {
        v.iter()
            .map(|p| (p.rule.clone(), p.outcome, p.at))
            .collect()
    };
    assert_eq!(strip(&got), strip(&whole.predictions));
    assert_eq!(got.len(), 4);
}

/// Live, against a real nats-server: the accuracy of each grade is a metric and is in the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_accuracy_per_rule_is_in_metrics_and_the_api() {
    let (_srv, mut cfg, js) = common::fresh().await;
    let api = common::Viewer::configure(&mut cfg);
    let app =
        common::RunningApp::start_with(cfg, rules(), vec![prismwatch::app::Component::Processor]);
    // The filling disk, ending now.
    let t0 = prismwatch::tools::clock::now_ms() / MIN * MIN - 7 * DAY;
    let points: Vec<MetricPoint> = (0..7 * DAY / STEP)
        .map(|i| MetricPoint {
            name: "disk_usage_percent".into(),
            labels: [("service".to_string(), "storage".to_string())].into(),
            value: filling(i * STEP),
            timestamp: t0 + i * STEP,
        })
        .collect();
    common::publish(&js, &points, 1).await;

    // Processors store their counts every 5 s.
    let p1 = "/api/v1/rules/disk_full_predicted_p1";
    common::wait_for(
        "the P1's hit in the API",
        Duration::from_secs(40),
        || async { api.json(p1).await["stats"]["predictions"]["hits"] == 1 },
    )
    .await;
    let rule = api.json(p1).await;
    let p = &rule["stats"]["predictions"];
    assert_eq!(p["false_alarms"], 0, "{rule}");
    assert_eq!(p["misses"], 0, "{rule}");
    assert_eq!(p["precision"], 1.0, "{rule}");
    assert!(
        p["mean_abs_error_ms"].as_f64().unwrap() <= STEP as f64,
        "{rule}"
    );
    // Every grade has its numbers in the list too.
    let all = api.json("/api/v1/rules").await;
    assert!(all["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["stats"]["predictions"].is_object()));

    let (_, metrics) = api.get("/metrics").await.unwrap();
    for g in ["p1", "p2", "p3", "p4"] {
        let line = format!(
            "prismwatch_prediction_outcomes_total{{rule=\"disk_full_predicted_{g}\",outcome=\"hit\"}} 1"
        );
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    assert!(
        metrics.contains("prismwatch_prediction_error_seconds"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

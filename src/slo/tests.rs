//! The engine driven by hand-made points and watermarks.

use super::*;
use crate::model::SeriesKey;
use crate::rules::RuleSet;

const MIN: i64 = MINUTE_MS;

fn engine(yaml: &str) -> SloEngine {
    let mut set = RuleSet::default();
    set.add_file("t.yaml", yaml).unwrap();
    SloEngine::new(&set.slos)
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut buf = String::new();
    let mut l = labels.to_vec();
    l.sort_unstable();
    SeriesKey::append_canonical(&mut buf, name, l);
    buf
}

/// Derived points as (display key, minutes, value).
fn advance(e: &mut SloEngine, watermark: i64) -> Vec<(String, i64, f64)> {
    let (mut keys, mut out) = (String::new(), Vec::new());
    e.advance(watermark, &mut keys, &mut out);
    out.into_iter()
        .map(|(r, t, v)| (SeriesKey(keys[r].into()).display(), t / MIN, v))
        .collect()
}

fn value(points: &[(String, i64, f64)], display: &str) -> f64 {
    points
        .iter()
        .rev()
        .find(|p| p.0 == display)
        .unwrap_or_else(|| panic!("no {display} in {points:?}"))
        .2
}

const COUNTERS: &str = r#"
slos:
  - name: web
    group_by: [region]
    burn_alerts: [{ name: page, long: 10m, short: 2m, factor: 10, priority: P1 }]
    objectives:
      availability:
        target_percent: 99
        sli:
          counters:
            total: { metric: requests_total }
            bad: { metric: requests_total, match: { code: "=~5.." } }
"#;

#[test]
fn counters_count_increases_through_resets_per_group() {
    let mut e = engine(COUNTERS);
    let all = key("requests_total", &[("region", "eu"), ("code", "200")]);
    let bad = key("requests_total", &[("region", "eu"), ("code", "500")]);
    // The 200s count total; the 500s total and bad.
    let mut ok_count = 1000.0;
    let mut bad_count = 10.0;
    for m in 0..10 {
        e.observe(&all, m * MIN, ok_count);
        e.observe(&bad, m * MIN, bad_count);
        ok_count += 100.0;
        bad_count += if m == 5 { -bad_count + 3.0 } else { 2.0 };
    }
    let pts = advance(&mut e, 10 * MIN);
    // Minute 0 gives no increase (first sight). Increases: 9 × 100 good, bad 2 × 8 + a reset to
    // 3 (counted as 3): bad 19 of total 919.
    let burn = value(
        &pts,
        "slo_burn_rate{objective=\"availability\",region=\"eu\",slo=\"web\",window=\"10m\"}",
    );
    let expected = (19.0 / 919.0) / 0.01;
    assert!((burn - expected).abs() < 1e-9, "{burn} vs {expected}");
    // One group: points of another region make another.
    e.observe(
        &key("requests_total", &[("region", "us"), ("code", "200")]),
        11 * MIN,
        1.0,
    );
    e.observe(
        &key("requests_total", &[("region", "us"), ("code", "200")]),
        12 * MIN,
        5.0,
    );
    let pts = advance(&mut e, 13 * MIN);
    assert!(pts.iter().any(|p| p.0.contains("region=\"us\"")));
    assert_eq!(e.status().len(), 2);
}

const SAMPLES: &str = r#"
slos:
  - name: md
    objectives:
      latency:
        target_percent: 90
        sli: { samples: { metric: latency_ms, good: "value <= 100" } }
"#;

#[test]
fn repeated_and_late_points_count_once_and_are_not_lost() {
    let mut e = engine(SAMPLES);
    let k = key("latency_ms", &[]);
    e.observe(&k, 0, 50.0);
    e.observe(&k, 0, 500.0); // redelivered time: ignored
    e.observe(&k, 30_000, 500.0);
    assert_eq!(e.stats.repeated_points, 1);
    let pts = advance(&mut e, 2 * MIN);
    assert_eq!(pts.iter().filter(|p| p.1 == 1).count(), 10, "{pts:?}");
    // Minute 0: one good, one bad; minute 1 empty: a bad share of 1/2 over the 2 minutes the
    // 5 m window has seen, the 3 it has not counting as good: (1/2 × 2/5) / 0.1 = 2.
    let burn = value(
        &pts,
        "slo_burn_rate{objective=\"latency\",slo=\"md\",window=\"5m\"}",
    );
    assert!((burn - 2.0).abs() < 1e-9, "{burn}");
    // A point of the closed minute 1 (late for it) goes into the oldest open one.
    e.observe(&k, MIN + 10_000, 500.0);
    assert_eq!(e.stats.late_points, 1);
    let pts = advance(&mut e, 3 * MIN);
    // 5 m window: minutes 0 (1 good, 1 bad), 1 (empty), 2 (1 bad): 2 bad of 3, over 3 of 5
    // minutes.
    let burn = value(
        &pts,
        "slo_burn_rate{objective=\"latency\",slo=\"md\",window=\"5m\"}",
    );
    assert!(
        (burn - (2.0 / 3.0) * (3.0 / 5.0) / 0.1).abs() < 1e-9,
        "{burn}"
    );
}

#[test]
fn minutes_close_only_when_the_watermark_passes_them_and_a_gap_writes_a_bounded_tail() {
    let mut e = engine(SAMPLES);
    assert_eq!(e.next_close(), i64::MAX, "nothing to close before a point");
    e.observe(&key("latency_ms", &[]), 10_000, 1.0);
    assert_eq!(e.next_close(), MIN);
    assert!(advance(&mut e, MIN - 1).is_empty());
    assert!(!advance(&mut e, MIN).is_empty());
    // Two days of silence: minutes are all closed (the windows empty), points written for the
    // last MAX_MINUTES_WRITTEN_AT_ONCE of them only.
    let pts = advance(&mut e, 2 * 1440 * MIN);
    let minutes: std::collections::BTreeSet<i64> = pts.iter().map(|p| p.1).collect();
    assert_eq!(minutes.len() as i64, MAX_MINUTES_WRITTEN_AT_ONCE);
    assert_eq!(minutes.last(), Some(&(2 * 1440)));
    assert_eq!(e.next_close(), (2 * 1440 + 1) * MIN);
}

#[test]
fn groups_are_bounded_and_a_snapshot_restores_the_same_engine() {
    let mut e = engine(COUNTERS);
    for g in 0..MAX_GROUPS_PER_SLO + 5 {
        let k = key("requests_total", &[("region", &format!("r{g}"))]);
        e.observe(&k, 0, 1.0);
    }
    assert_eq!(e.stats.refused_points, 5);
    assert_eq!(e.groups.len(), MAX_GROUPS_PER_SLO);

    let mut a = engine(COUNTERS);
    let k = key("requests_total", &[("region", "eu")]);
    for m in 0..30 {
        a.observe(&k, m * MIN, (m * m) as f64);
        advance(&mut a, m * MIN);
    }
    let snap = a.snapshot();
    let mut b = engine(COUNTERS);
    b.restore(snap.clone());
    assert_eq!(b.snapshot(), snap);
    for m in 30..40 {
        a.observe(&k, m * MIN, (m * m) as f64 - 5.0);
        b.observe(&k, m * MIN, (m * m) as f64 - 5.0);
        assert_eq!(advance(&mut a, m * MIN), advance(&mut b, m * MIN));
    }
    // A restore under other rules keeps the SLOs that still exist only.
    let mut other = engine(SAMPLES);
    other.restore(snap);
    assert!(other.groups.is_empty());
}

//! Pipeline tests driven by hand-made points and watermarks, no runtime.

use super::*;
use crate::model::AlertStatus;

const SEC: i64 = 1000;
const T0: i64 = 1_764_000_000_000;

fn rules(text: &str) -> RuleSet {
    let mut set = RuleSet::default();
    set.add_file("t.yaml", text).unwrap();
    set
}

fn config(shards: usize) -> PipelineConfig {
    PipelineConfig {
        shards,
        ..Default::default()
    }
}

fn pt(series: &str, ts: i64, value: f64) -> KeyedPoint {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("exchange".to_string(), series.to_string());
    KeyedPoint {
        key: SeriesKey::from_parts("delay_seconds", &labels)
            .0
            .to_string(),
        ts,
        value,
    }
}

const RULES: &str = r#"
rules:
  - name: md_delay
    metric: delay_seconds
    condition: value > 5
    for: 5m
    priority: P2
    annotations: { summary: "{{ labels.exchange }} delay {{ value }}s" }
  - name: anomaly
    metric: delay_seconds
    condition: score >= 0.75
    resolve_after: 1m
    priority: P3
"#;

/// Three exchanges every 10 s for an hour; binance has a 7-minute excursion, okx a 4-minute one
/// and deribit a one-point spike.
fn messages() -> Vec<Vec<KeyedPoint>> {
    let mut out = Vec::new();
    for i in 0..360 {
        let ts = T0 + i * 10 * SEC;
        let noise = ((i * 7919) % 11) as f64 * 0.01;
        let b = if (100..142).contains(&i) {
            9.0
        } else {
            1.0 + noise
        };
        let o = if (200..224).contains(&i) {
            9.0
        } else {
            1.0 + noise
        };
        let d = if i == 300 { 30.0 } else { 1.0 + noise };
        out.push(vec![
            pt("binance", ts, b),
            pt("okx", ts, o),
            pt("deribit", ts, d),
        ]);
    }
    out
}

fn run_all(shards: usize, msgs: &[Vec<KeyedPoint>], batch: usize) -> Vec<AlertEvent> {
    let mut p = Pipeline::new(&config(shards), 30 * SEC, rules(RULES));
    let mut events = Vec::new();
    for chunk in msgs.chunks(batch) {
        for m in chunk {
            p.push_message(m.clone());
        }
        events.extend(p.run().events);
    }
    events
}

fn summary(events: &[AlertEvent]) -> Vec<(String, String, AlertStatus, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.rule.clone(),
                e.labels["exchange"].clone(),
                e.status,
                e.event_time,
            )
        })
        .collect()
}

#[test]
fn for_duration_fires_once_and_short_excursion_never_fires() {
    let events = run_all(1, &messages(), 50);
    let firing: Vec<_> = summary(&events)
        .into_iter()
        .filter(|e| e.0 == "md_delay" && e.2 == AlertStatus::Firing)
        .collect();
    assert_eq!(
        firing,
        vec![(
            "md_delay".into(),
            "binance".into(),
            AlertStatus::Firing,
            T0 + 1000 * SEC + 300 * SEC
        )]
    );
    let okx: Vec<_> = summary(&events)
        .into_iter()
        .filter(|e| e.0 == "md_delay" && e.1 == "okx")
        .collect();
    assert_eq!(
        okx.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![AlertStatus::Pending, AlertStatus::Cancelled]
    );
    let fired = events
        .iter()
        .find(|e| e.status == AlertStatus::Firing && e.rule == "md_delay")
        .unwrap();
    assert_eq!(fired.annotations["summary"], "binance delay 9s");
    assert_eq!(fired.starts_at, T0 + 1000 * SEC);
    let resolved = events
        .iter()
        .find(|e| e.status == AlertStatus::Resolved && e.rule == "md_delay")
        .unwrap();
    assert_eq!(resolved.id, fired.id);
    assert_eq!(resolved.ends_at, Some(T0 + 1420 * SEC));
}

#[test]
fn spike_gives_one_firing_and_one_resolved_anomaly() {
    let events = run_all(2, &messages(), 100);
    let deribit: Vec<_> = summary(&events)
        .into_iter()
        .filter(|e| e.0 == "anomaly" && e.1 == "deribit")
        .collect();
    assert_eq!(
        deribit,
        vec![
            (
                "anomaly".into(),
                "deribit".into(),
                AlertStatus::Firing,
                T0 + 3000 * SEC
            ),
            (
                "anomaly".into(),
                "deribit".into(),
                AlertStatus::Resolved,
                T0 + 3010 * SEC + 60 * SEC
            ),
        ]
    );
}

#[test]
fn same_events_whatever_the_batching_and_sharding() {
    let msgs = messages();
    let reference = run_all(1, &msgs, 1);
    assert!(!reference.is_empty());
    let mut a = run_all(3, &msgs, 7);
    let mut b = run_all(2, &msgs, 360);
    for v in [&mut a, &mut b] {
        v.sort_by(|x, y| x.sort_key().partial_cmp(&y.sort_key()).unwrap());
    }
    let mut r = reference.clone();
    r.sort_by(|x, y| x.sort_key().partial_cmp(&y.sort_key()).unwrap());
    assert_eq!(r, a);
    assert_eq!(r, b);
}

#[test]
fn snapshot_restore_continues_identically() {
    let msgs = messages();
    let reference = run_all(2, &msgs, 10);
    let mut p = Pipeline::new(&config(2), 30 * SEC, rules(RULES));
    let mut events = Vec::new();
    for m in &msgs[..170] {
        p.push_message(m.clone());
    }
    events.extend(p.run().events);
    let snap = p.snapshot();
    // Restore into a pipeline with another shard count, through the checkpoint encoding.
    let bytes = rmp_serde::to_vec_named(&snap).unwrap();
    let mut q = Pipeline::new(&config(3), 30 * SEC, rules(RULES));
    q.restore(rmp_serde::from_slice(&bytes).unwrap());
    for chunk in msgs[170..].chunks(10) {
        for m in chunk {
            q.push_message(m.clone());
        }
        events.extend(q.run().events);
    }
    let key = |v: &mut Vec<AlertEvent>| {
        v.sort_by(|x, y| x.sort_key().partial_cmp(&y.sort_key()).unwrap())
    };
    let mut r = reference;
    key(&mut r);
    key(&mut events);
    assert_eq!(r, events);
}

#[test]
fn duplicates_and_late_points_are_counted_and_change_nothing() {
    let msgs = messages();
    let reference = run_all(1, &msgs, 20);
    let mut p = Pipeline::new(&config(1), 30 * SEC, rules(RULES));
    let mut events = Vec::new();
    let (mut dups, mut late) = (0, 0);
    for chunk in msgs.chunks(20) {
        for m in chunk {
            p.push_message(m.clone());
        }
        // Redeliver the whole chunk: inside the dedup window or behind the watermark.
        for m in chunk {
            p.push_message(m.clone());
        }
        let out = p.run();
        dups += out.stats.duplicates;
        late += out.late;
        events.extend(out.events);
    }
    assert_eq!(reference, events);
    assert_eq!(dups + late, (360 * 3) as u64);
    assert!(late > 0 && dups > 0);
}

#[test]
fn idle_series_are_evicted() {
    let mut cfg = config(1);
    cfg.idle_series_evict_secs = 60;
    let mut p = Pipeline::new(&cfg, 0, rules(RULES));
    p.push_message(vec![pt("a", T0, 1.0), pt("b", T0, 1.0)]);
    p.run();
    assert_eq!(p.series_count(), 2);
    for i in 1..20 {
        p.push_message(vec![pt("a", T0 + i * 10 * SEC, 1.0)]);
    }
    let out = p.run();
    assert_eq!(p.series_count(), 1);
    assert_eq!(out.stats.series_evicted, 1);
}

#[test]
fn metric_operators_override_the_default_list() {
    let mut cfg = config(1);
    // delay_seconds gets a z-score so insensitive that the spike no longer scores.
    let yaml = r#"
pipeline:
  metric_operators:
    - metric: "=~delay_.*"
      operators:
        - dedup: {}
        - zscore: { half_score_at_z: 100000.0 }
"#;
    let tree = crate::config::parse_yaml("t.yaml", yaml).unwrap();
    let parsed: crate::config::Config = crate::config::from_tree("t.yaml", tree).unwrap();
    cfg.metric_operators = parsed.pipeline.metric_operators;
    assert!(cfg.problems().is_empty());
    let mut p = Pipeline::new(&cfg, 30 * SEC, rules(RULES));
    let mut events = Vec::new();
    for m in messages() {
        p.push_message(m);
        events.extend(p.run().events);
    }
    assert!(
        !events.iter().any(|e| e.rule == "anomaly"),
        "{:?}",
        summary(&events)
    );
    // The threshold rule still works on the overridden series.
    assert!(events
        .iter()
        .any(|e| e.rule == "md_delay" && e.status == AlertStatus::Firing));

    cfg.metric_operators[0].metric = "=~(".into();
    assert_eq!(cfg.problems()[0].0, "metric_operators[0].metric");
}

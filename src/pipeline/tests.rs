//! Pipeline tests driven by hand-made messages (with their store times), no runtime.

use super::*;
use crate::model::{AlertEvent, AlertStatus, EndReason, MetricPoint};

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
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

fn ingest() -> IngestConfig {
    IngestConfig::default()
}

fn point(exchange: &str, ts: i64, value: f64) -> MetricPoint {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("exchange".to_string(), exchange.to_string());
    MetricPoint {
        name: "delay_seconds".into(),
        labels,
        value,
        timestamp: ts,
    }
}

/// A stored message of `points` from source `<domain>.<source>`, stored at `stored`.
fn msg(source: &str, stored: i64, points: &[MetricPoint]) -> Incoming {
    Incoming {
        subject: format!("prism.part.0.{source}.delay_seconds").into(),
        payload: rmp_serde::to_vec_named(points).unwrap().into(),
        content_type: None,
        stream_seq: 0,
        published_ms: stored,
    }
}

fn tick(stored: i64) -> Incoming {
    Incoming {
        subject: crate::subjects::tick_subject(0).into(),
        payload: bytes::Bytes::new(),
        content_type: None,
        stream_seq: 0,
        published_ms: stored,
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

/// Three exchanges every 10 s for an hour, stored as they happen; binance has a 7-minute
/// excursion, okx a 4-minute one and deribit a one-point spike.
fn messages() -> Vec<Incoming> {
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
        out.push(msg(
            "exchange.all",
            ts + 50,
            &[
                point("binance", ts, b),
                point("okx", ts, o),
                point("deribit", ts, d),
            ],
        ));
    }
    out
}

fn run_all(shards: usize, msgs: &[Incoming], batch: usize) -> Vec<AlertEvent> {
    let mut p = Pipeline::new(&config(shards), &ingest(), rules(RULES));
    msgs.chunks(batch)
        .flat_map(|chunk| p.process(chunk).events)
        .map(|e| e.event)
        .collect()
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
    assert_eq!(fired.end_reason, None);
    let resolved = events
        .iter()
        .find(|e| e.status == AlertStatus::Resolved && e.rule == "md_delay")
        .unwrap();
    assert_eq!(resolved.id, fired.id);
    assert_eq!(resolved.ends_at, Some(T0 + 1420 * SEC));
    assert_eq!(resolved.end_reason, Some(EndReason::Condition));
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
    assert_eq!(run_all(3, &msgs, 7), reference);
    assert_eq!(run_all(2, &msgs, 360), reference);
}

/// Many series from several sources, with bad points, refused messages, late points, ticks
/// and spikes: enough per batch for the decoding and the shards to run on the pool.
fn busy_messages() -> Vec<Incoming> {
    let mut out = Vec::new();
    for i in 0..1500i64 {
        let ts = T0 + i * SEC;
        if i % 50 == 0 {
            out.push(tick(ts + 20));
        }
        let source = ["exchange.binance", "exchange.okx", "exchange.deribit"][(i % 3) as usize];
        let points: Vec<MetricPoint> = (0..40)
            .map(|k| {
                let venue = (i * 40 + k) % 400;
                let mut p = point(&format!("venue{venue}"), ts, 1.0);
                p.labels.insert("source".into(), source.into());
                if (i + k) % 97 == 0 || (venue < 5 && (400..800).contains(&i)) {
                    p.value = 40.0; // a spike, or a long excursion that fires
                }
                match (i * 40 + k) % 211 {
                    0 => p.value = f64::NAN,
                    1 => p.name = "9bad".into(),
                    2 => p.timestamp = ts - 10 * MIN, // late
                    _ => {}
                }
                p
            })
            .collect();
        out.push(msg(source, ts + 10, &points));
        if i % 131 == 0 {
            out.push(Incoming {
                payload: bytes::Bytes::from_static(b"\xc1 not a point"),
                ..msg(source, ts + 10, &[])
            });
        }
    }
    out
}

/// Everything a batch gives that does not depend on how the work was split.
fn full_output(shards: usize, msgs: &[Incoming], batch: usize) -> Vec<String> {
    let mut p = Pipeline::new(&config(shards), &ingest(), rules(RULES));
    let mut out = Vec::new();
    for chunk in msgs.chunks(batch) {
        let o = p.process(chunk);
        out.extend(o.events.iter().map(|e| format!("{} {:?}", e.msg, e.event)));
        out.extend(o.rejects.iter().map(|r| format!("{r:?}")));
        let mut claims: Vec<String> = o.claims.iter().map(|c| format!("{c:?}")).collect();
        claims.sort();
        out.extend(claims);
        let s = o.stats;
        out.push(format!(
            "{} {} {} {} {:?} {:?}",
            s.messages, s.ticks, s.points, s.late, s.shards, o.rule_evaluations
        ));
    }
    out
}

#[test]
fn same_output_whatever_the_shards_and_the_pool() {
    let msgs = busy_messages();
    let reference = full_output(1, &msgs, 500);
    let text = reference.join("\n");
    assert!(text.contains("Firing") && text.contains("NonFiniteValue"));
    assert!(text.contains("DecodeError") && text.contains("Late"));
    // 500 messages of 40 points: payloads far over the pool's threshold, 20,000 items.
    assert_eq!(full_output(2, &msgs, 500), reference);
    assert_eq!(full_output(3, &msgs, 500), reference);
    assert_eq!(full_output(4, &msgs, 500), reference);
}

/// Writes a checkpoint of `p` and restores it into a fresh pipeline with `shards` shards.
fn through_checkpoint(p: &Pipeline, shards: usize) -> Pipeline {
    through_checkpoint_with(p, shards, rules(RULES))
}

/// [`through_checkpoint`] into a pipeline with `set`.
fn through_checkpoint_with(p: &Pipeline, shards: usize, set: RuleSet) -> Pipeline {
    let header = checkpoint::CheckpointHeader {
        partition: 0,
        last_seq: 7,
        written_at_ms: 0,
        pipeline: p.header(),
    };
    let mut bytes = Vec::new();
    let mut w =
        checkpoint::CheckpointWriter::new(&header, |b| bytes.extend_from_slice(&b)).unwrap();
    let mut failed = None;
    p.for_each_series(|s| {
        if let Err(e) = w.series(&s) {
            failed = Some(e);
        }
    });
    assert!(failed.is_none());
    let size = w.finish();
    assert_eq!(size, bytes.len());
    let (h, series) = checkpoint::decode_all(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(series.len(), p.series_count());
    let mut q = Pipeline::new(&config(shards), &ingest(), set);
    q.restore_header(h.pipeline);
    q.restore_series(series);
    q
}

#[test]
fn checkpoint_restore_continues_identically() {
    let msgs = messages();
    let reference = run_all(2, &msgs, 10);
    let mut p = Pipeline::new(&config(2), &ingest(), rules(RULES));
    let mut events: Vec<AlertEvent> = p
        .process(&msgs[..170])
        .events
        .into_iter()
        .map(|e| e.event)
        .collect();
    // Restore into a pipeline with another shard count, through the checkpoint encoding.
    let mut q = through_checkpoint(&p, 3);
    for chunk in msgs[170..].chunks(10) {
        events.extend(q.process(chunk).events.into_iter().map(|e| e.event));
    }
    assert_eq!(events, reference);
}

/// Ten minutes of 300 series from three sources, a point every 3 s each. A tenth of them
/// rise above the `md_delay` threshold from second 20 (firing at second 320), and half of
/// them stop at second 300: those above the threshold fire on their timers, the others are
/// evicted as idle.
fn cut_messages() -> Vec<Incoming> {
    let sources = ["exchange.binance", "exchange.okx", "exchange.deribit"];
    (0..600i64)
        .map(|i| {
            let ts = T0 + i * SEC;
            let source = sources[(i % 3) as usize];
            let venues = if i < 300 { 100 } else { 50 };
            let points: Vec<MetricPoint> = (0..venues)
                .map(|v| {
                    let noise = ((i * 7919 + v) % 11) as f64 * 0.01;
                    let high = v % 10 == 0 && (20..420).contains(&i);
                    let mut p = point(
                        &format!("venue{v}"),
                        ts,
                        if high { 9.0 } else { 1.0 + noise },
                    );
                    p.labels.insert("source".into(), source.into());
                    p
                })
                .collect();
            msg(source, ts + 10, &points)
        })
        .collect()
}

/// A checkpoint's bytes, written in one go while the pipeline waits.
fn checkpoint_bytes(p: &Pipeline, header: &checkpoint::CheckpointHeader) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut w = checkpoint::CheckpointWriter::new(header, |b| bytes.extend_from_slice(&b)).unwrap();
    p.for_each_series(|s| w.series(&s).unwrap());
    w.finish();
    bytes
}

/// A frame sink that keeps what it is given, and where.
fn collecting_sink() -> (Arc<std::sync::Mutex<Vec<u8>>>, checkpoint::FrameSink) {
    let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bytes.clone();
    let sink: checkpoint::FrameSink = Arc::new(move |b| kept.lock().unwrap().extend_from_slice(&b));
    (bytes, sink)
}

/// A checkpoint's header and series, in key order.
fn decoded(bytes: &[u8]) -> (checkpoint::CheckpointHeader, Vec<SeriesSnapshot>) {
    let (h, mut series) = checkpoint::decode_all(bytes).unwrap();
    series.sort_by(|a, b| a.key.cmp(&b.key));
    (h, series)
}

#[test]
fn a_checkpoint_written_between_batches_holds_the_state_of_its_cut() {
    let msgs = cut_messages();
    for shards in [1, 3] {
        let mut cfg = config(shards);
        // Idle series are evicted while the checkpoint is written.
        cfg.idle_series_evict_secs = 60;
        let new = || Pipeline::new(&cfg, &ingest(), rules(RULES));
        // `reference` waits while its checkpoint is written; `p` goes on while it writes.
        let (mut reference, mut p) = (new(), new());
        for chunk in msgs[..300].chunks(20) {
            reference.process(chunk);
            p.process(chunk);
        }
        let header = checkpoint::CheckpointHeader {
            partition: 0,
            last_seq: 300,
            written_at_ms: 0,
            pipeline: p.header(),
        };
        let at_cut = decoded(&checkpoint_bytes(&reference, &header));
        let (bytes, sink) = collecting_sink();
        p.begin_checkpoint(&header, sink).unwrap();
        assert!(p.checkpoint_pending());
        let (mut events, mut expected) = (Vec::new(), Vec::new());
        let (mut written, mut batches_while_writing, mut evicted_while_writing) = (None, 0, 0);
        for (i, chunk) in msgs[300..].chunks(5).enumerate() {
            let out = p.process(chunk);
            events.extend(out.events.into_iter().map(|e| e.event));
            expected.extend(reference.process(chunk).events.into_iter().map(|e| e.event));
            if written.is_none() {
                batches_while_writing += 1;
                evicted_while_writing += out.stats.shards.series_evicted;
                // A step every third batch, its deadline already passed: 16 series a step.
                if i % 3 == 2 {
                    written = p.checkpoint_step(std::time::Instant::now());
                }
            }
        }
        // Writing the checkpoint changed nothing that was processed meanwhile.
        assert_eq!(events, expected);
        assert!(events.iter().any(|e| e.status == AlertStatus::Firing));
        // Series changed, and series were evicted, before the steps reached them.
        assert!(evicted_while_writing > 0);
        assert!(batches_while_writing > 10, "{batches_while_writing}");
        let written = written.expect("complete").expect("written");
        assert!(!p.checkpoint_pending());
        let bytes = bytes.lock().unwrap().clone();
        assert_eq!(written.bytes, bytes.len());
        // The state of the cut, not of the end: the same bytes as the reference's checkpoint.
        let incremental = decoded(&bytes);
        assert_eq!(written.series, at_cut.1.len() as u64);
        assert_eq!(incremental.0, at_cut.0);
        assert_same_series(&incremental.1, &at_cut.1);
        assert_ne!(decoded(&checkpoint_bytes(&p, &header)).1, at_cut.1);
        // Restored, it goes on as the pipeline that was not checkpointed.
        let mut q = new();
        q.restore_header(incremental.0.pipeline);
        q.restore_series(incremental.1);
        let resumed: Vec<AlertEvent> = msgs[300..]
            .chunks(5)
            .flat_map(|chunk| q.process(chunk).events)
            .map(|e| e.event)
            .collect();
        assert_eq!(resumed, expected);

        // An abandoned checkpoint lacks its end: a reader refuses it.
        abandon_a_checkpoint_and_see_it_refused(&mut p, &header);
    }
}

/// A checkpoint written while the series table grows holds the series of its cut: the table
/// grows incrementally (see `SeriesTable`), so series move between its two tables between the
/// steps of the walk, and new series arrive meanwhile.
#[test]
fn a_checkpoint_written_while_the_series_table_grows_holds_its_cut() {
    // 1,792 series fill a table of 2,048 buckets, so the first new series starts its growth
    // (the old table's buckets then move 8 at an insert), and 3,000 more start a second one.
    let full = 1792;
    let mut msgs = vec![msg(
        "exchange.binance",
        T0 + 10,
        &(0..full)
            .map(|v| point(&format!("venue{v}"), T0, 1.0))
            .collect::<Vec<_>>(),
    )];
    for i in 1..=150i64 {
        let ts = T0 + i * SEC;
        let new = (0..20).map(|k| full + (i - 1) * 20 + k);
        let old = (0..10).map(|k| (i * 61 + k * 173) % full);
        let points: Vec<MetricPoint> = new
            .chain(old)
            .map(|v| point(&format!("venue{v}"), ts, 1.0 + (v % 7) as f64 * 0.1))
            .collect();
        msgs.push(msg("exchange.binance", ts + 10, &points));
    }
    let new = || Pipeline::new(&config(1), &ingest(), rules(RULES));
    let (mut reference, mut p) = (new(), new());
    reference.process(&msgs[..1]);
    p.process(&msgs[..1]);
    let header = checkpoint::CheckpointHeader {
        partition: 0,
        last_seq: 1,
        written_at_ms: 0,
        pipeline: p.header(),
    };
    let at_cut = decoded(&checkpoint_bytes(&reference, &header));
    assert_eq!(at_cut.1.len(), full as usize);
    let (bytes, sink) = collecting_sink();
    p.begin_checkpoint(&header, sink).unwrap();
    let mut written = None;
    let mut batches_while_writing = 0;
    for (i, m) in msgs[1..].iter().enumerate() {
        let (out, expected) = (
            p.process(std::slice::from_ref(m)),
            reference.process(std::slice::from_ref(m)),
        );
        assert_eq!(out.events.len(), expected.events.len());
        if written.is_none() {
            batches_while_writing += 1;
            // 16 series a step, every fourth batch: the walk spans both growths.
            if i % 4 == 3 {
                written = p.checkpoint_step(std::time::Instant::now());
            }
        }
    }
    // The second growth starts at the 90th batch.
    assert!(batches_while_writing > 100, "{batches_while_writing}");
    assert_eq!(p.series_count(), full as usize + 3000);
    // The rest is written once the batches stop.
    while written.is_none() {
        written = p.checkpoint_step(std::time::Instant::now());
    }
    let written = written.expect("complete").expect("written");
    let bytes = bytes.lock().unwrap().clone();
    assert_eq!(written.bytes, bytes.len());
    let incremental = decoded(&bytes);
    assert_eq!(written.series, full as u64);
    assert_same_series(&incremental.1, &at_cut.1);
}

/// Two checkpoints' series are the same (the series that differ are named, not printed whole).
fn assert_same_series(got: &[SeriesSnapshot], want: &[SeriesSnapshot]) {
    let keys = |s: &[SeriesSnapshot]| s.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(got), keys(want));
    let differ: Vec<&str> = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.key.as_str())
        .collect();
    assert!(
        differ.is_empty(),
        "{} series differ: {differ:?}",
        differ.len()
    );
}

/// Begins a checkpoint, writes a step of it and abandons it: what was handed over is refused.
fn abandon_a_checkpoint_and_see_it_refused(
    p: &mut Pipeline,
    header: &checkpoint::CheckpointHeader,
) {
    let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink: checkpoint::FrameSink = {
        let bytes = bytes.clone();
        Arc::new(move |b| bytes.lock().unwrap().extend_from_slice(&b))
    };
    p.begin_checkpoint(header, sink).unwrap();
    assert!(p.checkpoint_step(std::time::Instant::now()).is_none());
    p.abandon_checkpoint();
    assert!(!p.checkpoint_pending());
    assert!(p.checkpoint_step(std::time::Instant::now()).is_none());
    assert!(matches!(
        checkpoint::decode_all(&bytes.lock().unwrap()),
        Err(checkpoint::CheckpointError::Truncated(_))
    ));
}

#[test]
fn checkpoints_of_other_versions_and_corrupt_bytes_are_refused() {
    let mut p = Pipeline::new(&config(1), &ingest(), rules(RULES));
    p.process(&messages()[..10]);
    let header = checkpoint::CheckpointHeader {
        partition: 0,
        last_seq: 10,
        written_at_ms: 0,
        pipeline: p.header(),
    };
    let mut bytes = Vec::new();
    let mut w =
        checkpoint::CheckpointWriter::new(&header, |b| bytes.extend_from_slice(&b)).unwrap();
    p.for_each_series(|s| w.series(&s).unwrap());
    w.finish();
    assert!(checkpoint::decode_all(&bytes).is_ok());
    let mut old = bytes.clone();
    old[4] = 2;
    assert!(matches!(
        checkpoint::decode_all(&old),
        Err(checkpoint::CheckpointError::Version { found: 2 })
    ));
    assert!(matches!(
        checkpoint::decode_all(&bytes[..bytes.len() - 4]),
        Err(checkpoint::CheckpointError::Truncated(_))
    ));
    let mut garbled = bytes.clone();
    for b in &mut garbled[40..60] {
        *b ^= 0x5a;
    }
    assert!(checkpoint::decode_all(&garbled).is_err());
    assert!(matches!(
        checkpoint::decode_all(b"garbage!"),
        Err(checkpoint::CheckpointError::BadMagic)
    ));
}

#[test]
fn redelivered_points_are_duplicates_or_late_and_change_nothing() {
    let msgs = messages();
    let reference = run_all(1, &msgs, 20);
    let mut p = Pipeline::new(&config(1), &ingest(), rules(RULES));
    let mut events = Vec::new();
    let (mut dups, mut late, mut late_rejects) = (0, 0, 0);
    for chunk in msgs.chunks(20) {
        // Each message twice in a row (a publisher's retry without a message id), then the
        // whole chunk again (behind the source's watermark by then).
        let mut twice: Vec<Incoming> = chunk.iter().flat_map(|m| [m.clone(), m.clone()]).collect();
        twice.extend(chunk.iter().cloned());
        let out = p.process(&twice);
        dups += out.stats.shards.duplicates;
        late += out.stats.late;
        late_rejects += out
            .rejects
            .iter()
            .filter(|r| r.reason == RejectReason::Late)
            .map(|r| r.points)
            .sum::<usize>();
        events.extend(out.events.into_iter().map(|e| e.event));
    }
    assert_eq!(reference, events);
    assert_eq!(dups + late, 2 * 360 * 3);
    assert_eq!(late as usize, late_rejects);
    assert!(late > 0 && dups > 0);
}

#[test]
fn late_points_are_rejected_with_their_source_and_lag() {
    let mut p = Pipeline::new(&config(1), &ingest(), rules(RULES));
    let out = p.process(&[
        msg("exchange.binance", T0, &[point("binance", T0, 1.0)]),
        msg(
            "exchange.binance",
            T0 + 20 * SEC,
            &[point("binance", T0 + 20 * SEC, 1.0)],
        ),
        // 10 s behind binance's newest: late (lateness 5 s).
        msg(
            "exchange.binance",
            T0 + 21 * SEC,
            &[
                point("binance", T0 + 10 * SEC, 1.0),
                point("binance", T0 + 21 * SEC, 1.0),
            ],
        ),
        // Another source is on its own clock: the same event time is fine there.
        msg(
            "exchange.okx",
            T0 + 21 * SEC,
            &[point("okx", T0 + 10 * SEC, 1.0)],
        ),
    ]);
    assert_eq!(out.stats.late, 1);
    assert_eq!(out.rejects.len(), 1);
    let r = &out.rejects[0];
    assert_eq!((r.msg, r.reason, r.points), (2, RejectReason::Late, 1));
    assert!(
        r.detail.contains("exchange.binance") && r.detail.contains("5000 ms behind"),
        "{}",
        r.detail
    );
    assert_eq!(p.series_count(), 2);
}

#[test]
fn a_quiet_series_fires_and_goes_stale_on_stream_time_alone() {
    let mut p = Pipeline::new(
        &config(2),
        &ingest(),
        rules("rules:\n  - name: disk_full\n    metric: delay_seconds\n    condition: value > 90\n    for: 2m\n    priority: P1\n"),
    );
    let mut events = Vec::new();
    let mut record = |out: BatchOutput| events.extend(out.events.into_iter().map(|e| e.event));
    record(p.process(&[msg("host.db", T0, &[point("db", T0, 95.0)])]));
    // Only ticks from now on: one per second of stream time, for 8 minutes.
    for s in 1..=480 {
        record(p.process(&[tick(T0 + s * SEC)]));
    }
    let seen: Vec<(AlertStatus, i64, Option<EndReason>)> = events
        .iter()
        .map(|e| (e.status, e.event_time, e.end_reason))
        .collect();
    assert_eq!(
        seen,
        vec![
            (AlertStatus::Pending, T0, None),
            (AlertStatus::Firing, T0 + 2 * MIN, None),
            (AlertStatus::Resolved, T0 + 5 * MIN, Some(EndReason::Stale)),
        ]
    );
    // Each transition happened as soon as the source's clock (idle 5 s + lateness 5 s behind
    // stream time) reached it: the firing was caused by the tick stored at 2m10s.
    assert!(!p.has_timers());
}

#[test]
fn a_series_from_a_second_source_is_refused() {
    let mut p = Pipeline::new(&config(2), &ingest(), rules(RULES));
    let out = p.process(&[
        msg("exchange.binance", T0, &[point("binance", T0, 1.0)]),
        msg(
            "exchange.all",
            T0 + SEC,
            &[point("binance", T0 + SEC, 9.0), point("okx", T0 + SEC, 1.0)],
        ),
    ]);
    assert_eq!(out.rejects.len(), 1);
    let r = &out.rejects[0];
    assert_eq!(
        (r.msg, r.reason, r.points),
        (1, RejectReason::SeriesConflict, 1)
    );
    assert!(
        r.detail.contains("exchange=\"binance\"")
            && r.detail.contains("source exchange.binance already"),
        "{}",
        r.detail
    );
    assert_eq!(p.series_count(), 2);
    // Each new series is claimed for the registry, with its source.
    let claims: Vec<(&str, bool)> = out
        .claims
        .iter()
        .map(|c| (c.source.as_str(), c.new))
        .collect();
    assert_eq!(claims, [("exchange.binance", true), ("exchange.all", true)]);
}

#[test]
fn idle_series_are_evicted_on_their_sources_clock() {
    let mut cfg = config(1);
    cfg.idle_series_evict_secs = 60;
    let mut p = Pipeline::new(&cfg, &ingest(), rules(RULES));
    p.process(&[msg("x.y", T0, &[point("a", T0, 1.0), point("b", T0, 1.0)])]);
    assert_eq!(p.series_count(), 2);
    let mut evicted = 0;
    for i in 1..20 {
        let ts = T0 + i * 10 * SEC;
        evicted += p
            .process(&[msg("x.y", ts, &[point("a", ts, 1.0)])])
            .stats
            .shards
            .series_evicted;
    }
    assert_eq!(p.series_count(), 1);
    assert_eq!(evicted, 1);
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_panicking_series_is_quarantined_and_the_rest_goes_on() {
    use crate::pipeline::operator::FAULT_PANIC_VALUE;
    let msgs = messages();
    let reference = run_all(2, &msgs, 10);
    let mut p = Pipeline::new(&config(2), &ingest(), rules(RULES));
    let mut events = Vec::new();
    let mut rejects = Vec::new();
    for (i, chunk) in msgs.chunks(10).enumerate() {
        let mut chunk = chunk.to_vec();
        if i == 5 {
            // Between the chunk's third and fourth messages (520 s and 530 s).
            let ts = T0 + 521 * SEC;
            chunk.insert(
                3,
                msg(
                    "exchange.all",
                    ts + 50,
                    &[point("poison", ts, FAULT_PANIC_VALUE)],
                ),
            );
        }
        if i > 5 {
            // After the chunk's last message.
            let ts = T0 + (i as i64 * 100 + 95) * SEC;
            chunk.push(msg("exchange.all", ts + 50, &[point("poison", ts, 1.0)]));
        }
        let out = p.process(&chunk);
        events.extend(out.events.into_iter().map(|e| e.event));
        rejects.extend(out.rejects);
    }
    assert_eq!(events, reference, "the other series are unaffected");
    assert_eq!(rejects[0].reason, RejectReason::Panic);
    assert!(
        rejects[0].detail.contains("injected fault"),
        "{}",
        rejects[0].detail
    );
    assert!(rejects[1..]
        .iter()
        .all(|r| r.reason == RejectReason::Quarantined));
    assert_eq!(rejects.len(), 1 + (msgs.len() / 10 - 6));
    assert_eq!(p.quarantined_count(), 1);
    // The quarantine survives a checkpoint.
    assert_eq!(through_checkpoint(&p, 1).quarantined_count(), 1);
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
    let mut p = Pipeline::new(&cfg, &ingest(), rules(RULES));
    let mut events = Vec::new();
    for m in messages() {
        events.extend(p.process(&[m]).events.into_iter().map(|e| e.event));
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

/// Annotations fit the status: `summary_resolved` / `summary_cancelled` replace `summary` when
/// the alert ends so, with its duration and peak; the peak survives a checkpoint.
#[test]
fn the_text_fits_the_status_with_the_duration_and_the_peak() {
    let r = rules(
        r#"
rules:
  - name: delay_high
    metric: delay_seconds
    condition: value > 5
    for: 2m
    priority: P2
    annotations:
      summary: "{{ labels.exchange }} {{ value }} s behind ({{ status }})"
      summary_resolved: "{{ labels.exchange }} back to {{ value }} s after {{ duration }}; worst {{ peak }} s"
      summary_cancelled: "{{ labels.exchange }} lagged {{ duration }} only (worst {{ peak }} s)"
"#,
    );
    // binance: 7, 6, 9 s ... for 4 minutes (fires), back to 1 s; okx: 8 s for 1 minute (cancelled).
    let mut msgs = Vec::new();
    for i in 0..12i64 {
        let ts = T0 + i * 30 * SEC;
        let b = match i {
            2..=9 => [6.0, 9.0, 7.0][(i % 3) as usize],
            _ => 1.0,
        };
        let o = if (2..4).contains(&i) { 8.0 } else { 1.0 };
        msgs.push(msg("exchange.binance", ts, &[point("binance", ts, b)]));
        msgs.push(msg("exchange.okx", ts, &[point("okx", ts, o)]));
    }
    let run = |cut: usize| {
        let mut p = Pipeline::new(&config(1), &ingest(), r.clone());
        let mut out: Vec<AlertEvent> = p
            .process(&msgs[..cut])
            .events
            .into_iter()
            .map(|e| e.event)
            .collect();
        let mut p = through_checkpoint_with(&p, 1, r.clone());
        out.extend(p.process(&msgs[cut..]).events.into_iter().map(|e| e.event));
        out
    };
    for cut in [msgs.len(), 13] {
        let texts: Vec<(String, AlertStatus, String)> = run(cut)
            .iter()
            .map(|e| {
                (
                    e.labels["exchange"].clone(),
                    e.status,
                    e.annotations["summary"].clone(),
                )
            })
            .collect();
        assert_eq!(
            texts,
            [
                (
                    "binance".into(),
                    AlertStatus::Pending,
                    "binance 7 s behind (pending)".into()
                ),
                (
                    "okx".into(),
                    AlertStatus::Pending,
                    "okx 8 s behind (pending)".into()
                ),
                (
                    "okx".into(),
                    AlertStatus::Cancelled,
                    "okx lagged 1m only (worst 8 s)".into()
                ),
                (
                    "binance".into(),
                    AlertStatus::Firing,
                    "binance 7 s behind (firing)".into()
                ),
                (
                    "binance".into(),
                    AlertStatus::Resolved,
                    "binance back to 1 s after 4m; worst 9 s".into()
                ),
            ],
            "cut at {cut}"
        );
    }
}

/// One message with three different bad points: each is counted under its own reason.
#[test]
fn each_bad_point_is_counted_under_its_own_reason() {
    let mut p = Pipeline::new(&config(1), &ingest(), rules(RULES));
    let mut bad_name = point("binance", T0, 1.0);
    bad_name.name = "bad name".into();
    let mut future = point("binance", T0 + 3_600_000, 1.0);
    future.name = "delay_seconds".into();
    let mut bad_label = point("binance", T0, 1.0);
    bad_label.labels.insert("bad-label".into(), "x".into());
    let out = p.process(&[msg(
        "exchange.binance",
        T0,
        &[bad_name, future, bad_label, point("binance", T0, 1.0)],
    )]);
    let mut reasons: Vec<(&str, usize)> = out
        .rejects
        .iter()
        .map(|r| (r.reason.as_str(), r.points))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("future_timestamp", 1),
            ("invalid_label", 1),
            ("invalid_name", 1)
        ]
    );
}

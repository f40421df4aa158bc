//! End-to-end backbone behaviour against a real nats-server: metrics in, alert events out.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use prismwatch::model::AlertEvent;
use prismwatch::processor::replay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spike_and_for_duration_give_exactly_the_documented_events() {
    let (_srv, cfg, js) = fresh().await;
    publish(&js, &scenario(), 3).await;
    process_all(&cfg, test_rules()).await;

    let raw = read_stream(&js, "PRISM_ALERTS").await;
    let events: Vec<AlertEvent> = raw
        .iter()
        .map(|(_, _, p)| serde_json::from_slice(p).unwrap())
        .collect();
    let s = summary(&events);
    let of = |rule: &str, ex: &str| -> Vec<(String, i64)> {
        s.iter()
            .filter(|e| e.0 == rule && e.1 == ex)
            .map(|e| (e.2.clone(), e.3 - T0))
            .collect()
    };
    // 7-minute excursion from t=2000 s: pending, firing exactly 5 min later, resolved 30 s after it ends.
    assert_eq!(
        of("md_delay", "binance"),
        vec![
            ("pending".into(), 2_000_000),
            ("firing".into(), 2_300_000),
            ("resolved".into(), 2_450_000)
        ]
    );
    // 4-minute excursion: never fires.
    assert_eq!(
        of("md_delay", "okx"),
        vec![
            ("pending".into(), 4_000_000),
            ("cancelled".into(), 4_240_000)
        ]
    );
    // One-point spike: exactly one firing, then one resolved after resolve_after (1m).
    assert_eq!(
        of("rate_anomaly", "deribit"),
        vec![("firing".into(), 5_000_000), ("resolved".into(), 5_070_000)]
    );
    assert_eq!(events.len(), 7);

    // The documented payload (subjects/schemas/alert-event.schema.json) and headers.
    let schema: serde_json::Value = serde_json::from_str(include_str!(
        "../../subjects/schemas/alert-event.schema.json"
    ))
    .unwrap();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for (subject, headers, payload) in &raw {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let keys: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, required);
        let e: AlertEvent = serde_json::from_value(v).unwrap();
        assert_eq!(
            subject,
            &format!(
                "prism.alerts.{}.{}.{}",
                e.priority.token(),
                e.status.token(),
                e.rule
            )
        );
        assert_eq!(
            headers
                .as_ref()
                .unwrap()
                .get("Nats-Msg-Id")
                .unwrap()
                .as_str(),
            e.msg_id()
        );
        assert_eq!(e.id, format!("{}-{}", e.fingerprint, e.starts_at));
    }
    let fired = events
        .iter()
        .find(|e| e.rule == "rate_anomaly" && e.status.token() == "firing")
        .unwrap();
    assert_eq!(fired.value, 4000.0);
    assert!(fired.score >= 0.8 && fired.score <= 1.0);
    assert_eq!(fired.labels["team"], "market-data");
    assert_eq!(fired.labels["metric"], "exchange_message_rate");
    assert_eq!(fired.labels["exchange"], "deribit");
    assert!(fired.annotations["summary"].starts_with("deribit rate 4000 (z="));
    assert_eq!(fired.ends_at, None);
    let resolved = events
        .iter()
        .find(|e| e.rule == "rate_anomaly" && e.status.token() == "resolved")
        .unwrap();
    assert_eq!(resolved.id, fired.id);
    assert_eq!(resolved.ends_at, Some(T0 + 5_070_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_every_message_twice_changes_nothing() {
    let points = scenario();
    let once = {
        let (_srv, cfg, js) = fresh().await;
        publish(&js, &points, 3).await;
        process_all(&cfg, test_rules()).await;
        alert_events(&js).await
    };
    let (_srv, cfg, js) = fresh().await;
    // At-least-once publishers: each message twice in a row, then the whole stream again.
    for tick in points.chunks(3) {
        publish(&js, tick, 3).await;
        publish(&js, tick, 3).await;
    }
    publish(&js, &points, 30).await;
    process_all(&cfg, test_rules()).await;
    let twice = alert_events(&js).await;
    assert!(!once.is_empty());
    assert_eq!(sorted(once), sorted(twice));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_stream_twice_gives_identical_sequences() {
    let (_srv, mut cfg, js) = fresh().await;
    publish(&js, &scenario(), 3).await;
    process_all(&cfg, test_rules()).await;
    let live = alert_events(&js).await;

    cfg.ingest.max_batch = 64;
    let mut replays = Vec::new();
    for _ in 0..2 {
        let mut seq = Vec::new();
        let n = replay::replay_range(&js, &cfg, &test_rules(), 1, None, |events, _| {
            seq.extend(events);
        })
        .await
        .unwrap();
        assert_eq!(n.events as usize, seq.len());
        assert_eq!(n.points, 720 * 3);
        replays.push(seq);
    }
    assert_eq!(replays[0].len(), 7);
    assert_eq!(replays[0], replays[1]);
    assert_eq!(sorted(replays[0].clone()), sorted(live.clone()));

    // Batch boundaries (here one message per batch, cut by the byte bound) change no event.
    cfg.ingest.max_batch_bytes = 1;
    let mut single = Vec::new();
    replay::replay_range(&js, &cfg, &test_rules(), 1, None, |events, _| {
        single.extend(events);
    })
    .await
    .unwrap();
    assert_eq!(sorted(single), sorted(live));

    // An empty range is an error that says so.
    let err = replay::replay_range(&js, &cfg, &test_rules(), 10, Some(2), |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty range"), "{err}");
}

/// The reader behind replays and backtests reads every message of its range once and in order,
/// also when nats-server restarts in the middle of the read (its consumer is then gone, and
/// messages it had sent may be lost on the way): it reads on from the next sequence with a new
/// consumer, waiting for a server that is down for a while. Subject filters hold across the new
/// consumer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_range_survives_a_server_restart_without_skipping_or_repeating() {
    let (mut srv, cfg, js) = fresh().await;
    let points: Vec<_> = (0..20_000)
        .map(|i| {
            point(
                "delay_ms",
                ["binance", "okx"][i % 2],
                1_700_000_000_000 + i as i64,
                1.0,
            )
        })
        .collect();
    publish(&js, &points, 1).await;

    let all: Vec<u64> = (1..=20_000).collect();
    assert_eq!(read_restarting(&js, &cfg, &[], 1_000, &mut srv).await, all);
    // Only binance's messages (every other one), across a restart again.
    let filters = replay::stored_filters(&["exchange.binance.>".to_string()]).unwrap();
    let binance: Vec<u64> = all.iter().copied().filter(|s| s % 2 == 1).collect();
    assert_eq!(
        read_restarting(&js, &cfg, &filters, 2_000, &mut srv).await,
        binance
    );

    // The server down for three seconds: the reader notices within two (missed heartbeats)
    // and reads on with a new consumer once the server is back.
    let srv = std::sync::Arc::new(std::sync::Mutex::new(srv));
    let (killed, on_killed) = tokio::sync::oneshot::channel();
    let reader = {
        let (js, cfg, srv) = (js.clone(), cfg.clone(), srv.clone());
        tokio::spawn(async move {
            let (mut seqs, mut killed) = (Vec::new(), Some(killed));
            let n = replay::read_range(&js, &cfg, 1, None, &[], |chunk, _| {
                seqs.extend(chunk.iter().map(|m| m.stream_seq));
                if seqs.len() >= 3_000 {
                    if let Some(killed) = killed.take() {
                        srv.lock().unwrap().kill();
                        killed.send(()).unwrap();
                    }
                }
                Ok(())
            })
            .await
            .unwrap();
            assert_eq!(n as usize, seqs.len());
            seqs
        })
    };
    on_killed.await.unwrap();
    // The outage's length, not a wait for something to happen.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    srv.lock().unwrap().restart();
    assert_eq!(reader.await.unwrap(), all);
}

/// The stream sequences `replay::read_range` gives, restarting the server once `restart_at`
/// messages were handed over.
async fn read_restarting(
    js: &async_nats::jetstream::Context,
    cfg: &prismwatch::config::Config,
    filters: &[String],
    restart_at: usize,
    srv: &mut NatsServer,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let n = replay::read_range(js, cfg, 1, None, filters, |chunk, _| {
        let before = seqs.len();
        seqs.extend(chunk.iter().map(|m| m.stream_seq));
        if before < restart_at && seqs.len() >= restart_at {
            // Blocks this task while the server is down and back: what the client had
            // buffered is read first, then the reader finds its consumer gone.
            srv.restart();
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(n as usize, seqs.len());
    seqs
}

/// A time range of the stream is the range of sequences stored in it: `--from` starts at the
/// first message stored at or after it, `--to` ends at the last stored at or before it, and a
/// replay by time gives exactly the replay of those sequences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_store_time_covers_exactly_the_messages_stored_then() {
    let (_srv, cfg, js) = fresh().await;
    let points = scenario();
    let (first, second) = points.split_at(points.len() / 2);
    publish(&js, first, 3).await;
    let last_of_first = js
        .get_stream("PRISM_METRICS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    // Every first-half message is stored (acked) before `mid`; the second half after.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mid = prismwatch::tools::clock::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    publish(&js, second, 3).await;

    let (from, to) = replay::seq_range_of_times(&js, &cfg, Some(mid), None)
        .await
        .unwrap();
    assert_eq!((from, to), (last_of_first + 1, None));
    let (from, to) = replay::seq_range_of_times(&js, &cfg, None, Some(mid))
        .await
        .unwrap();
    assert_eq!((from, to), (1, Some(last_of_first)));
    let after = prismwatch::tools::clock::now_ms() + 60_000;
    let err = replay::seq_range_of_times(&js, &cfg, Some(after), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty range: no message stored at or after"),
        "{err}"
    );

    // The CLI: the events of the second half, as by sequence.
    let url = _srv.url();
    let from_time = time::OffsetDateTime::from_unix_timestamp_nanos(mid as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
                .arg("replay")
                .args(&args)
                .env("PRISMWATCH__NATS__URL", url)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (by_time, said) = run(vec!["--from".into(), from_time]).await.unwrap();
    let (by_seq, _) = run(vec!["--from-seq".into(), (last_of_first + 1).to_string()])
        .await
        .unwrap();
    assert_eq!(by_time, by_seq);
    assert!(
        said.contains(&format!("replayed {} messages", second.len().div_ceil(3))),
        "{said}"
    );
    let (recent, _) = run(vec!["--since".into(), "1h".into()]).await.unwrap();
    let (all, _) = run(vec![]).await.unwrap();
    assert_eq!(recent, all);
}

//! The alert manager's KV store against a real nats-server: deletes leave markers, and the
//! sweep removes old markers (bounded buckets) without touching keys written again.

use crate::common;

use std::time::Duration;

use prismwatch::alerting::core::Effects;
use prismwatch::alerting::silence::Silence;
use prismwatch::alerting::store::Store;
use prismwatch::subjects;

fn silence(id: &str, ends_at: i64) -> Silence {
    Silence {
        id: id.into(),
        matchers: vec![],
        starts_at: 0,
        ends_at,
        created_by: "test".into(),
        comment: String::new(),
        updated_at: 0,
    }
}

async fn messages(js: &async_nats::jetstream::Context, bucket: &str) -> u64 {
    let mut s = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test]
async fn delete_markers_are_swept_and_live_keys_kept() {
    let (_server, _cfg, js) = common::fresh().await;
    let store = Store::open(&js).await.unwrap();

    let mut fx = Effects::default();
    for id in ["gone", "back", "kept"] {
        fx.silences.insert(id.into(), Some(silence(id, 1)));
    }
    store.apply(&fx).await.unwrap();
    let mut fx = Effects::default();
    fx.silences.insert("gone".into(), None);
    fx.silences.insert("back".into(), None);
    store.apply(&fx).await.unwrap();
    // `back` is written again after its delete: its marker is no longer the last message.
    let mut fx = Effects::default();
    fx.silences.insert("back".into(), Some(silence("back", 2)));
    store.apply(&fx).await.unwrap();
    assert_eq!(messages(&js, subjects::SILENCE_BUCKET).await, 3); // marker, back, kept

    // Too young to sweep.
    assert_eq!(
        store
            .sweep_tombstones(Duration::from_secs(600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.sweep_tombstones(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(messages(&js, subjects::SILENCE_BUCKET).await, 2);
    let loaded = store.load().await.unwrap();
    let mut ids: Vec<(String, i64)> = loaded
        .silences
        .iter()
        .map(|s| (s.id.clone(), s.ends_at))
        .collect();
    ids.sort();
    assert_eq!(ids, vec![("back".into(), 2), ("kept".into(), 1)]);

    // A marker found on load (a takeover after a crash) is swept too.
    let mut fx = Effects::default();
    fx.silences.insert("kept".into(), None);
    store.apply(&fx).await.unwrap();
    let successor = Store::open(&js).await.unwrap();
    let loaded = successor.load().await.unwrap();
    assert_eq!(loaded.silences.len(), 1);
    assert_eq!(successor.sweep_tombstones(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(messages(&js, subjects::SILENCE_BUCKET).await, 1);
}

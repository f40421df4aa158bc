//! The alert manager's state, followed live: a watch of `PRISM_ALERT_STATE` and
//! `PRISM_SILENCES` (the KV change feed) kept in memory, so reads cost no round trip.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::alerting::alert::ManagedAlert;
use crate::alerting::silence::Silence;
use crate::subjects;

/// One bucket's current values by key, whether the watch has caught up, and the last
/// revision (the bucket stream's sequence) it applied.
pub struct Mirror<T> {
    pub values: RwLock<BTreeMap<String, T>>,
    pub current: std::sync::atomic::AtomicBool,
    pub revision: std::sync::atomic::AtomicU64,
}

impl<T> Default for Mirror<T> {
    fn default() -> Self {
        Mirror {
            values: RwLock::default(),
            current: std::sync::atomic::AtomicBool::new(false),
            revision: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

pub struct Cache {
    pub alerts: Mirror<ManagedAlert>,
    pub silences: Mirror<Silence>,
    /// Every change once the mirrors are current: what `/api/v1/stream` sends.
    pub changes: tokio::sync::broadcast::Sender<Change>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            alerts: Mirror::default(),
            silences: Mirror::default(),
            changes: tokio::sync::broadcast::channel(4_096).0,
        }
    }
}

/// One change of the manager's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// `alert` or `silence`.
    pub kind: &'static str,
    /// `put` or `delete`.
    pub op: &'static str,
    pub key: String,
    /// The new record (absent on delete).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub value: serde_json::Value,
}

impl Cache {
    /// Waits (at most `within`) until both mirrors hold every change stored so far: called
    /// after a change the manager has answered (it stores before it answers), so a caller
    /// reads its own writes.
    pub async fn catch_up(&self, js: &jetstream::Context, within: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = tokio::time::Instant::now() + within;
        for (bucket, revision) in [
            (subjects::ALERT_STATE_BUCKET, &self.alerts.revision),
            (subjects::SILENCE_BUCKET, &self.silences.revision),
        ] {
            let Ok(Ok(mut stream)) =
                tokio::time::timeout_at(deadline, js.get_stream(format!("KV_{bucket}"))).await
            else {
                continue;
            };
            let Ok(Ok(info)) = tokio::time::timeout_at(deadline, stream.info()).await else {
                continue;
            };
            let last = info.state.last_sequence;
            while revision.load(Relaxed) < last && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// Follows both buckets until `stop` (re-watching after errors).
    pub fn follow(self: &Arc<Self>, js: jetstream::Context, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(mirror(
            js.clone(),
            subjects::ALERT_STATE_BUCKET,
            "alert",
            me,
            |c| &c.alerts,
            stop.clone(),
        ));
        let me = self.clone();
        tokio::spawn(mirror(
            js,
            subjects::SILENCE_BUCKET,
            "silence",
            me,
            |c| &c.silences,
            stop,
        ));
    }
}

async fn mirror<T: DeserializeOwned + Send + Sync + 'static>(
    js: jetstream::Context,
    bucket: &'static str,
    kind: &'static str,
    cache: Arc<Cache>,
    pick: fn(&Cache) -> &Mirror<T>,
    stop: CancellationToken,
) {
    loop {
        let watch = async {
            // The manager creates its buckets; until then there is nothing to show (and
            // creating them here would race it with another configuration).
            let store = match js.get_key_value(bucket).await {
                Ok(s) => s,
                Err(_) => {
                    pick(&cache)
                        .current
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(format!("bucket {bucket} does not exist yet"));
                }
            };
            let mut w = store
                .watch_with_history(">")
                .await
                .map_err(|e| e.to_string())?;
            let m = pick(&cache);
            // An empty bucket sends nothing: it is current at once.
            if store.status().await.map(|s| s.values()).unwrap_or(0) == 0 {
                m.current.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            while let Some(e) = w.next().await {
                let e = e.map_err(|e| e.to_string())?;
                let was_current = m.current.load(std::sync::atomic::Ordering::Relaxed);
                let change = {
                    let mut values = m.values.write().unwrap();
                    match e.operation {
                        kv::Operation::Put => {
                            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&e.value)
                            else {
                                continue;
                            };
                            if let Ok(v) = serde_json::from_value::<T>(json.clone()) {
                                values.insert(e.key.clone(), v);
                            }
                            Change {
                                kind,
                                op: "put",
                                key: e.key.clone(),
                                value: json,
                            }
                        }
                        _ => {
                            values.remove(&e.key);
                            Change {
                                kind,
                                op: "delete",
                                key: e.key.clone(),
                                value: serde_json::Value::Null,
                            }
                        }
                    }
                };
                if was_current {
                    let _ = cache.changes.send(change);
                }
                m.revision
                    .fetch_max(e.revision, std::sync::atomic::Ordering::Relaxed);
                if e.delta == 0 || e.seen_current {
                    m.current.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = watch => if let Err(e) = r {
                tracing::debug!(%bucket, error = %e, "API state watch ended; watching again");
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

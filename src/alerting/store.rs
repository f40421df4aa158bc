//! The alert manager's state in JetStream KV: `PRISM_ALERT_STATE` (one entry per alert id),
//! `PRISM_SILENCES`, `PRISM_NOTIFY_LOG` (what each group last sent) and `PRISM_MANAGER` (flap
//! and storm records, stream cursors). A watch of any of them is a change feed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::alert::ManagedAlert;
use super::core::{Effects, LogEntry};
use super::silence::Silence;
use super::ManagerError;
use crate::subjects;

/// KV writes in flight at once.
const CONCURRENCY: usize = 64;

/// How long a deleted key's marker stays in its bucket's stream: long enough for watchers to
/// see the delete, short enough that markers do not pile up (with `history: 1` a KV delete
/// still leaves one marker message per key forever).
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct Store {
    js: jetstream::Context,
    pub alerts: kv::Store,
    pub silences: kv::Store,
    pub logs: kv::Store,
    pub meta: kv::Store,
    /// Keys deleted (bucket, key) and when, oldest first: their markers are removed once older
    /// than [`TOMBSTONE_KEEP`].
    tombstones: Arc<Mutex<VecDeque<Tombstone>>>,
}

/// A deleted key: when, bucket, key.
type Tombstone = (Instant, &'static str, String);

/// What a takeover reads back.
#[derive(Default)]
pub struct Loaded {
    pub alerts: Vec<ManagedAlert>,
    pub silences: Vec<Silence>,
    pub logs: Vec<LogEntry>,
    pub meta: Vec<(String, serde_json::Value)>,
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    what: &str,
) -> Result<kv::Store, ManagerError> {
    match js.get_key_value(name).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.to_string(),
                description: what.to_string(),
                history: 1,
                ..Default::default()
            })
            .await
            // Created meanwhile by another process: use it.
            .or(js.get_key_value(name).await.map_err(|e| e.to_string()))
            .map_err(|e| ManagerError::Nats(format!("create bucket {name}: {e}"))),
    }
}

/// The static name of one of the manager's buckets.
fn bucket_name(bucket: &str) -> Option<&'static str> {
    [
        subjects::ALERT_STATE_BUCKET,
        subjects::SILENCE_BUCKET,
        subjects::NOTIFY_LOG_BUCKET,
        subjects::MANAGER_BUCKET,
    ]
    .into_iter()
    .find(|b| *b == bucket)
}

/// KV keys may hold `[-/_=.a-zA-Z0-9]`: ids are hex, dashes and dots already; anything else
/// (a receiver or silence id from outside) is mapped.
pub fn key(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '.' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Store {
    pub async fn open(js: &jetstream::Context) -> Result<Store, ManagerError> {
        Ok(Store {
            js: js.clone(),
            alerts: bucket(
                js,
                subjects::ALERT_STATE_BUCKET,
                "PrismWatch alert state, one entry per alert id",
            )
            .await?,
            silences: bucket(js, subjects::SILENCE_BUCKET, "PrismWatch silences").await?,
            logs: bucket(
                js,
                subjects::NOTIFY_LOG_BUCKET,
                "PrismWatch notification log, per group",
            )
            .await?,
            meta: bucket(
                js,
                subjects::MANAGER_BUCKET,
                "PrismWatch alert manager records",
            )
            .await?,
            tombstones: Arc::default(),
        })
    }

    /// Every current value of a bucket (one ordered pass over its stream, last per key).
    async fn all<T: DeserializeOwned>(
        &self,
        bucket: &str,
    ) -> Result<Vec<(String, T)>, ManagerError> {
        let err =
            |e: &dyn std::fmt::Display| ManagerError::Nats(format!("read bucket {bucket}: {e}"));
        let mut stream = self
            .js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| err(&e))?;
        let messages = stream.info().await.map_err(|e| err(&e))?.state.messages;
        if messages == 0 {
            return Ok(Vec::new());
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                filter_subject: format!("$KV.{bucket}.>"),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
        let prefix = format!("$KV.{bucket}.");
        let mut out = Vec::new();
        loop {
            let m = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(err(&e)),
                Ok(None) | Err(_) => break,
            };
            let deleted = m
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE");
            if deleted {
                if let (Some(k), Some(b)) = (m.subject.strip_prefix(&prefix), bucket_name(bucket)) {
                    self.tombstones
                        .lock()
                        .unwrap()
                        .push_back((Instant::now(), b, k.to_string()));
                }
            } else if !m.payload.is_empty() {
                if let (Some(k), Ok(v)) = (
                    m.subject.strip_prefix(&prefix),
                    serde_json::from_slice::<T>(&m.payload),
                ) {
                    out.push((k.to_string(), v));
                }
            }
            let pending = m.info().map(|i| i.pending).unwrap_or(0);
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    pub async fn load(&self) -> Result<Loaded, ManagerError> {
        Ok(Loaded {
            alerts: self
                .all(subjects::ALERT_STATE_BUCKET)
                .await?
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            silences: self
                .all(subjects::SILENCE_BUCKET)
                .await?
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            logs: self
                .all(subjects::NOTIFY_LOG_BUCKET)
                .await?
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            meta: self
                .all::<serde_json::Value>(subjects::MANAGER_BUCKET)
                .await?
                .into_iter()
                .filter(|(k, _)| !k.starts_with("cursor."))
                .collect(),
        })
    }

    /// Stores a step's records (notifications are the shell's, published before).
    pub async fn apply(&self, fx: &Effects) -> Result<(), ManagerError> {
        {
            let deleted = [
                (
                    subjects::ALERT_STATE_BUCKET,
                    fx.alerts
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k)
                        .collect::<Vec<_>>(),
                ),
                (
                    subjects::SILENCE_BUCKET,
                    fx.silences
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k)
                        .collect(),
                ),
                (
                    subjects::NOTIFY_LOG_BUCKET,
                    fx.logs
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k)
                        .collect(),
                ),
                (
                    subjects::MANAGER_BUCKET,
                    fx.meta
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(k, _)| k)
                        .collect(),
                ),
            ];
            let now = Instant::now();
            let mut t = self.tombstones.lock().unwrap();
            for (bucket, ids) in deleted {
                t.extend(ids.into_iter().map(|id| (now, bucket, key(id))));
            }
        }
        let mut ops = Vec::new();
        fn op<'a, T: Serialize>(
            kv: &'a kv::Store,
            id: &str,
            v: Option<&T>,
        ) -> impl std::future::Future<Output = Result<(), String>> + 'a {
            let k = key(id);
            let value = v.map(|v| serde_json::to_vec(v).expect("records serialise"));
            async move {
                match value {
                    Some(bytes) => kv
                        .put(&k, bytes.into())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => kv.delete(&k).await.map_err(|e| e.to_string()),
                }
            }
        }
        for (id, v) in &fx.alerts {
            ops.push(futures::future::Either::Left(
                futures::future::Either::Left(op(&self.alerts, id, v.as_ref())),
            ));
        }
        for (id, v) in &fx.silences {
            ops.push(futures::future::Either::Left(
                futures::future::Either::Right(op(&self.silences, id, v.as_ref())),
            ));
        }
        for (id, v) in &fx.logs {
            ops.push(futures::future::Either::Right(
                futures::future::Either::Left(op(&self.logs, id, v.as_ref())),
            ));
        }
        for (id, v) in &fx.meta {
            ops.push(futures::future::Either::Right(
                futures::future::Either::Right(op(&self.meta, id, v.as_ref())),
            ));
        }
        let results: Vec<Result<(), String>> = futures::stream::iter(ops)
            .buffered(CONCURRENCY)
            .collect()
            .await;
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(ManagerError::Nats(format!(
                "store the manager's state: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// Removes the delete markers older than `keep` (the markers only: a key written again
    /// since is left alone). Returns how many were removed.
    pub async fn sweep_tombstones(&self, keep: Duration) -> Result<usize, ManagerError> {
        let due: Vec<(&'static str, String)> = {
            let mut t = self.tombstones.lock().unwrap();
            let mut due = Vec::new();
            while t.front().is_some_and(|(at, _, _)| at.elapsed() >= keep) {
                let (_, b, k) = t.pop_front().expect("checked");
                due.push((b, k));
            }
            due
        };
        let mut removed = 0;
        for (bucket, k) in due {
            let stream = self
                .js
                .get_stream(format!("KV_{bucket}"))
                .await
                .map_err(|e| ManagerError::Nats(format!("look up bucket {bucket}: {e}")))?;
            let Ok(last) = stream
                .get_last_raw_message_by_subject(&format!("$KV.{bucket}.{k}"))
                .await
            else {
                continue; // gone already
            };
            let marker = last
                .headers
                .get("KV-Operation")
                .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE");
            // KV streams deny deleting single messages; a purge of the key's subject up to and
            // including the marker is allowed, and leaves a later write alone.
            if marker {
                let purged = stream
                    .purge()
                    .filter(format!("$KV.{bucket}.{k}"))
                    .sequence(last.sequence + 1)
                    .await
                    .map_err(|e| ManagerError::Nats(format!("purge {bucket} {k}: {e}")))?;
                removed += purged.purged as usize;
            }
        }
        Ok(removed)
    }

    /// A consumed stream's cursor: the last sequence whose effects are stored.
    pub async fn cursor(&self, name: &str) -> Result<u64, ManagerError> {
        match self.meta.get(format!("cursor.{name}")).await {
            Ok(Some(v)) => Ok(std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)),
            Ok(None) => Ok(0),
            Err(e) => Err(ManagerError::Nats(format!("read cursor {name}: {e}"))),
        }
    }

    pub async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), ManagerError> {
        self.meta
            .put(format!("cursor.{name}"), seq.to_string().into())
            .await
            .map(|_| ())
            .map_err(|e| ManagerError::Nats(format!("store cursor {name}: {e}")))
    }
}

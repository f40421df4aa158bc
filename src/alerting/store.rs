//! The alert manager's state in JetStream KV: `PRISM_ALERT_STATE` (one entry per alert id),
//! `PRISM_SILENCES`, `PRISM_NOTIFY_LOG` (what each group last sent) and `PRISM_MANAGER` (flap
//! and storm records, stream cursors). A watch of any of them is a change feed.

use std::time::Duration;

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

#[derive(Clone)]
pub struct Store {
    js: jetstream::Context,
    pub alerts: kv::Store,
    pub silences: kv::Store,
    pub logs: kv::Store,
    pub meta: kv::Store,
}

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
            .map_err(|e| ManagerError::Nats(format!("create bucket {name}: {e}"))),
    }
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
            if !deleted && !m.payload.is_empty() {
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

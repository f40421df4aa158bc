//! Rule evaluations per process, shared through NATS: each processor counts the points each
//! rule evaluated and stores its totals in the KV bucket `PRISM_RULE_STATS` (key: its member
//! id) every few seconds and when it stops, so the API can add up every processor's counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::subjects;

/// How often a processor stores its counts.
const EVERY: Duration = Duration::from_secs(5);

/// The key under which a rule's predictions with this outcome are counted (beside its
/// evaluations, under its name): `<rule>:prediction_<hit|false_alarm|miss>`, and the sum of
/// the hits' absolute time errors in ms under `<rule>:prediction_abs_error_ms`.
pub fn prediction_key(rule: &str, what: &str) -> String {
    format!("{rule}:prediction_{what}")
}

/// Points evaluated per rule name by this process since it started (and predictions scored,
/// see [`prediction_key`]).
#[derive(Debug, Default)]
pub struct RuleCounts(Mutex<BTreeMap<String, u64>>);

impl RuleCounts {
    pub fn add(&self, rule: &str, n: u64) {
        self.add_all([(rule, n)]);
    }

    /// Adds several counts under one lock (a batch's evaluations of every rule).
    pub fn add_all<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut m = self.0.lock().expect("rule counts lock");
        for (rule, n) in counts {
            match m.get_mut(rule) {
                Some(v) => *v += n,
                None => {
                    m.insert(rule.to_string(), n);
                }
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("rule counts lock").clone()
    }
}

async fn bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
    match js.get_key_value(subjects::RULE_STATS_BUCKET).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: subjects::RULE_STATS_BUCKET.to_string(),
                description: "PrismWatch rule evaluations per processor (JSON: rule -> points)"
                    .into(),
                history: 1,
                max_age: Duration::from_secs(7 * 86_400),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create {}: {e}", subjects::RULE_STATS_BUCKET)),
    }
}

/// Stores `counts` under `member` every few seconds until `stop`, and once more then.
pub async fn publish(
    js: jetstream::Context,
    member: String,
    counts: std::sync::Arc<RuleCounts>,
    stop: CancellationToken,
) {
    let mut last = BTreeMap::new();
    let mut store = None;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(EVERY) => false,
        };
        let now = counts.snapshot();
        // Never holds up a shutdown: with NATS away, the last counts are simply not stored.
        let connected = js.client().connection_state() == async_nats::connection::State::Connected;
        let wait = if stopping {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        };
        if now != last && connected {
            if store.is_none() {
                store = tokio::time::timeout(wait, bucket(&js))
                    .await
                    .ok()
                    .and_then(|r| {
                        r.map_err(|e| tracing::debug!(error = %e, "rule stats"))
                            .ok()
                    });
            }
            if let Some(kv) = &store {
                let body = serde_json::to_vec(&now).expect("serialises");
                let put = tokio::time::timeout(wait, kv.put(&member, body.into()));
                if matches!(put.await, Ok(Ok(_))) {
                    last = now;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Every processor's counts added up, by rule name (empty when no processor stored any).
pub async fn totals(js: &jetstream::Context) -> Result<BTreeMap<String, u64>, String> {
    let Ok(kv) = js.get_key_value(subjects::RULE_STATS_BUCKET).await else {
        return Ok(BTreeMap::new());
    };
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| format!("list rule stats: {e}"))?;
    let mut sum = BTreeMap::new();
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(Some(v)) = kv.get(&k).await else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<BTreeMap<String, u64>>(&v) else {
            continue;
        };
        for (rule, n) in m {
            *sum.entry(rule).or_insert(0) += n;
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_rule_one_at_a_time_or_together() {
        let c = RuleCounts::default();
        c.add("disk_full", 3);
        c.add_all([("disk_full", 2), ("cpu_high", 7)]);
        c.add_all([]);
        assert_eq!(
            c.snapshot(),
            BTreeMap::from([("cpu_high".to_string(), 7), ("disk_full".to_string(), 5)])
        );
    }
}

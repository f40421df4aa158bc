//! Rate limits per channel that hold across every worker: the send times of the last window
//! are kept in a KV entry (`PRISM_NOTIFY_RATE`, key = the channel) and updated by
//! compare-and-set, so two workers cannot both take the last slot.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use crate::subjects;

#[derive(Clone)]
pub struct RateLimits {
    kv: kv::Store,
}

impl RateLimits {
    pub async fn open(js: &jetstream::Context) -> Result<RateLimits, String> {
        let kv = match js.get_key_value(subjects::NOTIFY_RATE_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: subjects::NOTIFY_RATE_BUCKET.to_string(),
                    description: "PrismWatch notifier rate limits: recent send times per channel"
                        .into(),
                    history: 1,
                    max_age: Duration::from_secs(86_400),
                    ..Default::default()
                })
                .await
                .or(js
                    .get_key_value(subjects::NOTIFY_RATE_BUCKET)
                    .await
                    .map_err(|e| e.to_string()))
                .map_err(|e| format!("rate limit bucket: {e}"))?,
        };
        Ok(RateLimits { kv })
    }

    /// Takes a slot for `key` at `now_ms` if fewer than `messages` were taken in the last
    /// `per_ms`; else says how long until the oldest leaves the window.
    pub async fn try_take(
        &self,
        key: &str,
        messages: u32,
        per_ms: u64,
        now_ms: i64,
    ) -> Result<Result<(), Duration>, String> {
        loop {
            let entry = self
                .kv
                .entry(key)
                .await
                .map_err(|e| format!("read rate limit {key}: {e}"))?;
            let (revision, mut times): (Option<u64>, Vec<i64>) = match entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    Some(e.revision),
                    serde_json::from_slice(&e.value).unwrap_or_default(),
                ),
                Some(e) => (Some(e.revision), Vec::new()),
                None => (None, Vec::new()),
            };
            let (verdict, changed) = decide(&mut times, messages, per_ms, now_ms);
            if !changed {
                return Ok(verdict);
            }
            let value = serde_json::to_vec(&times).expect("serialises").into();
            let written = match revision {
                Some(r) => self
                    .kv
                    .update(key, value, r)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => self
                    .kv
                    .create(key, value)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok(verdict),
                // Another worker wrote first: read again.
                Err(_) => continue,
            }
        }
    }
}

/// The sliding-window decision on the recorded send times (oldest first): drops those out of
/// the window, takes a slot if one is free. Returns the verdict and whether `times` changed.
pub fn decide(
    times: &mut Vec<i64>,
    messages: u32,
    per_ms: u64,
    now_ms: i64,
) -> (Result<(), Duration>, bool) {
    let before = times.len();
    times.retain(|t| *t > now_ms - per_ms as i64 && *t <= now_ms + per_ms as i64);
    if times.len() < messages as usize {
        times.push(now_ms);
        times.sort_unstable();
        (Ok(()), true)
    } else {
        let oldest = times[times.len() - messages as usize];
        let wait = (oldest + per_ms as i64 - now_ms).max(1) as u64;
        (Err(Duration::from_millis(wait)), times.len() != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_window_of_n_per_period() {
        let mut t = Vec::new();
        for i in 0..20 {
            assert_eq!(decide(&mut t, 20, 60_000, 1_000 + i * 100).0, Ok(()));
        }
        // Full until the first (at 1,000) leaves the window at 61,000.
        assert_eq!(
            decide(&mut t, 20, 60_000, 2_000).0,
            Err(Duration::from_millis(59_000))
        );
        assert!(decide(&mut t, 20, 60_000, 60_999).0.is_err());
        assert_eq!(decide(&mut t, 20, 60_000, 61_000).0, Ok(()));
        assert_eq!(t.len(), 20);
        assert_eq!(
            decide(&mut t, 20, 60_000, 61_000).0,
            Err(Duration::from_millis(100))
        );
    }
}

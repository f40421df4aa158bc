//! `processor:` settings: partition leases, ticks, readiness.

use serde::{Deserialize, Serialize};

/// Leases, ticks and readiness of the processor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// A partition whose owner stopped renewing its lease for this long is taken over by
    /// another process, in ms (the lease bucket's `max_age`; an existing bucket's wins).
    pub lease_ttl_ms: u64,
    /// How often leases are renewed and membership is checked, in ms.
    pub lease_renew_ms: u64,
    /// A quiet partition's owner stores a tick this often while an alert waits for time to
    /// pass (a `for`, `resolve_after` or staleness), in ms: the wall-clock delay of such a
    /// transition is about this plus `ingest.source_idle_ms + ingest.allowed_lateness_ms`.
    pub tick_interval_ms: u64,
    /// ...and this often when nothing waits (idle series eviction), in ms.
    pub quiet_tick_interval_ms: u64,
    /// `/readyz` fails while a partition lags by more than this many messages.
    pub ready_max_lag: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 5_000,
            lease_renew_ms: 1_000,
            tick_interval_ms: 1_000,
            quiet_tick_interval_ms: 30_000,
            ready_max_lag: 100_000,
        }
    }
}

impl ProcessorConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.lease_renew_ms == 0 {
            out.push(("lease_renew_ms".into(), "must be > 0".into()));
        }
        if self.lease_ttl_ms < 3 * self.lease_renew_ms {
            out.push((
                "lease_ttl_ms".into(),
                "must be at least 3 x lease_renew_ms (a lease must survive a missed renewal)"
                    .into(),
            ));
        }
        if self.tick_interval_ms == 0 {
            out.push(("tick_interval_ms".into(), "must be > 0".into()));
        }
        out
    }
}

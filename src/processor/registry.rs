//! The series registry: which source each series comes from, across every partition.
//!
//! A series must come from one source (subject `<domain>.<source>`), so that it lives in one
//! partition on one timeline. Inside a partition the pipeline refuses a second source itself;
//! across partitions no pipeline sees both, so each new series is claimed in the `PRISM_SERIES`
//! KV bucket (key: a hash of the series, value: its source) and a claim already held by another
//! source is reported: counted, logged and the message dead-lettered (`series_conflict`).
//! Claims are renewed once a day of stream time and expire after a week, so the bucket holds
//! only live series. Reporting only: which partition saw the series first is a race, and
//! processing must not depend on races.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::publish::Publisher;
use super::ProcessorError;
use crate::bus::lease::LeaseGuard;
use crate::ingest::{Incoming, RejectReason};
use crate::model::SeriesKey;
use crate::pipeline::{MessageReject, SeriesClaim};
use crate::subjects;
use crate::telemetry::{self, LogLimiter};

/// Claims waiting for the registry; beyond this the newest are dropped (and counted):
/// detection is best effort, processing never waits for it.
const QUEUE: usize = 65_536;
/// KV requests in flight at once.
const CONCURRENCY: usize = 16;
/// Claims filed per second at most: a burst of new series (a cold start, a new collector)
/// must not take the server's attention from the metrics themselves. A claim dropped from a
/// full queue is made again with its series' daily renewal.
const CLAIMS_PER_SEC: u64 = 2_000;

/// A claim and, for a new series, the message that created it.
pub struct Pending {
    pub partition: u32,
    pub claim: SeriesClaim,
    pub message: Option<Incoming>,
}

#[derive(Clone)]
pub struct Registry {
    tx: mpsc::Sender<Pending>,
}

impl Registry {
    /// Opens the bucket and starts the task that files the claims.
    pub async fn start(
        js: &jetstream::Context,
        stop: CancellationToken,
    ) -> Result<Self, ProcessorError> {
        let kv = match js.get_key_value(subjects::SERIES_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: subjects::SERIES_BUCKET.to_string(),
                    description: "PrismWatch series registry: the source each series comes from"
                        .into(),
                    history: 1,
                    max_age: Duration::from_secs(7 * 86_400),
                    ..Default::default()
                })
                .await
                .map_err(ProcessorError::nats("create the series registry bucket"))?,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(file_claims(kv, js.clone(), rx, stop));
        Ok(Self { tx })
    }

    /// Queues a batch's claims (never blocks: a full queue drops them, counted).
    pub fn claim(&self, partition: u32, claims: &[SeriesClaim], batch: &[Incoming]) {
        for c in claims {
            let message = c.new.then(|| batch.get(c.msg as usize).cloned()).flatten();
            if self
                .tx
                .try_send(Pending {
                    partition,
                    claim: c.clone(),
                    message,
                })
                .is_err()
            {
                metrics::counter!(telemetry::SERIES_CLAIMS_DROPPED).increment(1);
            }
        }
    }
}

/// The registry key of a series.
pub fn series_id(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..12])
}

async fn file_claims(
    kv: kv::Store,
    js: jetstream::Context,
    rx: mpsc::Receiver<Pending>,
    stop: CancellationToken,
) {
    let logs = std::sync::Mutex::new(LogLimiter::new(Duration::from_secs(10)));
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / CLAIMS_PER_SEC));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let claims = futures::stream::unfold((rx, pace), |(mut rx, mut pace)| async move {
        let p = rx.recv().await?;
        pace.tick().await;
        Some((p, (rx, pace)))
    });
    let work = claims.for_each_concurrent(CONCURRENCY, |p| {
        let (kv, js, logs) = (&kv, &js, &logs);
        async move {
            match file(kv, &p).await {
                Ok(None) => {}
                Ok(Some(holder)) => report(js, &p, &holder, logs).await,
                Err(e) => tracing::debug!(error = %e, "series claim not filed"),
            }
        }
    });
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = work => {}
    }
}

/// Files a claim; returns the other source holding the series, if one does.
async fn file(kv: &kv::Store, p: &Pending) -> Result<Option<String>, String> {
    let key = series_id(&p.claim.key);
    let mine: bytes::Bytes = p.claim.source.clone().into();
    if p.claim.new {
        match kv.create(&key, mine.clone()).await {
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    match kv.entry(&key).await.map_err(|e| e.to_string())? {
        Some(e) if e.operation == kv::Operation::Put && e.value != mine => {
            Ok(Some(String::from_utf8_lossy(&e.value).into_owned()))
        }
        // Ours: renew it, so it outlives its expiry while the series lives.
        Some(e) if e.operation == kv::Operation::Put => {
            if !p.claim.new {
                let _ = kv.update(&key, mine, e.revision).await;
            }
            Ok(None)
        }
        _ => kv
            .create(&key, mine)
            .await
            .map(|_| None)
            .map_err(|e| e.to_string()),
    }
}

async fn report(
    js: &jetstream::Context,
    p: &Pending,
    holder: &str,
    logs: &std::sync::Mutex<LogLimiter>,
) {
    metrics::counter!(telemetry::SERIES_CONFLICTS).increment(1);
    let series = SeriesKey(p.claim.key.clone()).display();
    let detail = format!(
        "series {series} comes from source {holder} already (another partition): a series must always come from the same subject <domain>.<source>; here it came from {}",
        p.claim.source
    );
    if let Some(held) = logs
        .lock()
        .ok()
        .and_then(|mut l| l.allow("series_conflict"))
    {
        tracing::warn!(partition = p.partition, series = %series, source = %p.claim.source, first_source = %holder, suppressed = held, "series published on subjects of two sources");
    }
    let Some(m) = &p.message else { return };
    let reject = MessageReject {
        msg: 0,
        reason: RejectReason::SeriesConflict,
        points: 1,
        detail,
    };
    let publisher = Publisher::new(js.clone(), p.partition);
    let stop = CancellationToken::new();
    let guard = LeaseGuard::always(p.partition);
    // Bounded: a report must not pile up retries while NATS is away.
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        publisher.publish_dead_letter(m, &reject, &guard, &stop),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        tracing::debug!("series conflict dead letter not stored");
    }
}

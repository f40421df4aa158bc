//! Capacity planning: for each configured metric family, every series' growth over the recent
//! history of `PRISM_METRICS` (a least-squares line through its hourly means), projected
//! `horizon_days` on, with its headroom to the family's limit and a recommendation.
//!
//! `prismwatch capacity` prints the report (a table, or JSON); the `capacity` component of
//! `prismwatch run` refreshes it every `refresh_secs` into the KV bucket `PRISM_CAPACITY` (key
//! `report`), which `GET /api/v1/capacity` serves.

pub mod config;
pub mod project;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use config::{CapacityConfig, FamilyConfig};
pub use project::{project, Projection};

use crate::config::Config;
use crate::ingest::Decoder;
use crate::model::SeriesKey;
use crate::processor::replay;
use crate::subjects;
use crate::tools::clock;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// One family's projections, the most urgent first.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyReport {
    pub metric: String,
    pub unit: String,
    pub limit: Option<f64>,
    /// The most urgent series' status (`ok` without series).
    pub status: &'static str,
    pub series: Vec<Projection>,
}

/// A capacity report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: i64,
    /// The history read: event times from, to.
    pub from: i64,
    pub to: i64,
    pub horizon_days: u32,
    pub families: Vec<FamilyReport>,
}

fn urgency(status: &str) -> u8 {
    match status {
        "urgent" => 0,
        "plan" => 1,
        "watch" => 2,
        _ => 3,
    }
}

/// Hourly means per (family, series) of the history.
type Hourly = BTreeMap<(usize, String), BTreeMap<i64, (f64, u32)>>;

/// Builds the report from the stream's last `history_days` (up to `now`).
pub async fn build(js: &jetstream::Context, cfg: &Config, now: i64) -> anyhow::Result<Report> {
    let c = &cfg.capacity;
    let from = now - c.history_days as i64 * DAY;
    let by_metric: BTreeMap<&str, usize> = c
        .families
        .iter()
        .enumerate()
        .map(|(i, f)| (f.metric.as_str(), i))
        .collect();
    let mut hourly: Hourly = BTreeMap::new();
    let mut decoder = Decoder::new(&cfg.ingest, Default::default());
    // An empty stream or range is an empty report, not an error.
    if let Ok((first, _)) = replay::seq_range_of_times(js, cfg, Some(from), None).await {
        let read = replay::read_range(js, cfg, first, None, &[], |chunk, _| {
            for m in chunk {
                for p in crate::ingest::owned_points(&mut decoder, &m) {
                    let Some(&family) = by_metric.get(p.name.as_str()) else {
                        continue;
                    };
                    if p.timestamp < from || p.timestamp > now {
                        continue;
                    }
                    let key = SeriesKey::from_parts(&p.name, &p.labels).display();
                    let e = hourly
                        .entry((family, key))
                        .or_default()
                        .entry(p.timestamp.div_euclid(HOUR))
                        .or_default();
                    e.0 += p.value;
                    e.1 += 1;
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = read {
            if !e.to_string().starts_with("empty range") {
                return Err(e);
            }
        }
    }
    let mut families: Vec<FamilyReport> = c
        .families
        .iter()
        .map(|f| FamilyReport {
            metric: f.metric.clone(),
            unit: f.unit.clone(),
            limit: f.limit,
            status: "ok",
            series: Vec::new(),
        })
        .collect();
    for ((family, series), hours) in hourly {
        let means: Vec<(i64, f64)> = hours
            .into_iter()
            .map(|(h, (sum, n))| (h, sum / n as f64))
            .collect();
        let f = &c.families[family];
        if let Some(p) = project(
            series,
            &means,
            f.limit,
            c.horizon_days as f64,
            c.watch_share,
        ) {
            families[family].series.push(p);
        }
    }
    for f in &mut families {
        f.series.sort_by(|a, b| {
            (urgency(a.status), a.days_to_limit.unwrap_or(f64::MAX))
                .partial_cmp(&(urgency(b.status), b.days_to_limit.unwrap_or(f64::MAX)))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        f.status = f.series.first().map_or("ok", |p| p.status);
    }
    Ok(Report {
        generated_at: now,
        from,
        to: now,
        horizon_days: c.horizon_days,
        families,
    })
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    use std::fmt::Write;
    let day = clock::day_of;
    let mut out = format!(
        "capacity from {} to {} (UTC), projected {} days on\n",
        day(r.from),
        day(r.to),
        r.horizon_days
    );
    let fmt = |x: f64| crate::rules::fmt_value((x * 100.0).round() / 100.0);
    for f in &r.families {
        let limit = f.limit.map_or("no limit".to_string(), |l| {
            format!("limit {} {}", fmt(l), f.unit)
        });
        let _ = writeln!(out, "\n{} ({limit}): {}", f.metric, f.status);
        if f.series.is_empty() {
            let _ = writeln!(
                out,
                "  no series with {} hours of history",
                project::MIN_HOURS
            );
            continue;
        }
        for p in &f.series {
            let _ = writeln!(
                out,
                "  {:<7} {}  now {}, {} a day, {} in {} days: {}",
                p.status,
                p.series,
                fmt(p.current),
                fmt(p.growth_per_day),
                fmt(p.projected),
                r.horizon_days,
                p.recommendation
            );
        }
    }
    out
}

async fn bucket(js: &jetstream::Context) -> anyhow::Result<kv::Store> {
    if let Ok(kv) = js.get_key_value(subjects::CAPACITY_BUCKET).await {
        return Ok(kv);
    }
    Ok(js
        .create_key_value(kv::Config {
            bucket: subjects::CAPACITY_BUCKET.to_string(),
            description: "PrismWatch capacity report (JSON), refreshed by the capacity component"
                .into(),
            history: 1,
            ..Default::default()
        })
        .await?)
}

/// The stored report (JSON), if one was written.
pub async fn stored(js: &jetstream::Context) -> anyhow::Result<Option<serde_json::Value>> {
    let Ok(kv) = js.get_key_value(subjects::CAPACITY_BUCKET).await else {
        return Ok(None);
    };
    Ok(match kv.get(subjects::CAPACITY_KEY).await? {
        Some(v) => Some(serde_json::from_slice(&v)?),
        None => None,
    })
}

/// The `capacity` component: a fresh report every `refresh_secs`, stored for the API.
pub async fn run(
    cfg: Config,
    js: jetstream::Context,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let every = Duration::from_secs(cfg.capacity.refresh_secs);
    loop {
        match build(&js, &cfg, clock::now_ms()).await {
            Ok(report) => {
                let json = serde_json::to_vec(&report)?;
                match bucket(&js).await {
                    Ok(kv) => {
                        if let Err(e) = kv.put(subjects::CAPACITY_KEY, json.into()).await {
                            tracing::warn!(error = %e, "capacity report not stored");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "capacity bucket unavailable"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "capacity report failed; trying again later"),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

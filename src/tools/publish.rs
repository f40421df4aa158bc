//! `prismwatch publish`: send metric points from the command line or a CSV / JSON-lines file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use async_nats::jetstream;
use async_nats::HeaderMap;

use crate::ingest::Encoding;
use crate::model::MetricPoint;
use crate::subjects;

/// The subject a point is published on: `prism.metrics.<domain>.<source>.<metric>`, where domain
/// and source come from the `domain`/`source` labels, else from `exchange` (domain `exchange`),
/// `service` (domain `service`) or `host` (domain `host`).
pub fn subject_for(p: &MetricPoint) -> String {
    let l = |k: &str| p.labels.get(k).map(String::as_str);
    let (domain, source) = match (l("domain"), l("source")) {
        (Some(d), Some(s)) => (d, s),
        _ => {
            if let Some(x) = l("exchange") {
                ("exchange", x)
            } else if let Some(s) = l("service") {
                ("service", s)
            } else if let Some(h) = l("host") {
                ("host", h)
            } else {
                ("custom", "unknown")
            }
        }
    };
    subjects::metric_subject(domain, source, &p.name)
}

/// Encodes one point or a batch.
pub fn encode(points: &[MetricPoint], encoding: Encoding) -> anyhow::Result<Vec<u8>> {
    Ok(match (encoding, points) {
        (Encoding::Json, [one]) => serde_json::to_vec(one)?,
        (Encoding::Json, many) => serde_json::to_vec(many)?,
        (Encoding::MsgPack, [one]) => rmp_serde::to_vec_named(one)?,
        (Encoding::MsgPack, many) => rmp_serde::to_vec_named(many)?,
    })
}

/// A message as `publish` sends it: subject, content type and payload.
pub struct OutMessage {
    pub subject: String,
    pub content_type: &'static str,
    pub payload: Vec<u8>,
}

/// Points cut into messages of `batch` points. A batch goes to the subject of its first point,
/// with the metric token `batch` when it mixes metrics.
pub fn messages(
    points: &[MetricPoint],
    batch: usize,
    encoding: Encoding,
    subject: Option<&str>,
) -> anyhow::Result<Vec<OutMessage>> {
    points
        .chunks(batch.max(1))
        .map(|chunk| {
            let subject = match subject {
                Some(s) => s.to_string(),
                None if chunk.iter().all(|p| p.name == chunk[0].name) => subject_for(&chunk[0]),
                None => {
                    let s = subject_for(&chunk[0]);
                    format!("{}.batch", s.rsplit_once('.').map(|x| x.0).unwrap_or(&s))
                }
            };
            Ok(OutMessage {
                subject,
                content_type: match encoding {
                    Encoding::Json => "application/json",
                    Encoding::MsgPack => "application/msgpack",
                },
                payload: encode(chunk, encoding)?,
            })
        })
        .collect()
}

/// Publishes points in messages of `batch` points (see [`messages`]); returns the messages sent.
pub async fn publish_points(
    js: &jetstream::Context,
    points: &[MetricPoint],
    batch: usize,
    encoding: Encoding,
    subject: Option<&str>,
) -> anyhow::Result<usize> {
    let messages = messages(points, batch, encoding, subject)?;
    send(js, messages.iter()).await?;
    Ok(messages.len())
}

/// Publishes messages, pipelined (up to 1,000 acks outstanding), each awaited for its stream ack.
pub async fn send<'a>(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = &'a OutMessage>,
) -> anyhow::Result<()> {
    let mut acks = Vec::new();
    for m in messages {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HEADER_CONTENT_TYPE, m.content_type);
        acks.push(
            js.publish_with_headers(m.subject.clone(), headers, m.payload.clone().into())
                .await?,
        );
        if acks.len() >= 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// The unit of numeric timestamps given to `publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimestampUnit {
    S,
    Ms,
}

/// A timestamp as given: a number in `unit`, or RFC 3339 / ISO 8601 (`2026-11-29T10:00:00Z`,
/// `2026-11-29T11:00:00+01:00`); in ms since the epoch. Seconds given as milliseconds (a number
/// that would fall in 1970) are refused with the fix, not dropped later as late.
pub fn parse_timestamp(s: &str, unit: TimestampUnit) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        let ms = match unit {
            TimestampUnit::S => n * 1000.0,
            TimestampUnit::Ms => n,
        };
        if !ms.is_finite() || ms <= 0.0 {
            return Err(format!("timestamp {s:?} is not a time after 1970"));
        }
        if unit == TimestampUnit::Ms && (1e9..1e11).contains(&ms) {
            return Err(format!(
                "timestamp {s} looks like seconds since the epoch (as milliseconds it is in 1970): add --timestamp-unit s"
            ));
        }
        return Ok(ms.round() as i64);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            format!(
                "timestamp {s:?} is neither a number ({}) nor a time like 2026-11-29T10:00:00Z",
                match unit {
                    TimestampUnit::S => "seconds",
                    TimestampUnit::Ms => "milliseconds",
                }
            )
        })
}

/// What the processor will make of points published now: refusals (the point would be
/// dead-lettered: its reason) and warnings (it will arrive late or too far ahead).
pub fn check_points(
    points: &[MetricPoint],
    cfg: &crate::config::Config,
    now_ms: i64,
) -> (Vec<String>, Vec<String>) {
    let mut refused = Vec::new();
    let mut late = 0usize;
    let mut oldest = i64::MAX;
    for (i, p) in points.iter().enumerate() {
        if let Err(r) = crate::ingest::check_point(p, now_ms, &cfg.ingest) {
            refused.push(format!(
                "point {} ({}): {}: {}",
                i + 1,
                p.name,
                r.reason.as_str(),
                r.detail
            ));
        } else if p.timestamp < now_ms - cfg.ingest.allowed_lateness_ms {
            late += 1;
            oldest = oldest.min(p.timestamp);
        }
    }
    let mut warnings = Vec::new();
    if late > 0 {
        warnings.push(format!(
            "{late} of {} points are more than ingest.allowed_lateness_ms ({} ms) old (the oldest by {}): a source's clock that is already past them drops them as late (dead letter reason `late`); publish points as they happen, or try history with `prismwatch replay`",
            points.len(),
            cfg.ingest.allowed_lateness_ms,
            crate::rules::fmt_duration_ms(now_ms - oldest),
        ));
    }
    (refused, warnings)
}

/// Reads points from `.csv` (`timestamp,name,value` plus one column per label) or `.jsonl`
/// (one point object per line); numeric timestamps are in `unit`.
pub fn read_points(path: &Path, unit: TimestampUnit) -> anyhow::Result<Vec<MetricPoint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => {
            let mut rdr = csv::Reader::from_reader(text.as_bytes());
            let headers = rdr.headers()?.clone();
            let col = |name: &str| headers.iter().position(|h| h == name);
            let (Some(ts), Some(name), Some(value)) = (col("timestamp"), col("name"), col("value"))
            else {
                bail!(
                    "{}: the CSV header needs timestamp, name and value columns",
                    path.display()
                );
            };
            let mut out = Vec::new();
            for (i, rec) in rdr.records().enumerate() {
                let rec = rec?;
                let field = |c: usize| rec.get(c).unwrap_or("");
                let mut labels = BTreeMap::new();
                for (c, h) in headers.iter().enumerate() {
                    if c != ts && c != name && c != value && !field(c).is_empty() {
                        labels.insert(h.to_string(), field(c).to_string());
                    }
                }
                out.push(MetricPoint {
                    name: field(name).to_string(),
                    labels,
                    value: field(value)
                        .parse()
                        .with_context(|| format!("{}: row {}: value", path.display(), i + 2))?,
                    timestamp: parse_timestamp(field(ts), unit)
                        .map_err(|e| anyhow::anyhow!("{}: row {}: {e}", path.display(), i + 2))?,
                });
            }
            Ok(out)
        }
        Some("jsonl") | Some("ndjson") | Some("json") => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let mut v: serde_json::Value = serde_json::from_str(l)
                    .with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
                // Timestamps: numbers in `unit`, or RFC 3339 strings.
                let ts = match &v["timestamp"] {
                    serde_json::Value::Number(n) => parse_timestamp(&n.to_string(), unit),
                    serde_json::Value::String(s) => parse_timestamp(s, unit),
                    _ => Err("timestamp: missing".to_string()),
                }
                .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), i + 1))?;
                v["timestamp"] = ts.into();
                serde_json::from_value(v)
                    .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), i + 1))
            })
            .collect(),
        _ => bail!("{}: expected a .csv or .jsonl file", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_ms_s_or_rfc3339_and_seconds_as_ms_refused() {
        use TimestampUnit::*;
        assert_eq!(parse_timestamp("1764410400000", Ms), Ok(1_764_410_400_000));
        assert_eq!(parse_timestamp("1764410400", S), Ok(1_764_410_400_000));
        assert_eq!(
            parse_timestamp("2025-11-29T11:00:00+01:00", Ms),
            Ok(1_764_410_400_000)
        );
        assert_eq!(
            parse_timestamp("2025-11-29T10:00:00.5Z", S),
            Ok(1_764_410_400_500)
        );
        assert!(parse_timestamp("1764410400", Ms)
            .unwrap_err()
            .contains("--timestamp-unit s"));
        assert!(parse_timestamp("yesterday", Ms)
            .unwrap_err()
            .contains("2026-11-29T10:00:00Z"));
        assert!(parse_timestamp("-5", Ms).is_err());
    }

    #[test]
    fn points_the_processor_would_refuse_or_find_late_are_named() {
        let cfg = crate::config::Config::default();
        let now = 1_764_410_400_000;
        let p = |name: &str, value: f64, ts: i64| MetricPoint {
            name: name.into(),
            labels: BTreeMap::new(),
            value,
            timestamp: ts,
        };
        let (refused, warnings) = check_points(
            &[
                p("disk usage%", 1.0, now),
                p("ok", f64::NAN, now),
                p("ok", 1.0, now),
                p("ok", 1.0, now - 600_000),
            ],
            &cfg,
            now,
        );
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].contains("invalid_name") && refused[0].contains("disk usage%"));
        assert!(refused[1].contains("non_finite"), "{refused:?}");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("1 of 4 points") && warnings[0].contains("10m"),
            "{warnings:?}"
        );
    }

    #[test]
    fn subjects_from_labels() {
        let mut p = MetricPoint {
            name: "exchange_connection_status".into(),
            labels: BTreeMap::new(),
            value: 1.0,
            timestamp: 1,
        };
        assert_eq!(
            subject_for(&p),
            "prism.metrics.custom.unknown.exchange_connection_status"
        );
        p.labels.insert("exchange".into(), "binance".into());
        assert_eq!(
            subject_for(&p),
            "prism.metrics.exchange.binance.exchange_connection_status"
        );
    }

    #[test]
    fn reads_csv_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("p.csv");
        std::fs::write(
            &csv,
            "timestamp,name,value,exchange\n1000,delay,1.5,okx\n2000,delay,2,\n",
        )
        .unwrap();
        let pts = read_points(&csv, TimestampUnit::Ms).unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].labels["exchange"], "okx");
        assert!(pts[1].labels.is_empty());
        let jl = dir.path().join("p.jsonl");
        std::fs::write(&jl, "{\"name\":\"a\",\"value\":1,\"timestamp\":5}\n\n{\"name\":\"b\",\"labels\":{\"x\":\"y\"},\"value\":2,\"timestamp\":6}\n").unwrap();
        assert_eq!(read_points(&jl, TimestampUnit::Ms).unwrap().len(), 2);
        std::fs::write(&csv, "timestamp,name\n1,a\n").unwrap();
        assert!(read_points(&csv, TimestampUnit::Ms)
            .unwrap_err()
            .to_string()
            .contains("value"));
    }
}

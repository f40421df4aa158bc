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

/// Publishes points in messages of `batch` points (pipelined, each awaited for its stream ack).
/// A batch goes to the subject of its first point with the metric token `batch` when mixed.
pub async fn publish_points(
    js: &jetstream::Context,
    points: &[MetricPoint],
    batch: usize,
    encoding: Encoding,
    subject: Option<&str>,
) -> anyhow::Result<usize> {
    let mut acks = Vec::new();
    let mut messages = 0;
    for chunk in points.chunks(batch.max(1)) {
        let subj = match subject {
            Some(s) => s.to_string(),
            None if chunk.iter().all(|p| p.name == chunk[0].name) => subject_for(&chunk[0]),
            None => {
                let s = subject_for(&chunk[0]);
                format!("{}.batch", s.rsplit_once('.').map(|x| x.0).unwrap_or(&s))
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            subjects::HEADER_CONTENT_TYPE,
            match encoding {
                Encoding::Json => "application/json",
                Encoding::MsgPack => "application/msgpack",
            },
        );
        acks.push(
            js.publish_with_headers(subj, headers, encode(chunk, encoding)?.into())
                .await?,
        );
        messages += 1;
        if acks.len() >= 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(messages)
}

/// Reads points from `.csv` (`timestamp,name,value` plus one column per label) or `.jsonl`
/// (one point object per line).
pub fn read_points(path: &Path) -> anyhow::Result<Vec<MetricPoint>> {
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
                    timestamp: field(ts).parse().with_context(|| {
                        format!(
                            "{}: row {}: timestamp (ms since the epoch)",
                            path.display(),
                            i + 2
                        )
                    })?,
                });
            }
            Ok(out)
        }
        Some("jsonl") | Some("ndjson") | Some("json") => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}: line {}", path.display(), i + 1))
            })
            .collect(),
        _ => bail!("{}: expected a .csv or .jsonl file", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let pts = read_points(&csv).unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].labels["exchange"], "okx");
        assert!(pts[1].labels.is_empty());
        let jl = dir.path().join("p.jsonl");
        std::fs::write(&jl, "{\"name\":\"a\",\"value\":1,\"timestamp\":5}\n\n{\"name\":\"b\",\"labels\":{\"x\":\"y\"},\"value\":2,\"timestamp\":6}\n").unwrap();
        assert_eq!(read_points(&jl).unwrap().len(), 2);
        std::fs::write(&csv, "timestamp,name\n1,a\n").unwrap();
        assert!(read_points(&csv).unwrap_err().to_string().contains("value"));
    }
}

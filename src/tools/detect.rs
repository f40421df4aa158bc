//! `prismwatch detect`: offline scoring of `timestamp,value` CSV files (NAB's format) with the very
//! same operator and rule code as the live pipeline, from a fresh state per file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::config::Config;
use crate::detect::DetectorKind;
use crate::model::AlertStatus;
use crate::pipeline::operator::{OperatorSpec, PointCtx};
use crate::pipeline::{PipelineCtx, SeriesPoint, Shard, ShardOut};
use crate::rules::{Field, Matcher, Rule, RuleSet};

/// The rule behind the `alert` column: the first configured rule on the `anomaly` field,
/// applied to every series; else `anomaly == 1` with no delay.
fn anomaly_rule(rules: &RuleSet) -> anyhow::Result<Rule> {
    let mut set = RuleSet::default();
    let rule = match rules
        .rules
        .iter()
        .find(|r| r.condition.field == Field::Anomaly)
    {
        Some(r) => r.clone(),
        None => {
            set.add_file(
                "<built-in>",
                "rules:\n  - name: anomaly\n    metric: value\n    condition: anomaly == 1\n    priority: P3\n",
            )?;
            set.rules.remove(0)
        }
    };
    Ok(Rule {
        metric: Matcher::parse("=~.*").map_err(anyhow::Error::msg)?,
        matchers: Vec::new(),
        ..rule
    })
}

/// Parses `YYYY-MM-DD HH:MM:SS` (UTC), or integer milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Some(ms);
    }
    let nums: Vec<i64> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [y, mo, d, h, mi, sec] = nums[..] else {
        return None;
    };
    let month = time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?)
        .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(sec).ok()?,
    )
    .ok()?;
    Some(
        (time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp_nanos()
            / 1_000_000) as i64,
    )
}

/// Scores one CSV: writes `timestamp,value,anomaly_score,alert,<detector columns>` to `out`.
pub fn score_file(
    cfg: &Config,
    rule: &Rule,
    metric: &str,
    input: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let rules = RuleSet {
        rules: vec![rule.clone()],
        slos: Vec::new(),
    };
    let ctx = Arc::new(PipelineCtx::new(&cfg.pipeline, rules));
    let hash = ctx.series_hash(metric);
    let mut shard = Shard::new(ctx);
    let mut rdr =
        csv::Reader::from_path(input).with_context(|| format!("reading {}", input.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |n: &str| headers.iter().position(|h| h.trim() == n);
    let (Some(tcol), Some(vcol)) = (col("timestamp"), col("value")) else {
        bail!("{}: needs timestamp and value columns", input.display());
    };
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["timestamp", "value", "anomaly_score", "alert", "raw_score"];
    header.extend(DetectorKind::ALL.iter().map(|d| d.name()));
    w.write_record(&header)?;
    let mut rows = 0;
    let mut out = ShardOut::default();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec?;
        let (ts_s, v_s) = (rec.get(tcol).unwrap_or(""), rec.get(vcol).unwrap_or(""));
        let ts = parse_timestamp(ts_s)
            .with_context(|| format!("{}: row {}: timestamp {ts_s:?}", input.display(), i + 2))?;
        let value: f64 = v_s
            .trim()
            .parse()
            .with_context(|| format!("{}: row {}: value {v_s:?}", input.display(), i + 2))?;
        out.events.clear();
        let mut p = PointCtx::new(ts, value);
        let taken = shard.on_point(
            SeriesPoint {
                key: metric,
                hash,
                ts,
                value,
            },
            0,
            0,
            &mut out,
            Some(&mut p),
        );
        let alert = out
            .events
            .iter()
            .any(|e| e.event.status == AlertStatus::Firing);
        let mut record = vec![ts_s.to_string(), v_s.to_string()];
        if taken {
            record.push(format!("{:.6}", p.score));
            record.push(u8::from(alert).to_string());
            let detail = p.anomaly;
            record.push(format!(
                "{:.6}",
                detail.map(|d| d.raw_score).unwrap_or(p.score)
            ));
            for k in 0..DetectorKind::ALL.len() {
                record.push(format!(
                    "{:.6}",
                    detail.map(|d| d.detector_scores[k]).unwrap_or(0.0)
                ));
            }
        } else {
            // A repeated timestamp, dropped by dedup: nothing new to say about it.
            record.resize(header.len(), "0".to_string());
        }
        w.write_record(&record)?;
        rows += 1;
    }
    w.flush()?;
    Ok(rows)
}

fn csv_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            csv_files(&p, out)?;
        } else if p.extension().and_then(|e| e.to_str()) == Some("csv") {
            out.push(p);
        }
    }
    Ok(())
}

/// Scores a file (to `output` or standard output) or a folder (mirrored under `output`).
/// Rows are scored as a series named `metric`, which picks its operator list (see
/// `pipeline.metric_operators`).
pub fn run(
    cfg: &Config,
    rules: &RuleSet,
    metric: &str,
    input: &Path,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let ctx = PipelineCtx::new(&cfg.pipeline, RuleSet::default());
    let specs = &ctx.chains[ctx.chain_for(metric)];
    if !specs.iter().any(|o| matches!(o, OperatorSpec::Anomaly(_))) {
        bail!("detect needs the `anomaly` operator in the operators that serve metric {metric:?}");
    }
    let rule = anomaly_rule(rules)?;
    if input.is_dir() {
        let Some(out_dir) = output else {
            bail!("--output FOLDER is required when --input is a folder");
        };
        let mut files = Vec::new();
        csv_files(input, &mut files).with_context(|| format!("reading {}", input.display()))?;
        for f in files {
            let rel = f.strip_prefix(input).unwrap_or(&f);
            let dest = out_dir.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::io::BufWriter::new(std::fs::File::create(&dest)?);
            let rows = score_file(cfg, &rule, metric, &f, &mut file)?;
            eprintln!("{} -> {} ({rows} rows)", f.display(), dest.display());
        }
        return Ok(());
    }
    match output {
        Some(p) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            );
            score_file(cfg, &rule, metric, input, &mut file)?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            score_file(cfg, &rule, metric, input, &mut lock)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nab_timestamps() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(
            parse_timestamp("2014-04-10 07:15:00"),
            Some(1_397_114_100_000)
        );
        assert_eq!(parse_timestamp("1397114100000"), Some(1_397_114_100_000));
        assert_eq!(parse_timestamp("2014-13-10 07:15:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}

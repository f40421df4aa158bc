//! Annotation templates: `{{ value }}`, `{{ labels.exchange }}` (also `$value`, `$labels.x`),
//! `{{ score }}`, `{{ zscore }}`, `{{ threshold }}`, `{{ metric }}`, `{{ rule }}`, `{{ series }}`,
//! and from the fused detectors `{{ expected }}`, `{{ band }}`, `{{ detector }}`, `{{ deviation }}`,
//! `{{ since }}` and `{{ explanation }}` (all of it in one sentence an SRE reads at a glance),
//! and for predictive rules `{{ eta }}` (e.g. `3h40m ± 25m`).
//! Compiled once at load, so a typo is a config error rather than a silent blank.

use crate::model::SeriesKey;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Value,
    Score,
    Zscore,
    Threshold,
    Metric,
    Rule,
    Series,
    Expected,
    Band,
    Detector,
    Deviation,
    Since,
    Explanation,
    Eta,
    Status,
    Peak,
    Duration,
    Label(String),
}

/// A compiled annotation template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

/// What a template is rendered with.
pub struct TemplateCtx<'a> {
    pub series: &'a SeriesKey,
    pub rule: &'a str,
    pub value: f64,
    pub score: f64,
    pub zscore: f64,
    pub threshold: f64,
    /// Expected value from the detectors' baseline.
    pub expected: Option<f64>,
    /// Normal band around it.
    pub band: Option<(f64, f64)>,
    /// The detector that contributed most.
    pub detector: Option<&'a str>,
    /// Deviation from the expected value, in baseline standard deviations.
    pub deviation: f64,
    /// When the anomaly began (event time, ms), per the fused detectors.
    pub since_ms: Option<i64>,
    /// Event time of the point being rendered, ms.
    pub at_ms: i64,
    /// Predicted time until the threshold is crossed (mean, ±), in ms.
    pub eta: Option<(i64, i64)>,
    /// The event's status: `pending`, `firing`, `resolved`, `cancelled`.
    pub status: &'a str,
    /// The most extreme value while the alert was active (the value itself when none yet).
    pub peak: Option<f64>,
    /// How long the alert has been active (event time), in ms.
    pub duration_ms: i64,
}

impl Template {
    pub fn compile(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {src:?}"))?;
            let name = after[..end].trim().trim_start_matches('$');
            parts.push(match name {
                "value" => Part::Value,
                "score" => Part::Score,
                "zscore" => Part::Zscore,
                "threshold" => Part::Threshold,
                "metric" => Part::Metric,
                "rule" => Part::Rule,
                "series" => Part::Series,
                "expected" => Part::Expected,
                "band" => Part::Band,
                "detector" => Part::Detector,
                "deviation" => Part::Deviation,
                "since" => Part::Since,
                "explanation" => Part::Explanation,
                "eta" => Part::Eta,
                "status" => Part::Status,
                "peak" => Part::Peak,
                "duration" => Part::Duration,
                _ => match name.strip_prefix("labels.") {
                    Some(label) if !label.is_empty() => Part::Label(label.to_string()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{{ {name} }}}}: use value, score, zscore, threshold, metric, rule, series, expected, band, detector, deviation, since, explanation, eta or labels.<name>"
                        ))
                    }
                },
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    pub fn render(&self, ctx: &TemplateCtx) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value => out.push_str(&fmt_value(ctx.value)),
                Part::Score => out.push_str(&format!("{:.2}", ctx.score)),
                Part::Zscore => out.push_str(&format!("{:.1}", ctx.zscore)),
                Part::Threshold => out.push_str(&fmt_value(ctx.threshold)),
                Part::Metric => out.push_str(ctx.series.name()),
                Part::Rule => out.push_str(ctx.rule),
                Part::Series => out.push_str(&ctx.series.display()),
                Part::Expected => {
                    out.push_str(&ctx.expected.map(fmt_value).unwrap_or_else(|| "?".into()))
                }
                Part::Band => out.push_str(
                    &ctx.band
                        .map(|(lo, hi)| format!("{} .. {}", fmt_value(lo), fmt_value(hi)))
                        .unwrap_or_else(|| "?".into()),
                ),
                Part::Detector => out.push_str(ctx.detector.unwrap_or("none")),
                Part::Deviation => out.push_str(&format!("{:.1}", ctx.deviation)),
                Part::Since => {
                    out.push_str(&ctx.since_ms.map(fmt_time_utc).unwrap_or_else(|| "?".into()))
                }
                Part::Explanation => out.push_str(&explain(ctx)),
                // "in 4h54m ± 1h29m"; "now" when the value is there already (or no trend says
                // when).
                Part::Eta => out.push_str(&match ctx.eta {
                    Some((m, _)) if m <= 0 => "now".to_string(),
                    Some((m, pm)) => format!("in {} ± {}", fmt_duration_ms(m), fmt_duration_ms(pm)),
                    None => "now".to_string(),
                }),
                Part::Status => out.push_str(ctx.status),
                Part::Peak => out.push_str(&fmt_value(ctx.peak.unwrap_or(ctx.value))),
                Part::Duration => out.push_str(&fmt_duration_ms(ctx.duration_ms)),
                Part::Label(l) => out.push_str(ctx.series.label(l).unwrap_or("")),
            }
        }
        out
    }
}

/// What a detector noticed, in words.
fn detector_words(name: &str) -> &'static str {
    match name {
        "seasonal" => "the seasonal baseline (the usual value for this time of day)",
        "trend" => "the trend forecast",
        "zscore" => "the recent level",
        "variance" => "the volatility check (the noise level changed, or the value froze)",
        "iforest" => "the isolation forest (an unusual mix of deviations)",
        "drift" => "the slope-change test (the rate of change shifted)",
        "art" => "the shape detector (a pattern not seen before)",
        _ => "the detectors",
    }
}

/// One sentence: which detector, the value against what was expected, how far off, since when.
/// "the seasonal baseline (the usual value for this time of day): 412 is 6.3 sd below the
/// expected 2150 (normal 1800 .. 2500), since 2026-11-30 14:05 UTC (12m)".
fn explain(ctx: &TemplateCtx) -> String {
    let mut s = format!(
        "{}: {}",
        detector_words(ctx.detector.unwrap_or("")),
        fmt_value(ctx.value)
    );
    if let Some(e) = ctx.expected {
        let side = if ctx.value >= e { "above" } else { "below" };
        s.push_str(&format!(
            " is {:.1} sd {side} the expected {}",
            ctx.deviation.abs(),
            fmt_value(e)
        ));
    }
    if let Some((lo, hi)) = ctx.band {
        s.push_str(&format!(" (normal {} .. {})", fmt_value(lo), fmt_value(hi)));
    }
    if let Some(since) = ctx.since_ms {
        s.push_str(&format!(
            ", since {} ({})",
            fmt_time_utc(since),
            fmt_duration_ms(ctx.at_ms - since)
        ));
    }
    s
}

/// `2026-11-30 14:05 UTC` (event time, ms).
fn fmt_time_utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => ms.to_string(),
    }
}

/// `3h40m`, `25m`, `40s`.
pub fn fmt_duration_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Human formatting of a metric value: integers without decimals, others with up to 3.
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn renders_placeholders() {
        let mut labels = BTreeMap::new();
        labels.insert("exchange".to_string(), "binance".to_string());
        let key = SeriesKey::from_parts("delay_seconds", &labels);
        let t = Template::compile("{{ $labels.exchange }} delay {{value}}s > {{ threshold }}s ({{ metric }}, {{rule}}) {{ labels.nope }}.").unwrap();
        let ctx = TemplateCtx {
            series: &key,
            rule: "md_delay",
            value: 7.25,
            score: 0.5,
            zscore: 3.0,
            threshold: 5.0,
            expected: Some(1.0),
            band: Some((0.5, 1.5)),
            detector: Some("seasonal"),
            deviation: 4.2,
            since_ms: Some(1_764_511_500_000),
            at_ms: 1_764_512_220_000,
            eta: Some((13_200_000, 1_500_000)),
            status: "firing",
            peak: Some(9.5),
            duration_ms: 420_000,
        };
        assert_eq!(
            t.render(&ctx),
            "binance delay 7.25s > 5s (delay_seconds, md_delay) ."
        );
        let t2 =
            Template::compile("{{expected}} [{{ band }}] {{detector}} {{deviation}} {{ eta }}")
                .unwrap();
        assert_eq!(
            t2.render(&ctx),
            "1 [0.5 .. 1.5] seasonal 4.2 in 3h40m ± 25m"
        );
        let t3 = Template::compile("{{ status }} for {{ duration }}, peak {{ peak }}, {{ eta }}")
            .unwrap();
        assert_eq!(t3.render(&ctx), "firing for 7m, peak 9.5, in 3h40m ± 25m");
        // No "n/a": a value already past the threshold (or no trend) is "now".
        let now = TemplateCtx { eta: None, ..ctx };
        assert_eq!(t3.render(&now), "firing for 7m, peak 9.5, now");
        let t4 = Template::compile("{{ explanation }}").unwrap();
        assert_eq!(
            t4.render(&ctx),
            "the seasonal baseline (the usual value for this time of day): 7.25 is 4.2 sd above \
             the expected 1 (normal 0.5 .. 1.5), since 2025-11-30 14:05 UTC (12m)"
        );
        let bare = TemplateCtx {
            expected: None,
            band: None,
            detector: None,
            since_ms: None,
            ..now
        };
        assert_eq!(t4.render(&bare), "the detectors: 7.25");
        assert!(Template::compile("{{ valu }}").is_err());
        assert!(Template::compile("{{ value").is_err());
        assert_eq!(fmt_value(91.23456), "91.235");
        assert_eq!(fmt_value(0.5), "0.5");
    }
}

//! Annotation templates: `{{ value }}`, `{{ labels.exchange }}` (also `$value`, `$labels.x`),
//! `{{ score }}`, `{{ zscore }}`, `{{ threshold }}`, `{{ metric }}`, `{{ rule }}`, `{{ series }}`.
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
                _ => match name.strip_prefix("labels.") {
                    Some(label) if !label.is_empty() => Part::Label(label.to_string()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{{ {name} }}}}: use value, score, zscore, threshold, metric, rule, series or labels.<name>"
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
                Part::Label(l) => out.push_str(ctx.series.label(l).unwrap_or("")),
            }
        }
        out
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
        };
        assert_eq!(t.render(&ctx), "binance delay 7.25s > 5s (delay_seconds, md_delay) .");
        assert!(Template::compile("{{ valu }}").is_err());
        assert!(Template::compile("{{ value").is_err());
        assert_eq!(fmt_value(91.23456), "91.235");
        assert_eq!(fmt_value(0.5), "0.5");
    }
}

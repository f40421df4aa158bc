//! The backtest report as one self-contained HTML file: tables, the diff, and a plot (inline
//! SVG drawn with plotters) of every plotted series with its detector band, alert spans,
//! threshold lines and forecasts. No script and no external resource: it opens offline.

use std::collections::{BTreeMap, BTreeSet};

use plotters::prelude::*;
use serde::Serialize;

use super::report::{Report, SeriesReport};
use super::summary::{Alert, PerDay};
use crate::model::Priority;
use crate::pipeline::TracePoint;

/// Points drawn per series at most (min and max of each bucket beyond that).
const MAX_DRAWN: usize = 1200;
/// Forecasts drawn per plot at most, spread over the range with the newest kept: a predictive
/// rule forecasts at every point, and thousands of overlapping fans (7 days of the demo: 4-6 k
/// per series, 0.5-0.8 MB of SVG each) hide the series instead of showing where it was heading.
const MAX_FORECASTS: usize = 16;
const WIDTH: u32 = 960;
const HEIGHT: u32 = 280;

/// A count table: one row per key, one column per day, one count per variant in each cell.
#[derive(Serialize)]
struct DayTable {
    days: Vec<String>,
    rows: Vec<(String, Vec<Vec<u64>>)>,
}

fn day_table(per_variant: Vec<&BTreeMap<String, PerDay>>) -> DayTable {
    let days: BTreeSet<&String> = per_variant
        .iter()
        .flat_map(|m| m.values().flat_map(|d| d.keys()))
        .collect();
    let keys: BTreeSet<&String> = per_variant.iter().flat_map(|m| m.keys()).collect();
    let days: Vec<String> = days.into_iter().cloned().collect();
    let rows = keys
        .into_iter()
        .map(|k| {
            let cells = days
                .iter()
                .map(|d| {
                    per_variant
                        .iter()
                        .map(|m| m.get(k).and_then(|x| x.get(d)).copied().unwrap_or(0))
                        .collect()
                })
                .collect();
            (k.clone(), cells)
        })
        .collect();
    DayTable { days, rows }
}

const TEMPLATE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>PrismWatch backtest: {{ r.history }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #dde; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #d5d9e2; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; } th { background: #f1f3f8; }
td.more { color: #b3261e; font-weight: 600; } td.less { color: #1b7f3b; font-weight: 600; }
.series { margin: 18px 0 30px; } .series h3 { font: 600 14px monospace; margin: 4px 0; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.sw { display: inline-block; width: 14px; height: 10px; margin-right: 4px; vertical-align: middle; }
.muted { color: #667; }
</style></head><body>
<h1>PrismWatch backtest</h1>
<p id="history">{{ r.history }}: {{ r.messages }} messages, {{ r.points }} points ({{ r.rejected_points }} rejected or late).
{% if r.subject_filters %}Subjects: {{ r.subject_filters|join(", ") }}. {% endif %}
{% if r.label_filters %}Alerts with labels: {{ r.label_filters|join(", ") }}. {% endif %}
Notifications off: nothing was published.</p>

<h2>Summary</h2>
<table id="summary"><tr><th>variant</th><th>rules from</th><th>rules</th><th>alerts</th><th>pages</th><th>pending only</th><th>P1</th><th>P2</th><th>P3</th><th>P4</th></tr>
{% for v in r.variants %}<tr data-variant="{{ v.name }}"><td>{{ v.name }}</td><td class="text">{{ v.source }}</td><td>{{ v.rules }}</td><td>{{ v.summary.alerts }}</td><td class="pages">{{ v.summary.pages }}</td><td>{{ v.summary.pending_only }}</td>
{% for p in ["P1", "P2", "P3", "P4"] %}<td data-priority="{{ p }}">{{ v.summary.pages_per_priority[p] or 0 }}</td>{% endfor %}</tr>
{% endfor %}</table>

{% if r.diff %}{% set d = r.diff %}
<h2>Diff: candidate against baseline</h2>
<table id="diff"><tr><th>change</th><th>pages</th></tr>
<tr data-kind="added"><td>added</td><td>{{ d.added|length }}</td></tr>
<tr data-kind="removed"><td>removed</td><td>{{ d.removed|length }}</td></tr>
<tr data-kind="earlier"><td>earlier</td><td>{{ d.earlier|length }}</td></tr>
<tr data-kind="later"><td>later</td><td>{{ d.later|length }}</td></tr>
<tr data-kind="priority_changed"><td>priority changed</td><td>{{ d.priority_changed|length }}</td></tr>
<tr data-kind="unchanged"><td>unchanged</td><td>{{ d.unchanged }}</td></tr></table>
<table id="diff-per-rule"><tr><th>rule</th><th>baseline pages</th><th>candidate pages</th></tr>
{% for rule, n in d.pages_per_rule|items %}<tr data-rule="{{ rule }}"><td>{{ rule }}</td><td>{{ n[0] }}</td><td class="{{ 'more' if n[1] > n[0] else ('less' if n[1] < n[0] else '') }}">{{ n[1] }}</td></tr>{% endfor %}</table>
{% for kind, rows in [("added", d.added), ("removed", d.removed)] %}{% if rows %}
<h3>Pages {{ kind }}</h3><table class="pages-{{ kind }}"><tr><th>rule</th><th>series</th><th>priority</th><th>fired</th><th>ended</th></tr>
{% for a in rows[:200] %}<tr><td>{{ a.rule }}</td><td class="text">{{ a.series }}</td><td>{{ a.priority }}</td><td>{{ a.fired_at|ts }}</td><td>{{ a.ends_at|ts }}</td></tr>{% endfor %}</table>
{% if rows|length > 200 %}<p class="muted">{{ rows|length - 200 }} more in --json.</p>{% endif %}{% endif %}{% endfor %}
{% for kind, rows in [("earlier", d.earlier), ("later", d.later)] %}{% if rows %}
<h3>Pages sent {{ kind }}</h3><table class="pages-{{ kind }}"><tr><th>rule</th><th>series</th><th>baseline</th><th>candidate</th><th>by</th></tr>
{% for s in rows[:200] %}<tr><td>{{ s.rule }}</td><td class="text">{{ s.series }}</td><td>{{ s.baseline_fired_at|ts }}</td><td>{{ s.candidate_fired_at|ts }}</td><td>{{ s.by_ms|dur }}</td></tr>{% endfor %}</table>{% endif %}{% endfor %}
{% if d.priority_changed %}<h3>Priority changed</h3><table class="pages-priority"><tr><th>rule</th><th>series</th><th>fired</th><th>baseline</th><th>candidate</th></tr>
{% for p in d.priority_changed[:200] %}<tr><td>{{ p.rule }}</td><td class="text">{{ p.series }}</td><td>{{ p.fired_at|ts }}</td><td>{{ p.baseline }}</td><td>{{ p.candidate }}</td></tr>{% endfor %}</table>{% endif %}
{% endif %}

{% for title, id, t in tables %}
<h2>Pages per day per {{ title }}</h2>
{% if t.rows %}<table id="{{ id }}"><tr><th>{{ title }}</th>{% for d in t.days %}<th>{{ d }}</th>{% endfor %}</tr>
{% for key, cells in t.rows %}<tr data-key="{{ key }}"><td>{{ key }}</td>{% for c in cells %}{% if c|length > 1 and c[0] != c[1] %}<td class="{{ 'more' if c[1] > c[0] else 'less' }}">{{ c[0] }} → {{ c[1] }}</td>{% else %}<td>{{ c[0] }}</td>{% endif %}{% endfor %}</tr>
{% endfor %}</table>{% else %}<p class="muted">No page.</p>{% endif %}
{% endfor %}

<h2>Noisiest rules</h2>
{% for v in r.variants %}<p data-noisiest="{{ v.name }}"><b>{{ v.name }}</b>: {% for rule, n in v.summary.noisiest %}{{ rule }} ({{ n }}){% if not loop.last %}, {% endif %}{% else %}no page{% endfor %}</p>{% endfor %}

<h2>Series</h2>
<p class="legend"><span><i class="sw" style="background:#1f5fbf"></i>value</span><span><i class="sw" style="background:#9ec1ee"></i>detector band</span>
<span><i class="sw" style="background:#f6d36b"></i>pending</span><span><i class="sw" style="background:#ef8f86"></i>firing</span>
{% if r.diff %}<span><i class="sw" style="background:#7a5bc7"></i>baseline firing (strip)</span>{% endif %}
<span><i class="sw" style="background:#d9822b"></i>forecast</span><span><i class="sw" style="background:#b3261e"></i>threshold</span></p>
{% for s in r.series %}<section class="series" data-series="{{ s.series }}">
<h3>{{ s.series }}</h3>
{{ svgs[loop.index0]|safe }}
{% set l = lists[loop.index0] %}<ul>{% for v, a in l.listed %}<li data-variant="{{ r.variants[v].name }}" data-rule="{{ a.rule }}">{{ r.variants[v].name }}: {{ a.rule }} {{ a.priority }}, pending {{ a.starts_at|ts }}{% if a.fired_at %}, fired {{ a.fired_at|ts }}{% endif %}{% if a.ends_at %}, ended {{ a.ends_at|ts }}{% else %}, still open at the end{% endif %}</li>{% endfor %}
{% for c in l.cancelled %}<li data-variant="{{ r.variants[c.variant].name }}" data-rule="{{ c.rule }}" data-cancelled="{{ c.count }}">{{ r.variants[c.variant].name }}: {{ c.rule }} {{ c.priority }}, {{ c.count }} pending {{ 'episode' if c.count == 1 else 'episodes' }} that ended without firing, {{ c.first|ts }} to {{ c.last|ts }}</li>{% endfor %}</ul>
</section>{% else %}<p class="muted">No alert: nothing to plot.</p>{% endfor %}
{% if r.series_not_plotted %}<p class="muted">{{ r.series_not_plotted }} more alerted series not plotted (raise --plots).</p>{% endif %}
</body></html>
"#;

/// The whole page.
pub fn render(report: &Report) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_filter("ts", |ms: Option<i64>| {
        ms.map(|ms| crate::tools::tail::format_ms(ms)[..16].to_string())
            .unwrap_or_else(|| "-".into())
    });
    env.add_filter("dur", |ms: i64| {
        let sign = if ms < 0 { "-" } else { "+" };
        format!(
            "{sign}{}",
            crate::rules::fmt_duration_ms(ms.unsigned_abs() as i64)
        )
    });
    env.add_template("report.html", TEMPLATE)?;
    let svgs = report
        .series
        .iter()
        .map(|s| plot(s, report.variants.len()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lists: Vec<AlertList> = report.series.iter().map(AlertList::of).collect();
    let per_rule: Vec<BTreeMap<String, PerDay>> = report
        .variants
        .iter()
        .map(|v| {
            v.summary
                .per_rule
                .iter()
                .map(|(k, c)| (k.clone(), c.pages_per_day.clone()))
                .collect()
        })
        .collect();
    let tables = vec![
        ("rule", "per-rule", day_table(per_rule.iter().collect())),
        (
            "priority",
            "per-priority",
            day_table(
                report
                    .variants
                    .iter()
                    .map(|v| &v.summary.per_priority)
                    .collect(),
            ),
        ),
        (
            "receiver",
            "per-receiver",
            day_table(
                report
                    .variants
                    .iter()
                    .map(|v| &v.summary.per_receiver)
                    .collect(),
            ),
        ),
    ];
    let page = env
        .get_template("report.html")?
        .render(minijinja::context! {
            r => report,
            svgs => svgs,
            lists => lists,
            tables => tables,
        })?;
    Ok(page)
}

/// A series' alerts as its section lists them: each one that fired or is still open on a line
/// of its own; those that ended while pending (a `for` not held: graded predictions on a noisy
/// metric do it many times a day) counted per variant and rule, so the pages stand out.
#[derive(Serialize)]
struct AlertList<'a> {
    listed: Vec<&'a (usize, Alert)>,
    cancelled: Vec<Cancelled<'a>>,
}

#[derive(Serialize)]
struct Cancelled<'a> {
    variant: usize,
    rule: &'a str,
    priority: Priority,
    count: usize,
    first: i64,
    last: i64,
}

impl<'a> AlertList<'a> {
    fn of(s: &'a SeriesReport) -> Self {
        let mut listed = Vec::new();
        let mut cancelled: BTreeMap<(usize, &str), Cancelled> = BTreeMap::new();
        for va @ (v, a) in &s.alerts {
            if a.paged() || a.ends_at.is_none() {
                listed.push(va);
                continue;
            }
            let c = cancelled.entry((*v, &a.rule)).or_insert(Cancelled {
                variant: *v,
                rule: &a.rule,
                priority: a.priority,
                count: 0,
                first: a.starts_at,
                last: a.starts_at,
            });
            c.count += 1;
            c.first = c.first.min(a.starts_at);
            c.last = c.last.max(a.starts_at);
        }
        Self {
            listed,
            cancelled: cancelled.into_values().collect(),
        }
    }
}

/// At most [`MAX_DRAWN`] points: beyond that, the min and max of each bucket, in time order.
fn thin(trace: &[TracePoint]) -> Vec<&TracePoint> {
    if trace.len() <= MAX_DRAWN {
        return trace.iter().collect();
    }
    let per = trace.len().div_ceil(MAX_DRAWN / 2);
    let mut out = Vec::with_capacity(MAX_DRAWN + 2);
    for bucket in trace.chunks(per) {
        let lo = bucket.iter().min_by(|a, b| a.value.total_cmp(&b.value));
        let hi = bucket.iter().max_by(|a, b| a.value.total_cmp(&b.value));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let (a, b) = if lo.ts <= hi.ts { (lo, hi) } else { (hi, lo) };
            out.push(a);
            if !std::ptr::eq(a, b) {
                out.push(b);
            }
        }
    }
    out
}

/// At most `max` of `items`, evenly spread over them, the last one always kept.
fn spread<T>(items: Vec<T>, max: usize) -> Vec<T> {
    let n = items.len();
    if n <= max {
        return items;
    }
    // The k-th kept index counted back from the last, so the newest is kept; with n > max the
    // step is at least 1, so the indices are distinct.
    let mut keep = (0..max)
        .rev()
        .map(|k| n - 1 - k * (n - 1) / (max - 1))
        .peekable();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.next_if_eq(i).is_some())
        .map(|(_, t)| t)
        .collect()
}

/// A forecast point: (at, value, plus_minus).
type ForecastPoint = (i64, f64, f64);

/// A forecast made at a point: (its time, its value, what it forecast).
type Forecast = (i64, f64, Vec<ForecastPoint>);

fn forecast_points(f: &serde_json::Value) -> Vec<ForecastPoint> {
    f.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("at")?.as_i64()?,
                p.get("value")?.as_f64()?,
                p.get("plus_minus")?.as_f64().unwrap_or(0.0),
            ))
        })
        .collect()
}

/// One series' plot as an SVG element.
fn plot(s: &SeriesReport, variants: usize) -> anyhow::Result<String> {
    let shown = variants - 1;
    let points = thin(&s.trace);
    let (Some(first), Some(last)) = (s.trace.first(), s.trace.last()) else {
        return Ok("<p class=\"muted\">No point of this series in the range.</p>".into());
    };
    let span = (last.ts - first.ts).max(60_000);
    let x0 = first.ts;
    let x1 = last.ts + span / 50;
    // Forecasts within a quarter of the range past its end are drawn.
    let horizon = x1 + span / 4;
    // Chosen before they are parsed: a predictive series has a forecast at nearly every point.
    let with_forecast: Vec<_> = s
        .trace
        .iter()
        .filter(|_| s.predictive)
        .filter_map(|t| t.forecast.as_ref().map(|f| (t.ts, t.value, f)))
        .collect();
    let forecasts: Vec<Forecast> = spread(with_forecast, MAX_FORECASTS)
        .into_iter()
        .map(|(ts, v, f)| {
            let f = forecast_points(f);
            (
                ts,
                v,
                f.into_iter().filter(|p| p.0 <= horizon).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, _, f)| !f.is_empty())
        .collect();
    let x1 = forecasts
        .iter()
        .flat_map(|(_, _, f)| f.iter().map(|p| p.0))
        .fold(x1, i64::max);
    let mut ys: Vec<f64> = points.iter().map(|p| p.value).collect();
    ys.extend(
        points
            .iter()
            .filter_map(|p| p.band)
            .flat_map(|(a, b)| [a, b]),
    );
    // Forecasts do not widen the value axis: a steep or uncertain one reaches far beyond the
    // thresholds it is about and would squash the series to a flat line; they are cut at the
    // plot's edge.
    ys.extend(s.thresholds.iter().map(|t| t.value));
    let ys: Vec<f64> = ys.into_iter().filter(|y| y.is_finite()).collect();
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &y| (lo.min(y), hi.max(y)));
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let strip = (y1 - y0) * 0.05;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", s.series);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        let fmt_x = |ms: &i64| {
            let t = crate::tools::tail::format_ms(*ms);
            if span > 2 * 86_400_000 {
                t[5..16].to_string()
            } else {
                t[11..16].to_string()
            }
        };
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&fmt_x)
            .light_line_style(RGBColor(238, 240, 245))
            .draw()
            .map_err(|e| err(&e))?;
        // Alert spans of the shown variant, full height; the baseline's firing spans as a strip
        // along the bottom in diff mode.
        let pending = RGBColor(246, 211, 107).mix(0.45).filled();
        let firing = RGBColor(239, 143, 134).mix(0.45).filled();
        let baseline = RGBColor(122, 91, 199).mix(0.8).filled();
        for (v, a) in &s.alerts {
            let end = a.ends_at.unwrap_or(x1).min(x1);
            if *v == shown {
                let fired = a.fired_at.unwrap_or(end).min(end);
                // Only the phases it went through (most alerts that end pending never fire).
                let spans = [(a.starts_at, fired, pending), (fired, end, firing)];
                chart
                    .draw_series(
                        spans
                            .into_iter()
                            .filter(|(from, to, _)| from < to)
                            .map(|(from, to, style)| Rectangle::new([(from, y0), (to, y1)], style)),
                    )
                    .map_err(|e| err(&e))?;
            } else if let Some(fired) = a.fired_at {
                chart
                    .draw_series([Rectangle::new([(fired, y0), (end, y0 + strip)], baseline)])
                    .map_err(|e| err(&e))?;
            }
        }
        // The detectors' band, one polygon per run of points that have one.
        let band_style = RGBColor(158, 193, 238).mix(0.6).filled();
        let mut run: Vec<(i64, f64, f64)> = Vec::new();
        let mut runs = Vec::new();
        for p in &points {
            match p.band {
                Some((lo, hi)) if lo.is_finite() && hi.is_finite() => run.push((p.ts, lo, hi)),
                _ => runs.push(std::mem::take(&mut run)),
            }
        }
        runs.push(run);
        for r in runs.into_iter().filter(|r| r.len() > 1) {
            let mut poly: Vec<(i64, f64)> = r.iter().map(|&(t, _, hi)| (t, hi)).collect();
            poly.extend(r.iter().rev().map(|&(t, lo, _)| (t, lo)));
            chart
                .draw_series([Polygon::new(poly, band_style)])
                .map_err(|e| err(&e))?;
        }
        let red = RGBColor(179, 38, 30);
        for t in &s.thresholds {
            chart
                .draw_series(LineSeries::new(
                    [(x0, t.value), (x1, t.value)],
                    red.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            chart
                .draw_series([Text::new(
                    format!("{} ({})", t.rule, t.variant),
                    (x0 + (x1 - x0) / 100, t.value),
                    ("sans-serif", 11).into_font().color(&red),
                )])
                .map_err(|e| err(&e))?;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.ts, p.value)),
                RGBColor(31, 95, 191).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        let orange = RGBColor(217, 130, 43);
        for (ts, v, f) in &forecasts {
            let line = std::iter::once((*ts, *v)).chain(f.iter().map(|p| (p.0, p.1)));
            chart
                .draw_series(LineSeries::new(line, orange.stroke_width(2)))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(f.iter().map(|&(at, y, pm)| {
                    PathElement::new([(at, y - pm), (at, y + pm)], orange.stroke_width(1))
                }))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, value: f64) -> TracePoint {
        TracePoint {
            series: "s".into(),
            ts,
            value,
            score: 0.0,
            expected: None,
            band: None,
            forecast: None,
        }
    }

    fn alert(rule: &str, starts_at: i64, fired_at: Option<i64>, ends_at: Option<i64>) -> Alert {
        Alert {
            id: format!("{rule}-{starts_at}"),
            fingerprint: String::new(),
            rule: rule.into(),
            priority: Priority::P3,
            series: "s".into(),
            series_key: "s".into(),
            labels: BTreeMap::new(),
            starts_at,
            fired_at,
            ends_at,
            end_reason: None,
            peak: 0.0,
            receivers: Vec::new(),
        }
    }

    #[test]
    fn pages_and_open_alerts_are_listed_and_cancelled_pendings_counted_per_rule() {
        let s = SeriesReport {
            series: "s".into(),
            key: "s".into(),
            alerts: vec![
                (0, alert("cpu", 100, None, Some(150))),
                (0, alert("cpu", 300, Some(330), Some(400))),
                (0, alert("cpu", 500, None, Some(520))),
                (0, alert("cpu", 50, None, Some(60))),
                (1, alert("cpu", 500, None, Some(520))),
                (0, alert("disk", 600, None, None)),
            ],
            thresholds: Vec::new(),
            predictive: false,
            trace: Vec::new(),
        };
        let l = AlertList::of(&s);
        let listed: Vec<(usize, &str, i64)> = l
            .listed
            .iter()
            .map(|(v, a)| (*v, a.rule.as_str(), a.starts_at))
            .collect();
        assert_eq!(listed, [(0, "cpu", 300), (0, "disk", 600)]);
        let cancelled: Vec<(usize, &str, usize, i64, i64)> = l
            .cancelled
            .iter()
            .map(|c| (c.variant, c.rule, c.count, c.first, c.last))
            .collect();
        assert_eq!(cancelled, [(0, "cpu", 3, 50, 500), (1, "cpu", 1, 500, 500)]);
    }

    #[test]
    fn forecasts_are_spread_evenly_and_the_newest_is_kept() {
        assert_eq!(spread(vec![1, 2, 3], 40), [1, 2, 3]);
        let kept = spread((0..5_000).collect(), 40);
        assert_eq!(kept.len(), 40);
        assert_eq!((kept[0], kept[39]), (0, 4_999));
        let gaps: Vec<i32> = kept.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (127..=129).contains(g)), "{gaps:?}");
        assert_eq!(spread((0..41).collect(), 40).len(), 40);
    }

    #[test]
    fn long_series_keep_each_buckets_extremes_in_time_order() {
        let short: Vec<_> = (0..10).map(|i| point(i, i as f64)).collect();
        assert_eq!(thin(&short).len(), 10);
        // A spike and a dip inside otherwise flat data survive the thinning.
        let long: Vec<_> = (0..100_000)
            .map(|i| {
                point(
                    i,
                    if i == 54_321 {
                        99.0
                    } else if i == 7 {
                        -5.0
                    } else {
                        1.0
                    },
                )
            })
            .collect();
        let kept = thin(&long);
        assert!(kept.len() <= MAX_DRAWN + 2, "{}", kept.len());
        assert!(kept.iter().any(|p| p.value == 99.0 && p.ts == 54_321));
        assert!(kept.iter().any(|p| p.value == -5.0));
        assert!(kept.windows(2).all(|w| w[0].ts < w[1].ts));
    }
}

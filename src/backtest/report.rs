//! A backtest's results as data (`--json`) and as a table for the terminal; the HTML page is
//! drawn from the same [`Report`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::diff::{diff, Diff};
use super::summary::{alerts_of, summarize, Alert, Summary};
use super::{Evaluated, Variant};
use crate::model::Priority;
use crate::pipeline::TracePoint;
use crate::rules::Field;

#[derive(Debug, Serialize)]
pub struct VariantReport {
    pub name: String,
    pub source: String,
    pub rules: usize,
    pub summary: Summary,
    pub alerts: Vec<Alert>,
}

/// A threshold line to draw on a series' plot.
#[derive(Debug, Clone, Serialize)]
pub struct Threshold {
    pub variant: String,
    pub rule: String,
    pub value: f64,
}

/// One alerted series, with what the plot shows.
#[derive(Debug, Serialize)]
pub struct SeriesReport {
    pub series: String,
    #[serde(skip)]
    pub key: Arc<str>,
    /// Its alerts, by variant index.
    pub alerts: Vec<(usize, Alert)>,
    pub thresholds: Vec<Threshold>,
    /// Whether a predictive rule alerted on it (its plot shows the forecasts).
    pub predictive: bool,
    /// Its points as the shown variant scored them (filled by the trace pass; not in JSON).
    #[serde(skip)]
    pub trace: Vec<TracePoint>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub history: String,
    pub messages: u64,
    pub points: u64,
    pub rejected_points: u64,
    pub subject_filters: Vec<String>,
    pub label_filters: Vec<String>,
    pub variants: Vec<VariantReport>,
    /// The candidate (second variant) against the baseline (first).
    pub diff: Option<Diff>,
    /// The series the report plots, most changed and noisiest first.
    pub series: Vec<SeriesReport>,
    /// Alerted series not plotted (over `--plots`).
    pub series_not_plotted: usize,
}

impl Report {
    pub fn build(
        history: String,
        filters: (Vec<String>, Vec<String>),
        variants: &[Variant],
        evaluated: &Evaluated,
        plots: usize,
    ) -> Report {
        let reports: Vec<VariantReport> = variants
            .iter()
            .zip(&evaluated.events)
            .map(|(v, events)| {
                let alerts = alerts_of(events, &v.routing);
                VariantReport {
                    name: v.name.clone(),
                    source: v.source.clone(),
                    rules: v.rules.rules.len(),
                    summary: summarize(&alerts),
                    alerts,
                }
            })
            .collect();
        let diff = (reports.len() > 1).then(|| diff(&reports[0].alerts, &reports[1].alerts));
        let (series, not_plotted) = pick_series(&reports, diff.as_ref(), variants, plots);
        Report {
            history,
            messages: evaluated.messages,
            points: evaluated.points,
            rejected_points: evaluated.rejected_points,
            subject_filters: filters.0,
            label_filters: filters.1,
            variants: reports,
            diff,
            series,
            series_not_plotted: not_plotted,
        }
    }

    /// The series whose points the plots need.
    pub fn plotted_keys(&self) -> HashSet<Arc<str>> {
        self.series.iter().map(|s| s.key.clone()).collect()
    }

    /// Fills the plots' points from a trace pass.
    pub fn attach_traces(&mut self, mut traces: BTreeMap<Arc<str>, Vec<TracePoint>>) {
        for s in &mut self.series {
            s.trace = traces.remove(&s.key).unwrap_or_default();
        }
    }

    /// The report as a few lines for the terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "backtest of {}: {} messages, {} points ({} rejected or late)",
            self.history, self.messages, self.points, self.rejected_points
        );
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>13} {:>5} {:>5} {:>5} {:>5}",
            "", "pages", "pending-only", "P1", "P2", "P3", "P4"
        );
        for v in &self.variants {
            let per = |p: Priority| -> u64 {
                v.summary
                    .pages_per_priority
                    .get(&p.to_string())
                    .copied()
                    .unwrap_or(0)
            };
            let _ = writeln!(
                out,
                "{:<12} {:>7} {:>13} {:>5} {:>5} {:>5} {:>5}",
                v.name,
                v.summary.pages,
                v.summary.pending_only,
                per(Priority::P1),
                per(Priority::P2),
                per(Priority::P3),
                per(Priority::P4)
            );
        }
        for v in &self.variants {
            if !v.summary.noisiest.is_empty() {
                let top: Vec<String> = v
                    .summary
                    .noisiest
                    .iter()
                    .take(5)
                    .map(|(r, n)| format!("{r} ({n})"))
                    .collect();
                let _ = writeln!(out, "noisiest rules ({}): {}", v.name, top.join(", "));
            }
        }
        if let Some(d) = &self.diff {
            let _ = writeln!(
                out,
                "candidate vs baseline: {} pages added, {} removed, {} earlier, {} later, {} priority changed, {} unchanged",
                d.added.len(),
                d.removed.len(),
                d.earlier.len(),
                d.later.len(),
                d.priority_changed.len(),
                d.unchanged
            );
        }
        out
    }
}

/// The alerted series to plot: those the diff touches first, then by pages and alerts.
fn pick_series(
    reports: &[VariantReport],
    diff: Option<&Diff>,
    variants: &[Variant],
    limit: usize,
) -> (Vec<SeriesReport>, usize) {
    let mut by_series: BTreeMap<Arc<str>, SeriesReport> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        for a in &r.alerts {
            let s = by_series
                .entry(a.series_key.clone())
                .or_insert_with(|| SeriesReport {
                    series: a.series.clone(),
                    key: a.series_key.clone(),
                    alerts: Vec::new(),
                    thresholds: Vec::new(),
                    predictive: false,
                    trace: Vec::new(),
                });
            s.alerts.push((i, a.clone()));
            let rule = variants[i].rules.rules.iter().find(|r| r.name == a.rule);
            s.predictive |= rule.is_some_and(|r| r.predict_within_ms.is_some());
            if let Some(rule) = rule.filter(|r| r.condition.field == Field::Value) {
                let t = Threshold {
                    variant: variants[i].name.clone(),
                    rule: rule.name.clone(),
                    value: rule.condition.threshold,
                };
                if !s
                    .thresholds
                    .iter()
                    .any(|x| x.rule == t.rule && x.value == t.value)
                {
                    s.thresholds.push(t);
                }
            }
        }
    }
    let changed: HashSet<&str> = diff
        .map(|d| {
            d.added
                .iter()
                .chain(&d.removed)
                .map(|a| a.series.as_str())
                .chain(d.earlier.iter().chain(&d.later).map(|s| s.series.as_str()))
                .chain(d.priority_changed.iter().map(|p| p.series.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let mut all: Vec<SeriesReport> = by_series.into_values().collect();
    let rank = |s: &SeriesReport| {
        let pages = s.alerts.iter().filter(|(_, a)| a.paged()).count();
        (
            !changed.contains(s.series.as_str()),
            std::cmp::Reverse(pages),
            std::cmp::Reverse(s.alerts.len()),
        )
    };
    all.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.series.cmp(&b.series)));
    let not_plotted = all.len().saturating_sub(limit);
    all.truncate(limit);
    (all, not_plotted)
}

//! Service level objectives as written in rule files (`slos: [...]`), compiled, and the
//! multi-window, multi-burn-rate alert rules generated from each objective (Google's SRE
//! workbook, chapter 5: page at 14.4x over 1 h and 5 m and at 6x over 6 h and 30 m, ticket at 1x
//! over 3 d and 6 h).
//!
//! An SLO's burn rates are series the pipeline derives (see `crate::slo`); the generated rules
//! watch them like any other series, so `for`, routing, silences, backtests and the API treat
//! SLO alerts as they treat every alert.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Condition, Matcher, RuleDef};
use crate::model::Priority;
use crate::subjects;

/// Series an SLO derives: every one carries `slo`, `objective` (except `slo_score`) and the
/// SLO's `group_by` labels.
pub mod series {
    /// Burn rate over one window (`window` label): the share of bad events in the window over
    /// the share the objective allows (1 = spending the budget exactly over the period).
    pub const BURN_RATE: &str = "slo_burn_rate";
    /// The lower of a burn alert's two windows' burn rates (`alert` label): the alert's rule
    /// holds when it reaches the alert's factor.
    pub const MULTIWINDOW_BURN_RATE: &str = "slo_multiwindow_burn_rate";
    /// Share of the period's error budget left: 1 untouched, 0 spent, below 0 overspent.
    pub const ERROR_BUDGET_REMAINING: &str = "slo_error_budget_remaining";
    /// 0-100: the worst objective's `100 × clamp(1 − burn(page long window) / page factor)`.
    pub const SCORE: &str = "slo_score";
}

/// Where an SLI's points come from: a metric and label matchers (on top of the SLO's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorDef {
    pub metric: String,
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
}

/// How an objective counts good and total events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SliDef {
    /// Every sample of a value or status series is one event, good when `good` holds
    /// (`value <= 500` for latency from a value series, `value == 1` for a status metric).
    Samples {
        metric: String,
        #[serde(default, rename = "match")]
        matchers: BTreeMap<String, String>,
        good: String,
    },
    /// Every sample is one event whose bad share is the sample's value in percent (an error-rate
    /// series such as `api_error_rate_percent`).
    ErrorPercent {
        metric: String,
        #[serde(default, rename = "match")]
        matchers: BTreeMap<String, String>,
    },
    /// Monotonic counters: events are their increases (a drop is a counter reset). `total` and
    /// one of `good` or `bad`.
    Counters {
        #[serde(default)]
        good: Option<SelectorDef>,
        #[serde(default)]
        bad: Option<SelectorDef>,
        total: SelectorDef,
    },
    /// A Prometheus histogram's cumulative bucket counters: good is the bucket `le` (e.g.
    /// `"0.5"`), total the `+Inf` bucket.
    Histogram {
        metric: String,
        #[serde(default, rename = "match")]
        matchers: BTreeMap<String, String>,
        le: String,
    },
}

/// One objective of an SLO.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveDef {
    /// Share of good events the objective promises over the period, in percent (e.g. 99.9).
    pub target_percent: f64,
    pub sli: SliDef,
}

/// A multi-window burn-rate alert: it holds while the burn rate over both windows is at least
/// `factor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnAlertDef {
    /// `page`, `ticket`...: a subject token, part of the generated rule's name.
    pub name: String,
    /// The long window (e.g. `1h`): how much budget was spent.
    pub long: String,
    /// The short window (e.g. `5m`): is it still being spent (the alert resolves soon after the
    /// burn stops).
    pub short: String,
    pub factor: f64,
    pub priority: Priority,
}

/// An SLO as written in a rule file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloDef {
    /// A subject token, unique among SLOs; the `slo` label of its series and alerts.
    pub name: String,
    /// Label matchers every SLI series must match (`service: api-gateway`).
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// One SLO per distinct value of these labels (e.g. `[exchange]`): each group has its own
    /// budget, burn rates and alerts.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The period the error budget is counted over, in days.
    #[serde(default = "default_period_days")]
    pub period_days: u32,
    /// Weight of this SLO's score in the overall experience score.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Added to the labels of its alerts (e.g. `team`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Runbook link put on its alerts.
    #[serde(default)]
    pub runbook: Option<String>,
    /// The burn-rate alerts; default: the SRE workbook's three.
    #[serde(default = "default_burn_alerts")]
    pub burn_alerts: Vec<BurnAlertDef>,
    /// Objectives by name (`availability`, `latency`, `errors`...: subject tokens).
    pub objectives: BTreeMap<String, ObjectiveDef>,
}

fn default_period_days() -> u32 {
    30
}

fn default_weight() -> f64 {
    1.0
}

/// The SRE workbook's multi-window, multi-burn-rate alerts for a 30-day budget: 2 % of it spent
/// in an hour pages (P1), 5 % in six hours pages less urgently (P2), 10 % in three days opens a
/// ticket (P3).
pub fn default_burn_alerts() -> Vec<BurnAlertDef> {
    let alert = |name: &str, long: &str, short: &str, factor: f64, priority| BurnAlertDef {
        name: name.into(),
        long: long.into(),
        short: short.into(),
        factor,
        priority,
    };
    vec![
        alert("page", "1h", "5m", 14.4, Priority::P1),
        alert("page_slow", "6h", "30m", 6.0, Priority::P2),
        alert("ticket", "3d", "6h", 1.0, Priority::P3),
    ]
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<(String, Matcher)>,
}

/// A compiled SLI.
#[derive(Debug, Clone)]
pub enum Sli {
    Samples {
        series: Selector,
        good: Condition,
    },
    ErrorPercent {
        series: Selector,
    },
    /// Increases of `total` count as total events; of `good` as good ones, of `bad` as bad ones.
    Counters {
        good: Option<Selector>,
        bad: Option<Selector>,
        total: Selector,
    },
}

/// What a series' points mean to an objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sample,
    ErrorPercent,
    GoodCounter,
    BadCounter,
    TotalCounter,
}

impl Sli {
    /// The selectors of the SLI and what their points mean.
    pub fn selectors(&self) -> Vec<(&Selector, Role)> {
        match self {
            Sli::Samples { series, .. } => vec![(series, Role::Sample)],
            Sli::ErrorPercent { series } => vec![(series, Role::ErrorPercent)],
            Sli::Counters { good, bad, total } => {
                let mut out = vec![(total, Role::TotalCounter)];
                out.extend(good.iter().map(|s| (s, Role::GoodCounter)));
                out.extend(bad.iter().map(|s| (s, Role::BadCounter)));
                out
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Objective {
    pub name: String,
    /// Share of good events promised (0.999).
    pub target: f64,
    pub sli: Sli,
}

#[derive(Debug, Clone)]
pub struct BurnAlert {
    pub name: String,
    pub long_ms: i64,
    pub short_ms: i64,
    pub factor: f64,
    pub priority: Priority,
}

/// A compiled SLO.
#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    pub matchers: Vec<(String, Matcher)>,
    pub group_by: Vec<String>,
    pub period_ms: i64,
    pub weight: f64,
    pub objectives: Vec<Objective>,
    pub alerts: Vec<BurnAlert>,
    /// Every window of its alerts, shortest first (the `window` label of `slo_burn_rate`).
    pub windows_ms: Vec<i64>,
    /// The file it came from.
    pub source: String,
    pub def: SloDef,
}

pub const MINUTE_MS: i64 = 60_000;

impl Slo {
    /// Compiles a definition; errors are `(key, message)` relative to the SLO.
    pub fn compile(def: &SloDef, source: &str) -> Result<Slo, (String, String)> {
        let token = |key: &str, v: &str| {
            if subjects::is_token(v) {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("{v:?} must match [A-Za-z0-9_-]+ (it names generated rules)"),
                ))
            }
        };
        token("name", &def.name)?;
        let matchers = compile_matchers("match", &def.matchers)?;
        if let Some(l) = def
            .group_by
            .iter()
            .find(|l| ["slo", "objective", "alert", "window"].contains(&l.as_str()) || l.is_empty())
        {
            return Err((
                "group_by".into(),
                format!("{l:?} names a label of the SLO's own series"),
            ));
        }
        if def.period_days == 0 {
            return Err(("period_days".into(), "must be at least 1".into()));
        }
        if !(def.weight.is_finite() && def.weight >= 0.0) {
            return Err(("weight".into(), "must be a number >= 0".into()));
        }
        if def.objectives.is_empty() {
            return Err(("objectives".into(), "an SLO needs an objective".into()));
        }
        let mut objectives = Vec::new();
        for (name, o) in &def.objectives {
            let key = format!("objectives.{name}");
            token(&key, name)?;
            if !(o.target_percent > 0.0 && o.target_percent < 100.0) {
                return Err((
                    format!("{key}.target_percent"),
                    format!(
                        "{} must be above 0 and below 100 (100 % leaves no error budget)",
                        o.target_percent
                    ),
                ));
            }
            objectives.push(Objective {
                name: name.clone(),
                target: o.target_percent / 100.0,
                sli: compile_sli(&format!("{key}.sli"), &o.sli)?,
            });
        }
        if def.burn_alerts.is_empty() {
            return Err(("burn_alerts".into(), "needs at least one alert".into()));
        }
        let mut alerts = Vec::new();
        for (i, a) in def.burn_alerts.iter().enumerate() {
            let key = format!("burn_alerts[{i}]");
            token(&format!("{key}.name"), &a.name)?;
            let window = |k: &str, s: &str| -> Result<i64, (String, String)> {
                let ms = humantime::parse_duration(s)
                    .map(|d| d.as_millis() as i64)
                    .map_err(|e| (format!("{key}.{k}"), format!("{s:?}: {e}")))?;
                if ms < MINUTE_MS || ms % MINUTE_MS != 0 {
                    return Err((
                        format!("{key}.{k}"),
                        format!("{s:?} must be whole minutes (burn rates are counted per minute)"),
                    ));
                }
                Ok(ms)
            };
            let (long_ms, short_ms) = (window("long", &a.long)?, window("short", &a.short)?);
            if short_ms > long_ms {
                return Err((
                    format!("{key}.short"),
                    "the short window must not be longer than the long one".into(),
                ));
            }
            if !(a.factor.is_finite() && a.factor > 0.0) {
                return Err((format!("{key}.factor"), "must be a number > 0".into()));
            }
            if alerts.iter().any(|b: &BurnAlert| b.name == a.name) {
                return Err((format!("{key}.name"), format!("{:?} appears twice", a.name)));
            }
            alerts.push(BurnAlert {
                name: a.name.clone(),
                long_ms,
                short_ms,
                factor: a.factor,
                priority: a.priority,
            });
        }
        let mut windows_ms: Vec<i64> = alerts
            .iter()
            .flat_map(|a| [a.long_ms, a.short_ms])
            .collect();
        windows_ms.sort_unstable();
        windows_ms.dedup();
        Ok(Slo {
            name: def.name.clone(),
            matchers,
            group_by: def.group_by.clone(),
            period_ms: def.period_days as i64 * 86_400_000,
            weight: def.weight,
            objectives,
            alerts,
            windows_ms,
            source: source.to_string(),
            def: def.clone(),
        })
    }

    /// The longest window, in minutes: how much per-minute history a group keeps.
    pub fn longest_window_minutes(&self) -> usize {
        (self.windows_ms.last().copied().unwrap_or(MINUTE_MS) / MINUTE_MS) as usize
    }

    /// The rules that watch this SLO's multi-window burn rates: one per objective and alert,
    /// named `slo_<slo>_<objective>_<alert>`.
    pub fn generated_rules(&self) -> Vec<RuleDef> {
        let mut out = Vec::new();
        for o in &self.objectives {
            for a in &self.alerts {
                let mut matchers = BTreeMap::new();
                matchers.insert("slo".to_string(), self.name.clone());
                matchers.insert("objective".to_string(), o.name.clone());
                matchers.insert("alert".to_string(), a.name.clone());
                let mut labels = self.def.labels.clone();
                labels.insert(
                    "severity".into(),
                    if a.priority <= Priority::P2 {
                        "page"
                    } else {
                        "ticket"
                    }
                    .into(),
                );
                let budget_share = a.factor * a.long_ms as f64 / self.period_ms as f64 * 100.0;
                let group = self
                    .group_by
                    .iter()
                    .map(|l| format!(" {{{{ labels.{l} }}}}"))
                    .collect::<String>();
                let windows = format!(
                    "{} and {}",
                    window_label(a.long_ms),
                    window_label(a.short_ms)
                );
                let mut annotations = BTreeMap::new();
                annotations.insert(
                    "summary".into(),
                    format!(
                        "SLO {}{group} {}: error budget burning {{{{ value }}}}x over {windows} (alert at {}x: {:.1} % of the {}-day budget in {})",
                        self.name,
                        o.name,
                        a.factor,
                        budget_share,
                        self.def.period_days,
                        window_label(a.long_ms),
                    ),
                );
                annotations.insert(
                    "summary_resolved".into(),
                    format!(
                        "SLO {}{group} {}: burn back to {{{{ value }}}}x over {windows} after {{{{ duration }}}} (peak {{{{ peak }}}}x)",
                        self.name, o.name
                    ),
                );
                annotations.insert(
                    "description".into(),
                    format!(
                        "Objective {:.3} % good events over {} days. Budget left and burn rates: series {} and {} with slo={}, objective={}.",
                        o.target * 100.0,
                        self.def.period_days,
                        series::ERROR_BUDGET_REMAINING,
                        series::BURN_RATE,
                        self.name,
                        o.name
                    ),
                );
                if let Some(r) = &self.def.runbook {
                    annotations.insert("runbook".into(), r.clone());
                }
                out.push(RuleDef {
                    name: format!("slo_{}_{}_{}", self.name, o.name, a.name),
                    metric: series::MULTIWINDOW_BURN_RATE.into(),
                    matchers,
                    condition: format!("value >= {}", a.factor),
                    for_duration: None,
                    resolve_after: None,
                    predicted_crossing_within: None,
                    grades: None,
                    priority: Some(a.priority),
                    labels,
                    annotations,
                });
            }
        }
        out
    }
}

/// `5m`, `1h`, `3d`: a window as its `window` label says it.
pub fn window_label(ms: i64) -> String {
    let m = ms / MINUTE_MS;
    if m % 1440 == 0 {
        format!("{}d", m / 1440)
    } else if m % 60 == 0 {
        format!("{}h", m / 60)
    } else {
        format!("{m}m")
    }
}

fn compile_matchers(
    key: &str,
    defs: &BTreeMap<String, String>,
) -> Result<Vec<(String, Matcher)>, (String, String)> {
    defs.iter()
        .map(|(l, m)| {
            Matcher::parse(m)
                .map(|m| (l.clone(), m))
                .map_err(|e| (format!("{key}.{l}"), e))
        })
        .collect()
}

fn selector(
    key: &str,
    metric: &str,
    matchers: &BTreeMap<String, String>,
) -> Result<Selector, (String, String)> {
    if metric.is_empty() || metric.starts_with(['=', '!']) {
        return Err((
            format!("{key}.metric"),
            "an SLI's metric is an exact name".into(),
        ));
    }
    Ok(Selector {
        metric: metric.to_string(),
        matchers: compile_matchers(&format!("{key}.match"), matchers)?,
    })
}

fn compile_sli(key: &str, def: &SliDef) -> Result<Sli, (String, String)> {
    Ok(match def {
        SliDef::Samples {
            metric,
            matchers,
            good,
        } => {
            let k = format!("{key}.samples");
            let good_cond = Condition::parse(good).map_err(|m| (format!("{k}.good"), m))?;
            if good_cond.field != super::Field::Value {
                return Err((
                    format!("{k}.good"),
                    "a sample is good by its value: `value <op> <number>`".into(),
                ));
            }
            Sli::Samples {
                series: selector(&k, metric, matchers)?,
                good: good_cond,
            }
        }
        SliDef::ErrorPercent { metric, matchers } => Sli::ErrorPercent {
            series: selector(&format!("{key}.error_percent"), metric, matchers)?,
        },
        SliDef::Counters { good, bad, total } => {
            let k = format!("{key}.counters");
            if good.is_some() == bad.is_some() {
                return Err((k, "needs `total` and exactly one of `good` or `bad`".into()));
            }
            let sel = |name: &str, s: &SelectorDef| {
                selector(&format!("{k}.{name}"), &s.metric, &s.matchers)
            };
            Sli::Counters {
                good: good.as_ref().map(|s| sel("good", s)).transpose()?,
                bad: bad.as_ref().map(|s| sel("bad", s)).transpose()?,
                total: sel("total", total)?,
            }
        }
        SliDef::Histogram {
            metric,
            matchers,
            le,
        } => {
            let k = format!("{key}.histogram");
            if matchers.contains_key("le") {
                return Err((format!("{k}.match.le"), "give the bucket as `le`".into()));
            }
            let bucket = |v: &str| {
                let mut m = matchers.clone();
                m.insert("le".into(), v.to_string());
                selector(&k, metric, &m)
            };
            Sli::Counters {
                good: Some(bucket(le)?),
                bad: None,
                total: bucket("+Inf")?,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(yaml: &str) -> Result<Slo, (String, String)> {
        let tree = crate::config::yaml::parse_yaml("t.yaml", yaml).unwrap();
        let def: SloDef = crate::config::yaml::from_tree("t.yaml", tree).unwrap();
        Slo::compile(&def, "t.yaml")
    }

    #[test]
    fn defaults_are_the_workbooks_alerts_and_rules_are_generated_per_objective_and_alert() {
        let s = slo("name: api\nobjectives:\n  errors:\n    target_percent: 99.9\n    sli: { error_percent: { metric: err } }\n  latency:\n    target_percent: 99\n    sli: { samples: { metric: lat, good: value <= 500 } }\n").unwrap();
        assert_eq!(
            s.windows_ms
                .iter()
                .map(|w| window_label(*w))
                .collect::<Vec<_>>(),
            ["5m", "30m", "1h", "6h", "3d"]
        );
        let rules = s.generated_rules();
        assert_eq!(rules.len(), 6);
        assert_eq!(rules[0].name, "slo_api_errors_page");
        assert_eq!(rules[0].condition, "value >= 14.4");
        assert_eq!(rules[0].priority, Some(Priority::P1));
        assert_eq!(rules[0].labels["severity"], "page");
        assert_eq!(rules[2].name, "slo_api_errors_ticket");
        assert_eq!(rules[2].labels["severity"], "ticket");
        // 14.4 × 1 h of a 30-day period is 2 % of the budget.
        assert!(rules[0].annotations["summary"].contains("2.0 % of the 30-day budget in 1h"));
        for r in &rules {
            super::super::Rule::compile(r, "t.yaml").unwrap();
        }
    }

    #[test]
    fn bad_definitions_name_the_key() {
        let base = "name: api\nobjectives:\n  errors:\n    target_percent: 99.9\n    sli: { error_percent: { metric: err } }\n";
        let err = |y: &str| slo(y).unwrap_err().0;
        assert_eq!(
            err(&base.replace("99.9", "100")),
            "objectives.errors.target_percent"
        );
        assert_eq!(err(&base.replace("name: api", "name: a.b")), "name");
        assert_eq!(
            err(&format!(
                "{base}burn_alerts: [{{name: p, long: 90s, short: 1m, factor: 2, priority: P1}}]"
            )),
            "burn_alerts[0].long"
        );
        assert_eq!(
            err(&format!(
                "{base}burn_alerts: [{{name: p, long: 5m, short: 1h, factor: 2, priority: P1}}]"
            )),
            "burn_alerts[0].short"
        );
        assert_eq!(
            err(&base.replace(
                "{ error_percent: { metric: err } }",
                "{ counters: { total: { metric: t } } }"
            )),
            "objectives.errors.sli.counters"
        );
        assert_eq!(
            err(&base.replace(
                "{ error_percent: { metric: err } }",
                "{ samples: { metric: l, good: score > 1 } }"
            )),
            "objectives.errors.sli.samples.good"
        );
    }

    #[test]
    fn a_histogram_is_its_le_bucket_over_the_inf_bucket() {
        let s = slo("name: api\nobjectives:\n  latency:\n    target_percent: 99\n    sli: { histogram: { metric: req_bucket, le: \"0.5\" } }\n").unwrap();
        let Sli::Counters { good, bad, total } = &s.objectives[0].sli else {
            panic!("counters")
        };
        assert!(bad.is_none());
        assert!(good.as_ref().unwrap().matchers[0].1.matches(Some("0.5")));
        assert!(total.matchers[0].1.matches(Some("+Inf")));
    }
}

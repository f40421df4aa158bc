//! Rule files (`config/rules/*.yaml`) and their compiled form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::slo::{Slo, SloDef};
use super::{Condition, Template};
use crate::config::yaml::{from_tree, parse_yaml, ConfigError};
use crate::model::{Priority, SeriesKey};
use crate::subjects;

/// Where rules come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Folders (or single files) of `*.yaml` rule files, loaded in name order. The default,
    /// `config/rules`, falls back to the rules built into the binary when it is not found.
    pub paths: Vec<PathBuf>,
    /// Run without any rule (else an empty rule set is an error: a typo in a path must not
    /// silently watch nothing).
    pub allow_empty: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            paths: vec![PathBuf::from(crate::config::builtin::RULES_PATH)],
            allow_empty: false,
        }
    }
}

/// One rule file: `rules: [...]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rules: Vec<RuleDef>,
    /// Service level objectives; each adds the burn-rate rules generated from it.
    #[serde(default)]
    pub slos: Vec<SloDef>,
}

/// A rule as written in YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Unique name; a subject token (`[A-Za-z0-9_-]+`), used in `prism.alerts.<p>.<status>.<rule>`.
    pub name: String,
    /// Metric name: exact, or a matcher (`=~regex`, `!=name`, `!~regex`).
    pub metric: String,
    /// Label matchers: `label: value` (exact), `"=~regex"`, `"!=value"`, `"!~regex"`.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// `<value|score|zscore> <op> <number>`.
    pub condition: String,
    /// How long the condition must hold before the alert fires (e.g. `5m`); 0 fires at once.
    #[serde(default, rename = "for")]
    pub for_duration: Option<String>,
    /// How long the condition must be false before a firing alert resolves; default 0.
    #[serde(default)]
    pub resolve_after: Option<String>,
    /// Predictive rule: the condition also holds when the trend forecast crosses the
    /// condition's threshold within this time (e.g. `6h`). Needs a `value > | >= | < | <=`
    /// condition and the `anomaly` operator.
    #[serde(default)]
    pub predicted_crossing_within: Option<String>,
    /// Predictive rule graded by time to failure: one rule per grade, `<name>_p1` ... , each
    /// holding while the predicted crossing is within its horizon and beyond the previous
    /// grade's (e.g. `{P1: 6h, P2: 1d, P3: 3d, P4: 7d}`); the first grade also holds once the
    /// value has crossed. Replaces `predicted_crossing_within` and `priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grades: Option<BTreeMap<Priority, String>>,
    /// P1 (page now) to P4 (not with `grades`).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Extra labels on the alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Templated annotations (see README: placeholders).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A label (or metric name) matcher.
#[derive(Debug, Clone)]
pub enum Matcher {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let anchored = |re: &str| {
            Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("bad regex {re:?}: {e}"))
        };
        Ok(if let Some(re) = s.strip_prefix("=~") {
            Matcher::Re(anchored(re)?)
        } else if let Some(re) = s.strip_prefix("!~") {
            Matcher::NotRe(anchored(re)?)
        } else if let Some(v) = s.strip_prefix("!=") {
            Matcher::Ne(v.to_string())
        } else {
            Matcher::Eq(s.strip_prefix('=').unwrap_or(s).to_string())
        })
    }

    /// `None` is an absent label, which matches like the empty string (as in Prometheus).
    pub fn matches(&self, v: Option<&str>) -> bool {
        let v = v.unwrap_or("");
        match self {
            Matcher::Eq(x) => v == x,
            Matcher::Ne(x) => v != x,
            Matcher::Re(r) => r.is_match(v),
            Matcher::NotRe(r) => !r.is_match(v),
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub metric: Matcher,
    pub matchers: Vec<(String, Matcher)>,
    pub condition: Condition,
    pub for_ms: i64,
    pub resolve_after_ms: i64,
    /// For predictive rules: horizon of the forecast crossing, in ms.
    pub predict_within_ms: Option<i64>,
    /// For the grades of a graded rule after the first: the crossing must be predicted later
    /// than this (the previous grade's horizon), in ms.
    pub predict_after_ms: Option<i64>,
    /// For predictive rules: the rule as written (a graded rule's grades share it), under which
    /// unpredicted crossings (misses) are counted.
    pub family: Option<String>,
    pub priority: Priority,
    pub labels: BTreeMap<String, String>,
    pub annotations: Vec<(String, Template)>,
    /// File the rule came from, for messages.
    pub source: String,
    /// The SLO that generated it, if one did.
    pub slo: Option<String>,
    /// The rule as written (what the API shows).
    pub def: RuleDef,
}

impl Rule {
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.metric.matches(Some(key.name()))
            && self.matchers.iter().all(|(l, m)| m.matches(key.label(l)))
    }

    /// Compiles a definition; errors are `(key, message)` relative to the rule.
    pub fn compile(def: &RuleDef, source: &str) -> Result<Rule, (String, String)> {
        if !subjects::is_token(&def.name) {
            return Err((
                "name".into(),
                format!(
                    "{:?} must match [A-Za-z0-9_-]+ (it is a subject token)",
                    def.name
                ),
            ));
        }
        let metric = Matcher::parse(&def.metric).map_err(|m| ("metric".to_string(), m))?;
        let mut matchers = Vec::new();
        for (label, m) in &def.matchers {
            matchers.push((
                label.clone(),
                Matcher::parse(m).map_err(|e| (format!("match.{label}"), e))?,
            ));
        }
        let condition =
            Condition::parse(&def.condition).map_err(|m| ("condition".to_string(), m))?;
        let duration = |key: &str, v: &Option<String>| -> Result<i64, (String, String)> {
            match v {
                None => Ok(0),
                Some(s) => humantime::parse_duration(s)
                    .map(|d| d.as_millis() as i64)
                    .map_err(|e| {
                        (
                            key.to_string(),
                            format!("{s:?} is not a duration like 30s, 5m, 1h: {e}"),
                        )
                    }),
            }
        };
        let predict_within_ms = match &def.predicted_crossing_within {
            None => None,
            Some(s) => {
                let ms = duration("predicted_crossing_within", &Some(s.clone()))?;
                let ok = condition.field == super::Field::Value
                    && matches!(
                        condition.op,
                        super::Op::Gt | super::Op::Ge | super::Op::Lt | super::Op::Le
                    );
                if !ok || ms <= 0 {
                    return Err((
                        "predicted_crossing_within".into(),
                        "needs a positive duration and a `value > | >= | < | <= <threshold>` condition".into(),
                    ));
                }
                Some(ms)
            }
        };
        let mut annotations = Vec::new();
        for (k, src) in &def.annotations {
            annotations.push((
                k.clone(),
                Template::compile(src).map_err(|m| (format!("annotations.{k}"), m))?,
            ));
        }
        Ok(Rule {
            name: def.name.clone(),
            metric,
            matchers,
            condition,
            for_ms: duration("for", &def.for_duration)?,
            resolve_after_ms: duration("resolve_after", &def.resolve_after)?,
            predict_within_ms,
            predict_after_ms: None,
            family: predict_within_ms.map(|_| def.name.clone()),
            priority: def.priority.ok_or_else(|| {
                (
                    "priority".to_string(),
                    "needed: P1 (page now) to P4".to_string(),
                )
            })?,
            labels: def.labels.clone(),
            annotations,
            source: source.to_string(),
            slo: None,
            def: def.clone(),
        })
    }
}

/// Every loaded rule, in load order (a rule's index is its identity inside the pipeline).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// The SLOs, in load order (their generated rules are in `rules`).
    pub slos: Vec<Slo>,
}

impl RuleSet {
    /// Indices of the rules that apply to a series.
    pub fn matching(&self, key: &SeriesKey) -> Vec<u32> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(key))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Parses one rule file's text.
    pub fn add_file(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        let tree = parse_yaml(file, text)?;
        let parsed: RuleFile = from_tree(file, tree)?;
        for (i, def) in parsed.rules.iter().enumerate() {
            let invalid =
                |(k, m): (String, String)| ConfigError::invalid(file, format!("rules[{i}].{k}"), m);
            for (graded, after_ms) in expand_grades(def).map_err(invalid)? {
                let mut rule = Rule::compile(&graded, file).map_err(invalid)?;
                if def.grades.is_some() {
                    rule.predict_after_ms = after_ms;
                    rule.family = Some(def.name.clone());
                }
                if let Some(prev) = self.rules.iter().find(|r| r.name == rule.name) {
                    return Err(ConfigError::invalid(
                        file,
                        format!("rules[{i}].name"),
                        format!("rule {:?} is already defined in {}", rule.name, prev.source),
                    ));
                }
                self.rules.push(rule);
            }
        }
        for (i, def) in parsed.slos.iter().enumerate() {
            let slo = Slo::compile(def, file)
                .map_err(|(k, m)| ConfigError::invalid(file, format!("slos[{i}].{k}"), m))?;
            if let Some(prev) = self.slos.iter().find(|s| s.name == slo.name) {
                return Err(ConfigError::invalid(
                    file,
                    format!("slos[{i}].name"),
                    format!("SLO {:?} is already defined in {}", slo.name, prev.source),
                ));
            }
            for generated in slo.generated_rules() {
                let mut rule = Rule::compile(&generated, file).map_err(|(k, m)| {
                    ConfigError::invalid(file, format!("slos[{i}] (generated rule {k})"), m)
                })?;
                if let Some(prev) = self.rules.iter().find(|r| r.name == rule.name) {
                    return Err(ConfigError::invalid(
                        file,
                        format!("slos[{i}].name"),
                        format!(
                            "its generated rule {:?} is already defined in {}",
                            rule.name, prev.source
                        ),
                    ));
                }
                rule.slo = Some(slo.name.clone());
                self.rules.push(rule);
            }
            self.slos.push(slo);
        }
        Ok(())
    }
}

/// A rule a grade makes, and the previous grade's horizon (ms).
type GradedDef = (RuleDef, Option<i64>);

/// A rule as written, or the rules its grades make: one per grade, with the previous grade's
/// horizon (ms) the crossing must be predicted beyond.
fn expand_grades(def: &RuleDef) -> Result<Vec<GradedDef>, (String, String)> {
    let Some(grades) = &def.grades else {
        return Ok(vec![(def.clone(), None)]);
    };
    if def.predicted_crossing_within.is_some() || def.priority.is_some() {
        return Err((
            "grades".into(),
            "replaces predicted_crossing_within and priority: give one or the other".into(),
        ));
    }
    let mut bands = Vec::new();
    for (p, s) in grades {
        let ms = humantime::parse_duration(s)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| (format!("grades.{p}"), format!("{s:?}: {e}")))?;
        bands.push((*p, s.clone(), ms));
    }
    if bands.is_empty() || bands.windows(2).any(|w| w[1].2 <= w[0].2) {
        return Err((
            "grades".into(),
            "needs horizons that grow as the priority falls, e.g. {P1: 6h, P2: 1d, P3: 3d, P4: 7d}"
                .into(),
        ));
    }
    let mut out = Vec::new();
    let mut after = None;
    for (p, s, ms) in bands {
        let mut g = def.clone();
        g.name = format!("{}_{}", def.name, p.token());
        g.grades = None;
        g.priority = Some(p);
        g.predicted_crossing_within = Some(s);
        // What routing and inhibition need to tell the grades of one prediction apart.
        g.labels.insert("prediction".into(), def.name.clone());
        g.labels.insert("grade".into(), p.token().into());
        out.push((g, after));
        after = Some(ms);
    }
    Ok(out)
}

/// Loads every `*.yaml`/`*.yml` file under the given paths (folders are read in name order).
pub fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, ConfigError> {
    let mut set = RuleSet::default();
    for path in paths {
        set.add_path(path)?;
    }
    Ok(set)
}

impl RuleSet {
    /// Adds the rules of a file, or of every `*.yaml` file of a folder (in name order).
    pub fn add_path(&mut self, path: &Path) -> Result<(), ConfigError> {
        let files = rule_files(path).map_err(|reason| ConfigError::Read {
            file: path.display().to_string(),
            reason,
        })?;
        for f in files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|reason| ConfigError::Read {
                file: name.clone(),
                reason,
            })?;
            self.add_file(&name, &text)?;
        }
        Ok(())
    }
}

fn rule_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        let map = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SeriesKey::from_parts(name, &map)
    }

    #[test]
    fn matchers() {
        let mut set = RuleSet::default();
        set.add_file(
            "t.yaml",
            r#"
rules:
  - name: high_cpu
    metric: cpu_usage_percent
    match: { service: "=~api-.*", env: "!=dev" }
    condition: value > 80
    for: 10m
    priority: P2
"#,
        )
        .unwrap();
        let r = &set.rules[0];
        assert_eq!(r.for_ms, 600_000);
        assert!(r.matches(&key("cpu_usage_percent", &[("service", "api-gw")])));
        assert!(!r.matches(&key(
            "cpu_usage_percent",
            &[("service", "api-gw"), ("env", "dev")]
        )));
        assert!(!r.matches(&key("cpu_usage_percent", &[("service", "xapi-gw")])));
        assert!(!r.matches(&key("mem", &[("service", "api-gw")])));
    }

    #[test]
    fn errors_name_file_and_key() {
        let mut set = RuleSet::default();
        let err = |text: &str| {
            RuleSet::default()
                .add_file("r.yaml", text)
                .unwrap_err()
                .to_string()
        };
        let base =
            "rules:\n  - name: a\n    metric: m\n    condition: value > 1\n    priority: P1\n";
        set.add_file("r.yaml", base).unwrap();
        assert!(set
            .add_file("s.yaml", base)
            .unwrap_err()
            .to_string()
            .contains("already defined in r.yaml"));
        let e = err(&base.replace("value > 1", "value >> 1"));
        assert!(
            e.contains("r.yaml") && e.contains("rules[0].condition"),
            "{e}"
        );
        let e = err(&format!("{base}    for: 5 minutes please\n"));
        assert!(e.contains("rules[0].for"), "{e}");
        let e = err(&base.replace("P1", "P9"));
        assert!(e.contains("rules[0].priority"), "{e}");
        let e = err(&format!("{base}    severity: high\n"));
        assert!(e.contains("unknown key \"severity\""), "{e}");
        let e =
            err(&format!("{base}    predicted_crossing_within: 6h\n")
                .replace("value > 1", "score > 1"));
        assert!(e.contains("rules[0].predicted_crossing_within"), "{e}");
        let e = err(&base.replace("name: a", "name: a.b"));
        assert!(e.contains("rules[0].name"), "{e}");
        let e = err(&format!(
            "{base}    annotations: {{ summary: \"{{{{ vlaue }}}}\" }}\n"
        ));
        assert!(e.contains("rules[0].annotations.summary"), "{e}");
    }

    #[test]
    fn shipped_rules_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules");
        let set = load_rules(&[dir]).unwrap();
        assert!(set.rules.len() >= 9);
    }

    #[test]
    fn grades_make_one_rule_per_band_and_bad_grades_name_the_key() {
        let mut set = RuleSet::default();
        set.add_file(
            "g.yaml",
            "rules:\n  - name: d\n    metric: m\n    condition: value > 90\n    grades: { P1: 6h, P3: 3d }\n",
        )
        .unwrap();
        let bands: Vec<_> = set
            .rules
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.priority,
                    r.predict_after_ms,
                    r.predict_within_ms,
                    r.family.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            bands,
            [
                ("d_p1", Priority::P1, None, Some(21_600_000), Some("d")),
                (
                    "d_p3",
                    Priority::P3,
                    Some(21_600_000),
                    Some(259_200_000),
                    Some("d")
                ),
            ]
        );
        let err = |extra: &str| {
            RuleSet::default()
                .add_file(
                    "g.yaml",
                    &format!(
                        "rules:\n  - name: d\n    metric: m\n    condition: value > 90\n{extra}"
                    ),
                )
                .unwrap_err()
                .to_string()
        };
        assert!(err("    grades: { P1: 3d, P2: 6h }\n").contains("rules[0].grades"));
        assert!(err("    grades: { P1: 6h }\n    priority: P1\n").contains("rules[0].grades"));
        assert!(err("    grades: { P1: soon }\n").contains("rules[0].grades.P1"));
        assert!(err("").contains("rules[0].priority"));
    }
}

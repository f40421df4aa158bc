//! Inhibition, with Alertmanager's semantics: while an alert matching a rule's source matchers
//! fires, alerts matching its target matchers that have the same values of the `equal` labels
//! (a label missing on both sides counts as equal) are not notified. An alert that matches both
//! sides does not inhibit itself.
//!
//! Firing sources are indexed per rule by their `equal` values, so a check is one lookup per
//! rule whose target matchers match, whatever the number of alerts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::matchers::{from_map, matches_all, LabelMatcher};

/// An inhibition rule, Alertmanager style: while an alert matching `source_match` fires, alerts
/// matching `target_match` with the same values of the `equal` labels are not notified.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitDef {
    /// A name for messages and the alert's `inhibited_by`.
    #[serde(default)]
    pub name: Option<String>,
    pub source_match: BTreeMap<String, String>,
    pub target_match: BTreeMap<String, String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    source: Vec<LabelMatcher>,
    target: Vec<LabelMatcher>,
    equal: Vec<String>,
}

impl Rule {
    fn key(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.equal
            .iter()
            .map(|l| labels.get(l).cloned().unwrap_or_default())
            .collect()
    }
}

/// The inhibition rules and the firing alerts that match their sources.
#[derive(Debug, Clone, Default)]
pub struct Inhibitor {
    rules: Vec<Rule>,
    /// Per rule: equal-label values → firing source alerts (by fingerprint).
    sources: Vec<HashMap<Vec<String>, BTreeSet<String>>>,
}

impl Inhibitor {
    /// Compiles the rules; errors are `(rule index, key, message)`.
    pub fn compile(defs: &[InhibitDef]) -> Result<Inhibitor, (usize, String, String)> {
        let mut rules = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            let source =
                from_map(&d.source_match).map_err(|(l, m)| (i, format!("source_match.{l}"), m))?;
            let target =
                from_map(&d.target_match).map_err(|(l, m)| (i, format!("target_match.{l}"), m))?;
            if source.is_empty() || target.is_empty() {
                return Err((
                    i,
                    "source_match".into(),
                    "an inhibition rule needs source and target matchers".into(),
                ));
            }
            rules.push(Rule {
                name: d
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("inhibit_rules[{i}]")),
                source,
                target,
                equal: d.equal.clone(),
            });
        }
        Ok(Inhibitor {
            sources: vec![HashMap::new(); rules.len()],
            rules,
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// An alert (by fingerprint) started or stopped firing: update the source indexes.
    pub fn set_firing(
        &mut self,
        fingerprint: &str,
        labels: &BTreeMap<String, String>,
        firing: bool,
    ) {
        for (rule, index) in self.rules.iter().zip(&mut self.sources) {
            if !matches_all(&rule.source, labels) {
                continue;
            }
            let key = rule.key(labels);
            if firing {
                index
                    .entry(key)
                    .or_default()
                    .insert(fingerprint.to_string());
            } else if let Some(set) = index.get_mut(&key) {
                set.remove(fingerprint);
                if set.is_empty() {
                    index.remove(&key);
                }
            }
        }
    }

    /// What inhibits an alert: `(rule name, source fingerprint)` pairs, sorted.
    pub fn inhibited_by(
        &self,
        fingerprint: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (rule, index) in self.rules.iter().zip(&self.sources) {
            if !matches_all(&rule.target, labels) {
                continue;
            }
            if let Some(set) = index.get(&rule.key(labels)) {
                if let Some(src) = set.iter().find(|s| s.as_str() != fingerprint) {
                    out.push((rule.name.clone(), src.clone()));
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rule(source: &[(&str, &str)], target: &[(&str, &str)], equal: &[&str]) -> InhibitDef {
        let m = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        InhibitDef {
            name: Some("r".into()),
            source_match: m(source),
            target_match: m(target),
            equal: equal.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_firing_source_mutes_targets_with_equal_labels_only() {
        let mut inh = Inhibitor::compile(&[rule(
            &[("alertname", "exchange_disconnected")],
            &[("alertname", "=~market_data_delay_high|message_rate_anomaly")],
            &["exchange"],
        )])
        .unwrap();
        let down = labels(&[
            ("alertname", "exchange_disconnected"),
            ("exchange", "binance"),
        ]);
        let delay_b = labels(&[
            ("alertname", "market_data_delay_high"),
            ("exchange", "binance"),
        ]);
        let delay_o = labels(&[("alertname", "market_data_delay_high"), ("exchange", "okx")]);
        assert!(inh.inhibited_by("t1", &delay_b).is_empty());
        inh.set_firing("src", &down, true);
        assert_eq!(
            inh.inhibited_by("t1", &delay_b),
            [("r".to_string(), "src".to_string())]
        );
        assert!(
            inh.inhibited_by("t2", &delay_o).is_empty(),
            "other exchange"
        );
        inh.set_firing("src", &down, false);
        assert!(inh.inhibited_by("t1", &delay_b).is_empty());
    }

    #[test]
    fn missing_equal_labels_are_equal_and_an_alert_does_not_inhibit_itself() {
        let mut inh = Inhibitor::compile(&[rule(
            &[("severity", "critical")],
            &[("team", "db")],
            &["cluster"],
        )])
        .unwrap();
        let both = labels(&[("severity", "critical"), ("team", "db")]);
        inh.set_firing("a", &both, true);
        assert!(inh.inhibited_by("a", &both).is_empty(), "itself");
        let other = labels(&[("team", "db")]);
        assert_eq!(
            inh.inhibited_by("b", &other).len(),
            1,
            "cluster missing on both sides"
        );
        let with_cluster = labels(&[("team", "db"), ("cluster", "x")]);
        assert!(inh.inhibited_by("c", &with_cluster).is_empty());
    }

    #[test]
    fn rules_need_both_sides() {
        let mut bad = rule(&[("a", "b")], &[], &[]);
        bad.name = None;
        assert_eq!(Inhibitor::compile(&[bad]).unwrap_err().0, 0);
        let re = rule(&[("a", "=~(")], &[("b", "c")], &[]);
        assert_eq!(Inhibitor::compile(&[re]).unwrap_err().1, "source_match.a");
    }
}

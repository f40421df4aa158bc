//! What a candidate rule set changes against a baseline over the same history: pages added and
//! removed, pages sent earlier or later (by how much), pages whose priority changed.
//!
//! Two pages are the same when they come from the same rule and series (fingerprint) and
//! their spans overlap; each page matches at most one, earliest first.

use std::collections::BTreeMap;

use serde::Serialize;

use super::summary::Alert;
use crate::model::Priority;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shift {
    pub rule: String,
    pub series: String,
    pub baseline_fired_at: i64,
    pub candidate_fired_at: i64,
    /// Candidate minus baseline: negative is earlier.
    pub by_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorityChange {
    pub rule: String,
    pub series: String,
    pub fired_at: i64,
    pub baseline: Priority,
    pub candidate: Priority,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diff {
    /// Pages only the candidate sends.
    pub added: Vec<Alert>,
    /// Pages only the baseline sends.
    pub removed: Vec<Alert>,
    pub earlier: Vec<Shift>,
    pub later: Vec<Shift>,
    pub priority_changed: Vec<PriorityChange>,
    /// Pages both send at the same time with the same priority.
    pub unchanged: u64,
    /// Pages per rule: (baseline, candidate).
    pub pages_per_rule: BTreeMap<String, (u64, u64)>,
}

pub fn diff(baseline: &[Alert], candidate: &[Alert]) -> Diff {
    let pages = |alerts: &[Alert]| {
        let mut by_fp: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
        for a in alerts.iter().filter(|a| a.paged()) {
            by_fp
                .entry(a.fingerprint.clone())
                .or_default()
                .push(a.clone());
        }
        for v in by_fp.values_mut() {
            v.sort_by_key(|a| a.fired_at);
        }
        by_fp
    };
    let (base, mut cand) = (pages(baseline), pages(candidate));
    let mut d = Diff::default();
    for a in baseline.iter().filter(|a| a.paged()) {
        d.pages_per_rule.entry(a.rule.clone()).or_default().0 += 1;
    }
    for a in candidate.iter().filter(|a| a.paged()) {
        d.pages_per_rule.entry(a.rule.clone()).or_default().1 += 1;
    }
    for (fp, b_pages) in base {
        let c_pages = cand.remove(&fp).unwrap_or_default();
        let mut taken = vec![false; c_pages.len()];
        for b in b_pages {
            let (bs, be) = b.span();
            let found = c_pages.iter().enumerate().position(|(i, c)| {
                let (cs, ce) = c.span();
                !taken[i] && cs <= be && bs <= ce
            });
            let Some(i) = found else {
                d.removed.push(b);
                continue;
            };
            taken[i] = true;
            let c = &c_pages[i];
            let (bf, cf) = (b.fired_at.unwrap_or(0), c.fired_at.unwrap_or(0));
            let shift = || Shift {
                rule: b.rule.clone(),
                series: b.series.clone(),
                baseline_fired_at: bf,
                candidate_fired_at: cf,
                by_ms: cf - bf,
            };
            if cf < bf {
                d.earlier.push(shift());
            } else if cf > bf {
                d.later.push(shift());
            }
            if b.priority != c.priority {
                d.priority_changed.push(PriorityChange {
                    rule: b.rule.clone(),
                    series: b.series.clone(),
                    fired_at: cf,
                    baseline: b.priority,
                    candidate: c.priority,
                });
            } else if cf == bf {
                d.unchanged += 1;
            }
        }
        d.added.extend(
            c_pages
                .into_iter()
                .zip(taken)
                .filter(|(_, t)| !t)
                .map(|(c, _)| c),
        );
    }
    d.added.extend(cand.into_values().flatten());
    d.added.sort_by_key(|a| a.fired_at);
    d.removed.sort_by_key(|a| a.fired_at);
    d
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn page(fp: &str, starts: i64, fired: Option<i64>, ends: Option<i64>, p: Priority) -> Alert {
        Alert {
            id: format!("{fp}-{starts}"),
            fingerprint: fp.into(),
            rule: fp.into(),
            priority: p,
            series: "s".into(),
            series_key: "s".into(),
            labels: BTreeMap::new(),
            starts_at: starts,
            fired_at: fired,
            ends_at: ends,
            end_reason: None,
            peak: 0.0,
            receivers: vec![],
        }
    }

    #[test]
    fn pages_are_matched_by_rule_series_and_overlap() {
        use Priority::*;
        let base = [
            page("a", 0, Some(60), Some(300), P2), // later in the candidate
            page("a", 1000, Some(1060), None, P2), // removed
            page("b", 0, Some(30), Some(100), P3), // priority changed, same time
            page("c", 0, None, Some(10), P3),      // never paged: not a page
            page("d", 500, Some(560), Some(900), P1), // unchanged
        ];
        let cand = [
            page("a", 0, Some(120), Some(300), P2),
            page("b", 0, Some(30), Some(100), P1),
            page("d", 500, Some(560), Some(900), P1),
            page("d", 2000, Some(2060), None, P1), // added (no overlap)
            page("e", 0, Some(5), None, P4),       // added (new rule)
        ];
        let d = diff(&base, &cand);
        assert_eq!(d.later.len(), 1);
        assert_eq!(d.later[0].by_ms, 60);
        assert!(d.earlier.is_empty());
        assert_eq!(
            d.removed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a-1000"]
        );
        assert_eq!(
            d.added.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["e-0", "d-2000"]
        );
        assert_eq!(d.priority_changed.len(), 1);
        assert_eq!(
            (
                d.priority_changed[0].baseline,
                d.priority_changed[0].candidate
            ),
            (P3, P1)
        );
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.pages_per_rule["a"], (2, 1));
        assert_eq!(d.pages_per_rule["e"], (0, 1));
        assert!(!d.pages_per_rule.contains_key("c"));
        // Against itself: nothing changes.
        let same = diff(&base, &base);
        assert_eq!(same.unchanged, 4);
        assert!(same.added.is_empty() && same.removed.is_empty() && same.later.is_empty());
    }
}

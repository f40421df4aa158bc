//! The routing tree, with Alertmanager's semantics: a route matches an alert when its matchers
//! do; its children are tried in order and the first that matches takes the alert, unless it
//! says `continue`, in which case the next ones are tried too; when no child matches, the route
//! itself takes it. Receiver, grouping and timings are inherited from the parent when absent.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::matchers::{from_map, matches_all, LabelMatcher};

/// A route, Alertmanager style: matchers, a receiver, grouping and timings (inherited from the
/// parent when absent), child routes tried in order (the first that matches wins, unless it
/// says `continue: true`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels that make a group; `["..."]` groups by every label. Default: none (one group).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts before its first notification (e.g. `30s`).
    #[serde(default)]
    pub group_wait: Option<String>,
    /// How long after a group's notification the next one may go out with changes (e.g. `5m`).
    #[serde(default)]
    pub group_interval: Option<String>,
    /// How long before a notification is sent again when nothing changed (e.g. `4h`).
    #[serde(default)]
    pub repeat_interval: Option<String>,
    /// Send a notification when alerts resolve (default true).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Send resolutions at once instead of at the group's next interval (default false).
    #[serde(default)]
    pub resolve_promptly: Option<bool>,
    /// Label matchers (`label: value`, `"=~regex"`, `"!=value"`, `"!~regex"`); alerts carry
    /// their series' labels, `metric`, the rule's labels, `alertname` and `priority`.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Keep trying the next sibling routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default)]
    pub routes: Vec<RouteDef>,
}

/// Parses a duration like `30s`, `5m`, `4h` into ms.
pub fn duration_ms(s: &str) -> Result<i64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 4h: {e}"))
}

/// How a route groups its alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `group_by: ["..."]`: every label (one group per alert).
    All,
    Labels(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree (`0`, `0.2`, `0.2.1`): part of the group key.
    pub path: String,
    pub receiver: String,
    pub group_by: GroupBy,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub send_resolved: bool,
    pub resolve_promptly: bool,
    matchers: Vec<LabelMatcher>,
    continue_matching: bool,
    children: Vec<usize>,
}

impl Route {
    /// The labels that make this alert's group.
    pub fn group_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }
}

/// The compiled tree; route 0 is the root.
#[derive(Debug, Clone)]
pub struct Routes {
    pub routes: Vec<Route>,
}

impl Routes {
    /// Compiles a tree; errors are `(key path, message)`, e.g. `(".routes[1].group_wait", ..)`.
    pub fn compile(
        root: &RouteDef,
        receivers: &BTreeSet<String>,
    ) -> Result<Routes, (String, String)> {
        if !root.matchers.is_empty() {
            return Err((
                ".match".into(),
                "the root route matches every alert: it takes no matchers".into(),
            ));
        }
        let defaults = Route {
            path: String::new(),
            receiver: String::new(),
            group_by: GroupBy::Labels(Vec::new()),
            group_wait_ms: 30_000,
            group_interval_ms: 300_000,
            repeat_interval_ms: 4 * 3_600_000,
            send_resolved: true,
            resolve_promptly: false,
            matchers: Vec::new(),
            continue_matching: false,
            children: Vec::new(),
        };
        let mut out = Routes { routes: Vec::new() };
        out.add(root, &defaults, "0".into(), "", receivers)?;
        if out.routes[0].receiver.is_empty() {
            return Err((".receiver".into(), "the root route needs a receiver".into()));
        }
        Ok(out)
    }

    fn add(
        &mut self,
        def: &RouteDef,
        parent: &Route,
        path: String,
        key: &str,
        receivers: &BTreeSet<String>,
    ) -> Result<usize, (String, String)> {
        let dur = |k: &str, v: &Option<String>, inherited: i64| -> Result<i64, (String, String)> {
            match v {
                None => Ok(inherited),
                Some(s) => duration_ms(s).map_err(|m| (format!("{key}.{k}"), m)),
            }
        };
        let receiver = def.receiver.clone().unwrap_or(parent.receiver.clone());
        if !receiver.is_empty() && !receivers.contains(&receiver) {
            return Err((
                format!("{key}.receiver"),
                format!(
                    "receiver {receiver:?} is not defined under receivers (defined: {})",
                    receivers.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let group_by = match &def.group_by {
            None => parent.group_by.clone(),
            Some(v) if v.iter().any(|l| l == "...") => GroupBy::All,
            Some(v) => GroupBy::Labels(v.clone()),
        };
        let matchers =
            from_map(&def.matchers).map_err(|(label, m)| (format!("{key}.match.{label}"), m))?;
        let route = Route {
            path: path.clone(),
            receiver,
            group_by,
            group_wait_ms: dur("group_wait", &def.group_wait, parent.group_wait_ms)?,
            group_interval_ms: dur(
                "group_interval",
                &def.group_interval,
                parent.group_interval_ms,
            )?,
            repeat_interval_ms: dur(
                "repeat_interval",
                &def.repeat_interval,
                parent.repeat_interval_ms,
            )?,
            send_resolved: def.send_resolved.unwrap_or(parent.send_resolved),
            resolve_promptly: def.resolve_promptly.unwrap_or(parent.resolve_promptly),
            matchers,
            continue_matching: def.continue_matching,
            children: Vec::new(),
        };
        if route.group_interval_ms <= 0 {
            return Err((format!("{key}.group_interval"), "must be > 0".into()));
        }
        if route.repeat_interval_ms <= 0 {
            return Err((format!("{key}.repeat_interval"), "must be > 0".into()));
        }
        let idx = self.routes.len();
        self.routes.push(route.clone());
        let mut children = Vec::new();
        for (i, child) in def.routes.iter().enumerate() {
            children.push(self.add(
                child,
                &route,
                format!("{path}.{i}"),
                &format!("{key}.routes[{i}]"),
                receivers,
            )?);
        }
        self.routes[idx].children = children;
        Ok(idx)
    }

    /// The routes that take an alert with these labels (at least the root).
    pub fn matching(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        self.match_from(0, labels).unwrap_or_else(|| vec![0])
    }

    fn match_from(&self, idx: usize, labels: &BTreeMap<String, String>) -> Option<Vec<usize>> {
        let r = &self.routes[idx];
        if !matches_all(&r.matchers, labels) {
            return None;
        }
        let mut all = Vec::new();
        for &c in &r.children {
            if let Some(m) = self.match_from(c, labels) {
                all.extend(m);
                if !self.routes[c].continue_matching {
                    break;
                }
            }
        }
        if all.is_empty() {
            all.push(idx);
        }
        Some(all)
    }

    pub fn get(&self, idx: usize) -> &Route {
        &self.routes[idx]
    }

    /// Every receiver a route names.
    pub fn receivers(&self) -> BTreeSet<&str> {
        self.routes.iter().map(|r| r.receiver.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Routing;
    use super::*;

    const MARKETPRISM: &str = include_str!("../../config/routing.yaml");

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn receivers_for(r: &Routing, l: &BTreeMap<String, String>) -> Vec<String> {
        r.routes
            .matching(l)
            .into_iter()
            .map(|i| r.routes.get(i).receiver.clone())
            .collect()
    }

    #[test]
    fn the_shipped_routes_send_p1_to_email_slack_and_dingtalk_p2_to_email_and_slack_p3_p4_to_slack()
    {
        let r = Routing::parse("routing.yaml", MARKETPRISM).unwrap();
        let p = |p: &str| labels(&[("priority", p), ("alertname", "x")]);
        assert_eq!(
            receivers_for(&r, &p("P1")),
            ["email-oncall", "dingtalk-oncall", "slack-alerts"]
        );
        assert_eq!(
            receivers_for(&r, &p("P2")),
            ["email-oncall", "slack-alerts"]
        );
        assert_eq!(receivers_for(&r, &p("P3")), ["slack-alerts"]);
        assert_eq!(receivers_for(&r, &p("P4")), ["slack-alerts"]);
    }

    #[test]
    fn children_inherit_and_the_first_match_wins_unless_continue() {
        let text = r#"
route:
  receiver: a
  group_by: [alertname]
  group_wait: 10s
  routes:
    - match: { team: db }
      receiver: b
      group_wait: 1s
      routes:
        - match: { severity: "=~crit.*" }
          receiver: c
    - match: { team: db }
      receiver: d
    - match: { env: prod }
      receiver: e
      group_by: ["..."]
receivers: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]
"#;
        let r = Routing::parse("t.yaml", text).unwrap();
        let db = labels(&[("team", "db"), ("alertname", "x")]);
        let idx = r.routes.matching(&db);
        assert_eq!(idx.len(), 1);
        let route = r.routes.get(idx[0]);
        assert_eq!(route.receiver, "b");
        assert_eq!(route.group_wait_ms, 1000);
        assert_eq!(route.group_interval_ms, 300_000, "inherited default");
        assert_eq!(route.group_by, GroupBy::Labels(vec!["alertname".into()]));
        let crit = labels(&[("team", "db"), ("severity", "critical")]);
        assert_eq!(receivers_for(&r, &crit), ["c"]);
        assert_eq!(receivers_for(&r, &labels(&[("env", "prod")])), ["e"]);
        assert_eq!(receivers_for(&r, &labels(&[("env", "dev")])), ["a"]);
        let e = r
            .routes
            .get(r.routes.matching(&labels(&[("env", "prod"), ("x", "1")]))[0]);
        assert_eq!(
            e.group_labels(&labels(&[("env", "prod"), ("x", "1")]))
                .len(),
            2
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, key) in [
            (
                "route: {receiver: nobody}\nreceivers: [{name: a}]",
                "route.receiver",
            ),
            (
                "route: {receiver: a, routes: [{group_wait: soon}]}\nreceivers: [{name: a}]",
                "route.routes[0].group_wait",
            ),
            (
                "route: {receiver: a, match: {x: y}}\nreceivers: [{name: a}]",
                "route.match",
            ),
            (
                "route: {receiver: a, routes: [{match: {x: \"=~(\"}}]}\nreceivers: [{name: a}]",
                "route.routes[0].match.x",
            ),
            (
                "route: {receiver: a}\nreceivers: [{name: a}, {name: a}]",
                "receivers[1].name",
            ),
        ] {
            let err = Routing::parse("r.yaml", text).unwrap_err().to_string();
            assert!(err.starts_with("r.yaml: ") && err.contains(key), "{err}");
        }
    }
}

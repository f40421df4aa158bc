//! The alert manager's settings (`alerting:` in the main config) and its routing file
//! (`config/routing.yaml`: the routing tree, inhibition rules and receivers), reloaded with the
//! rules on SIGHUP or a `rules.reload` command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inhibit::Inhibitor;
use super::route::Routes;
use crate::config::{from_tree, parse_yaml, ConfigError};

/// The alert manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// The routing tree, inhibition rules and receivers (YAML), relative to the working folder
    /// or to the config file's.
    pub routing_file: PathBuf,
    /// Manager group: one active manager per group, the others stand by. Its consumers, lease
    /// and state are named after it.
    pub group: String,
    /// Resolved and cancelled alerts are kept this long (for the API and history), then removed.
    pub resolved_retention_secs: u64,
    /// Most alerts held; beyond it the oldest ended ones are removed first. Active alerts are
    /// never dropped: past the limit they are kept and `prismwatch_manager_alerts_over_limit`
    /// says so.
    pub max_alerts: usize,
    /// Most alerts listed in one notification (the rest are counted in `truncated`).
    pub max_alerts_per_notification: usize,
    /// An external alert not sent again for this long (and without `endsAt`) resolves.
    pub external_resolve_timeout_secs: u64,
    /// Storm protection.
    pub storm: StormConfig,
    /// Flap protection.
    pub flapping: FlapConfig,
    /// Tests only: take "now" from requests on this NATS subject instead of the wall clock
    /// (virtual time for scripted scenarios). Empty: the wall clock.
    pub virtual_clock_subject: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            routing_file: PathBuf::from("config/routing.yaml"),
            group: "prismwatch-manager".into(),
            resolved_retention_secs: 86_400,
            max_alerts: 100_000,
            max_alerts_per_notification: 100,
            external_resolve_timeout_secs: 300,
            storm: StormConfig::default(),
            flapping: FlapConfig::default(),
            virtual_clock_subject: String::new(),
        }
    }
}

/// When too many alerts start at once, notifications collapse into one summary per receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormConfig {
    pub enabled: bool,
    /// A storm is more than this many alerts starting within `window_secs`.
    pub max_alerts: usize,
    pub window_secs: u64,
    /// `receiver`: each receiver's own alerts are counted; `global`: every alert counts, and
    /// a storm mutes (and summarises for) every receiver.
    pub scope: StormScope,
    /// While a storm lasts, its summary is sent again this often (with updated counts).
    pub summary_interval_secs: u64,
}

impl Default for StormConfig {
    fn default() -> Self {
        // MarketPrism's default: more than 50 alerts in 5 minutes.
        Self {
            enabled: true,
            max_alerts: 50,
            window_secs: 300,
            scope: StormScope::Receiver,
            summary_interval_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StormScope {
    Receiver,
    Global,
}

/// An alert (a rule on a series) that changes state too often is notified once as flapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlapConfig {
    pub enabled: bool,
    /// Flapping: more than this many changes (starts and ends) within `window_secs`.
    pub max_changes: usize,
    pub window_secs: u64,
    /// ...until it has not changed for this long.
    pub stable_secs: u64,
}

impl Default for FlapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_changes: 6,
            window_secs: 1800,
            stable_secs: 900,
        }
    }
}

impl AlertingConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &str, msg: &str| {
            if !ok {
                out.push((key.to_string(), msg.to_string()));
            }
        };
        check(
            crate::subjects::is_token(&self.group),
            "group",
            "must be one subject token ([A-Za-z0-9_-]+)",
        );
        check(self.max_alerts > 0, "max_alerts", "must be > 0");
        check(
            self.max_alerts_per_notification > 0,
            "max_alerts_per_notification",
            "must be > 0",
        );
        check(self.storm.max_alerts > 0, "storm.max_alerts", "must be > 0");
        check(
            self.storm.window_secs > 0,
            "storm.window_secs",
            "must be > 0",
        );
        check(
            self.flapping.max_changes > 1,
            "flapping.max_changes",
            "must be > 1",
        );
        check(
            self.flapping.window_secs > 0,
            "flapping.window_secs",
            "must be > 0",
        );
        out
    }
}

/// The routing file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// The root route: it matches every alert and gives the defaults.
    pub route: RouteDef,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitDef>,
    /// Receivers: a name and its channels (email, slack, dingtalk, webhook, pagerduty,
    /// telegram; read by the notifier workers).
    #[serde(default)]
    pub receivers: Vec<ReceiverDef>,
}

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

pub use crate::notify::config::ReceiverDef;

/// The compiled routing file.
#[derive(Debug, Clone)]
pub struct Routing {
    pub routes: Routes,
    pub inhibitor: Inhibitor,
    pub receivers: Vec<ReceiverDef>,
    /// Where it came from.
    pub file: String,
}

impl Routing {
    /// Reads and compiles a routing file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Routing, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Routing, ConfigError> {
        let def: RoutingFile = from_tree(file, parse_yaml(file, text)?)?;
        Self::compile(file, &def)
    }

    pub fn compile(file: &str, def: &RoutingFile) -> Result<Routing, ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in def.receivers.iter().enumerate() {
            if !crate::subjects::is_token(&r.name) {
                return Err(ConfigError::invalid(
                    file,
                    format!("receivers[{i}].name"),
                    format!(
                        "{:?} must match [A-Za-z0-9_-]+ (it is a subject token)",
                        r.name
                    ),
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(ConfigError::invalid(
                    file,
                    format!("receivers[{i}].name"),
                    format!("receiver {:?} is defined twice", r.name),
                ));
            }
            if let Some((key, msg)) = r.problems().into_iter().next() {
                return Err(ConfigError::invalid(
                    file,
                    format!("receivers[{i}].{key}"),
                    msg,
                ));
            }
        }
        let routes = Routes::compile(&def.route, &names)
            .map_err(|(key, msg)| ConfigError::invalid(file, format!("route{key}"), msg))?;
        let inhibitor = Inhibitor::compile(&def.inhibit_rules).map_err(|(i, key, msg)| {
            ConfigError::invalid(file, format!("inhibit_rules[{i}].{key}"), msg)
        })?;
        Ok(Routing {
            routes,
            inhibitor,
            receivers: def.receivers.clone(),
            file: file.to_string(),
        })
    }
}

/// Parses a duration like `30s`, `5m`, `4h` into ms.
pub fn duration_ms(s: &str) -> Result<i64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 4h: {e}"))
}

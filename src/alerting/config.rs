//! The alert manager's settings (`alerting:` in the main config) and its routing file
//! (`config/routing.yaml`: the routing tree, inhibition rules and receivers), reloaded with the
//! rules on SIGHUP or a `rules.reload` command.

use crate::config::yaml::Problems;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inhibit::Inhibitor;
use super::route::Routes;
use crate::config::yaml::{from_tree, parse_yaml, ConfigError};

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
        let mut p = Problems::default();
        p.check(
            crate::subjects::is_token(&self.group),
            "group",
            "must be one subject token ([A-Za-z0-9_-]+)",
        );
        p.check(self.max_alerts > 0, "max_alerts", "must be > 0");
        p.check(
            self.max_alerts_per_notification > 0,
            "max_alerts_per_notification",
            "must be > 0",
        );
        p.check(self.storm.max_alerts > 0, "storm.max_alerts", "must be > 0");
        p.check(
            self.storm.window_secs > 0,
            "storm.window_secs",
            "must be > 0",
        );
        p.check(
            self.flapping.max_changes > 1,
            "flapping.max_changes",
            "must be > 1",
        );
        p.check(
            self.flapping.window_secs > 0,
            "flapping.window_secs",
            "must be > 0",
        );
        p.into_vec()
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

pub use super::inhibit::InhibitDef;
pub use super::route::{duration_ms, RouteDef};
pub use crate::notify::config::ReceiverDef;

/// The compiled routing file.
#[derive(Debug, Clone)]
pub struct Routing {
    pub routes: Routes,
    pub inhibitor: Inhibitor,
    pub receivers: Vec<ReceiverDef>,
    /// Where it came from.
    pub file: String,
    /// The file as written (what the API shows; secrets are references, never values).
    pub def: RoutingFile,
}

impl Routing {
    /// The receivers of the routes an alert with these labels matches, sorted, once each.
    pub fn receivers_of(&self, labels: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        let mut r: Vec<String> = self
            .routes
            .matching(labels)
            .into_iter()
            .map(|i| self.routes.get(i).receiver.clone())
            .collect();
        r.sort();
        r.dedup();
        r
    }

    /// Reads and compiles a routing file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Routing, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
            file: file.clone(),
            reason,
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
            def: def.clone(),
        })
    }
}

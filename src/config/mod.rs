//! Typed configuration: defaults, then one YAML file, then `PRISMWATCH__SECTION__KEY` environment
//! overrides; then `validate()`. Errors name the file (or variable) and the key.
//! Each section's struct lives beside the component it configures.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use crate::alerting::config::AlertingConfig;
use crate::api::config::ApiConfig;
use crate::app::http::HttpConfig;
use crate::bus::{NatsConfig, StreamsConfig};
use crate::ingest::IngestConfig;
use crate::notify::config::NotifyConfig;
use crate::pipeline::PipelineConfig;
use crate::processor::config::ProcessorConfig;
use crate::rules::RulesConfig;
use crate::telemetry::TelemetryConfig;

pub mod builtin;
pub mod cli;
pub mod secret;
pub mod yaml;

use yaml::to_json;
pub use yaml::{from_tree, parse_yaml, ConfigError};

/// Prefix of environment overrides: `PRISMWATCH__INGEST__MAX_BATCH=500` sets `ingest.max_batch`.
pub const ENV_PREFIX: &str = "PRISMWATCH__";

/// The whole configuration (`config/prismwatch.yaml` documents every field).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS connection.
    pub nats: NatsConfig,
    /// JetStream streams and their retention.
    pub streams: StreamsConfig,
    /// Metric ingest: consumer, batching, validation limits, watermarks.
    pub ingest: IngestConfig,
    /// Per-series operators, sharding, eviction and checkpoints.
    pub pipeline: PipelineConfig,
    /// Where alert rules are loaded from.
    pub rules: RulesConfig,
    /// Partition leases, ticks, readiness.
    pub processor: ProcessorConfig,
    /// The alert manager: routing file, retention, storm and flap protection, its group.
    pub alerting: AlertingConfig,
    /// Notifier workers: their consumer, concurrency, retries, timeouts, default language.
    pub notify: NotifyConfig,
    /// The HTTP listener: `/healthz`, `/readyz`, `/metrics`, and the API.
    pub http: HttpConfig,
    /// Who may call the API (`/api/v1`), with which role.
    pub api: ApiConfig,
    /// How the command line (`alerts`, `ack`, `silence`, ...) reaches the API.
    pub cli: cli::CliConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
    /// The exchange-health component: what it reads and how it scores.
    pub health: crate::health::config::HealthConfig,
    /// Capacity planning: the metric families projected and their limits.
    pub capacity: crate::capacity::config::CapacityConfig,
}

/// A loaded configuration and where it came from (rule paths are relative to it).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

impl Loaded {
    /// Resolves a path from the config file against the file's directory's parent layout:
    /// relative paths are taken from the current directory first, then from the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || p.exists() {
            return p.to_path_buf();
        }
        match self.file.as_ref().and_then(|f| f.parent()) {
            Some(dir) => {
                let beside = dir.join(p);
                if beside.exists() {
                    beside
                } else {
                    p.to_path_buf()
                }
            }
            None => p.to_path_buf(),
        }
    }
}

/// Where a config file is looked for when none is given (`--config`, `$PRISMWATCH_CONFIG`),
/// in this order; without one, the built-in defaults (and the built-in rules and routing).
pub fn search_path() -> Vec<PathBuf> {
    let mut places = vec![PathBuf::from("config/prismwatch.yaml")];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = xdg {
        places.push(dir.join("prismwatch/prismwatch.yaml"));
    }
    places.push(PathBuf::from("/etc/prismwatch/prismwatch.yaml"));
    places
}

/// The config file to use: the one given, else the first of [`search_path`] that exists.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    given
        .map(Path::to_path_buf)
        .or_else(|| search_path().into_iter().find(|p| p.is_file()))
}

/// Loads `file` (or only defaults when `None`), applies environment overrides, validates.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(file, &vars)
}

/// [`load`] with an explicit environment (tests).
pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let file_name = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "<built-in defaults>".into());
    let mut tree = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
                file: file_name.clone(),
                reason,
            })?;
            parse_yaml(&file_name, &text)?
        }
        None => Value::Mapping(Default::default()),
    };
    if tree.is_null() {
        tree = Value::Mapping(Default::default());
    }
    let mut from_env = Vec::new();
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        // Scalars are read as YAML (numbers, booleans); an empty value is the empty string.
        let value: Value = match serde_norway::from_str(raw) {
            Ok(Value::Null) | Err(_) => Value::String(raw.clone()),
            Ok(v) => v,
        };
        set_path(&mut tree, &keys, value)
            .map_err(|m| ConfigError::invalid(name.clone(), keys.join("."), m))?;
        from_env.push((keys.join("."), name.clone()));
    }
    let tree = to_json(&file_name, tree)?;
    let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        // Name the environment variable when the bad key came from one.
        let origin = from_env
            .iter()
            .find(|(k, _)| key.starts_with(k.as_str()) || k.starts_with(key.as_str()))
            .map(|(_, var)| format!("environment variable {var}"))
            .unwrap_or(file_name.clone());
        ConfigError::invalid(origin, key, yaml::plain(&e.into_inner().to_string()))
    })?;
    if let Some((key, message)) = config.problems().into_iter().next() {
        // A bad value from an environment variable is the variable's, not the file's.
        let origin = from_env
            .iter()
            .find(|(k, _)| key == *k || key.starts_with(&format!("{k}.")))
            .map(|(_, var)| format!("environment variable {var}"))
            .unwrap_or(file_name);
        return Err(ConfigError::invalid(origin, key, message));
    }
    Ok(Loaded {
        config,
        file: file.map(Path::to_path_buf),
    })
}

fn set_path(tree: &mut Value, keys: &[String], value: Value) -> Result<(), String> {
    let Some((first, rest)) = keys.split_first() else {
        return Err("empty key".into());
    };
    let Value::Mapping(map) = tree else {
        return Err("cannot set a key inside a non-mapping value".into());
    };
    let k = Value::String(first.clone());
    if rest.is_empty() {
        map.insert(k, value);
        return Ok(());
    }
    let child = map
        .entry(k)
        .or_insert_with(|| Value::Mapping(Default::default()));
    set_path(child, rest, value)
}

impl Config {
    /// Every invalid value, as `(dotted key, problem)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut section = |name: &str, items: Vec<(String, String)>| {
            out.extend(items.into_iter().map(|(k, m)| (format!("{name}.{k}"), m)));
        };
        section("nats", self.nats.problems());
        section("streams", self.streams.problems());
        section("ingest", self.ingest.problems());
        section("pipeline", self.pipeline.problems());
        section("processor", self.processor.problems());
        section("alerting", self.alerting.problems());
        section("notify", self.notify.problems());
        section("http", self.http.problems());
        section("api", self.api.problems());
        section("telemetry", self.telemetry.problems());
        section("health", self.health.problems());
        section("capacity", self.capacity.problems());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_valid() {
        let loaded = load_with_env(None, &[]).unwrap();
        assert!(loaded.config.problems().is_empty());
    }

    #[test]
    fn messages_name_the_variable_and_use_plain_words() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let err = load_with_env(None, &env("PRISMWATCH__INGEST__MAX_BATCH", "lots"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "environment variable PRISMWATCH__INGEST__MAX_BATCH: ingest.max_batch: got the text \"lots\", expected a whole number"
        );
        let err = load_with_env(None, &env("PRISMWATCH__NATS__URL", "htp:/x"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("environment variable PRISMWATCH__NATS__URL: nats.url: \"htp:/x\" is not a NATS URL"), "{err}");
        let err = load_with_env(Some(Path::new("/nonexistent/p.yaml")), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/nonexistent/p.yaml: cannot read: it does not exist");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let f = write("ingest:\n  max_batchh: 5\n");
        let err = load_with_env(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("ingest.max_batchh"), "{err}");
        assert!(err.contains("unknown key \"max_batchh\""), "{err}");
    }

    #[test]
    fn invalid_value_names_key() {
        let f = write("pipeline:\n  shards: 0\n");
        let err = load_with_env(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("pipeline.shards"), "{err}");
        let f = write("ingest:\n  max_batch: many\n");
        let err = load_with_env(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("ingest.max_batch"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let f = write("nats:\n  url: nats://a:4222\ningest:\n  max_batch: 10\n");
        let env = vec![
            (
                "PRISMWATCH__NATS__URL".to_string(),
                "nats://b:4222".to_string(),
            ),
            (
                "PRISMWATCH__INGEST__MAX_BATCH".to_string(),
                "77".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = load_with_env(Some(f.path()), &env).unwrap().config;
        assert_eq!(c.nats.url, "nats://b:4222");
        assert_eq!(c.ingest.max_batch, 77);
    }

    #[test]
    fn bad_env_key_names_variable() {
        let env = vec![("PRISMWATCH__INGEST__NOPE".to_string(), "1".to_string())];
        let err = load_with_env(None, &env).unwrap_err().to_string();
        assert!(err.contains("PRISMWATCH__INGEST__NOPE"), "{err}");
        assert!(err.contains("ingest.nope"), "{err}");
    }

    #[test]
    fn shipped_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prismwatch.yaml");
        let shipped = load_with_env(Some(&p), &[]).unwrap().config;
        // The shipped file documents the defaults: it must not drift from them.
        assert_eq!(
            serde_json::to_value(&shipped).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
    }
}

//! Rules and routes, loaded at start and reloaded while running: on SIGHUP, on a `rules.reload`
//! command (the active alert manager validates the files, answers, then tells every process on
//! `prism.ctl.reload`), or on that broadcast. A file that does not validate changes nothing:
//! the error (file, key, problem) is logged, counted and, for a command, answered.
//!
//! Components watch [`Definitions`]: the processor restarts its partitions with the new rules
//! (each checkpoints first; rule states are kept by rule name, so alerts of unchanged rules
//! carry on), the alert manager rebuilds its routes and ends the alerts of removed rules.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerting::config::Routing;
use crate::config::{builtin, Config, ConfigError, Loaded};
use crate::rules::RuleSet;
use crate::{subjects, telemetry};

/// The rules and routes in force.
#[derive(Clone)]
pub struct Definitions {
    pub rules: RuleSet,
    /// Only loaded where an alert manager runs.
    pub routing: Option<Routing>,
    /// 0 at start, +1 per reload.
    pub generation: u64,
}

/// Where the definitions come from: the config's rule paths and routing file, resolved like
/// the config resolves them (the working folder first, then the config file's).
#[derive(Clone)]
pub struct Sources {
    loaded: Loaded,
    with_routing: bool,
}

impl Sources {
    pub fn new(cfg: Config, config_file: Option<PathBuf>, with_routing: bool) -> Sources {
        Sources {
            loaded: Loaded {
                config: cfg,
                file: config_file,
            },
            with_routing,
        }
    }

    /// Reads and validates the rules (and the routing file when wanted).
    pub fn load(&self) -> Result<(RuleSet, Option<Routing>), ConfigError> {
        let rules = load_rules_of(&self.loaded)?;
        let routing = if self.with_routing {
            Some(self.load_routing()?)
        } else {
            None
        };
        Ok((rules, routing))
    }

    pub fn load_routing(&self) -> Result<Routing, ConfigError> {
        let configured = &self.loaded.config.alerting.routing_file;
        let resolved = self.loaded.resolve(configured);
        if builtin::stands_in(configured, &resolved, builtin::ROUTING_PATH) {
            return Routing::parse(&builtin::name("routing.yaml"), builtin::ROUTING);
        }
        Routing::load(&resolved)
    }
}

/// The rules a config names, checked against its pipeline (detector rules need detectors).
pub fn load_rules_of(loaded: &Loaded) -> Result<RuleSet, ConfigError> {
    let mut rules = RuleSet::default();
    for configured in &loaded.config.rules.paths {
        let resolved = loaded.resolve(configured);
        if builtin::stands_in(configured, &resolved, builtin::RULES_PATH) {
            for (name, text) in builtin::RULE_FILES {
                rules.add_file(&builtin::name(&format!("rules/{name}")), text)?;
            }
        } else {
            rules.add_path(&resolved)?;
        }
    }
    let file = loaded
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "<built-in defaults>".into());
    if rules.rules.is_empty() && !loaded.config.rules.allow_empty {
        return Err(ConfigError::invalid(
            file,
            "rules.paths",
            format!(
                "no rule found in {}: add rule files (*.yaml), or set rules.allow_empty: true to run without rules",
                loaded
                    .config
                    .rules
                    .paths
                    .iter()
                    .map(|p| loaded.resolve(p).display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some((file, rule, problem)) = loaded
        .config
        .pipeline
        .rule_problems(&rules)
        .into_iter()
        .next()
    {
        return Err(ConfigError::invalid(file, format!("rule {rule}"), problem));
    }
    Ok(rules)
}

/// Reloads on request and publishes the result to the components.
pub struct Reloader {
    sources: Sources,
    tx: watch::Sender<Arc<Definitions>>,
    member: String,
}

impl Reloader {
    pub fn new(sources: Sources, first: Definitions, member: &str) -> Arc<Reloader> {
        let (tx, _) = watch::channel(Arc::new(first));
        Arc::new(Reloader {
            sources,
            tx,
            member: member.to_string(),
        })
    }

    pub fn watch(&self) -> watch::Receiver<Arc<Definitions>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Definitions> {
        self.tx.borrow().clone()
    }

    /// Loads the files again; on success the components get them, else nothing changes.
    /// Returns what happened in a sentence.
    pub fn reload(&self, why: &str) -> Result<String, String> {
        match self.sources.load() {
            Ok((rules, routing)) => {
                let generation = self.current().generation + 1;
                let msg = format!(
                    "reloaded: {} rules{}",
                    rules.rules.len(),
                    routing
                        .as_ref()
                        .map(|r| format!(
                            ", {} routes, {} inhibition rules from {}",
                            r.routes.routes.len(),
                            r.inhibitor.len(),
                            r.file
                        ))
                        .unwrap_or_default()
                );
                self.tx.send_replace(Arc::new(Definitions {
                    rules,
                    routing,
                    generation,
                }));
                metrics::counter!(telemetry::RELOADS, "result" => "ok").increment(1);
                tracing::info!(why, generation, "{msg}");
                Ok(msg)
            }
            Err(e) => {
                metrics::counter!(telemetry::RELOADS, "result" => "refused").increment(1);
                let msg = format!("reload refused, the previous rules and routes stay: {e}");
                tracing::error!(why, "{msg}");
                Err(msg)
            }
        }
    }

    /// Tells the other processes to reload (after this one did).
    pub async fn broadcast(&self, client: &async_nats::Client) {
        let _ = client
            .publish(subjects::RELOAD_SUBJECT, self.member.clone().into())
            .await;
    }

    /// Reloads on SIGHUP and on `prism.ctl.reload` (from another process) until `stop`.
    pub async fn serve(self: Arc<Self>, client: async_nats::Client, stop: CancellationToken) {
        let mut sub = match client.subscribe(subjects::RELOAD_SUBJECT).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to reload requests; SIGHUP still works");
                None
            }
        };
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let hangup = async {
                #[cfg(unix)]
                if let Some(h) = hup.as_mut() {
                    h.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangup => {
                    let _ = self.reload("SIGHUP");
                }
                Some(m) = async {
                    match sub.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let from = String::from_utf8_lossy(&m.payload).to_string();
                    if from != self.member {
                        let _ = self.reload(&format!("requested by {from}"));
                    }
                }
            }
        }
    }
}

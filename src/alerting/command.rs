//! Commands to the alert manager: published on `prism.cmd.<kind>` into `PRISM_COMMANDS` (the
//! audit log: who asked what, when) with the request id as `Nats-Msg-Id`; the active manager
//! applies each once and answers on the `Prism-Reply-To` subject and on `prism.audit.<kind>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::matchers::MatcherDef;
use crate::model::Priority;

/// Header carrying the subject the result goes to.
pub const HEADER_REPLY_TO: &str = "Prism-Reply-To";

/// A command as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique per request (retries reuse it): the `Nats-Msg-Id`, and the id of what it creates.
    pub request_id: String,
    /// Who asked (a user, an API key's name, `cli:<user>`).
    pub principal: String,
    /// Client time of the request, ms since the epoch (informational).
    #[serde(default)]
    pub at: i64,
    #[serde(flatten)]
    pub body: CommandBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandBody {
    /// Acknowledge an alert (by id, or by fingerprint: its current episode).
    Ack {
        alert: String,
        #[serde(default)]
        comment: String,
        /// ms since the epoch; none: until the alert ends.
        #[serde(default)]
        expires_at: Option<i64>,
    },
    Unack {
        alert: String,
    },
    /// Resolve by hand (external alerts only: the processor owns its rules' alerts).
    Resolve {
        alert: String,
        #[serde(default)]
        comment: String,
    },
    /// Create a silence (or replace the one with `id`).
    SilenceCreate {
        #[serde(default)]
        id: Option<String>,
        matchers: Vec<MatcherDef>,
        /// ms since the epoch; default now.
        #[serde(default)]
        starts_at: Option<i64>,
        ends_at: i64,
        #[serde(default)]
        comment: String,
        /// Who the silence is for (Alertmanager's `createdBy`); default: the principal. The
        /// audit log keeps the principal either way.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_by: Option<String>,
    },
    SilenceExpire {
        id: String,
    },
    /// Alerts from outside (Prometheus via the API, scripts), Alertmanager's shape.
    AlertExternal {
        alerts: Vec<ExternalAlert>,
    },
    /// Reload rules and routes in every process.
    RulesReload,
}

impl CommandBody {
    /// The subject token(s) after `prism.cmd.`.
    pub fn kind(&self) -> &'static str {
        match self {
            CommandBody::Ack { .. } => "ack",
            CommandBody::Unack { .. } => "unack",
            CommandBody::Resolve { .. } => "resolve",
            CommandBody::SilenceCreate { .. } => "silence.create",
            CommandBody::SilenceExpire { .. } => "silence.expire",
            CommandBody::AlertExternal { .. } => "alert.external",
            CommandBody::RulesReload => "rules.reload",
        }
    }
}

/// An alert from outside, as Alertmanager's API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalAlert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// ms since the epoch; default: when first received.
    #[serde(default)]
    pub starts_at: Option<i64>,
    /// ms since the epoch; in the past = resolved. Default: received + the resolve timeout.
    #[serde(default)]
    pub ends_at: Option<i64>,
    #[serde(default)]
    pub generator_url: String,
    /// Default: from the `priority` label (P1..P4), else from `severity` (critical → P1,
    /// error → P2, warning → P3, else P4).
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// The result of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub request_id: String,
    pub kind: String,
    pub principal: String,
    pub ok: bool,
    /// What happened, or why not, in a sentence.
    pub message: String,
    /// What it made or touched (a silence id, alert ids), when any.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
    /// Manager time it was applied.
    pub at: i64,
}

//! Shapes of the API's answers that are built as JSON in the handlers: described here for the
//! OpenAPI document (`openapi.rs`), which the handlers' annotations refer to.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::alerting::alert::ManagedAlert;
use crate::alerting::matchers::MatcherDef;
use crate::alerting::silence::SilenceState;

/// A page of `GET /api/v1/alerts`.
#[derive(Serialize, ToSchema)]
pub struct AlertPage {
    alerts: Vec<ManagedAlert>,
    /// Alerts matching the filters (all pages).
    count: usize,
    offset: usize,
    limit: usize,
}

/// A silence and its state now.
#[derive(Serialize, ToSchema)]
pub struct SilenceView {
    #[serde(flatten)]
    silence: crate::alerting::silence::Silence,
    state: SilenceState,
}

#[derive(Serialize, ToSchema)]
pub struct SilenceList {
    silences: Vec<SilenceView>,
}

/// The alert manager's answer to a change.
#[derive(Serialize, ToSchema)]
pub struct CommandAnswer {
    message: String,
    /// What it made or touched (`silence_id`, alert ids), when anything.
    #[schema(value_type = Option<Object>)]
    result: serde_json::Value,
    request_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct RuleStats {
    /// Points the rule evaluated, over every processor.
    evaluations: u64,
    /// Its firing events in `PRISM_ALERTS` (the stream's retention).
    firings: u64,
    last_fired_at: Option<i64>,
    /// Its alerts pending and firing now (null while the manager's state cannot be read).
    pending: Option<u64>,
    firing: Option<u64>,
    /// A predictive rule's scored predictions (null for other rules): `hits`, `false_alarms`,
    /// `misses` (of the rule as written), `precision`, `mean_abs_error_ms`.
    #[schema(value_type = Object, nullable)]
    predictions: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct RuleView {
    name: String,
    file: String,
    priority: crate::model::Priority,
    /// The rule as written.
    #[schema(value_type = Object)]
    definition: serde_json::Value,
    stats: RuleStats,
}

#[derive(Serialize, ToSchema)]
pub struct RuleList {
    rules: Vec<RuleView>,
    /// 0 at start, +1 per reload.
    generation: u64,
}

/// Alertmanager v2: `{"name"}`.
#[derive(Serialize, ToSchema)]
pub struct Receiver {
    name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GettableAlertStatus {
    /// `active` or `suppressed`.
    state: String,
    silenced_by: Vec<String>,
    inhibited_by: Vec<String>,
}

/// Alertmanager v2's `gettableAlert`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GettableAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    fingerprint: String,
    starts_at: String,
    updated_at: String,
    ends_at: String,
    receivers: Vec<Receiver>,
    status: GettableAlertStatus,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GettableSilenceStatus {
    /// `active`, `pending` or `expired`.
    state: String,
}

/// Alertmanager v2's `gettableSilence`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    id: String,
    status: GettableSilenceStatus,
    updated_at: String,
    matchers: Vec<MatcherDef>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilenceCreated {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

/// Alertmanager v2's alert filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct V2AlertQuery {
    /// Include alerts that are neither silenced nor inhibited (default true).
    active: Option<bool>,
    /// Include silenced alerts (default true).
    silenced: Option<bool>,
    /// Include inhibited alerts (default true).
    inhibited: Option<bool>,
    /// Accepted and ignored, as by Alertmanager.
    unprocessed: Option<bool>,
    /// Label matchers (`name="value"`, repeated).
    filter: Option<Vec<String>>,
    /// A regex the alert's receivers must match.
    receiver: Option<String>,
}

/// Alertmanager v2's silence filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct V2SilenceQuery {
    /// Matchers a silence must contain exactly (repeated).
    filter: Option<Vec<String>>,
}

//! Rules and routes as loaded (reloads included), with each rule's numbers: points evaluated
//! (every processor's counts, from `PRISM_RULE_STATS`), firings (its firing events in
//! `PRISM_ALERTS`, over that stream's retention), when it last fired, and its alerts pending
//! and firing now (the alert manager's state).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use futures::TryStreamExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{ApiState, Role};
use crate::alerting::route::{GroupBy, Route, RouteDef};
use crate::model::{AlertEvent, AlertStatus};
use crate::rules::Rule;
use crate::subjects;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/rules/{name}", get(get_rule))
        .route("/api/v1/routes", get(list_routes))
        .route("/api/v1/routes/{path}", get(get_route))
}

/// Firing events per rule in `PRISM_ALERTS` (one request: the stream's per-subject counts).
async fn firings(s: &ApiState) -> Result<BTreeMap<String, u64>, ApiError> {
    let (js, _, _) = s.nats()?;
    let stream = js
        .get_stream(&s.alerts_stream)
        .await
        .map_err(|e| ApiError::unavailable(format!("alert history: {e}")))?;
    let counts: Vec<(String, usize)> = stream
        .info_with_subjects("prism.alerts.*.firing.>")
        .await
        .map_err(|e| ApiError::unavailable(format!("alert history: {e}")))?
        .try_collect()
        .await
        .map_err(|e| ApiError::unavailable(format!("alert history: {e}")))?;
    let mut by_rule = BTreeMap::new();
    for (subject, n) in counts {
        if let Some(rule) = subject.rsplit('.').next() {
            *by_rule.entry(rule.to_string()).or_insert(0) += n as u64;
        }
    }
    Ok(by_rule)
}

/// When `rule` last fired (event time, ms), from its latest firing event.
async fn last_fired(s: &ApiState, rule: &Rule) -> Option<i64> {
    let (js, _, _) = s.nats().ok()?;
    let stream = js.get_stream(&s.alerts_stream).await.ok()?;
    let subject = subjects::alert_subject(rule.priority, AlertStatus::Firing, &rule.name);
    let m = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .ok()?;
    serde_json::from_slice::<AlertEvent>(&m.payload)
        .ok()
        .map(|e| e.event_time)
}

/// How a predictive rule's predictions turned out (every processor's counts): its hits and
/// false alarms, the misses of its family (crossings no grade predicted), the share of its
/// predictions that came true, and the mean absolute error of the predicted time.
fn predictions_json(rule: &Rule, totals: &BTreeMap<String, u64>) -> Value {
    if rule.predict_within_ms.is_none() {
        return Value::Null;
    }
    use crate::processor::rulestats::prediction_key;
    let n = |r: &str, what: &str| totals.get(&prediction_key(r, what)).copied().unwrap_or(0);
    let (hits, false_alarms) = (n(&rule.name, "hit"), n(&rule.name, "false_alarm"));
    let misses = n(rule.family.as_deref().unwrap_or(&rule.name), "miss");
    let error = n(&rule.name, "abs_error_ms");
    json!({
        "hits": hits,
        "false_alarms": false_alarms,
        "misses": misses,
        "precision": (hits + false_alarms > 0).then(|| hits as f64 / (hits + false_alarms) as f64),
        "mean_abs_error_ms": (hits > 0).then(|| error as f64 / hits as f64),
    })
}

/// One rule as written, where it came from, and its numbers.
fn rule_json(
    rule: &Rule,
    totals: &BTreeMap<String, u64>,
    firings: u64,
    last_fired: Option<i64>,
    now: Option<(u64, u64)>,
) -> Value {
    let evaluations = totals.get(&rule.name).copied().unwrap_or(0);
    json!({
        "name": rule.name,
        "file": rule.source,
        "priority": rule.priority,
        "definition": rule.def,
        "stats": {
            "evaluations": evaluations,
            "firings": firings,
            "last_fired_at": last_fired,
            // Null while the alert manager's state cannot be read.
            "pending": now.map(|n| n.0),
            "firing": now.map(|n| n.1),
            "predictions": predictions_json(rule, totals),
        },
    })
}

/// Alerts pending and firing now, per rule.
fn active_by_rule(s: &ApiState) -> Result<BTreeMap<String, (u64, u64)>, ApiError> {
    let cache = s.cache()?;
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for a in cache.alerts.values.read().unwrap().values() {
        let e = m.entry(a.rule.clone()).or_default();
        match a.status {
            AlertStatus::Pending => e.0 += 1,
            AlertStatus::Firing => e.1 += 1,
            _ => {}
        }
    }
    Ok(m)
}

#[utoipa::path(
    get,
    path = "/api/v1/rules",
    tag = "rules",
    summary = "Rules as loaded, with their numbers (evaluations, firings, last fired, pending and firing now)",
    responses((status = 200, description = "The rules", body = super::schema::RuleList))
)]
async fn list_rules(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let defs = s.definitions();
    let active = active_by_rule(&s).ok();
    let firings = firings(&s).await?;
    let evaluations = crate::processor::rulestats::totals(&s.nats()?.0)
        .await
        .map_err(ApiError::unavailable)?;
    let mut rules = Vec::new();
    for r in &defs.rules.rules {
        let f = firings.get(&r.name).copied().unwrap_or(0);
        let last = if f > 0 { last_fired(&s, r).await } else { None };
        rules.push(rule_json(
            r,
            &evaluations,
            f,
            last,
            active
                .as_ref()
                .map(|a| a.get(&r.name).copied().unwrap_or_default()),
        ));
    }
    Ok(Json(json!({"rules": rules, "generation": defs.generation})))
}

#[utoipa::path(
    get,
    path = "/api/v1/rules/{name}",
    tag = "rules",
    summary = "One rule with its numbers",
    params(("name" = String, Path, description = "Rule name")),
    responses((status = 200, description = "The rule", body = super::schema::RuleView))
)]
async fn get_rule(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let defs = s.definitions();
    let r = defs
        .rules
        .rules
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no rule {name:?}")))?;
    let active = active_by_rule(&s).ok();
    let f = firings(&s).await?.get(&name).copied().unwrap_or(0);
    let evaluations = crate::processor::rulestats::totals(&s.nats()?.0)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(rule_json(
        r,
        &evaluations,
        f,
        last_fired(&s, r).await,
        active.map(|a| a.get(&name).copied().unwrap_or_default()),
    )))
}

/// The definition of the route at `path` (`0`, `0.1`, ...) in the tree as written.
fn def_at<'a>(root: &'a RouteDef, path: &str) -> Option<&'a RouteDef> {
    let mut parts = path.split('.');
    if parts.next() != Some("0") {
        return None;
    }
    parts.try_fold(root, |d, i| d.routes.get(i.parse::<usize>().ok()?))
}

/// A route as it applies (inherited settings resolved), with its matchers as written.
fn route_json(r: &Route, def: Option<&RouteDef>) -> Value {
    json!({
        "path": r.path,
        "receiver": r.receiver,
        "group_by": match &r.group_by {
            GroupBy::All => vec!["...".to_string()],
            GroupBy::Labels(l) => l.clone(),
        },
        "group_wait_ms": r.group_wait_ms,
        "group_interval_ms": r.group_interval_ms,
        "repeat_interval_ms": r.repeat_interval_ms,
        "send_resolved": r.send_resolved,
        "resolve_promptly": r.resolve_promptly,
        "match": def.map(|d| d.matchers.clone()).unwrap_or_default(),
        "continue": def.is_some_and(|d| d.continue_matching),
    })
}

fn routing(s: &ApiState) -> Result<std::sync::Arc<crate::app::reload::Definitions>, ApiError> {
    let defs = s.definitions();
    if defs.routing.is_none() {
        return Err(ApiError::unavailable(
            "this process has no routing file loaded (no alert manager, notifier or API credentials)",
        ));
    }
    Ok(defs)
}

#[utoipa::path(
    get,
    path = "/api/v1/routes",
    tag = "rules",
    summary = "The routing tree as it applies (inherited settings resolved), receivers, inhibition rules",
    responses((status = 200, description = "The routes", body = serde_json::Value))
)]
async fn list_routes(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let defs = routing(&s)?;
    let r = defs.routing.as_ref().expect("checked");
    let routes: Vec<Value> = r
        .routes
        .routes
        .iter()
        .map(|x| route_json(x, def_at(&r.def.route, &x.path)))
        .collect();
    Ok(Json(json!({
        "file": r.file,
        "routes": routes,
        "receivers": r.receivers.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
        "inhibit_rules": r.def.inhibit_rules,
        "generation": defs.generation,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/routes/{path}",
    tag = "rules",
    summary = "One route by its path (0, 0.1, ...)",
    params(("path" = String, Path, description = "Route path: 0 is the root, 0.1 its second child")),
    responses((status = 200, description = "The route", body = serde_json::Value))
)]
async fn get_route(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(path): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Viewer)?;
    let defs = routing(&s)?;
    let r = defs.routing.as_ref().expect("checked");
    let route = r
        .routes
        .routes
        .iter()
        .find(|x| x.path == path)
        .ok_or_else(|| {
            ApiError::not_found(format!("no route {path:?} (paths are 0, 0.0, 0.1, ...)"))
        })?;
    Ok(Json(route_json(route, def_at(&r.def.route, &path))))
}

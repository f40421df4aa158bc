//! Alertmanager API v2, the parts clients use (`amtool`, Prometheus, dashboards): status,
//! receivers, alerts (list, post), silences (list, create, get, expire), with Alertmanager's
//! JSON shapes and times (RFC 3339, milliseconds, UTC). Each route takes the same credentials
//! as `/api/v1`, and also HTTP basic auth (the password being the API key or token). Errors
//! are a JSON string, as Alertmanager sends them.
//!
//! Alerts posted here go to the alert manager as one `alert.external` command (audited like
//! every change): routed, grouped, notified, and resolved when their `endsAt` passes unless
//! sent again, as Prometheus does every minute.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, JsonBody};
use super::{ApiState, Role};
use crate::alerting::alert::ManagedAlert;
use crate::alerting::command::{CommandBody, ExternalAlert};
use crate::alerting::matchers::{LabelMatcher, MatcherDef};
use crate::alerting::silence::Silence;
use crate::model::AlertStatus;
use crate::tools::clock;

/// The Alertmanager version whose API this follows: `amtool` warns when its major.minor differs.
pub const COMPATIBLE_VERSION: &str = "0.25.0";

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .route("/api/v2/alerts", get(list_alerts).post(post_alerts))
        .route("/api/v2/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(get_silence).delete(expire_silence),
        )
        .layer(axum::middleware::map_response(as_alertmanager_error))
}

/// Our errors (`{"error": {"code", "message"}}`) as Alertmanager sends them: a JSON string.
async fn as_alertmanager_error(r: Response) -> Response {
    if r.status().is_success() {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (parts.status, Json("error")).into_response();
    };
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    if parts.status == StatusCode::UNAUTHORIZED {
        parts.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"prismwatch\""),
        );
    }
    let body = serde_json::to_vec(&message).expect("a string serialises");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// RFC 3339 with milliseconds, UTC (`2026-11-29T10:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).expect("formats")
}

/// An RFC 3339 time (any offset) in ms; Go's zero time (`0001-01-01T00:00:00Z`) is none.
fn parse_time(field: &str, s: &str) -> Result<Option<i64>, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{field}: {s:?} is not an RFC 3339 time ({e})"))?;
    if t.year() <= 1 {
        return Ok(None);
    }
    Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

fn query_pairs(q: &Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))
}

fn flag(pairs: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == name) {
        None => Ok(true),
        Some((_, v)) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{name}: {v:?} is not true or false"))),
    }
}

/// `filter` matchers (`{a="b",c=~"d"}` or `a="b"`, repeated).
fn filters(pairs: &[(String, String)]) -> Result<Vec<MatcherDef>, ApiError> {
    pairs
        .iter()
        .filter(|(k, _)| k == "filter")
        .flat_map(|(_, v)| {
            let v = v.trim();
            let inner = v
                .strip_prefix('{')
                .and_then(|v| v.strip_suffix('}'))
                .unwrap_or(v);
            split_matchers(inner)
        })
        .map(|m| MatcherDef::parse(&m).map_err(|e| ApiError::bad_request(format!("filter: {e}"))))
        .collect()
}

/// Splits `a="x,y",b=~"z"` at the commas outside quotes.
fn split_matchers(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().filter(|m| !m.trim().is_empty()).collect()
}

#[utoipa::path(
    get,
    path = "/api/v2/status",
    tag = "alertmanager",
    summary = "Alertmanager v2: status",
    responses((status = 200, description = "alertmanagerStatus", body = serde_json::Value))
)]
async fn status(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check_basic(&h, Role::Viewer)?;
    let st = s.status.get();
    let original = s
        .definitions()
        .routing
        .as_ref()
        .map(|r| serde_norway::to_string(&r.def).unwrap_or_default())
        .unwrap_or_default();
    Ok(Json(json!({
        "cluster": {"status": "disabled", "peers": []},
        "versionInfo": {
            "version": format!("{COMPATIBLE_VERSION}+prismwatch.{}", st.version),
            "revision": format!("prismwatch-{}", st.version),
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        },
        "config": {"original": original},
        "uptime": rfc3339(st.started_at_ms),
    })))
}

#[utoipa::path(
    get,
    path = "/api/v2/receivers",
    tag = "alertmanager",
    summary = "Alertmanager v2: receivers",
    responses((status = 200, description = "The receivers", body = Vec<super::schema::Receiver>))
)]
async fn receivers(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check_basic(&h, Role::Viewer)?;
    let defs = s.definitions();
    let names: Vec<Value> = defs
        .routing
        .iter()
        .flat_map(|r| r.receivers.iter().map(|x| json!({"name": x.name})))
        .collect();
    Ok(Json(Value::Array(names)))
}

/// An alert in Alertmanager's `gettableAlert` shape.
fn gettable(a: &ManagedAlert, receivers: Vec<String>, now: i64, timeout_ms: i64) -> Value {
    let state = if a.is_muted() { "suppressed" } else { "active" };
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "fingerprint": a.fingerprint,
        "startsAt": rfc3339(a.starts_at),
        "updatedAt": rfc3339(a.updated_at),
        // Rule alerts end when their condition does; Alertmanager shows its lease instead.
        "endsAt": rfc3339(a.expires_at.unwrap_or(now.max(a.updated_at) + timeout_ms)),
        "receivers": receivers.into_iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": state,
            "silencedBy": a.silenced_by,
            "inhibitedBy": a.inhibited_by,
        },
    });
    if !a.generator_url.is_empty() {
        v["generatorURL"] = json!(a.generator_url);
    }
    v
}

/// `GET /api/v2/alerts`: firing alerts (Alertmanager lists no pending or resolved ones), with
/// the `active`, `silenced`, `inhibited` flags, `filter` matchers and a `receiver` regex.
#[utoipa::path(
    get,
    path = "/api/v2/alerts",
    tag = "alertmanager",
    summary = "Alertmanager v2: firing alerts",
    params(super::schema::V2AlertQuery),
    responses((status = 200, description = "gettableAlerts", body = Vec<super::schema::GettableAlert>))
)]
async fn list_alerts(
    State(s): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    s.auth.check_basic(&h, Role::Viewer)?;
    let pairs = query_pairs(&q)?;
    let (active, silenced, inhibited) = (
        flag(&pairs, "active")?,
        flag(&pairs, "silenced")?,
        flag(&pairs, "inhibited")?,
    );
    flag(&pairs, "unprocessed")?;
    let matchers: Vec<LabelMatcher> = filters(&pairs)?
        .iter()
        .map(|m| m.compile().map_err(ApiError::bad_request))
        .collect::<Result<_, _>>()?;
    let receiver = match pairs.iter().find(|(k, v)| k == "receiver" && !v.is_empty()) {
        Some((_, r)) => Some(
            regex::Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| ApiError::bad_request(format!("receiver: {e}")))?,
        ),
        None => None,
    };
    let defs = s.definitions();
    let cache = s.cache()?;
    let now = clock::now_ms();
    let timeout_ms = s.external_timeout_ms;
    let alerts = cache.alerts.values.read().unwrap();
    let mut out: Vec<(&str, Value)> = Vec::new();
    for a in alerts.values().filter(|a| a.status == AlertStatus::Firing) {
        let muted_silence = !a.silenced_by.is_empty();
        let muted_inhibit = !a.inhibited_by.is_empty();
        if (!active && !a.is_muted())
            || (!silenced && muted_silence)
            || (!inhibited && muted_inhibit)
            || !matchers.iter().all(|m| m.matches(&a.labels))
        {
            continue;
        }
        let names = defs
            .routing
            .as_ref()
            .map(|r| r.receivers_of(&a.labels))
            .unwrap_or_default();
        if let Some(re) = &receiver {
            if !names.iter().any(|n| re.is_match(n)) {
                continue;
            }
        }
        out.push((&a.fingerprint, gettable(a, names, now, timeout_ms)));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    Ok(Json(Value::Array(
        out.into_iter().map(|(_, v)| v).collect(),
    )))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PostableAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

/// Checks one posted alert as Alertmanager does (empty labels dropped, one label at least,
/// valid times, the end not before the start).
fn external(i: usize, p: PostableAlert) -> Result<ExternalAlert, String> {
    let labels: BTreeMap<String, String> = p
        .labels
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if labels.is_empty() {
        return Err(format!("[{i}]: at least one label pair required"));
    }
    if let Some(bad) = labels.keys().find(|k| !valid_label_name(k)) {
        return Err(format!("[{i}].labels: invalid label name {bad:?}"));
    }
    let t = |f: &str, v: &Option<String>| match v {
        Some(v) if !v.is_empty() => parse_time(&format!("[{i}].{f}"), v),
        _ => Ok(None),
    };
    let (starts_at, ends_at) = (t("startsAt", &p.starts_at)?, t("endsAt", &p.ends_at)?);
    if let (Some(s), Some(e)) = (starts_at, ends_at) {
        if e < s {
            return Err(format!("[{i}]: endsAt is before startsAt"));
        }
    }
    Ok(ExternalAlert {
        labels,
        annotations: p.annotations,
        starts_at: starts_at.or(ends_at),
        ends_at,
        generator_url: p.generator_url.unwrap_or_default(),
        priority: None,
    })
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `POST /api/v2/alerts`: the valid alerts are taken; if any was invalid the answer is 400
/// naming it (as Alertmanager does).
#[utoipa::path(
    post,
    path = "/api/v2/alerts",
    tag = "alertmanager",
    summary = "Alertmanager v2: send alerts (operator): what Prometheus does",
    request_body = Vec<PostableAlert>,
    responses((status = 200, description = "Taken"))
)]
async fn post_alerts(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(posted): JsonBody<Vec<PostableAlert>>,
) -> Result<Response, ApiError> {
    let who = s.auth.check_basic(&h, Role::Operator)?;
    let mut alerts = Vec::new();
    let mut errors = Vec::new();
    for (i, p) in posted.into_iter().enumerate() {
        match external(i, p) {
            Ok(a) => alerts.push(a),
            Err(e) => errors.push(e),
        }
    }
    if !alerts.is_empty() {
        let _accepted = s
            .command(&who, CommandBody::AlertExternal { alerts })
            .await?;
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors.join("; ")));
    }
    Ok(StatusCode::OK.into_response())
}

fn gettable_silence(x: &Silence, now: i64) -> Value {
    json!({
        "id": x.id,
        "status": {"state": x.state(now).as_str()},
        "updatedAt": rfc3339(x.updated_at),
        "matchers": x.matchers,
        "startsAt": rfc3339(x.starts_at),
        "endsAt": rfc3339(x.ends_at),
        "createdBy": x.created_by,
        "comment": x.comment,
    })
}

/// `GET /api/v2/silences`: a `filter` keeps silences having each given matcher exactly (not
/// label matching: Alertmanager's rule); active first (by end), then pending (by start), then
/// expired (latest end first).
#[utoipa::path(
    get,
    path = "/api/v2/silences",
    tag = "alertmanager",
    summary = "Alertmanager v2: silences",
    params(super::schema::V2SilenceQuery),
    responses((status = 200, description = "gettableSilences", body = Vec<super::schema::GettableSilence>))
)]
async fn list_silences(
    State(s): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    s.auth.check_basic(&h, Role::Viewer)?;
    let wanted = filters(&query_pairs(&q)?)?;
    let cache = s.cache()?;
    let now = clock::now_ms();
    let silences = cache.silences.values.read().unwrap();
    let mut list: Vec<&Silence> = silences
        .values()
        .filter(|x| wanted.iter().all(|m| x.matchers.contains(m)))
        .collect();
    use crate::alerting::silence::SilenceState as S;
    list.sort_by_key(|x| match x.state(now) {
        S::Active => (0, x.ends_at),
        S::Pending => (1, x.starts_at),
        S::Expired => (2, -x.ends_at),
    });
    Ok(Json(Value::Array(
        list.into_iter().map(|x| gettable_silence(x, now)).collect(),
    )))
}

#[utoipa::path(
    get,
    path = "/api/v2/silence/{id}",
    tag = "alertmanager",
    summary = "Alertmanager v2: one silence",
    params(("id" = String, Path, description = "Silence id")),
    responses((status = 200, description = "gettableSilence", body = super::schema::GettableSilence))
)]
async fn get_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.check_basic(&h, Role::Viewer)?;
    let x = s.silence(&id)?;
    Ok(Json(gettable_silence(&x, clock::now_ms())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<MatcherDef>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

/// `POST /api/v2/silences`: creates one (or replaces the one named by `id`); answers
/// `{"silenceID"}`.
#[utoipa::path(
    post,
    path = "/api/v2/silences",
    tag = "alertmanager",
    summary = "Alertmanager v2: create or replace a silence (operator)",
    request_body = PostableSilence,
    responses((status = 200, description = "The silence id", body = super::schema::SilenceCreated))
)]
async fn post_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(b): JsonBody<PostableSilence>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check_basic(&h, Role::Operator)?;
    if b.matchers.is_empty() {
        return Err(ApiError::bad_request(
            "matchers: at least one matcher required",
        ));
    }
    for (i, m) in b.matchers.iter().enumerate() {
        m.compile()
            .map_err(|e| ApiError::bad_request(format!("matchers[{i}]: {e}")))?;
    }
    let now = clock::now_ms();
    let starts_at = parse_time("startsAt", &b.starts_at)
        .map_err(ApiError::bad_request)?
        .unwrap_or(now);
    let ends_at = parse_time("endsAt", &b.ends_at)
        .map_err(ApiError::bad_request)?
        .ok_or_else(|| ApiError::bad_request("endsAt: required"))?;
    if starts_at >= ends_at {
        return Err(ApiError::bad_request(
            "Failed to create silence: start time must be before end time",
        ));
    }
    if ends_at < now {
        return Err(ApiError::bad_request(
            "Failed to create silence: end time can't be in the past",
        ));
    }
    let id = match b.id.filter(|i| !i.is_empty()) {
        Some(id) => Some(s.silence(&id)?.id),
        None => None,
    };
    let reply = s
        .command(
            &who,
            CommandBody::SilenceCreate {
                id,
                matchers: b.matchers,
                // A silence starting in the past starts now (Alertmanager's rule).
                starts_at: Some(starts_at.max(now)),
                ends_at,
                comment: b.comment,
                created_by: Some(b.created_by),
            },
        )
        .await?;
    Ok(Json(
        json!({"silenceID": reply.0["result"]["silence_id"].clone()}),
    ))
}

/// `DELETE /api/v2/silence/{id}`: expires it; an already expired one is left as it is.
#[utoipa::path(
    delete,
    path = "/api/v2/silence/{id}",
    tag = "alertmanager",
    summary = "Alertmanager v2: expire a silence (operator)",
    params(("id" = String, Path, description = "Silence id")),
    responses((status = 200, description = "Expired"))
)]
async fn expire_silence(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = s.auth.check_basic(&h, Role::Operator)?;
    let x = s.silence(&id)?;
    if x.state(clock::now_ms()) != crate::alerting::silence::SilenceState::Expired {
        let _expired = s
            .command(&who, CommandBody::SilenceExpire { id: x.id })
            .await?;
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_millis_utc_and_any_offset_parses() {
        assert_eq!(rfc3339(1_764_410_400_123), "2025-11-29T10:00:00.123Z");
        assert_eq!(
            parse_time("t", "2025-11-29T11:00:00.123+01:00").unwrap(),
            Some(1_764_410_400_123)
        );
        assert_eq!(parse_time("t", "0001-01-01T00:00:00Z").unwrap(), None);
        assert!(parse_time("startsAt", "yesterday")
            .unwrap_err()
            .starts_with("startsAt: \"yesterday\""));
    }

    #[test]
    fn filters_split_outside_quotes_and_take_braces() {
        let pairs = vec![
            ("filter".to_string(), r#"{a="x,y",b=~"z.*"}"#.to_string()),
            ("filter".to_string(), "c!=d".to_string()),
        ];
        let f = filters(&pairs).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].value, "x,y");
        assert!(f[1].is_regex && f[1].is_equal);
        assert!(!f[2].is_equal && !f[2].is_regex);
    }

    #[test]
    fn posted_alerts_are_checked_as_alertmanager_does() {
        let p = |v: Value| serde_json::from_value::<PostableAlert>(v).unwrap();
        let a = external(
            0,
            p(json!({"labels": {"alertname": "X", "empty": ""}, "endsAt": "2025-11-29T10:00:00Z"})),
        )
        .unwrap();
        assert_eq!(a.labels.len(), 1, "empty labels are dropped");
        assert_eq!(a.starts_at, a.ends_at, "no start: the end");
        assert!(external(1, p(json!({"labels": {"x": ""}})))
            .unwrap_err()
            .contains("at least one label"));
        assert!(external(
            2,
            p(json!({"labels": {"a": "b"}, "startsAt": "2025-11-29T10:00:00Z", "endsAt": "2025-11-29T09:00:00Z"}))
        )
        .unwrap_err()
        .contains("before"));
        assert!(external(3, p(json!({"labels": {"1a": "b"}})))
            .unwrap_err()
            .contains("invalid label name"));
    }
}

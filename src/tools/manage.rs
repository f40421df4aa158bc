//! `prismwatch alerts`, `ack`, `unack`, `resolve`, `silence add|query|expire`, `reload`: the
//! alert manager from the command line, through the HTTP API (so the API's roles and audit
//! apply). Where the API is and the credential come from flags, the environment
//! (`PRISMWATCH_API_URL`, `PRISMWATCH_API_TOKEN`) or the config's `cli:` section; tables for
//! people, `--json` for scripts.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

/// A client of the API.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// From the flags (`url`, `token`), else the environment (via clap), else `cfg`.
    pub fn new(
        url: Option<String>,
        token: Option<String>,
        ca_file: Option<PathBuf>,
        cfg: &crate::config::Config,
    ) -> anyhow::Result<ApiClient> {
        let base = match url.or_else(|| cfg.cli.api_url.clone()) {
            Some(u) => u,
            None if cfg.http.listen.is_empty() => anyhow::bail!(
                "no API address: give --api-url (or PRISMWATCH_API_URL, or cli.api_url in the config)"
            ),
            None => format!(
                "{}://{}",
                if cfg.http.tls.is_some() { "https" } else { "http" },
                cfg.http.listen
            ),
        };
        let token = match token {
            Some(t) => Some(t),
            None => cfg
                .cli
                .token
                .as_ref()
                .map(|s| s.read().map_err(|e| anyhow::anyhow!("cli.token: {e}")))
                .transpose()?,
        };
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = ca_file.or_else(|| cfg.cli.ca_file.clone()) {
            let pem =
                std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", ca.display()))?,
            );
        }
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: b.build()?,
        })
    }

    /// One call; the API's error message (or what went wrong on the way) as the error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(v);
        }
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            anyhow::bail!("{message} (give --token, PRISMWATCH_API_TOKEN or cli.token)");
        }
        anyhow::bail!("{message}")
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// RFC 3339 (`2026-11-29T14:00:00Z`) to ms since the epoch.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = humantime::parse_rfc3339_weak(s)
        .with_context(|| format!("{s:?} is not a time like 2026-11-29T14:00:00Z"))?;
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
}

pub fn format_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// What `alerts` asks for.
#[derive(Debug, Default)]
pub struct AlertQuery {
    pub status: Option<String>,
    pub priority: Option<String>,
    pub rule: Option<String>,
    pub matchers: Vec<String>,
    pub acknowledged: Option<bool>,
    pub silenced: Option<bool>,
    pub limit: Option<usize>,
}

/// Lists alerts, most urgent first: a table, or the API's JSON.
pub async fn alerts(api: &ApiClient, q: &AlertQuery, json_out: bool) -> anyhow::Result<()> {
    let mut params: Vec<(&str, String)> = Vec::new();
    let opt = |p: &mut Vec<(&str, String)>, k, v: &Option<String>| {
        if let Some(v) = v {
            p.push((k, v.clone()));
        }
    };
    opt(&mut params, "status", &q.status);
    opt(&mut params, "priority", &q.priority);
    opt(&mut params, "rule", &q.rule);
    if !q.matchers.is_empty() {
        params.push(("matchers", q.matchers.join(",")));
    }
    if let Some(a) = q.acknowledged {
        params.push(("acknowledged", a.to_string()));
    }
    if let Some(s) = q.silenced {
        params.push(("silenced", s.to_string()));
    }
    if let Some(l) = q.limit {
        params.push(("limit", l.to_string()));
    }
    let query = serde_urlencoded::to_string(&params)?;
    let page = api.get(&format!("/api/v1/alerts?{query}")).await?;
    if json_out {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page["alerts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let mut marks = Vec::new();
            if let Some(by) = a["ack"]["by"].as_str() {
                marks.push(format!("acked by {by}"));
            }
            for (field, what) in [
                ("silenced_by", "silenced by"),
                ("inhibited_by", "inhibited by"),
            ] {
                let ids: Vec<&str> = a[field]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !ids.is_empty() {
                    marks.push(format!("{what} {}", ids.join(",")));
                }
            }
            if a["flapping"] == true {
                marks.push("flapping".into());
            }
            let labels: Vec<String> = a["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "priority"))
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                a["priority"].as_str().unwrap_or_default().to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
                a["rule"].as_str().unwrap_or_default().to_string(),
                a["id"].as_str().unwrap_or_default().to_string(),
                format_time(a["starts_at"].as_i64().unwrap_or_default()),
                labels.join(","),
                marks.join("; "),
            ]
        })
        .collect();
    print_table(
        &[
            "PRIORITY", "STATUS", "RULE", "ID", "STARTED", "LABELS", "NOTES",
        ],
        &rows,
    );
    let shown = rows.len();
    let count = page["count"].as_u64().unwrap_or(0) as usize;
    if count > shown {
        eprintln!("{shown} of {count} shown (--limit)");
    }
    Ok(())
}

/// Prints rows under a header, columns as wide as their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A change's answer: its message (and, with `--json`, the whole answer).
fn answered(v: &Value, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return print_json(v);
    }
    println!("{}", v["message"].as_str().unwrap_or_default());
    Ok(())
}

pub async fn ack(
    api: &ApiClient,
    alert: &str,
    comment: &str,
    expires: Option<&str>,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut body = json!({ "comment": comment });
    if let Some(e) = expires {
        body["expires_in"] = json!(e);
    }
    let v = api
        .post(&format!("/api/v1/alerts/{}/ack", path_segment(alert)), body)
        .await?;
    answered(&v, json_out)
}

pub async fn unack(api: &ApiClient, alert: &str, json_out: bool) -> anyhow::Result<()> {
    let v = api
        .post(
            &format!("/api/v1/alerts/{}/unack", path_segment(alert)),
            json!({}),
        )
        .await?;
    answered(&v, json_out)
}

pub async fn resolve(
    api: &ApiClient,
    alert: &str,
    comment: &str,
    json_out: bool,
) -> anyhow::Result<()> {
    let v = api
        .post(
            &format!("/api/v1/alerts/{}/resolve", path_segment(alert)),
            json!({ "comment": comment }),
        )
        .await?;
    answered(&v, json_out)
}

pub async fn reload(api: &ApiClient, json_out: bool) -> anyhow::Result<()> {
    let v = api.post("/api/v1/reload", json!({})).await?;
    answered(&v, json_out)
}

/// An id as one URL path segment.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What `silence add` takes.
pub struct SilenceAdd<'a> {
    pub matchers: &'a [String],
    pub comment: &'a str,
    pub duration: &'a str,
    pub start: Option<&'a str>,
    pub end: Option<&'a str>,
}

/// Creates a silence; prints its id (like amtool), or the whole answer with `--json`.
pub async fn silence_add(api: &ApiClient, a: SilenceAdd<'_>, json_out: bool) -> anyhow::Result<()> {
    // Checked here too, so a typo is named before anything is sent.
    for m in a.matchers {
        crate::alerting::matchers::MatcherDef::parse(m).map_err(anyhow::Error::msg)?;
    }
    let mut body = json!({ "matchers": a.matchers, "comment": a.comment });
    if let Some(s) = a.start {
        body["starts_at"] = json!(parse_time(s)?);
    }
    match a.end {
        Some(e) => body["ends_at"] = json!(parse_time(e)?),
        None => body["duration"] = json!(a.duration),
    }
    let v = api.post("/api/v1/silences", body).await?;
    if json_out {
        return print_json(&v);
    }
    println!("{}", v["result"]["silence_id"].as_str().unwrap_or_default());
    eprintln!("{}", v["message"].as_str().unwrap_or_default());
    Ok(())
}

/// Lists silences (active and pending; `expired` adds the expired ones), those whose matchers
/// include every given one.
pub async fn silence_query(
    api: &ApiClient,
    filter: &[String],
    expired: bool,
    quiet: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    use crate::alerting::matchers::MatcherDef;
    let want = filter
        .iter()
        .map(|m| MatcherDef::parse(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let v = api.get("/api/v1/silences").await?;
    let list: Vec<&Value> = v["silences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|s| expired || s["state"] != "expired")
        .filter(|s| {
            let has: Vec<MatcherDef> =
                serde_json::from_value(s["matchers"].clone()).unwrap_or_default();
            want.iter().all(|w| has.contains(w))
        })
        .collect();
    if json_out {
        return print_json(&json!(list));
    }
    if quiet {
        for s in &list {
            println!("{}", s["id"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let matchers: Vec<MatcherDef> =
                serde_json::from_value(s["matchers"].clone()).unwrap_or_default();
            vec![
                s["id"].as_str().unwrap_or_default().to_string(),
                matchers
                    .iter()
                    .map(MatcherDef::display)
                    .collect::<Vec<_>>()
                    .join(" "),
                s["state"].as_str().unwrap_or_default().to_string(),
                format_time(s["starts_at"].as_i64().unwrap_or_default()),
                format_time(s["ends_at"].as_i64().unwrap_or_default()),
                s["created_by"].as_str().unwrap_or_default().to_string(),
                s["comment"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "MATCHERS",
            "STATE",
            "STARTS AT",
            "ENDS AT",
            "CREATED BY",
            "COMMENT",
        ],
        &rows,
    );
    Ok(())
}

pub async fn silence_expire(api: &ApiClient, ids: &[String], json_out: bool) -> anyhow::Result<()> {
    for id in ids {
        let v = api
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/silences/{}", path_segment(id)),
                None,
            )
            .await?;
        answered(&v, json_out)?;
    }
    Ok(())
}

//! `prismwatch silence add|query|expire`, `ack`, `unack`, `resolve`, `alerts`, `reload`: the
//! alert manager from the command line (amtool-like). Changes are commands on NATS, answered
//! by the active manager; listings read the manager's KV buckets.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use async_nats::jetstream;

use crate::alerting::client;
use crate::alerting::command::{CommandBody, Reply};
use crate::alerting::matchers::MatcherDef;
use crate::alerting::silence::SilenceState;
use crate::tools::clock;

/// Who the CLI acts for: `cli:<author>` (default: `$USER`).
pub fn principal(author: Option<&str>) -> String {
    let who = author
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{who}")
}

/// Sends a command, prints the answer, fails when the manager refused it.
async fn run(js: &jetstream::Context, who: &str, body: CommandBody) -> anyhow::Result<Reply> {
    let r = client::send(js, who, body, client::ANSWER_TIMEOUT).await?;
    if !r.ok {
        anyhow::bail!("{}", r.message);
    }
    Ok(r)
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

fn duration_ms(s: &str) -> anyhow::Result<i64> {
    crate::alerting::config::duration_ms(s).map_err(anyhow::Error::msg)
}

/// What `silence add` takes.
pub struct SilenceAdd<'a> {
    pub matchers: &'a [String],
    pub comment: &'a str,
    pub duration: &'a str,
    pub start: Option<&'a str>,
    pub end: Option<&'a str>,
    pub author: Option<&'a str>,
}

/// Creates a silence; prints its id (like amtool).
pub async fn silence_add(js: &jetstream::Context, a: SilenceAdd<'_>) -> anyhow::Result<()> {
    let matchers = a
        .matchers
        .iter()
        .map(|m| MatcherDef::parse(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let starts_at = a.start.map(parse_time).transpose()?;
    let ends_at = match a.end {
        Some(e) => parse_time(e)?,
        None => starts_at.unwrap_or_else(clock::now_ms) + duration_ms(a.duration)?,
    };
    let r = run(
        js,
        &principal(a.author),
        CommandBody::SilenceCreate {
            id: None,
            matchers,
            starts_at,
            ends_at,
            comment: a.comment.to_string(),
            created_by: None,
        },
    )
    .await?;
    println!("{}", r.result["silence_id"].as_str().unwrap_or_default());
    eprintln!("{}", r.message);
    Ok(())
}

/// Lists silences (active and pending; `expired` adds the expired ones), those whose matchers
/// include every given one.
pub async fn silence_query(
    js: &jetstream::Context,
    filter: &[String],
    expired: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let want = filter
        .iter()
        .map(|m| MatcherDef::parse(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = clock::now_ms();
    let list: Vec<_> = client::silences(js)
        .await?
        .into_iter()
        .filter(|s| expired || s.state(now) != SilenceState::Expired)
        .filter(|s| want.iter().all(|w| s.matchers.contains(w)))
        .collect();
    if quiet {
        for s in &list {
            println!("{}", s.id);
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<44} {:<8} {:<21} {:<21} {:<16} COMMENT",
        "ID", "MATCHERS", "STATE", "STARTS AT", "ENDS AT", "CREATED BY"
    );
    for s in list {
        let matchers: Vec<String> = s.matchers.iter().map(MatcherDef::display).collect();
        println!(
            "{:<20} {:<44} {:<8} {:<21} {:<21} {:<16} {}",
            s.id,
            matchers.join(" "),
            s.state(now).as_str(),
            format_time(s.starts_at),
            format_time(s.ends_at),
            s.created_by,
            s.comment
        );
    }
    Ok(())
}

pub async fn silence_expire(
    js: &jetstream::Context,
    ids: &[String],
    author: Option<&str>,
) -> anyhow::Result<()> {
    let who = principal(author);
    for id in ids {
        let r = run(js, &who, CommandBody::SilenceExpire { id: id.clone() }).await?;
        println!("{}", r.message);
    }
    Ok(())
}

pub async fn ack(
    js: &jetstream::Context,
    alert: &str,
    comment: &str,
    expires: Option<&str>,
    author: Option<&str>,
) -> anyhow::Result<()> {
    let expires_at = expires
        .map(|d| Ok::<_, anyhow::Error>(clock::now_ms() + duration_ms(d)?))
        .transpose()?;
    let r = run(
        js,
        &principal(author),
        CommandBody::Ack {
            alert: alert.to_string(),
            comment: comment.to_string(),
            expires_at,
        },
    )
    .await?;
    println!("{}", r.message);
    Ok(())
}

pub async fn command(
    js: &jetstream::Context,
    body: CommandBody,
    author: Option<&str>,
) -> anyhow::Result<()> {
    let r = run(js, &principal(author), body).await?;
    println!("{}", r.message);
    Ok(())
}

/// Lists the manager's alerts: active ones (every state with `all`), one line each.
pub async fn alerts(js: &jetstream::Context, all: bool, json: bool) -> anyhow::Result<()> {
    for a in client::alerts(js).await? {
        if !all && !a.is_active() {
            continue;
        }
        if json {
            println!("{}", serde_json::to_string(&a)?);
            continue;
        }
        let mut marks = Vec::new();
        if let Some(ack) = &a.ack {
            marks.push(format!("acked by {}", ack.by));
        }
        if !a.silenced_by.is_empty() {
            marks.push(format!("silenced by {}", a.silenced_by.join(",")));
        }
        if !a.inhibited_by.is_empty() {
            marks.push(format!("inhibited by {}", a.inhibited_by.join(",")));
        }
        if a.flapping {
            marks.push("flapping".into());
        }
        let labels: Vec<String> = a
            .labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "priority"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{} {:<9} {:<26} {:<28} since {} {}{}",
            a.priority,
            a.status.token(),
            a.rule,
            a.id,
            format_time(a.starts_at),
            labels.join(","),
            if marks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", marks.join("; "))
            }
        );
    }
    Ok(())
}

//! Slack incoming webhooks: Block Kit (a header, a section per alert with its labels as
//! fields, a link button), the priority as the attachment's colour bar, `text` as the
//! notification fallback. Success is 200 `ok`.

use serde_json::{json, Value};

use super::{http, shrink_to_fit, Attempt, Ctx, Failure};
use crate::model::{AlertStatus, Notification, Priority};
use crate::notify::config::Templates;
use crate::notify::config::{ChannelConfig, SlackConfig};
use crate::notify::template::{render, Flavour, View};

/// Slack's limits: blocks per message, characters per section text and header, fields.
const MAX_BLOCKS: usize = 50;
const MAX_SECTION: usize = 3000;
const MAX_HEADER: usize = 150;
const MAX_FIELDS: usize = 10;

pub fn colour(n: &Notification) -> &'static str {
    if n.status == AlertStatus::Resolved {
        return "#2EB67D";
    }
    match n.priority {
        Priority::P1 => "#D00000",
        Priority::P2 => "#E8710A",
        Priority::P3 => "#F2C744",
        Priority::P4 => "#439FE0",
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The message body.
pub fn message(n: &Notification, ctx: &Ctx<'_>, ch: &ChannelConfig) -> Result<Value, Failure> {
    let lang = ctx.language(ch);
    let templates = &ch.common().templates;
    // Blocks: a header, a section per alert (its labels as fields), a context line, the link.
    shrink_to_fit(
        n,
        |m| {
            let view = View::of(m, &ctx.cfg.external_url);
            let r = render(&view, Flavour::Slack, lang, templates).map_err(Failure::permanent)?;
            let mut blocks = vec![json!({
                "type": "header",
                "text": {"type": "plain_text", "text": cut(&r.title, MAX_HEADER), "emoji": true}
            })];
            if templates.body.is_some() {
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&r.body, MAX_SECTION)}}));
            } else {
                // One section per alert: its own line of the default body, labels as fields.
                let lines = render(&view, Flavour::Slack, lang, &Templates::default())
                    .map_err(Failure::permanent)?
                    .body;
                let mut alert_lines = lines.lines().filter(|l| l.starts_with('•'));
                for a in &m.alerts {
                    let text = alert_lines.next().unwrap_or(&a.rule).to_string();
                    let fields: Vec<Value> = a
                        .labels
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "priority"))
                        .take(MAX_FIELDS)
                        .map(|(k, v)| json!({"type": "mrkdwn", "text": cut(&format!("*{k}*\n{v}"), 2000)}))
                        .collect();
                    let mut section = json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&text, MAX_SECTION)}});
                    if !fields.is_empty() {
                        section["fields"] = Value::Array(fields);
                    }
                    blocks.push(section);
                }
                let rest: Vec<&str> = lines
                    .lines()
                    .filter(|l| !l.starts_with('•') && !l.is_empty())
                    .collect();
                if !rest.is_empty() {
                    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&rest.join("\n"), MAX_SECTION)}]}));
                }
            }
            if let Some(a) = m.alerts.first() {
                let link = crate::notify::template::alert_link(&ctx.cfg.external_url, &a.id);
                if !link.is_empty() {
                    blocks.push(json!({"type": "actions", "elements": [{
                        "type": "button", "action_id": "open_alert",
                        "text": {"type": "plain_text", "text": if lang == "zh" { "查看告警" } else { "Open in PrismWatch" }},
                        "url": link
                    }]}));
                }
            }
            Ok(json!({
                "text": cut(&r.title, 3000),
                "blocks": blocks,
                "attachments": [{"color": colour(m), "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{} · {}", m.priority, m.group_key)}]}]}],
            }))
        },
        |v| v["blocks"].as_array().map_or(0, Vec::len) <= MAX_BLOCKS,
    )
}

pub async fn send(c: &SlackConfig, ch: &ChannelConfig, n: &Notification, ctx: &Ctx<'_>) -> Attempt {
    let url = c.url.read().map_err(Failure::permanent)?;
    let body = message(n, ctx, ch)?;
    let (status, text) = http(ctx.http.post(&url).timeout(ctx.timeout(ch)).json(&body)).await?;
    Ok(format!("HTTP {status} {}", text.trim()))
}

//! Telegram Bot API `sendMessage` in HTML parse mode (values escaped; only the tags Telegram
//! supports), at most 4,096 characters.

use serde_json::{json, Value};

use super::{shrink_to_fit, Attempt, Ctx, Failure};
use crate::model::Notification;
use crate::notify::config::{ChannelConfig, TelegramConfig};
use crate::notify::template::{escape_html, Flavour};

const MAX_TEXT: usize = 4096;

pub fn text(n: &Notification, ctx: &Ctx<'_>, ch: &ChannelConfig) -> Result<String, Failure> {
    shrink_to_fit(
        n,
        |m| {
            let r = ctx.render(ch, m, Flavour::TelegramHtml)?;
            Ok(format!(
                "<b>{}</b>\n{}",
                escape_html(&r.title),
                r.body.trim_end()
            ))
        },
        // Tags do not count against Telegram's limit: the whole text is a safe upper bound.
        |t| t.chars().count() <= MAX_TEXT,
    )
}

pub async fn send(
    c: &TelegramConfig,
    ch: &ChannelConfig,
    n: &Notification,
    ctx: &Ctx<'_>,
) -> Attempt {
    let token = c.bot_token.read().map_err(Failure::permanent)?;
    let url = format!("{}/bot{token}/sendMessage", c.api_url.trim_end_matches('/'));
    let chat: Value = c
        .chat_id
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(c.chat_id.clone()));
    let body = json!({
        "chat_id": chat,
        "text": text(n, ctx, ch)?,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": true},
    });
    let resp = ctx
        .http
        .post(&url)
        .timeout(ctx.timeout(ch))
        .json(&body)
        .send()
        .await
        .map_err(|e| Failure::transient(format!("Telegram: {}", super::error_chain(&e))))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if answer["ok"].as_bool() == Some(true) {
        return Ok(format!("ok, message_id {}", answer["result"]["message_id"]));
    }
    let description = answer["description"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| text.chars().take(200).collect());
    let message = format!("Telegram HTTP {status}: {description}");
    Err(match status {
        429 => Failure {
            transient: true,
            retry_after: answer["parameters"]["retry_after"]
                .as_u64()
                .map(std::time::Duration::from_secs),
            message,
        },
        500..=599 => Failure::transient(message),
        _ => Failure::permanent(message),
    })
}

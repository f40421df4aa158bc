//! DingTalk custom robots: markdown or actionCard, signed (HMAC-SHA256 of
//! `timestamp + "\n" + secret`, base64, URL-encoded), `@` mobiles on P1, the answer's
//! `errcode` checked (HTTP 200 with `errcode != 0` is a failure), bodies kept under 20,000 bytes.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{http, shrink_to_fit, Attempt, Ctx, Failure};
use crate::model::{Notification, Priority};
use crate::notify::config::{ChannelConfig, DingTalkConfig};
use crate::notify::template::{alert_link, Flavour};

/// DingTalk refuses bodies over this many bytes (errcode 460101).
pub const MAX_BODY: usize = 20_000;

/// The base64 signature of `timestamp` (ms) with `secret` (before URL encoding).
pub fn sign(timestamp_ms: i64, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The request body.
pub fn message(
    c: &DingTalkConfig,
    n: &Notification,
    ctx: &Ctx<'_>,
    ch: &ChannelConfig,
) -> Result<Vec<u8>, Failure> {
    shrink_to_fit(
        n,
        |m| {
            let r = ctx.render(ch, m, Flavour::Markdown)?;
            let at: Vec<&String> = if m.priority == Priority::P1 {
                c.at_mobiles.iter().collect()
            } else {
                vec![]
            };
            // The @ only highlights when the text names the mobile too.
            let mentions: String = at.iter().map(|m| format!(" @{m}")).collect();
            let text = format!("### {}\n\n{}{mentions}", r.title, r.body);
            let link = m
                .alerts
                .first()
                .map(|a| alert_link(&ctx.cfg.external_url, &a.id))
                .unwrap_or_default();
            let body: Value = if c.message_type == "action_card" && !link.is_empty() {
                json!({"msgtype": "actionCard", "actionCard": {
                    "title": r.title, "text": text,
                    "singleTitle": if ctx.language(ch) == "zh" { "查看告警" } else { "Open in PrismWatch" },
                    "singleURL": link}})
            } else {
                json!({"msgtype": "markdown", "markdown": {"title": r.title, "text": text},
                       "at": {"atMobiles": at, "isAtAll": false}})
            };
            Ok(serde_json::to_vec(&body).expect("serialises"))
        },
        |b| b.len() <= MAX_BODY,
    )
}

/// What an `errcode` means: `None` delivered, else the failure.
pub fn classify(errcode: i64, errmsg: &str) -> Option<Failure> {
    match errcode {
        0 => None,
        // Rate limited (20 a minute per robot; over that, blocked for 10 minutes) or busy: the
        // backoff grows to `notify.retry_max_ms` (our own limiter keeps us under the limit).
        130101 | 410100 | -1 => Some(Failure::transient(format!(
            "DingTalk errcode {errcode}: {errmsg}"
        ))),
        // 310000: keyword, signature, timestamp or IP check; 300001/300005: token; others.
        _ => Some(Failure::permanent(format!(
            "DingTalk errcode {errcode}: {errmsg}"
        ))),
    }
}

pub async fn send(
    c: &DingTalkConfig,
    ch: &ChannelConfig,
    n: &Notification,
    ctx: &Ctx<'_>,
) -> Attempt {
    let base = c.url.read().map_err(Failure::permanent)?;
    let mut url =
        reqwest::Url::parse(&base).map_err(|e| Failure::permanent(format!("DingTalk url: {e}")))?;
    if let Some(secret) = &c.secret {
        let secret = secret.read().map_err(Failure::permanent)?;
        let ts = ctx.now_ms;
        // Form-urlencoding: + → %2B, / → %2F, = → %3D, as DingTalk's own sample (quote_plus).
        url.query_pairs_mut()
            .append_pair("timestamp", &ts.to_string())
            .append_pair("sign", &sign(ts, &secret));
    }
    let body = message(c, n, ctx, ch)?;
    let (status, text) = http(
        ctx.http
            .post(url)
            .timeout(ctx.timeout(ch))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body),
    )
    .await?;
    let answer: Value = serde_json::from_str(&text).map_err(|_| {
        Failure::transient(format!(
            "HTTP {status}, not a DingTalk answer: {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    let code = answer["errcode"].as_i64().unwrap_or(-1);
    let msg = answer["errmsg"].as_str().unwrap_or("");
    match classify(code, msg) {
        None => Ok(format!("errcode 0 {msg}")),
        Some(f) => Err(f),
    }
}

//! Webhooks: Alertmanager's webhook payload, version 4, byte for byte as Alertmanager's Go
//! encoder writes it (field order, sorted maps, `<>&` escaped, a trailing newline), so any
//! receiver written for Alertmanager works unchanged.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{http, keep_alerts, Attempt, Ctx, Failure};
use crate::model::{AlertStatus, Notification};
use crate::notify::config::{ChannelConfig, WebhookConfig};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    receiver: &'a str,
    status: &'a str,
    alerts: Vec<Alert<'a>>,
    group_labels: &'a BTreeMap<String, String>,
    common_labels: &'a BTreeMap<String, String>,
    common_annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
}

#[derive(Serialize)]
struct Alert<'a> {
    status: &'a str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: &'a str,
}

/// Go's `time.Time` in JSON (RFC 3339, fraction trimmed, UTC).
pub fn go_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let frac = ms.rem_euclid(1000);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if frac != 0 {
        s.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Go's zero time: what Alertmanager sends as a firing alert's `endsAt`.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The version 4 body for `n` (at most `max_alerts` alerts; 0 = all).
pub fn payload(n: &Notification, external_url: &str, max_alerts: usize) -> Vec<u8> {
    let n = if max_alerts > 0 {
        keep_alerts(n, max_alerts)
    } else {
        n.clone()
    };
    let msg = Message {
        receiver: &n.receiver,
        status: n.status.token(),
        alerts: n
            .alerts
            .iter()
            .map(|a| Alert {
                status: a.status.token(),
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: go_time(a.starts_at),
                ends_at: match (a.status, a.ends_at) {
                    (AlertStatus::Resolved, Some(t)) => go_time(t),
                    _ => GO_ZERO_TIME.to_string(),
                },
                generator_url: &a.generator_url,
                fingerprint: &a.fingerprint,
            })
            .collect(),
        group_labels: &n.group_labels,
        common_labels: &n.common_labels,
        common_annotations: &n.common_annotations,
        external_url,
        version: "4",
        group_key: &n.group_key,
        truncated_alerts: n.truncated as u64,
    };
    let json = serde_json::to_string(&msg).expect("a webhook message serialises");
    // Go's encoder escapes these for HTML safety; they only occur inside strings here.
    let mut out = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    out.push('\n');
    out.into_bytes()
}

/// `sha256=<hex>` of the body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", hex::encode(bytes))
}

pub async fn send(
    c: &WebhookConfig,
    ch: &ChannelConfig,
    n: &Notification,
    ctx: &Ctx<'_>,
) -> Attempt {
    let url = c.url.read().map_err(Failure::permanent)?;
    let body = payload(n, &ctx.cfg.external_url, c.max_alerts);
    let mut req = ctx
        .http
        .post(&url)
        .timeout(ctx.timeout(ch))
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", &n.id)
        .header("X-PrismWatch-Notification-Id", &n.id);
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    if let Some(secret) = &c.hmac_secret {
        let secret = secret.read().map_err(Failure::permanent)?;
        req = req.header("X-PrismWatch-Signature", signature(&secret, &body));
    }
    let (status, _) = http(req.body(body)).await?;
    Ok(format!("HTTP {status}"))
}

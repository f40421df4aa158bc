//! PagerDuty Events API v2: one event per alert, `dedup_key` = the alert id, so PagerDuty's
//! incident follows the alert: firing → trigger (acknowledge once acknowledged here),
//! resolved → resolve. Retrying re-sends the same events, which PagerDuty deduplicates.

use serde_json::{json, Value};

use super::{http, Attempt, Ctx, Failure};
use crate::model::{AlertStatus, Notification, NotifiedAlert, Priority};
use crate::notify::config::{ChannelConfig, PagerDutyConfig};
use crate::notify::template::alert_link;

fn severity(p: Priority) -> &'static str {
    match p {
        Priority::P1 => "critical",
        Priority::P2 => "error",
        Priority::P3 => "warning",
        Priority::P4 => "info",
    }
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The event for one alert.
pub fn event(routing_key: &str, a: &NotifiedAlert, external_url: &str) -> Value {
    let action = match (a.status, a.acknowledged.is_some()) {
        (AlertStatus::Resolved, _) => "resolve",
        (_, true) => "acknowledge",
        _ => "trigger",
    };
    let mut e = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": cut(&a.id, 255),
        "client": "PrismWatch",
    });
    if action == "trigger" {
        let summary = a
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_else(|| a.rule.clone());
        let source = ["exchange", "service", "host", "instance"]
            .iter()
            .find_map(|k| a.labels.get(*k))
            .cloned()
            .unwrap_or_else(|| "prismwatch".into());
        e["payload"] = json!({
            "summary": cut(&format!("[{}] {}", a.priority, summary), 1024),
            "source": source,
            "severity": severity(a.priority),
            "timestamp": super::webhook::go_time(a.starts_at),
            "class": a.rule,
            "custom_details": {"rule": a.rule, "value": a.value, "labels": a.labels, "annotations": a.annotations},
        });
        let link = alert_link(external_url, &a.id);
        if !link.is_empty() {
            e["links"] = json!([{"href": link, "text": "Open in PrismWatch"}]);
            e["client_url"] = json!(external_url);
        }
    }
    e
}

pub async fn send(
    c: &PagerDutyConfig,
    ch: &ChannelConfig,
    n: &Notification,
    ctx: &Ctx<'_>,
) -> Attempt {
    let key = c.routing_key.read().map_err(Failure::permanent)?;
    let mut answers = Vec::new();
    for a in &n.alerts {
        let e = event(&key, a, &ctx.cfg.external_url);
        let (status, body) = http(ctx.http.post(&c.url).timeout(ctx.timeout(ch)).json(&e)).await?;
        answers.push(format!(
            "{} {}: HTTP {status} {}",
            e["event_action"].as_str().unwrap_or(""),
            a.id,
            body.trim()
        ));
    }
    Ok(answers.join("; "))
}

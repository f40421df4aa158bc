//! `prismwatch tail`: follow alert events with a subject filter and print them one per line.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use crate::model::{AlertEvent, AlertStatus};
use crate::rules::fmt_value;

/// One line per event: time (UTC), status, priority, rule, labels (the series' and the
/// rule's), value, summary.
pub fn format_event(e: &AlertEvent) -> String {
    let when = format!("{} UTC", format_ms(e.event_time));
    let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let status = match e.status {
        AlertStatus::Firing => "FIRING   ",
        AlertStatus::Resolved => "RESOLVED ",
        AlertStatus::Pending => "pending  ",
        AlertStatus::Cancelled => "cancelled",
    };
    let summary = e.annotations.get("summary").cloned().unwrap_or_default();
    let duration = e
        .ends_at
        .map(|end| format!(" after {}", fmt_duration(end - e.starts_at)))
        .unwrap_or_default();
    format!(
        "{when} {status} {} {:<24} value={:<8} {{{}}} {summary}{duration}",
        e.priority,
        e.rule,
        fmt_value(e.value),
        labels.join(",")
    )
}

fn fmt_duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of an event time.
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// Follows `PRISM_ALERTS` with an ordered consumer on `filter` (from the start of the stream when
/// `history`, else only new events), calling `each` per event until it returns false.
pub async fn follow(
    js: &jetstream::Context,
    stream_name: &str,
    filter: &str,
    history: bool,
    mut each: impl FnMut(AlertEvent) -> bool,
) -> anyhow::Result<()> {
    let stream = js.get_stream(stream_name).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: if history {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::New
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        match serde_json::from_slice::<AlertEvent>(&msg.payload) {
            Ok(e) => {
                if !each(e) {
                    break;
                }
            }
            Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "undecodable alert event"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_every_label_and_the_zone() {
        let e = AlertEvent {
            id: "f-1".into(),
            fingerprint: "f".into(),
            rule: "memory_high".into(),
            priority: crate::model::Priority::P2,
            status: AlertStatus::Resolved,
            labels: [
                ("service", "api-gateway"),
                ("team", "platform"),
                ("metric", "memory_usage_percent"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: [(
                "summary".to_string(),
                "Memory back to 57.6% on api-gateway after 7m; peak 91%".to_string(),
            )]
            .into_iter()
            .collect(),
            value: 57.579,
            score: 0.0,
            starts_at: 1_764_410_400_000,
            ends_at: Some(1_764_410_820_000),
            end_reason: None,
            event_time: 1_764_410_820_000,
        };
        assert_eq!(
            format_event(&e),
            "2025-11-29 10:07:00 UTC RESOLVED  P2 memory_high              value=57.579   {metric=memory_usage_percent,service=api-gateway,team=platform} Memory back to 57.6% on api-gateway after 7m; peak 91% after 7m00s"
        );
    }
}

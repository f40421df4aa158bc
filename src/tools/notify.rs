//! `prismwatch notify retry`: dead-lettered notifications back to the notifiers.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use crate::config::Config;
use crate::notify::{HEADER_CHANNEL, HEADER_ONLY_CHANNEL};
use crate::subjects;

/// Re-publishes each dead letter (of `receiver`, or all) to its receiver's notification
/// subject, for the channel that failed only, then removes it from the dead-letter stream.
/// Returns how many.
pub async fn retry_dead(
    js: &jetstream::Context,
    cfg: &Config,
    receiver: Option<&str>,
) -> anyhow::Result<usize> {
    let mut stream = js.get_stream(&cfg.streams.notify_dead.name).await?;
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let filter = match receiver {
        Some(r) => subjects::notify_dead_subject(r),
        None => subjects::NOTIFY_DEAD_ALL.to_string(),
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut sent = 0;
    while let Some(m) = messages.next().await {
        let m = m?;
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let receiver = m.subject.rsplit('.').next().unwrap_or_default().to_string();
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("retry-{seq}").as_str());
        if let Some(ch) = m.headers.as_ref().and_then(|h| h.get(HEADER_CHANNEL)) {
            if ch.as_str() != "-" {
                h.insert(HEADER_ONLY_CHANNEL, ch.as_str());
            }
        }
        js.publish_with_headers(subjects::notify_subject(&receiver), h, m.payload.clone())
            .await?
            .await?;
        stream.delete_message(seq).await?;
        sent += 1;
        if pending == 0 || seq >= last {
            break;
        }
    }
    Ok(sent)
}

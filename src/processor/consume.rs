//! Consuming one partition: its durable consumer, (re)created at the checkpoint on every
//! takeover, and a task that keeps pulling batches while the partition's loop publishes and acks.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use super::ProcessorError;
use crate::config::Config;
use crate::ingest::Incoming;
use crate::subjects;

/// A batch of pulled messages: compact `Incoming`s, and the last message for the cumulative ack.
pub struct Pulled {
    pub batch: Vec<Incoming>,
    pub last: Option<jetstream::Message>,
    /// The batch's sampled messages (see `crate::trace`); usually none.
    pub traces: Vec<crate::trace::Traced>,
}

/// The stored message, from a message and its already parsed info (parsing the reply subject
/// is a good part of a message's cost: do it once).
pub fn incoming_with(msg: &jetstream::Message, info: &jetstream::message::Info<'_>) -> Incoming {
    Incoming {
        subject: msg.subject.clone(),
        payload: msg.payload.clone(),
        content_type: msg
            .headers
            .as_ref()
            .and_then(|h| h.get(subjects::HEADER_CONTENT_TYPE))
            .map(|v| content_type(v.as_str())),
        stream_seq: info.stream_sequence,
        published_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
    }
}

/// A `Content-Type` value, borrowed when it is one of the usual ones.
fn content_type(v: &str) -> Cow<'static, str> {
    match v {
        "application/msgpack" => Cow::Borrowed("application/msgpack"),
        "application/json" => Cow::Borrowed("application/json"),
        other => Cow::Owned(other.to_string()),
    }
}

/// The durable consumer of a partition: `<group>-<partition>`.
pub fn consumer_name(group: &str, partition: u32) -> String {
    format!("{group}-{partition}")
}

/// What the previous consumer of a partition had acked (0 when there was none).
pub async fn acked_before(
    stream: &jetstream::stream::Stream,
    name: &str,
) -> Result<u64, ProcessorError> {
    match stream.consumer_info(name).await {
        Ok(info) => Ok(info.ack_floor.stream_sequence),
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => Ok(0),
        Err(e) => Err(ProcessorError::Nats(format!(
            "look up consumer {name}: {e}"
        ))),
    }
}

/// Replaces the partition's consumer with one that starts right after `last_seq` (the
/// checkpoint; 0 = the stream's start). Deleting it first also fences off a previous owner that
/// may still be pulling from it: its pull requests die with it.
pub async fn recreate(
    stream: &jetstream::stream::Stream,
    cfg: &Config,
    partition: u32,
    last_seq: u64,
) -> Result<consumer::PullConsumer, ProcessorError> {
    let name = consumer_name(&cfg.ingest.consumer_name, partition);
    if let Err(e) = stream.delete_consumer(&name).await {
        // Usually "not found" (a first start); anything else shows when creating it.
        tracing::debug!(consumer = %name, error = %e, "delete before recreate");
    }
    let deliver_policy = if last_seq == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: last_seq + 1,
        }
    };
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("PrismWatch processor, partition {partition}")),
            // Cumulative explicit acks: acking a batch's last message acks the batch. One ack
            // per batch instead of per message halves the server's work for single-point
            // messages; the lease makes this owner the consumer's only reader.
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(cfg.ingest.ack_wait_secs),
            max_ack_pending: cfg.ingest.max_ack_pending,
            filter_subject: subjects::partition_filter(partition),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| ProcessorError::Nats(format!("create consumer {name}: {e}")))
}

/// What the pulling task has seen, for the partition's other tasks.
#[derive(Debug, Default)]
pub struct PullProgress {
    /// Messages pulled so far (the quiet-time ticker and the lag gauge read it).
    pub pulled: AtomicU64,
    /// The consumer's pending count as the server stamped it on the last message delivered:
    /// the partition's lag at that moment, known without asking the server.
    pub pending: AtomicU64,
}

/// Drives the consumer's message stream on a task of its own, so it keeps issuing pull requests
/// (the client asks for more only while its stream is polled) while the partition's loop
/// publishes and acks; `out`'s bound is the back-pressure. A chunk is cut into batches of at
/// most `max_batch_bytes` of payload. `progress` counts messages and keeps the last pending
/// count. Ends when the stream or the receiver does.
pub async fn pull_batches<S>(
    mut messages: S,
    max_batch_bytes: usize,
    out: tokio::sync::mpsc::Sender<Pulled>,
    progress: Arc<PullProgress>,
) where
    S: futures::Stream<Item = Vec<Result<jetstream::Message, consumer::pull::MessagesError>>>
        + Unpin,
{
    while let Some(chunk) = messages.next().await {
        let mut cut = BatchCut::new(max_batch_bytes);
        let mut batch = Vec::new();
        let mut traces = Vec::new();
        let mut last = None;
        let tracing = crate::trace::enabled();
        for m in chunk {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
            };
            progress.pulled.fetch_add(1, Ordering::Relaxed);
            let full = cut.add(m.payload.len());
            let before = batch.len();
            if let Ok(info) = m.info() {
                progress.pending.store(info.pending, Ordering::Relaxed);
                batch.push(incoming_with(&m, &info));
            }
            if tracing && batch.len() > before {
                let inc = &batch[before];
                traces.extend(crate::trace::ingest(
                    m.headers.as_ref(),
                    &inc.subject,
                    inc.stream_seq,
                ));
            }
            last = Some(m);
            if full {
                let batch = std::mem::take(&mut batch);
                if out
                    .send(Pulled {
                        batch,
                        last: last.take(),
                        traces: std::mem::take(&mut traces),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if last.is_some()
            && out
                .send(Pulled {
                    batch,
                    last,
                    traces,
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Where batches end: after the message that brings a batch's payload to `max_bytes`.
pub struct BatchCut {
    max_bytes: usize,
    bytes: usize,
}

impl BatchCut {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
        }
    }

    /// Adds a message of `len` bytes; true when the batch ends with it.
    pub fn add(&mut self, len: usize) -> bool {
        self.bytes += len;
        if self.bytes >= self.max_bytes {
            self.bytes = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::server::LocalNatsServer;

    #[test]
    fn a_batch_ends_at_the_message_that_reaches_the_byte_bound() {
        let mut cut = BatchCut::new(1000);
        let ends: Vec<bool> = [400, 400, 400, 100, 2000, 10, 990]
            .into_iter()
            .map(|len| cut.add(len))
            .collect();
        // 400+400+400 ≥ 1000 ends the first; 100+2000 the second; 10+990 the third.
        assert_eq!(ends, [false, false, true, false, true, false, true]);
    }

    /// The lag gauge reads the pending count the server stamps on each delivered message (no
    /// consumer-info call under load): against a real nats-server, a consumer held at 4
    /// unacked messages of 10 reports what the server itself says is pending, at every step.
    #[tokio::test]
    async fn the_pending_count_is_the_one_stamped_on_the_last_delivered_message() {
        let server = LocalNatsServer::start().expect("nats-server >= 2.10 (.ci/run installs it)");
        let mut cfg = Config::default();
        cfg.nats.url = server.url();
        cfg.streams.partitions = 1;
        cfg.ingest.max_batch = 4;
        cfg.ingest.max_ack_pending = 4;
        let client = crate::bus::connect(&cfg.nats).await.unwrap();
        let js = jetstream::new(client.clone());
        crate::bus::ensure_streams(&js, &cfg.streams).await.unwrap();
        for i in 0..10 {
            let subject = subjects::metric_subject("exchange", "binance", "trades");
            js.publish(subject, format!("{i}").into_bytes().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let stream = js.get_stream(&cfg.streams.metrics.name).await.unwrap();
        let consumer = recreate(&stream, &cfg, 0, 0).await.unwrap();
        let messages = consumer
            .stream()
            .max_messages_per_batch(4)
            .messages()
            .await
            .unwrap()
            .ready_chunks(4);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let progress = Arc::new(PullProgress::default());
        let puller = tokio::spawn(pull_batches(messages, 1 << 20, tx, progress.clone()));
        let name = consumer_name(&cfg.ingest.consumer_name, 0);
        // The server holds back what is over max_ack_pending until the delivered are acked.
        for (delivered, pending) in [(4, 6), (8, 2), (10, 0)] {
            let mut last = None;
            while progress.pulled.load(Ordering::Relaxed) < delivered {
                let pulled = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("a batch within 10 s")
                    .expect("the puller runs");
                last = pulled.last.or(last);
            }
            assert_eq!(progress.pulled.load(Ordering::Relaxed), delivered);
            assert_eq!(progress.pending.load(Ordering::Relaxed), pending);
            let info = stream.consumer_info(&name).await.unwrap();
            assert_eq!(info.num_pending, pending, "the server's own count");
            last.expect("a last message").ack().await.unwrap();
        }
        puller.abort();
    }
}
